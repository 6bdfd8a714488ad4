package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/sagaflow/sagaflow/engine/httpapi"
	order "github.com/sagaflow/sagaflow/examples/order"
)

// soakTracker knows the sagas the soak started and sees them finish, by reading the
// orchestrator's database (the instances' created_at and finished_at, both the engine's clock).
type soakTracker struct {
	db *sqlx.DB

	mu      sync.Mutex
	pending map[string]chan struct{} // started, not seen finished; the channel closes when it is
	// Counted since the last take (an interval of the soak).
	started, late, errors, finished int
	latencies                       []float64 // ms, start → finish of the sagas finished
	// Totals of the whole run.
	totalStarted, totalLate, totalErrors int
	byStatus                             map[string]int
	lastErr                              error
}

func newSoakTracker(db *sqlx.DB) *soakTracker {
	return &soakTracker{db: db, pending: map[string]chan struct{}{}, byStatus: map[string]int{}}
}

// add records a started saga; the returned channel closes when it is seen finished.
func (t *soakTracker) add(id string, late bool) <-chan struct{} {
	ch := make(chan struct{})
	t.mu.Lock()
	defer t.mu.Unlock()
	t.pending[id] = ch
	t.started++
	t.totalStarted++
	if late {
		t.late++
		t.totalLate++
	}
	return ch
}

// failed records a start that the API refused or that failed on the way.
func (t *soakTracker) failed(err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.errors++
	t.totalErrors++
	t.lastErr = err
}

// inFlight is the number of sagas started and not yet seen finished.
func (t *soakTracker) inFlight() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.pending)
}

// poll reads which of the pending sagas finished, every period until ctx is done.
func (t *soakTracker) poll(ctx context.Context, period time.Duration) {
	tick := time.NewTicker(period)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if err := t.pollOnce(ctx); err != nil && ctx.Err() == nil {
			t.mu.Lock()
			t.lastErr = err
			t.mu.Unlock()
		}
	}
}

func (t *soakTracker) pollOnce(ctx context.Context) error {
	t.mu.Lock()
	ids := make([]string, 0, len(t.pending))
	for id := range t.pending {
		ids = append(ids, id)
	}
	t.mu.Unlock()
	if len(ids) == 0 {
		return nil
	}
	var rows []struct {
		ID     string  `db:"id"`
		Status string  `db:"status"`
		MS     float64 `db:"ms"`
	}
	err := t.db.SelectContext(ctx, &rows, `SELECT id, status, EXTRACT(EPOCH FROM finished_at - created_at) * 1000 AS ms
		FROM sagaflow_instances WHERE id = ANY($1) AND finished_at IS NOT NULL`, pq.Array(ids))
	if err != nil {
		return fmt.Errorf("read finished sagas: %w", err)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, r := range rows {
		ch, ok := t.pending[r.ID]
		if !ok {
			continue
		}
		delete(t.pending, r.ID)
		close(ch)
		t.finished++
		t.latencies = append(t.latencies, r.MS)
		t.byStatus[r.Status]++
	}
	return nil
}

// soakLoad is what the tracker counted over one interval.
type soakLoad struct {
	started, finished, inFlight, late, errors int
	p50, p99                                  float64 // ms; NaN when no saga finished
}

// take returns the interval's counts and starts the next interval.
func (t *soakTracker) take() soakLoad {
	t.mu.Lock()
	defer t.mu.Unlock()
	l := soakLoad{started: t.started, finished: t.finished, inFlight: len(t.pending), late: t.late, errors: t.errors,
		p50: percentile(t.latencies, 0.50), p99: percentile(t.latencies, 0.99)}
	t.started, t.finished, t.late, t.errors, t.latencies = 0, 0, 0, 0, nil
	return l
}

// percentile returns the q-quantile of xs (nearest rank), NaN for none; it sorts xs.
func percentile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	slices.Sort(xs)
	i := int(math.Ceil(q*float64(len(xs)))) - 1
	return xs[max(0, min(i, len(xs)-1))]
}

// soakStarter starts order sagas through serve's HTTP API.
type soakStarter struct {
	api     *httpapi.Client
	gen     *order.Generator
	tracker *soakTracker
}

// start starts one saga; late says it was issued after its time. It returns the channel that
// closes when the saga finishes, or nil when the start failed (counted as an error).
func (s *soakStarter) start(ctx context.Context, late bool) <-chan struct{} {
	in, err := json.Marshal(s.gen.Next())
	if err != nil {
		s.tracker.failed(err)
		return nil
	}
	id, err := s.api.Start(ctx, httpapi.StartRequest{Definition: order.Definition, Input: in})
	if err != nil {
		if ctx.Err() == nil {
			s.tracker.failed(fmt.Errorf("start a saga: %w", err))
		}
		return nil
	}
	return s.tracker.add(id, late)
}

// soakLateAfter is how long after its time a start may be issued before it counts as late.
const soakLateAfter = 100 * time.Millisecond

// maxOutstandingStarts bounds the start requests in flight at once.
const maxOutstandingStarts = 512

// openLoop starts sagas at rate per second from now until duration has passed: start i is due at
// i/rate seconds, whatever happened to the ones before it. A start issued more than
// soakLateAfter after its time (the machine or the API could not keep up) is counted as late.
func (s *soakStarter) openLoop(ctx context.Context, rate float64, duration time.Duration) {
	begin := time.Now()
	sem := make(chan struct{}, maxOutstandingStarts)
	var wg sync.WaitGroup
	defer wg.Wait()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for i := 0; ; i++ {
		offset := time.Duration(float64(i) / rate * float64(time.Second))
		if offset >= duration {
			return
		}
		due := begin.Add(offset)
		if d := time.Until(due); d > 0 {
			timer.Reset(d)
			select {
			case <-ctx.Done():
				return
			case <-timer.C:
			}
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		late := time.Since(due) > soakLateAfter
		wg.Go(func() {
			defer func() { <-sem }()
			s.start(ctx, late)
		})
	}
}

// one starts one saga and waits until it finishes, at most timeout.
func (s *soakStarter) one(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	done := s.start(ctx, false)
	if done == nil {
		s.tracker.mu.Lock()
		err := s.tracker.lastErr
		s.tracker.mu.Unlock()
		if err == nil {
			err = context.Cause(ctx)
		}
		return fmt.Errorf("the first saga did not start: %w", err)
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("the first saga did not finish within %s", timeout)
	}
}

// closedLoop runs workers that each start a saga and wait for it to finish, again and again,
// for duration; it returns how many finished within it.
func (s *soakStarter) closedLoop(ctx context.Context, workers int, duration time.Duration) int {
	ctx, cancel := context.WithTimeout(ctx, duration)
	defer cancel()
	var mu sync.Mutex
	finished := 0
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for ctx.Err() == nil {
				done := s.start(ctx, false)
				if done == nil {
					// A failed start is counted; pause a little so a broken API is not hammered.
					sleepCtx(ctx, 100*time.Millisecond)
					continue
				}
				select {
				case <-done:
					mu.Lock()
					finished++
					mu.Unlock()
				case <-ctx.Done():
				}
			}
		})
	}
	wg.Wait()
	return finished
}

// drain waits until no saga is in flight or timeout passes; it returns how many are left.
func (t *soakTracker) drain(ctx context.Context, timeout time.Duration) int {
	deadline := time.Now().Add(timeout)
	for {
		n := t.inFlight()
		if n == 0 || time.Now().After(deadline) || ctx.Err() != nil {
			return n
		}
		sleepCtx(ctx, 200*time.Millisecond)
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
