// Package driver runs the order example under load and checks that the business stayed right: it
// starts N orders through a Starter at a given concurrency, waits for each saga to finish, then
// checks the invariants across the four services' databases and reports one JSON-able Report.
package driver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/sagaflow/sagaflow/examples/order"
)

// Starter starts and awaits sagas of the order-fulfilment definition; the engine adapts to it.
type Starter interface {
	// Start starts a saga for businessKey with input and returns its id.
	Start(ctx context.Context, businessKey string, input json.RawMessage) (id string, err error)
	// Wait blocks until saga id has ended (or ctx ends) and returns its final status.
	Wait(ctx context.Context, id string) (status string, err error)
}

// Final saga statuses the driver counts.
const (
	StatusCompleted   = "completed"
	StatusCompensated = "compensated"
	StatusFailed      = "failed"
)

// DBs are the four services' databases (they may be one database: the tables do not collide).
type DBs struct {
	Orders, Inventory, Payment, Shipping *sqlx.DB
}

func (d DBs) validate() error {
	var errs []error
	for name, db := range map[string]*sqlx.DB{"Orders": d.Orders, "Inventory": d.Inventory, "Payment": d.Payment, "Shipping": d.Shipping} {
		if db == nil {
			errs = append(errs, fmt.Errorf("DBs.%s: required", name))
		}
	}
	return errors.Join(errs...)
}

// Config configures a run.
type Config struct {
	// Orders is how many orders to place; required (>= 1).
	Orders int
	// Concurrency is how many sagas run at once; default 1.
	Concurrency int
	// Starter starts and awaits the sagas; required.
	Starter Starter
	// DBs are the services' databases, for the invariant check; required.
	DBs DBs
	// Progress receives a line at every tenth of the orders finished; nil: none.
	Progress io.Writer
	// Seed makes the generated orders repeatable; 0: a random seed.
	Seed int64
	// OrderTimeout bounds the wait for one saga, counted from its start; a saga not finished by
	// then counts as stuck. Default 2m. An order whose start or wait fails for another reason (the
	// database answers with an error) counts as an error, not as stuck.
	OrderTimeout time.Duration
	// Prefix starts every order id; default "ord-<time-based run id>-", unique per run.
	Prefix string
}

// Report is the outcome of a run, printed as one JSON line.
type Report struct {
	Orders      int `json:"orders"`
	Completed   int `json:"completed"`
	Compensated int `json:"compensated"`
	Failed      int `json:"failed"`
	Stuck       int `json:"stuck"`
	// Errors counts the orders that could not be started or awaited (Run returns the causes).
	Errors     int     `json:"errors"`
	Violations int     `json:"violations"`
	ElapsedMS  int64   `json:"elapsed_ms"`
	SagasPerS  float64 `json:"sagas_per_s"`
	P50MS      float64 `json:"p50_ms"`
	P99MS      float64 `json:"p99_ms"`
	// ViolationDetails says what each violation is; omitted when there is none.
	ViolationDetails []string `json:"violation_details,omitempty"`
}

// Run places cfg.Orders orders, waits for them, checks the invariants and reports. It returns an
// error for a bad configuration, for orders that could not be started or awaited (an error other
// than the order's timeout: the report counts them as errors, not as stuck, and the error says
// why), or when the check cannot read the databases.
func Run(ctx context.Context, cfg Config) (Report, error) {
	if cfg.Concurrency == 0 {
		cfg.Concurrency = 1
	}
	if cfg.OrderTimeout == 0 {
		cfg.OrderTimeout = 2 * time.Minute
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "ord-" + strconv.FormatInt(time.Now().UnixNano()/int64(time.Millisecond), 36) + "-"
	}
	if cfg.Seed == 0 {
		cfg.Seed = time.Now().UnixNano()
	}
	var errs []error
	if cfg.Orders < 1 {
		errs = append(errs, fmt.Errorf("Orders %d: must be >= 1", cfg.Orders))
	}
	if cfg.Concurrency < 1 {
		errs = append(errs, fmt.Errorf("Concurrency %d: must be >= 1", cfg.Concurrency))
	}
	if cfg.Starter == nil {
		errs = append(errs, errors.New("Starter: required"))
	}
	errs = append(errs, cfg.DBs.validate())
	if err := errors.Join(errs...); err != nil {
		return Report{}, fmt.Errorf("driver config: %w", err)
	}

	gen := order.NewGenerator(cfg.Seed, cfg.Prefix)
	rep := Report{Orders: cfg.Orders}
	var (
		mu        sync.Mutex
		latencies []time.Duration
		outcomes  = map[string]string{}
		orderErrs []error
		finished  int
	)
	every := max(1, cfg.Orders/10)
	record := func(orderID, status string, latency time.Duration, orderErr error) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case orderErr != nil:
			rep.Errors++
			orderErrs = append(orderErrs, orderErr)
		case status == StatusCompleted:
			rep.Completed++
		case status == StatusCompensated:
			rep.Compensated++
		case status == StatusFailed:
			rep.Failed++
		default:
			rep.Stuck++
		}
		if status == StatusCompleted || status == StatusCompensated || status == StatusFailed {
			latencies = append(latencies, latency)
			outcomes[orderID] = status
		}
		finished++
		if cfg.Progress != nil && (finished%every == 0 || finished == cfg.Orders) {
			fmt.Fprintf(cfg.Progress, "orders: %d/%d finished (completed %d, compensated %d, failed %d, stuck %d, errors %d)\n",
				finished, cfg.Orders, rep.Completed, rep.Compensated, rep.Failed, rep.Stuck, rep.Errors)
		}
	}

	begin := time.Now()
	sem := make(chan struct{}, cfg.Concurrency)
	var wg sync.WaitGroup
	for range cfg.Orders {
		in := gen.Next()
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			record(in.OrderID, "", 0, nil)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			status, latency, err := place(ctx, cfg, in)
			record(in.OrderID, status, latency, err)
		}()
	}
	wg.Wait()
	elapsed := time.Since(begin)

	rep.ElapsedMS = elapsed.Milliseconds()
	if done := rep.Completed + rep.Compensated + rep.Failed; elapsed > 0 {
		rep.SagasPerS = math.Round(float64(done)/elapsed.Seconds()*10) / 10
	}
	rep.P50MS, rep.P99MS = percentile(latencies, 0.50), percentile(latencies, 0.99)

	details, err := check(ctx, cfg.DBs, outcomes)
	if err != nil {
		return rep, err
	}
	rep.Violations, rep.ViolationDetails = len(details), details
	if len(orderErrs) > 0 {
		// The first few causes are enough to see what went wrong; a broken database gives them all.
		const shown = 3
		err := errors.Join(orderErrs[:min(shown, len(orderErrs))]...)
		if len(orderErrs) > shown {
			err = fmt.Errorf("%w\n(and %d more)", err, len(orderErrs)-shown)
		}
		return rep, fmt.Errorf("%d order(s) could not be started or awaited: %w", len(orderErrs), err)
	}
	return rep, nil
}

// place starts one order and waits for its saga. A saga not finished when the order's time is up
// (or the run is interrupted) is stuck: no status, no error. Any other failure is an error.
func place(ctx context.Context, cfg Config, in order.Input) (status string, latency time.Duration, err error) {
	body, err := json.Marshal(in)
	if err != nil {
		return "", 0, fmt.Errorf("encode order %s: %w", in.OrderID, err)
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.OrderTimeout)
	defer cancel()
	t0 := time.Now()
	id, err := cfg.Starter.Start(ctx, in.OrderID, body)
	if err != nil {
		return "", 0, fmt.Errorf("start order %s: %w", in.OrderID, err)
	}
	status, err = cfg.Starter.Wait(ctx, id)
	if err != nil {
		if ctx.Err() != nil {
			return "", 0, nil // not finished in time: stuck
		}
		return "", 0, fmt.Errorf("wait for order %s (saga %s): %w", in.OrderID, id, err)
	}
	return status, time.Since(t0), nil
}

// percentile returns the q-quantile of ds in milliseconds (nearest rank), 0 for none.
func percentile(ds []time.Duration, q float64) float64 {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(math.Ceil(q*float64(len(s)))) - 1
	i = min(max(i, 0), len(s)-1)
	return math.Round(float64(s[i].Microseconds())/10) / 100
}
