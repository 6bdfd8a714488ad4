// Package order is the order-fulfilment example: the saga input, a generator of random orders,
// and the failure injection its four services share. The services live in the sub-packages
// orders, inventory, payment and shipping (each with its own database and schema), the
// definition in order-fulfilment.yaml, the load driver with the invariant checker in driver, and
// a process per service in cmd/order-service.
package order

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"sync"
	"time"
)

// Definition is the name of the example's saga definition (order-fulfilment.yaml).
const Definition = "order-fulfilment"

// Service names, as the definition spells them.
const (
	ServiceOrder     = "order"
	ServiceInventory = "inventory"
	ServicePayment   = "payment"
	ServiceShipping  = "shipping"
)

// Services lists the four services in saga order.
var Services = []string{ServiceOrder, ServiceInventory, ServicePayment, ServiceShipping}

// Input is the saga's start input.
type Input struct {
	OrderID     string `json:"order_id"`
	Customer    string `json:"customer"`
	Items       []Item `json:"items"`
	AmountCents int64  `json:"amount_cents"`
}

// Item is one line of an order.
type Item struct {
	SKU string `json:"sku"`
	Qty int    `json:"qty"`
}

// Validate reports what is wrong with in, all at once.
func (in Input) Validate() error {
	var errs []error
	if in.OrderID == "" {
		errs = append(errs, errors.New("order_id is empty"))
	}
	if in.Customer == "" {
		errs = append(errs, errors.New("customer is empty"))
	}
	if len(in.Items) == 0 {
		errs = append(errs, errors.New("items is empty"))
	}
	for i, it := range in.Items {
		if it.SKU == "" || it.Qty < 1 {
			errs = append(errs, fmt.Errorf("items[%d]: want a sku and qty >= 1, got %q x %d", i, it.SKU, it.Qty))
		}
	}
	if in.AmountCents < 0 {
		errs = append(errs, fmt.Errorf("amount_cents is %d, want >= 0", in.AmountCents))
	}
	return errors.Join(errs...)
}

// Catalogue is the SKUs the generator orders and their prices in cents.
var Catalogue = map[string]int64{
	"sku-apple": 120, "sku-banana": 80, "sku-cherry": 450, "sku-date": 300, "sku-elder": 999,
	"sku-fig": 250, "sku-grape": 380, "sku-honeydew": 640, "sku-kiwi": 90, "sku-lemon": 60,
}

// SKUs returns the catalogue's SKUs in a fixed order.
func SKUs() []string {
	return []string{"sku-apple", "sku-banana", "sku-cherry", "sku-date", "sku-elder",
		"sku-fig", "sku-grape", "sku-honeydew", "sku-kiwi", "sku-lemon"}
}

// Generator makes random orders: one to three distinct catalogue SKUs, one to five of each. The
// same seed gives the same orders; prefix keeps order ids unique across runs on the same data.
// It is safe for concurrent use.
type Generator struct {
	mu     sync.Mutex
	rng    *rand.Rand
	prefix string
	n      int
}

// NewGenerator returns a generator seeded with seed whose order ids start with prefix.
func NewGenerator(seed int64, prefix string) *Generator {
	return &Generator{rng: rand.New(rand.NewPCG(uint64(seed), 0x5a6af10)), prefix: prefix}
}

// Next returns the next order.
func (g *Generator) Next() Input {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.n++
	skus := SKUs()
	g.rng.Shuffle(len(skus), func(i, j int) { skus[i], skus[j] = skus[j], skus[i] })
	in := Input{
		OrderID:  fmt.Sprintf("%s%06d", g.prefix, g.n),
		Customer: fmt.Sprintf("cust-%03d", g.rng.IntN(500)),
	}
	for _, sku := range skus[:1+g.rng.IntN(3)] {
		qty := 1 + g.rng.IntN(5)
		in.Items = append(in.Items, Item{SKU: sku, Qty: qty})
		in.AmountCents += int64(qty) * Catalogue[sku]
	}
	return in
}

// Faults is the failure injection every service takes besides its own business failure rate.
type Faults struct {
	// Latency is added to every handling, inside its transaction (a slow service).
	Latency time.Duration
	// UnavailableRate is the probability that a handling returns a transient error, so the command
	// is redelivered; 1 makes the service unavailable.
	UnavailableRate float64
	// Seed makes the business decisions (decline, out of stock, shipping failure) deterministic per
	// order id; 0 picks a random seed.
	Seed int64
}

// ErrUnavailable is the transient error an unavailable service returns.
var ErrUnavailable = errors.New("service unavailable (injected)")

// Injector applies Faults in a handler. It is safe for concurrent use.
type Injector struct {
	f   Faults
	mu  sync.Mutex
	rng *rand.Rand
}

// NewInjector returns the injector for f.
func NewInjector(f Faults) *Injector {
	if f.Seed == 0 {
		f.Seed = rand.Int64()
	}
	return &Injector{f: f, rng: rand.New(rand.NewPCG(uint64(f.Seed), 0x0bad))}
}

// Disturb sleeps Latency (or until ctx ends) and returns ErrUnavailable at UnavailableRate.
func (i *Injector) Disturb(ctx context.Context) error {
	if i.f.Latency > 0 {
		t := time.NewTimer(i.f.Latency)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
	if i.f.UnavailableRate <= 0 {
		return nil
	}
	i.mu.Lock()
	x := i.rng.Float64()
	i.mu.Unlock()
	if x < i.f.UnavailableRate {
		return ErrUnavailable
	}
	return nil
}

// Decide reports whether the business failure named what (e.g. "decline") happens for key (an
// order id) at rate. It depends only on the seed, what and key, so a retry of the same order
// decides the same way, and a run with the same seed makes the same decisions.
func (i *Injector) Decide(what, key string, rate float64) bool {
	if rate <= 0 {
		return false
	}
	h := fnv.New64a()
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(i.f.Seed))
	h.Write(b[:])
	h.Write([]byte(what))
	h.Write([]byte{0})
	h.Write([]byte(key))
	// FNV alone mixes a key's last bytes poorly into the high bits (order ids differ only there),
	// so finish with splitmix64's mixer before taking the top 53 bits as a float in [0, 1).
	x := h.Sum64()
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return float64(x>>11)/(1<<53) < rate
}
