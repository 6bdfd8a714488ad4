package engine

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/sagaflow/sagaflow/internal/sqldb"
)

// timers is the wake-up signal of the timer loop: a transaction that writes a deadline nearer than
// the one the loop sleeps until wakes it (in process); PostgreSQL NOTIFY does the same across
// replicas.
type timers struct {
	mu sync.Mutex
	// until is when the loop plans to wake up; zero while it is working.
	until time.Time
	wake  chan struct{}
}

func newTimers() *timers {
	return &timers{wake: make(chan struct{}, 1)}
}

// wakeFor wakes the loop if it sleeps past at, or if it is working (it may have read the next
// deadline before at was committed; the poke makes it look again before sleeping).
func (t *timers) wakeFor(at time.Time) {
	t.mu.Lock()
	wake := t.until.IsZero() || at.Before(t.until)
	t.mu.Unlock()
	if wake {
		t.poke()
	}
}

// poke wakes the loop unconditionally.
func (t *timers) poke() {
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

func (t *timers) sleeping(until time.Time) {
	t.mu.Lock()
	t.until = until
	t.mu.Unlock()
}

// runTimers applies the deadline events of due instances until ctx is done: it claims them in
// batches (FOR UPDATE SKIP LOCKED on PostgreSQL, so replicas share the work), then sleeps until the
// nearest deadline, the fallback poll, or a wake-up.
func (e *Engine) runTimers(ctx context.Context) error {
	log := e.log.With("component", "engine.timers")
	minWait := 10 * time.Millisecond
	for {
		progressed, err := e.fireDue(ctx)
		if err != nil && ctx.Err() == nil {
			log.WarnContext(ctx, "fire due deadlines", "err", err)
		}
		now := e.cfg.Now()
		wait := e.cfg.TimerInterval
		if next, err := e.store.nextDeadline(ctx, e.cfg.DB); err != nil {
			if ctx.Err() == nil {
				log.WarnContext(ctx, "read next deadline", "err", err)
			}
		} else if !next.IsZero() {
			wait = min(wait, next.Sub(now))
		}
		if !progressed || err != nil {
			// Something due could not be applied (or nothing was due): do not spin on it.
			wait = max(wait, minWait)
		}
		if wait <= 0 {
			continue
		}
		e.timers.sleeping(now.Add(wait))
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case <-timer.C:
		case <-e.timers.wake:
			timer.Stop()
		}
		e.timers.sleeping(time.Time{})
	}
}

// fireDue applies every due deadline, a batch per transaction, and reports whether it applied any.
func (e *Engine) fireDue(ctx context.Context) (bool, error) {
	progressed := false
	for {
		n, stuck, err := e.fireBatch(ctx)
		if n > stuck {
			progressed = true
		}
		if err != nil {
			return progressed, err
		}
		if n < e.cfg.TimerBatch || stuck == n {
			return progressed, nil
		}
	}
}

// stuckRetry is how long the timers wait before looking again at a due instance they could not
// handle (its definition version is not registered on this replica).
const stuckRetry = time.Minute

// fireBatch claims up to TimerBatch due instances in one transaction and applies their deadline
// events. It returns how many it claimed and how many of those it could not apply (their
// definition is not registered here; they are postponed by stuckRetry).
func (e *Engine) fireBatch(ctx context.Context) (claimed, stuck int, err error) {
	var stuckIDs []string
	var t *tx
	err = sqldb.InTx(ctx, e.cfg.DB, func(sqlTx *sqlx.Tx) error {
		t = e.newTx(sqlTx)
		rows, err := e.store.claimDue(ctx, sqlTx, t.now, e.cfg.TimerBatch)
		if err != nil {
			return err
		}
		claimed = len(rows)
		var postponed []string
		ids := make([]string, 0, len(rows))
		for id := range rows {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		for _, id := range ids {
			r := rows[id]
			def, err := e.cfg.Definitions.Get(r.inst.Definition, r.inst.Version)
			if err != nil {
				// Look again later (the deadline column only: the instance's own deadline is
				// unchanged), so that it does not hide the due instances behind it.
				e.log.ErrorContext(ctx, "deadline of a saga whose definition is not registered", append(instanceLog(r, ""), "err", err)...)
				postponed = append(postponed, id)
				continue
			}
			ev, ok := r.inst.DeadlineEvent(t.now, e.rand())
			if !ok {
				// A finished instance with a deadline column left over: clear it.
				t.dirty[r] = true
				t.changed = append(t.changed, r)
				continue
			}
			rejected, err := t.apply(def, r, ev, eventMeta{unrecorded: true})
			if err != nil {
				return err
			}
			if rejected != nil {
				// DeadlineEvent is built from the instance itself, so this is a bug; log it
				// rather than fill the history with one rejection per poll.
				e.log.ErrorContext(ctx, "deadline rejected", append(instanceLog(r, ""), "err", rejected)...)
				postponed = append(postponed, id)
			}
		}
		if err := t.flush(ctx); err != nil {
			return err
		}
		stuckIDs = postponed
		return e.store.postpone(ctx, sqlTx, postponed, t.now.Add(stuckRetry))
	})
	stuck = len(stuckIDs)
	if err != nil {
		return claimed, stuck, fmt.Errorf("fire deadlines: %w", err)
	}
	t.committed(ctx)
	return claimed, stuck, nil
}
