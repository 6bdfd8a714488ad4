package engine

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"

	"github.com/sagaflow/sagaflow/internal/migrate"
	"github.com/sagaflow/sagaflow/internal/sqldb"
	"github.com/sagaflow/sagaflow/internal/telemetry"
	"github.com/sagaflow/sagaflow/outbox"
	"github.com/sagaflow/sagaflow/saga"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Migrate creates or upgrades the engine's tables (sagaflow_instances, sagaflow_history) and the
// outbox's and inbox's (outbox.Migrate) in db. It is safe to run from several replicas at once.
func Migrate(ctx context.Context, db *sqlx.DB) error {
	if err := outbox.Migrate(ctx, db); err != nil {
		return err
	}
	if _, err := migrate.Apply(ctx, db, "engine", migrations); err != nil {
		return err
	}
	return nil
}

// CheckMigrations returns nil when every migration Migrate would apply (the outbox's and the
// engine's) is applied to db, and otherwise an error matching outbox.ErrMigrationsPending naming
// the pending files. It reads only, for an orchestrator running as a role without DDL rights
// ("sagaflow serve --migrate=false").
func CheckMigrations(ctx context.Context, db *sqlx.DB) error {
	return errors.Join(outbox.CheckMigrations(ctx, db), migrate.Check(ctx, db, map[string]fs.FS{"engine": migrations}))
}

// Engine runs saga instances: it starts them, applies replies, deadlines and operator requests to
// them one transaction at a time, and sends their commands through the outbox. Its methods are
// safe for concurrent use, and any number of Engines (replicas) may share one database and bus.
type Engine struct {
	cfg     Config
	log     *slog.Logger
	store   *store
	outbox  *outbox.Writer
	inbox   *outbox.Inbox
	timers  *timers
	waiters waiters
	ins     *instruments
	// retention counts what retention deletes.
	retention *retentionInstruments
}

// New returns an Engine for cfg. It reports every problem of cfg at once.
func New(cfg Config) (*Engine, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	dialect := sqldb.DialectOf(cfg.DB)
	ins, err := newInstruments(cfg.TracerProvider, cfg.MeterProvider)
	if err != nil {
		return nil, err
	}
	ret, err := newRetentionInstruments(cfg.MeterProvider)
	if err != nil {
		return nil, err
	}
	e := &Engine{
		retention: ret,
		ins:       ins,
		cfg:       cfg,
		log:       cfg.Logger.With("component", "engine"),
		store:     newStore(dialect),
		outbox:    cfg.Outbox,
		inbox:     outbox.NewInbox(cfg.DB, cfg.ReplyConsumer),
		timers:    newTimers(),
	}
	if e.outbox == nil {
		e.outbox = outbox.NewWriter(cfg.DB, nil)
	}
	return e, nil
}

// Start starts an instance of the definition (its latest version unless opts.Version is set) with
// the business key and input (JSON; empty means null), and returns its id. With
// opts.IdempotencyKey set, a repeated Start returns the id of the instance the first one started.
// The first command is in the outbox when Start returns.
func (e *Engine) Start(ctx context.Context, definition, businessKey string, input json.RawMessage, opts StartOptions) (string, error) {
	var id string
	var t *tx
	err := sqldb.InTx(ctx, e.cfg.DB, func(sqlTx *sqlx.Tx) error {
		var err error
		id, t, err = e.start(ctx, sqlTx, definition, businessKey, input, opts)
		return err
	})
	if err != nil {
		return "", err
	}
	if t != nil {
		t.committed(ctx)
	}
	return id, nil
}

// StartTx is Start inside the caller's transaction: the instance and its first command exist if
// and only if the caller commits. After the commit, the relay claims and publishes the command on
// its next poll or NOTIFY, once the row is older than the relay's RelayConfig.ClaimDelay (the
// engine cannot see the caller's commit, so it cannot publish it from memory).
func (e *Engine) StartTx(ctx context.Context, sqlTx *sqlx.Tx, definition, businessKey string, input json.RawMessage, opts StartOptions) (string, error) {
	id, t, err := e.start(ctx, sqlTx, definition, businessKey, input, opts)
	if err == nil && t != nil {
		// The caller's commit cannot be observed: the start is counted and logged now, even if the
		// caller rolls back.
		t.report(ctx)
	}
	return id, err
}

// start starts an instance in sqlTx; it returns a nil tx when the idempotency key found an
// existing one (nothing was written).
func (e *Engine) start(ctx context.Context, sqlTx *sqlx.Tx, definition, businessKey string, input json.RawMessage, opts StartOptions) (string, *tx, error) {
	def, err := e.definition(definition, opts.Version)
	if err != nil {
		return "", nil, fmt.Errorf("start %s: %w", definition, err)
	}
	if err := e.checkStart(businessKey, input, opts); err != nil {
		return "", nil, fmt.Errorf("start %s: %w", definition, err)
	}
	if len(input) > 0 && !json.Valid(input) {
		return "", nil, fmt.Errorf("start %s: input is not valid JSON: %w", definition, ErrInvalidInput)
	}
	if opts.IdempotencyKey != "" {
		id, err := e.store.findByIdempotencyKey(ctx, sqlTx, def.Name, opts.IdempotencyKey)
		if err != nil || id != "" {
			return id, nil, err
		}
	}
	uid, err := uuid.NewV7()
	if err != nil {
		return "", nil, fmt.Errorf("start %s: new id: %w", definition, err)
	}
	t := e.newTx(sqlTx)
	r := &row{traceID: telemetry.NewTraceID().String(), idemKey: opts.IdempotencyKey, rowVersion: 1, isNew: true}
	e.sampleRoot(ctx, r, uid.String(), def)
	ev := saga.Event{Kind: saga.EventStart, Time: t.now, Rand: e.rand(), ID: uid.String(), BusinessKey: businessKey, Input: input}
	rejected, err := t.apply(def, r, ev, eventMeta{actor: opts.Actor})
	if err != nil {
		return "", nil, err
	}
	if rejected != nil {
		return "", nil, fmt.Errorf("start %s: %w: %w", definition, ErrInvalidInput, rejected)
	}
	if err := e.checkHeaders(t.msgs); err != nil {
		return "", nil, fmt.Errorf("start %s: %w", definition, err)
	}
	if opts.IdempotencyKey != "" || opts.Version != 0 {
		t.history[0].Detail = detail("business_key", businessKey, "version", def.Version, "idempotency_key", opts.IdempotencyKey)
	}
	inserted, err := e.store.insert(ctx, sqlTx, r)
	if err != nil {
		return "", nil, err
	}
	if !inserted { // a concurrent Start with the same key won
		id, err := e.store.findByIdempotencyKey(ctx, sqlTx, def.Name, opts.IdempotencyKey)
		if err == nil && id == "" {
			err = fmt.Errorf("start %s: idempotency key %q conflicts but no instance has it", definition, opts.IdempotencyKey)
		}
		return id, nil, err
	}
	if err := t.flush(ctx); err != nil {
		if tooLarge, ok := errors.AsType[*outbox.TooLargeError](err); ok {
			return "", nil, fmt.Errorf("start %s: %w", definition, &LimitError{What: "command (input, data and headers)",
				Size: tooLarge.Size, Limit: tooLarge.Limit, Setting: "the outbox's WriterConfig.MaxPayload, NATS's max_payload"})
		}
		return "", nil, err
	}
	return r.inst.ID, t, nil
}

// definition returns the definition name at version, the latest one when version is 0.
func (e *Engine) definition(name string, version int) (*saga.Definition, error) {
	if version == 0 {
		return e.cfg.Definitions.Latest(name)
	}
	return e.cfg.Definitions.Get(name, version)
}

func (e *Engine) rand() float64 {
	r := e.cfg.Rand()
	if !(r >= 0 && r < 1) {
		return 0
	}
	return r
}

// Get returns the instance with id, or an error matching ErrNotFound.
func (e *Engine) Get(ctx context.Context, id string) (*Instance, error) {
	r, err := e.store.get(ctx, e.cfg.DB, id)
	if err != nil {
		return nil, err
	}
	inst := r.public()
	return &inst, nil
}

// GetByKey returns the newest instance of definition with the business key, or an error matching
// ErrNotFound.
func (e *Engine) GetByKey(ctx context.Context, definition, key string) (*Instance, error) {
	list, err := e.store.list(ctx, e.cfg.DB, Filter{Definition: definition, BusinessKey: key, Limit: 1})
	if err != nil {
		return nil, err
	}
	if len(list) == 0 {
		return nil, fmt.Errorf("saga of %s with business key %q: %w", definition, key, ErrNotFound)
	}
	return &list[0], nil
}

// List returns the instances f selects, newest first; see Filter for paging.
func (e *Engine) List(ctx context.Context, f Filter) ([]Instance, error) {
	switch {
	case f.Limit <= 0:
		f.Limit = 100
	case f.Limit > 1000:
		f.Limit = 1000
	}
	return e.store.list(ctx, e.cfg.DB, f)
}

// Summaries returns the summaries of the instances f selects, newest first, with the same paging
// as List: the input and step outputs stay in the database, so a page costs the same whatever the
// sagas carry. Engine.Get returns an instance whole.
func (e *Engine) Summaries(ctx context.Context, f Filter) ([]Summary, error) {
	switch {
	case f.Limit <= 0:
		f.Limit = 100
	case f.Limit > 1000:
		f.Limit = 1000
	}
	out, err := e.store.summaries(ctx, e.cfg.DB, f)
	if err != nil {
		return nil, err
	}
	for i := range out {
		if def, err := e.cfg.Definitions.Get(out[i].Definition, out[i].Version); err == nil && out[i].Step >= 0 && out[i].Step < len(def.Steps) {
			out[i].StepName = def.Steps[out[i].Step].Name
		}
	}
	return out, nil
}

// CountByStatus counts the instances f selects by status; f's Status, Before and Limit are
// ignored (a count covers every page and every status).
func (e *Engine) CountByStatus(ctx context.Context, f Filter) (StatusCounts, error) {
	return e.store.countByStatus(ctx, e.cfg.DB, f)
}

// History returns the timeline of the instance with id, oldest first, or an error matching
// ErrNotFound when there is no such instance.
func (e *Engine) History(ctx context.Context, id string) ([]HistoryEntry, error) {
	return e.HistoryPage(ctx, id, HistoryParams{})
}

// HistoryPage returns the part of saga id's timeline that p selects, in order: the entries whose
// Seq is greater than p.After, at most p.Limit of them (0: all). The next page starts after the
// last entry's Seq; a page shorter than p.Limit is the last. It returns ErrNotFound when no
// instance has id.
func (e *Engine) HistoryPage(ctx context.Context, id string, p HistoryParams) ([]HistoryEntry, error) {
	if p.After < 0 || p.Limit < 0 {
		return nil, fmt.Errorf("history of saga %s: After and Limit must not be negative: %w", id, ErrInvalidInput)
	}
	h, err := e.store.history(ctx, e.cfg.DB, id, p.After, p.Limit)
	if err != nil {
		return nil, err
	}
	if len(h) == 0 {
		if _, err := e.store.get(ctx, e.cfg.DB, id); err != nil {
			return nil, err
		}
	}
	return h, nil
}

// Wait returns the instance with id once it is finished (completed, compensated or failed), or
// ctx's error. It reads the instance once; when this Engine commits the end of the saga, it hands
// Wait the instance as committed, with no second read. A saga another replica finishes is seen by
// a slow poll of the database (once a second), so Wait costs one read per second at most, not a
// tight loop.
func (e *Engine) Wait(ctx context.Context, id string) (*Instance, error) {
	done, stop := e.waiters.add(id)
	defer stop()
	const delay = time.Second
	for {
		inst, err := e.Get(ctx, id)
		if err != nil {
			return nil, err
		}
		if inst.Status.Finished() {
			return inst, nil
		}
		timer := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil, fmt.Errorf("wait for saga %s: %w", id, context.Cause(ctx))
		case inst := <-done:
			timer.Stop()
			return inst, nil
		case <-timer.C:
		}
	}
}

// waiters wakes the callers of Wait when this Engine finishes their saga.
type waiters struct {
	mu sync.Mutex
	m  map[string]map[chan *Instance]struct{}
}

// add registers a waiter for saga id; stop removes it. done receives the finished instance.
func (w *waiters) add(id string) (done <-chan *Instance, stop func()) {
	ch := make(chan *Instance, 1)
	w.mu.Lock()
	if w.m == nil {
		w.m = map[string]map[chan *Instance]struct{}{}
	}
	if w.m[id] == nil {
		w.m[id] = map[chan *Instance]struct{}{}
	}
	w.m[id][ch] = struct{}{}
	w.mu.Unlock()
	return ch, func() {
		w.mu.Lock()
		delete(w.m[id], ch)
		if len(w.m[id]) == 0 {
			delete(w.m, id)
		}
		w.mu.Unlock()
	}
}

// notify hands the waiters of rows (just committed) their instance. Each waiter gets its own
// copy, decoded from the state as stored, so it is what a read of the database would return.
func (w *waiters) notify(rows []*row) {
	if len(rows) == 0 {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, r := range rows {
		for ch := range w.m[r.inst.ID] {
			inst, err := r.stored()
			if err != nil {
				continue // not for a value that was just stored; the waiter's poll reads it
			}
			select {
			case ch <- inst:
			default:
			}
		}
	}
}

// Cancel stops the running instance id and compensates what it did, recording actor and reason in
// its history. It fails with an error matching saga.ErrCompensating or saga.ErrFinished when
// there is nothing to cancel, saga.ErrNotCancellable when compensating would abandon the effect
// of a step that cannot be undone (the saga goes forward), and ErrNotFound when there is no such
// instance.
func (e *Engine) Cancel(ctx context.Context, id, actor, reason string) error {
	return e.operate(ctx, id, saga.EventCancel, actor, reason)
}

// Redrive resumes the failed instance id with a fresh retry budget: its exhausted compensation
// starts again or, for a halted step that cannot be undone, its forward command is sent again (the
// participant's barrier answers it from its record if it already applied). It records actor and
// reason in the history, clears NeedsAttention, and fails with an error matching
// saga.ErrNotFailed when the instance is not failed, and ErrNotFound when there is no such instance.
func (e *Engine) Redrive(ctx context.Context, id, actor, reason string) error {
	return e.operate(ctx, id, saga.EventRedrive, actor, reason)
}

func (e *Engine) operate(ctx context.Context, id string, kind saga.EventKind, actor, reason string) error {
	var t *tx
	err := sqldb.InTx(ctx, e.cfg.DB, func(sqlTx *sqlx.Tx) error {
		r, err := e.store.lockOne(ctx, sqlTx, string(kind), id)
		if err != nil {
			return err
		}
		def, err := e.cfg.Definitions.Get(r.inst.Definition, r.inst.Version)
		if err != nil {
			return fmt.Errorf("%s saga %s: %w", kind, id, err)
		}
		t = e.newTx(sqlTx)
		rejected, err := t.apply(def, r, saga.Event{Kind: kind, Time: t.now, Rand: e.rand(), Actor: actor, Reason: reason}, eventMeta{actor: actor})
		if err != nil {
			return err
		}
		if rejected != nil { // rolled back: an operator's refused request leaves no trace
			return fmt.Errorf("%s saga %s: %w", kind, id, rejected)
		}
		return t.flush(ctx)
	})
	if err != nil {
		return err
	}
	t.committed(ctx)
	return nil
}
