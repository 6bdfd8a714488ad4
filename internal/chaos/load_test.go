package chaos_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/sagaflow/sagaflow/engine/httpapi"
	order "github.com/sagaflow/sagaflow/examples/order"
)

// load places orders through the orchestrators' HTTP API (POST /v1/sagas), each with its order id
// as business and idempotency key: a start that failed or whose answer was lost (an orchestrator
// killed, PostgreSQL down) is repeated, on either replica, until one answers, and still starts one
// saga.
type load struct {
	clients []*httpapi.Client
	gen     *order.Generator

	mu     sync.Mutex
	orders map[string]order.Input // every order placed, by order id
	sagas  map[string]string      // order id → saga id, once a start was answered

	started atomic.Int64 // starts answered
	retries atomic.Int64 // starts repeated after an error
}

func newLoad(apiURLs []string, hc *http.Client, seed int64) *load {
	l := &load{gen: order.NewGenerator(seed, "chaos-"), orders: map[string]order.Input{}, sagas: map[string]string{}}
	for _, u := range apiURLs {
		l.clients = append(l.clients, httpapi.NewClient(u, "chaos-test", hc))
	}
	return l
}

// run places n orders, one every interval (with up to 16 starts in flight, so a replica's outage
// delays starts without stopping the stream), and returns when each was answered.
func (l *load) run(ctx context.Context, n int, interval time.Duration) error {
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for i := range n {
		select {
		case <-ctx.Done():
			return errors.Join(ctx.Err(), g.Wait())
		case <-tick.C:
		}
		in := l.gen.Next()
		g.Go(func() error { return l.start(ctx, in, i) })
	}
	return g.Wait()
}

// start starts in's saga, trying the replicas in turn (from the i-th) until one answers.
func (l *load) start(ctx context.Context, in order.Input, i int) error {
	raw, err := json.Marshal(in)
	if err != nil {
		return err
	}
	l.mu.Lock()
	l.orders[in.OrderID] = in // before the first try: a start whose answer is lost may still have started it
	l.mu.Unlock()
	req := httpapi.StartRequest{Definition: order.Definition, BusinessKey: in.OrderID, Input: raw, IdempotencyKey: in.OrderID}
	for attempt := i; ; attempt++ {
		callCtx, cancel := context.WithTimeout(ctx, 15*time.Second)
		id, err := l.clients[attempt%len(l.clients)].Start(callCtx, req)
		cancel()
		if err == nil {
			l.mu.Lock()
			l.sagas[in.OrderID] = id
			l.mu.Unlock()
			l.started.Add(1)
			return nil
		}
		if apiErr := (*httpapi.APIError)(nil); errors.As(err, &apiErr) && apiErr.Status < http.StatusInternalServerError {
			return fmt.Errorf("start order %s: refused: %w", in.OrderID, err)
		}
		l.retries.Add(1)
		select {
		case <-ctx.Done():
			return fmt.Errorf("start order %s: %w (last error: %w)", in.OrderID, ctx.Err(), err)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// snapshot returns copies of the orders placed and the saga ids answered.
func (l *load) snapshot() (map[string]order.Input, map[string]string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	orders := make(map[string]order.Input, len(l.orders))
	for k, v := range l.orders {
		orders[k] = v
	}
	sagas := make(map[string]string, len(l.sagas))
	for k, v := range l.sagas {
		sagas[k] = v
	}
	return orders, sagas
}
