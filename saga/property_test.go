package saga_test

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sagaflow/sagaflow/saga"
)

// TestApplyProperties runs random definitions (with random recoveries and pivots) through random
// event sequences — correct replies, lost ones (never sent), late ones (after their deadline),
// duplicates, stale and out-of-order replies and deadlines, wrong directions, cancels, redrives —
// and checks every invariant of the package after every event, then feeds only deadlines and
// checks that every saga finishes. Among them: a saga never compensates (let alone ends
// compensated) while the effect of a step that cannot be undone may exist, and LateEffect flags
// exactly the late successes that nothing accounts for.
func TestApplyProperties(t *testing.T) {
	t.Parallel()

	const runs, shards = 2000, 8
	for shard := range shards {
		t.Run(fmt.Sprintf("Seeds%dTo%d", shard*runs/shards, (shard+1)*runs/shards-1), func(t *testing.T) {
			t.Parallel()
			for seed := shard * runs / shards; seed < (shard+1)*runs/shards; seed++ {
				r := rand.New(rand.NewPCG(uint64(seed), 0x5a6a))
				newSim(t, r, fmt.Sprintf("seed %d", seed)).run(1 + r.IntN(150))
			}
		})
	}
}

// FuzzApply is TestApplyProperties driven by the fuzzer's bytes: each random decision takes one
// byte (then a fixed pseudo-random stream once they run out).
func FuzzApply(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte("\x00\x00\x00\x00"))
	f.Add([]byte("\xff\x10\x80\x01\x02\x03\x04\x05\x06\x07\x08\x09"))
	f.Add([]byte("sagas compensate in reverse order of completion, and nothing waits forever"))
	f.Fuzz(func(t *testing.T, data []byte) {
		src := &byteSource{data: data, rest: rand.NewPCG(uint64(len(data)), 7)}
		newSim(t, rand.New(src), fmt.Sprintf("input %q", data)).run(min(len(data), 300))
	})
}

// byteSource is a rand.Source that puts one byte of data in the top bits of each number, so that
// IntN follows the fuzzer's bytes, and falls back to rest when they run out.
type byteSource struct {
	data []byte
	rest *rand.PCG
}

func (s *byteSource) Uint64() uint64 {
	v := s.rest.Uint64()
	if len(s.data) == 0 {
		return v
	}
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	b[0], s.data = s.data[0], s.data[1:]
	return binary.BigEndian.Uint64(b[:])
}

// fwdOutcome is what the model knows about a step's forward command, from the events alone.
type fwdOutcome int

const (
	fwdNone fwdOutcome = iota
	fwdSent
	fwdCompleted
	fwdFailed
	fwdUnknown
)

type attemptKey struct {
	step string
	comp bool
}

// sim drives one saga and keeps an independent model of what must have happened, built from the
// events it applied and the actions it saw.
type sim struct {
	t     *testing.T
	r     *rand.Rand
	label string
	def   *saga.Definition
	inst  saga.Instance
	now   time.Time

	history   []saga.Event // events applied
	scheduled []saga.Event // a deadline event for every deadline ever scheduled
	lastSent  *saga.Action
	awaited   bool // lastSent's reply is awaited

	fwd        []fwdOutcome
	fwdSends   []int
	fwdUsed    []int // since the last redrive
	compSends  []int // across redrives
	compUsed   []int // since the last redrive
	compDone   []bool
	compOrder  []int // steps in the order their compensation started
	maxAttempt map[attemptKey]int
}

func newSim(t *testing.T, r *rand.Rand, label string) *sim {
	def := randomDefinition(r)
	n := len(def.Steps)
	return &sim{
		t: t, r: r, label: label, def: def, now: t0,
		fwd: make([]fwdOutcome, n), fwdSends: make([]int, n), fwdUsed: make([]int, n), compSends: make([]int, n), compUsed: make([]int, n),
		compDone: make([]bool, n), maxAttempt: map[attemptKey]int{},
	}
}

func randomDefinition(r *rand.Rand) *saga.Definition {
	policy := func() saga.RetryPolicy {
		p := saga.RetryPolicy{
			MaxAttempts: 1 + r.IntN(3),
			Backoff:     time.Duration(1+r.IntN(1000)) * time.Millisecond,
		}
		p.MaxBackoff = p.Backoff + time.Duration(r.IntN(5000))*time.Millisecond
		if r.IntN(3) > 0 {
			p.Jitter = r.Float64()
		}
		return p
	}
	def := &saga.Definition{Name: "random", Version: 1 + r.IntN(3), Steps: make([]saga.Step, 1+r.IntN(12))}
	for i := range def.Steps {
		s := strconv.Itoa(i)
		def.Steps[i] = saga.Step{
			Name: "step-" + s, Service: "svc-" + s, Command: "Do" + s,
			Timeout: time.Duration(1+r.IntN(10)) * time.Second, Retry: policy(), CompensationRetry: policy(),
		}
		if r.IntN(3) > 0 {
			def.Steps[i].Compensation = "Undo" + s
		}
		switch r.IntN(8) {
		case 0, 1:
			def.Steps[i].Recovery = saga.RecoveryCompensate
		case 2:
			def.Steps[i].Recovery = saga.RecoveryRetryForward
		}
	}
	if r.IntN(4) == 0 {
		def.Pivot = def.Steps[r.IntN(len(def.Steps))].Name
	}
	return def
}

// irreversible reports whether step i's success commits the saga to going forward.
func (s *sim) irreversible(i int) bool {
	return s.def.Recovery(i) == saga.RecoveryRetryForward || s.def.Steps[i].Name == s.def.Pivot
}

// committed reports whether, by the model, a step before i that cannot be undone completed.
func (s *sim) committed(i int) bool {
	for j := range i {
		if s.fwd[j] == fwdCompleted && s.irreversible(j) {
			return true
		}
	}
	return false
}

// requireNothingAbandoned checks that no effect of a step that cannot be undone may exist: the
// saga is about to compensate, or has.
func (s *sim) requireNothingAbandoned() {
	for i, o := range s.fwd {
		if s.def.Recovery(i) == saga.RecoveryRetryForward {
			require.NotContains(s.t, []fwdOutcome{fwdCompleted, fwdUnknown}, o,
				"%s: compensating while the effect of retry_forward step %d may exist", s.label, i)
		}
		if s.def.Steps[i].Name == s.def.Pivot {
			require.NotEqual(s.t, fwdCompleted, o, "%s: compensating after the pivot %d completed", s.label, i)
		}
	}
}

func (s *sim) run(events int) {
	start := saga.Event{Kind: saga.EventStart, Time: s.tick(), ID: "saga-" + s.label, BusinessKey: "key", Input: json.RawMessage(`{"n":1}`)}
	require.NoError(s.t, s.apply(start, false), s.label)
	for range events {
		ev, mustReject := s.randomEvent()
		_ = s.apply(ev, mustReject) // apply checks a rejection against mustReject itself
	}
	// Nothing waits forever: feeding only the pending deadline finishes every saga.
	for k := 0; ; k++ {
		require.Less(s.t, k, 10_000, "%s: saga never finishes", s.label)
		ev, ok := s.inst.DeadlineEvent(s.tick(), s.r.Float64())
		if !ok {
			break
		}
		ev.Time = s.fire()
		require.NoError(s.t, s.apply(ev, false), "%s: the pending deadline must apply", s.label)
	}
	require.True(s.t, s.inst.Status.Finished(), s.label)
}

// tick advances the clock a little and returns it.
func (s *sim) tick() time.Time {
	s.now = s.now.Add(time.Duration(s.r.IntN(5000)) * time.Millisecond)
	return s.now
}

// fire advances the clock to the pending deadline, if it is later, and returns it.
func (s *sim) fire() time.Time {
	if s.inst.Deadline.After(s.now) {
		s.now = s.inst.Deadline
	}
	return s.now
}

// randomEvent returns the next event and whether it must be rejected.
func (s *sim) randomEvent() (saga.Event, bool) {
	r := s.r
	ev := saga.Event{Time: s.tick(), Rand: r.Float64()}
	switch p := r.IntN(100); {
	case p < 35 && s.lastSent != nil: // the reply to the last command sent (maybe late)
		ev.Kind, ev.Step, ev.Attempt, ev.Compensation = saga.EventReply, s.lastSent.Step, s.lastSent.Attempt, s.lastSent.Compensation
		ev.Outcome = s.randomOutcome()
		ev.Output = json.RawMessage(`{"v":` + strconv.Itoa(r.IntN(100)) + `}`)
	case p < 60: // the pending deadline
		if d, ok := s.inst.DeadlineEvent(ev.Time, ev.Rand); ok {
			d.Time = s.fire()
			return d, false
		}
		ev.Kind = saga.EventCancel
	case p < 68 && len(s.history) > 0: // a duplicate of an applied event
		dup := s.history[r.IntN(len(s.history))]
		if dup.Kind == saga.EventRedrive || dup.Kind == saga.EventRetryStep { // a new operator request, not a duplicate: it may apply
			return ev, false // ev has no kind: invalid
		}
		dup.Time, dup.Rand = ev.Time, ev.Rand
		return dup, true
	case p < 76: // a random, usually stale, reply
		ev.Kind, ev.Step, ev.Compensation = saga.EventReply, s.randomStep(), r.IntN(2) == 0
		ev.Attempt, ev.Outcome = r.IntN(5), s.randomOutcome()
	case p < 82 && len(s.scheduled) > 0 && r.IntN(2) == 0: // an old deadline
		d := s.scheduled[r.IntN(len(s.scheduled))]
		d.Time, d.Rand = ev.Time, ev.Rand
		return d, false
	case p < 82: // a random deadline
		ev.Kind, ev.Step, ev.Compensation = saga.EventDeadline, s.randomStep(), r.IntN(2) == 0
		ev.Attempt, ev.Phase = r.IntN(5), []saga.Phase{saga.PhaseAwaitingReply, saga.PhaseBackingOff}[r.IntN(2)]
	case p < 87:
		ev.Kind, ev.Actor = saga.EventCancel, "sre"
	case p < 90:
		ev.Kind, ev.Actor = saga.EventRedrive, "sre"
	case p < 92:
		ev.Kind, ev.Actor = saga.EventRetryStep, "sre"
		if r.IntN(2) == 0 {
			ev.Input = json.RawMessage(`{"n":` + strconv.Itoa(r.IntN(100)) + `}`)
		}
	case p < 94:
		ev.Kind, ev.ID = saga.EventStart, "again"
		return ev, true
	case p < 97 && s.lastSent != nil: // the last command's reply in the wrong direction
		ev.Kind, ev.Step, ev.Attempt, ev.Compensation = saga.EventReply, s.lastSent.Step, s.lastSent.Attempt, !s.lastSent.Compensation
		ev.Outcome = s.randomOutcome()
		return ev, true
	default: // malformed
		switch r.IntN(3) {
		case 0:
			ev.Kind, ev.Time = saga.EventCancel, time.Time{}
		case 1:
			ev.Kind, ev.Rand = saga.EventCancel, 1+r.Float64()
		default:
			ev.Kind, ev.Step, ev.Attempt, ev.Outcome = saga.EventReply, "nope", 1, saga.OutcomeSuccess
		}
		return ev, true
	}
	return ev, false
}

func (s *sim) randomOutcome() saga.Outcome {
	switch p := s.r.IntN(20); {
	case p < 14:
		return saga.OutcomeSuccess
	case p < 18:
		return saga.OutcomeFailure
	default:
		return saga.OutcomeCancelled
	}
}

func (s *sim) randomStep() string {
	return s.def.Steps[s.r.IntN(len(s.def.Steps))].Name
}

// apply applies ev, checks everything that must hold of the result, and moves the model on.
func (s *sim) apply(ev saga.Event, mustReject bool) error {
	t, old := s.t, s.inst
	snapshot := old.Clone()
	got, actions, err := saga.Apply(s.def, old, ev)
	require.Equal(t, snapshot, old, "%s: Apply modified its input", s.label)

	// Deterministic, and the same from the instance as stored (JSON).
	got2, actions2, err2 := saga.Apply(s.def, old, ev)
	require.Equal(t, got, got2, s.label)
	require.Equal(t, actions, actions2, s.label)
	require.Equal(t, err, err2, s.label)
	s.checkStored(old, ev, got, actions, err)

	if err != nil {
		var rejected *saga.RejectedError
		require.ErrorAs(t, err, &rejected, s.label)
		if errors.Is(err, saga.ErrNotCancellable) {
			require.True(t, s.def.Recovery(old.Step) == saga.RecoveryRetryForward || s.committed(old.Step),
				"%s: cancel at step %d refused for nothing", s.label, old.Step)
		}
		require.Equal(t, old, got, "%s: a rejected event changed the instance", s.label)
		require.Nil(t, actions, s.label)
		return err
	}
	require.False(t, mustReject, "%s: %+v applied to %s instance, want an error", s.label, ev, old.Status)
	if ev.Kind == saga.EventCancel {
		require.False(t, s.def.Recovery(old.Step) == saga.RecoveryRetryForward || s.committed(old.Step),
			"%s: cancel applied at step %d, which would abandon an effect nothing undoes", s.label, old.Step)
	}
	if old.Status.Finished() {
		require.Equal(t, saga.StatusFailed, old.Status, "%s: a finished instance changed", s.label)
		require.Contains(t, []saga.EventKind{saga.EventRedrive, saga.EventRetryStep}, ev.Kind, "%s: a finished instance changed", s.label)
	}
	s.observe(old, ev, got, actions)

	// Applying the same event again changes nothing.
	again, actions3, err3 := saga.Apply(s.def, got, ev)
	require.Error(t, err3, "%s: %+v applied twice", s.label, ev)
	require.Nil(t, actions3, s.label)
	require.Equal(t, got, again, s.label)

	s.inst = got
	s.history = append(s.history, ev)
	return nil
}

// checkStored checks that Apply gives the same result on old after a JSON round trip, as the
// engine stores it.
func (s *sim) checkStored(old saga.Instance, ev saga.Event, got saga.Instance, actions []saga.Action, err error) {
	t := s.t
	b, jerr := json.Marshal(old)
	require.NoError(t, jerr)
	var stored saga.Instance
	require.NoError(t, json.Unmarshal(b, &stored))
	got3, actions3, err3 := saga.Apply(s.def, stored, ev)
	require.Equal(t, fmt.Sprint(err), fmt.Sprint(err3), s.label)
	require.Equal(t, actions, actions3, s.label)
	want, jerr := json.Marshal(got)
	require.NoError(t, jerr)
	have, jerr := json.Marshal(got3)
	require.NoError(t, jerr)
	require.JSONEq(t, string(want), string(have), s.label)
}

// observe checks an applied transition against the model, and updates the model.
func (s *sim) observe(old saga.Instance, ev saga.Event, got saga.Instance, actions []saga.Action) {
	t, def, label := s.t, s.def, s.label
	var sends, deadlines, finishes []saga.Action
	for _, a := range actions {
		switch a.Kind {
		case saga.ActionSendCommand, saga.ActionSendCompensation:
			sends = append(sends, a)
		case saga.ActionScheduleDeadline:
			deadlines = append(deadlines, a)
		case saga.ActionFinish:
			finishes = append(finishes, a)
		default:
			t.Fatalf("%s: unknown action %+v", label, a)
		}
	}
	require.LessOrEqual(t, len(sends), 1, "%s: at most one command per transition", label)
	require.Contains(t, []saga.Status{saga.StatusRunning, saga.StatusCompensating, saga.StatusCompleted,
		saga.StatusCompensated, saga.StatusFailed}, got.Status, label)

	// What the event settles.
	i := def.StepIndex(ev.Step)
	switch ev.Kind {
	case saga.EventStart:
		require.Zero(t, old.Status, label)
	case saga.EventReply:
		require.NotNil(t, s.lastSent, label)
		require.Equal(t, [3]any{s.lastSent.Step, s.lastSent.Attempt, s.lastSent.Compensation},
			[3]any{ev.Step, ev.Attempt, ev.Compensation}, "%s: only the last command's reply applies", label)
		s.awaited = false
		switch {
		case !ev.Compensation && ev.Outcome == saga.OutcomeSuccess:
			s.fwd[i] = fwdCompleted
			require.Equal(t, ev.Output, got.Data.Steps[ev.Step], label)
		case !ev.Compensation:
			s.fwd[i] = fwdFailed
			if s.committed(i) {
				s.requireHalted(i, got, "a failure after the point of no return")
			}
		case ev.Outcome == saga.OutcomeSuccess:
			s.compDone[i] = true
		default:
			s.compensationAttemptFailed(i, got, sends, deadlines)
		}
	case saga.EventDeadline:
		if old.Phase == saga.PhaseBackingOff {
			require.Len(t, sends, 1, "%s: a backoff deadline sends the next attempt", label)
			require.Equal(t, ev.Attempt, sends[0].Attempt, label)
			require.Equal(t, ev.Step, sends[0].Step, label)
			break
		}
		require.True(t, s.awaited, label)
		require.Equal(t, [3]any{s.lastSent.Step, s.lastSent.Attempt, s.lastSent.Compensation},
			[3]any{ev.Step, ev.Attempt, ev.Compensation}, "%s: only the awaited command times out", label)
		s.awaited = false
		switch {
		case ev.Compensation:
			s.compensationAttemptFailed(i, got, sends, deadlines)
		case s.fwdUsed[i] < def.Steps[i].Retry.MaxAttempts:
			s.requireBackoff(i, got, sends, deadlines, def.Steps[i].Retry)
		default:
			s.fwd[i] = fwdUnknown // timed out on every attempt: it may have run
			if def.Recovery(i) == saga.RecoveryRetryForward || s.committed(i) {
				s.requireHalted(i, got, "a step that cannot be undone timed out on its budget")
			}
		}
	case saga.EventCancel:
		require.Equal(t, saga.StatusRunning, old.Status, label)
		require.Equal(t, fwdSent, s.fwd[old.Step], label)
		s.fwd[old.Step] = fwdUnknown // in flight: it may have run
		s.awaited = false
	case saga.EventRetryStep:
		require.Equal(t, saga.StatusFailed, old.Status, label)
		require.Equal(t, saga.StepHalted, old.Steps[old.Step].Status, "%s: only a halted step is retried", label)
		require.Len(t, sends, 1, label)
		// A new generation only when the participant recorded that the step did not apply: a
		// step whose effect may exist must be answered from the barrier's record.
		wantGen := old.Steps[old.Step].Generation
		if s.fwd[old.Step] == fwdFailed {
			wantGen++
		}
		require.Equal(t, wantGen, sends[0].Generation, "%s: retry generation", label)
		if len(ev.Input) > 0 {
			require.Equal(t, ev.Input, got.Data.Input, label)
		} else {
			require.Equal(t, old.Data.Input, got.Data.Input, label)
		}
		s.fwdUsed[old.Step] = 0
	case saga.EventRedrive:
		require.Equal(t, saga.StatusFailed, old.Status, label)
		if old.Steps[old.Step].Status == saga.StepHalted {
			s.fwdUsed[old.Step] = 0
		} else {
			s.compUsed[old.Step] = 0
		}
	}

	// What the transition sends.
	for _, a := range sends {
		require.False(t, s.awaited, "%s: %+v sent while %+v is awaited", label, a, s.lastSent)
		key := attemptKey{a.Step, a.Compensation}
		require.Equal(t, s.maxAttempt[key]+1, a.Attempt, "%s: attempt numbers are consecutive and never reused", label)
		s.maxAttempt[key] = a.Attempt
		j := def.StepIndex(a.Step)
		require.GreaterOrEqual(t, j, 0, label)
		step := def.Steps[j]
		require.Equal(t, step.Service, a.Service, label)
		if !a.Compensation {
			require.Equal(t, saga.ActionSendCommand, a.Kind, label)
			require.Equal(t, step.Command, a.Command, label)
			for k := range j {
				require.Equal(t, fwdCompleted, s.fwd[k], "%s: step %d runs before step %d completed", label, j, k)
			}
			if ev.Kind == saga.EventRedrive || ev.Kind == saga.EventRetryStep { // a halted step goes forward again
				require.Contains(t, []fwdOutcome{fwdUnknown, fwdFailed}, s.fwd[j], label)
			} else {
				require.Contains(t, []fwdOutcome{fwdNone, fwdSent}, s.fwd[j], label)
			}
			require.Less(t, s.fwdUsed[j], step.Retry.MaxAttempts, "%s: forward budget exceeded", label)
			s.fwd[j] = fwdSent
			s.fwdSends[j]++
			s.fwdUsed[j]++
		} else {
			require.Equal(t, saga.ActionSendCompensation, a.Kind, label)
			require.NotEmpty(t, step.Compensation, label)
			require.Equal(t, step.Compensation, a.Command, label)
			require.Contains(t, []fwdOutcome{fwdCompleted, fwdUnknown}, s.fwd[j],
				"%s: compensation of step %d, which did not apply", label, j)
			require.False(t, s.compDone[j], "%s: step %d compensated twice", label, j)
			require.Less(t, s.compUsed[j], step.CompensationRetry.MaxAttempts, "%s: compensation budget exceeded", label)
			s.requireNothingAbandoned()
			if s.compSends[j] == 0 {
				for _, k := range s.compOrder {
					require.Greater(t, k, j, "%s: compensations out of reverse order: %v then %d", label, s.compOrder, j)
					require.True(t, s.compDone[k], "%s: compensation of %d started before %d's finished", label, j, k)
				}
				s.compOrder = append(s.compOrder, j)
			} else {
				require.Equal(t, j, s.compOrder[len(s.compOrder)-1], label)
			}
			s.compSends[j]++
			s.compUsed[j]++
		}
		s.awaited = true
		s.lastSent = &a
	}

	// The single pending deadline, or the end.
	if got.Status.Finished() {
		require.Zero(t, got.Deadline, label)
		require.Equal(t, saga.PhaseNone, got.Phase, label)
		require.Empty(t, deadlines, label)
		require.Empty(t, sends, label)
		require.Len(t, finishes, 1, label)
		require.Equal(t, got.Status, finishes[0].Status, label)
		require.False(t, s.awaited, "%s: finished with a command awaited", label)
		s.checkEnd(got)
		return
	}
	require.Empty(t, finishes, label)
	require.Len(t, deadlines, 1, "%s: an unfinished instance has exactly one pending deadline", label)
	d := deadlines[0]
	require.False(t, got.Deadline.IsZero(), label)
	require.Equal(t, got.Deadline, d.At, label)
	require.Equal(t, got.Phase, d.Phase, label)
	require.Equal(t, got.Steps[got.Step].Name, d.Step, label)
	require.Equal(t, got.Attempt, d.Attempt, label)
	require.Equal(t, got.Status == saga.StatusCompensating, d.Compensation, label)
	require.Equal(t, s.awaited, got.Phase == saga.PhaseAwaitingReply, label)
	if s.awaited {
		require.Equal(t, d.Step, s.lastSent.Step, label)
		require.Equal(t, d.Attempt, s.lastSent.Attempt, label)
		require.Equal(t, d.Compensation, s.lastSent.Compensation, label)
		require.Equal(t, ev.Time.Add(def.Steps[got.Step].Timeout), d.At, label)
	} else {
		require.Equal(t, s.lastSent.Attempt+1, d.Attempt, "%s: a backoff ends in the next attempt", label)
	}
	s.scheduled = append(s.scheduled, saga.Event{Kind: saga.EventDeadline, Step: d.Step, Attempt: d.Attempt,
		Compensation: d.Compensation, Phase: d.Phase})
}

// compensationAttemptFailed checks what follows a failed compensation attempt of step i: a backoff
// within the budget, else the end (failed).
func (s *sim) compensationAttemptFailed(i int, got saga.Instance, sends, deadlines []saga.Action) {
	if s.compUsed[i] < s.def.Steps[i].CompensationRetry.MaxAttempts {
		s.requireBackoff(i, got, sends, deadlines, s.def.Steps[i].CompensationRetry)
		return
	}
	require.Equal(s.t, saga.StatusFailed, got.Status, "%s: exhausted compensation", s.label)
	require.Equal(s.t, i, got.Step, s.label)
}

// requireHalted checks that the saga stopped failed on step i, for an operator, compensating nothing.
func (s *sim) requireHalted(i int, got saga.Instance, why string) {
	require.Equal(s.t, saga.StatusFailed, got.Status, "%s: %s must halt", s.label, why)
	require.Equal(s.t, i, got.Step, s.label)
	require.Equal(s.t, saga.StepHalted, got.Steps[i].Status, s.label)
	require.Empty(s.t, got.ToCompensate, s.label)
}

func (s *sim) requireBackoff(i int, got saga.Instance, sends, deadlines []saga.Action, p saga.RetryPolicy) {
	t := s.t
	require.Empty(t, sends, s.label)
	require.Len(t, deadlines, 1, s.label)
	require.Equal(t, saga.PhaseBackingOff, got.Phase, s.label)
	require.Equal(t, i, got.Step, s.label)
	wait := deadlines[0].At.Sub(got.UpdatedAt)
	require.GreaterOrEqual(t, wait, time.Duration(0), s.label)
	require.LessOrEqual(t, wait, p.MaxBackoff, s.label)
}

// checkEnd checks a finished saga against the model.
func (s *sim) checkEnd(got saga.Instance) {
	t, label := s.t, s.label
	switch got.Status {
	case saga.StatusCompleted:
		for i, o := range s.fwd {
			require.Equal(t, fwdCompleted, o, "%s: completed with step %d not completed", label, i)
		}
		require.Empty(t, s.compOrder, label)
		require.Len(t, got.Data.Steps, len(s.def.Steps), label)
	case saga.StatusCompensated:
		s.requireNothingAbandoned()
		for i, o := range s.fwd {
			applied := o == fwdCompleted || o == fwdUnknown
			want := applied && s.def.Steps[i].Compensation != ""
			require.Equal(t, want, s.compDone[i], "%s: step %d (%v) compensated: %v", label, i, o, s.compDone[i])
		}
		require.Empty(t, got.ToCompensate, label)
	case saga.StatusFailed:
		i := got.Step
		if got.Steps[i].Status == saga.StepHalted {
			require.Empty(t, got.ToCompensate, label)
			require.Contains(t, got.LastError, s.def.Steps[i].Name, label)
			switch s.fwd[i] {
			case fwdUnknown:
				require.Equal(t, s.def.Steps[i].Retry.MaxAttempts, s.fwdUsed[i], label)
				require.True(t, s.def.Recovery(i) == saga.RecoveryRetryForward || s.committed(i), label)
			case fwdFailed:
				require.True(t, s.committed(i), "%s: halted on a failure before the point of no return", label)
			default:
				t.Fatalf("%s: halted step %d is %v", label, i, s.fwd[i])
			}
			break
		}
		require.False(t, s.compDone[i], label)
		require.Equal(t, s.def.Steps[i].CompensationRetry.MaxAttempts, s.compUsed[i], label)
		require.Equal(t, i, got.ToCompensate[0], label)
		require.Contains(t, got.LastError, s.def.Steps[i].Name, label)
	default:
		t.Fatalf("%s: unknown final status %q", label, got.Status)
	}
	s.checkLateEffects(got)
}

// checkLateEffects checks, on a finished saga, that LateEffect flags a late success for a step
// exactly when the model says nothing accounts for its effect: it did not complete, and no
// compensation was sent for it or is queued.
func (s *sim) checkLateEffects(got saga.Instance) {
	for i, step := range s.def.Steps {
		last := s.maxAttempt[attemptKey{step.Name, false}]
		if last == 0 {
			continue
		}
		ev := saga.Event{Kind: saga.EventReply, Time: s.now, Step: step.Name, Attempt: 1 + s.r.IntN(last), Outcome: saga.OutcomeSuccess}
		_, _, err := saga.Apply(s.def, got, ev)
		require.ErrorIs(s.t, err, saga.ErrFinished, s.label)
		queued := step.Compensation != "" && slices.Contains(got.ToCompensate, i)
		want := s.fwd[i] != fwdCompleted && s.compSends[i] == 0 && !queued
		require.Equal(s.t, want, saga.LateEffect(s.def, got, ev), "%s: late success of step %d (%v)", s.label, i, s.fwd[i])
	}
}
