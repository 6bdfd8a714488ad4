package saga_test

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sagaflow/sagaflow/saga"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// now is the time of the event under test; setup events happen a second apart from t0.
var now = t0.Add(time.Hour)

// testDef is an order saga: a (compensated), b (no compensation, declared to have nothing to undo),
// c and d (compensated). Every policy allows 2 attempts, backs off 1s then 2s, without jitter, so
// deadlines are exact.
func testDef() *saga.Definition {
	retry := saga.RetryPolicy{MaxAttempts: 2, Backoff: time.Second, MaxBackoff: 4 * time.Second}
	step := func(name, service, comp string) saga.Step {
		return saga.Step{
			Name: name, Service: service, Command: "Do-" + name, Compensation: comp,
			Timeout: 10 * time.Second, Retry: retry, CompensationRetry: retry,
		}
	}
	def := &saga.Definition{
		Name:    "order",
		Version: 1,
		Steps: []saga.Step{
			step("a", "svc-a", "Undo-a"),
			step("b", "svc-b", ""),
			step("c", "svc-c", "Undo-c"),
			step("d", "svc-d", "Undo-d"),
		},
	}
	def.Steps[1].Recovery = saga.RecoveryCompensate
	return def
}

// forwardDef is testDef with a and b compensated and c and d without compensation: retried forward
// by default, so c is the point of no return.
func forwardDef() *saga.Definition {
	def := testDef()
	def.Steps[1].Compensation, def.Steps[1].Recovery = "Undo-b", ""
	def.Steps[2].Compensation = ""
	def.Steps[3].Compensation = ""
	return def
}

// pivotDef is testDef with every step compensated and b as the pivot: c and d are retried forward.
func pivotDef() *saga.Definition {
	def := forwardDef()
	def.Steps[2].Compensation = "Undo-c"
	def.Steps[3].Compensation = "Undo-d"
	def.Pivot = "b"
	return def
}

func startEv() saga.Event {
	return saga.Event{Kind: saga.EventStart, ID: "saga-1", BusinessKey: "order-7", Input: json.RawMessage(`{"qty":2}`)}
}

func ok(step string, attempt int) saga.Event {
	return saga.Event{Kind: saga.EventReply, Step: step, Attempt: attempt, Outcome: saga.OutcomeSuccess,
		Output: json.RawMessage(`{"step":"` + step + `"}`)}
}

func fail(step string, attempt int) saga.Event {
	return saga.Event{Kind: saga.EventReply, Step: step, Attempt: attempt, Outcome: saga.OutcomeFailure, Reason: "declined"}
}

func compOK(step string, attempt int) saga.Event {
	ev := ok(step, attempt)
	ev.Compensation = true
	return ev
}

func compFail(step string, attempt int) saga.Event {
	ev := fail(step, attempt)
	ev.Compensation = true
	return ev
}

func timeout(step string, attempt int) saga.Event {
	return saga.Event{Kind: saga.EventDeadline, Step: step, Attempt: attempt, Phase: saga.PhaseAwaitingReply}
}

func retryDue(step string, attempt int) saga.Event {
	return saga.Event{Kind: saga.EventDeadline, Step: step, Attempt: attempt, Phase: saga.PhaseBackingOff}
}

func compTimeout(step string, attempt int) saga.Event {
	ev := timeout(step, attempt)
	ev.Compensation = true
	return ev
}

func compRetryDue(step string, attempt int) saga.Event {
	ev := retryDue(step, attempt)
	ev.Compensation = true
	return ev
}

func cancelEv() saga.Event {
	return saga.Event{Kind: saga.EventCancel, Actor: "alice", Reason: "customer asked"}
}

func redriveEv() saga.Event {
	return saga.Event{Kind: saga.EventRedrive, Actor: "bob", Reason: "refunds fixed"}
}

func retryEv(input string) saga.Event {
	ev := saga.Event{Kind: saga.EventRetryStep, Actor: "carol", Reason: "address corrected"}
	if input != "" {
		ev.Input = json.RawMessage(input)
	}
	return ev
}

// drive applies events from the zero instance, one second apart from t0, and requires each to apply.
func drive(t *testing.T, def *saga.Definition, events ...saga.Event) saga.Instance {
	t.Helper()
	var inst saga.Instance
	for i, ev := range events {
		if ev.Time.IsZero() {
			ev.Time = t0.Add(time.Duration(i) * time.Second)
		}
		next, _, err := saga.Apply(def, inst, ev)
		require.NoError(t, err, "setup event %d (%s %s)", i, ev.Kind, ev.Step)
		inst = next
	}
	return inst
}

// then returns a new slice of base followed by more, never sharing base's array.
func then(base []saga.Event, more ...saga.Event) []saga.Event {
	out := make([]saga.Event, 0, len(base)+len(more))
	return append(append(out, base...), more...)
}

// Setups shared by the rows below.
var (
	started        = []saga.Event{startEv()}
	atB            = []saga.Event{startEv(), ok("a", 1)}
	atC            = []saga.Event{startEv(), ok("a", 1), ok("b", 1)}
	atD            = []saga.Event{startEv(), ok("a", 1), ok("b", 1), ok("c", 1)}
	completed      = then(atD, ok("d", 1))
	backingOffA    = []saga.Event{startEv(), timeout("a", 1)}
	compensatingC  = then(atD, fail("d", 1))                  // compensating c, then a
	compensatingA  = then(compensatingC, compOK("c", 1))      // compensating a
	compBackingOff = then(compensatingC, compTimeout("c", 1)) // c attempt 2 due
	failedAtC      = then(compBackingOff, compRetryDue("c", 2), compFail("c", 2))
	compensated    = then(compensatingA, compOK("a", 1))

	// On forwardDef (and pivotDef).
	haltedC         = then(atC, timeout("c", 1), retryDue("c", 2), timeout("c", 2)) // c timed out on its budget
	haltedD         = then(atD, fail("d", 1))                                       // d failed after c committed
	redrivenHaltedC = then(haltedC, redriveEv())
)

func sendCmd(step string, attempt int) saga.Action {
	return saga.Action{Kind: saga.ActionSendCommand, Step: step, Service: "svc-" + step, Command: "Do-" + step, Attempt: attempt}
}

func sendComp(step string, attempt int) saga.Action {
	return saga.Action{Kind: saga.ActionSendCompensation, Step: step, Service: "svc-" + step, Command: "Undo-" + step,
		Attempt: attempt, Compensation: true}
}

func withGeneration(a saga.Action, g int) saga.Action {
	a.Generation = g
	return a
}

func deadlineAct(step string, attempt int, comp bool, phase saga.Phase, after time.Duration) saga.Action {
	return saga.Action{Kind: saga.ActionScheduleDeadline, Step: step, Attempt: attempt, Compensation: comp,
		At: now.Add(after), Phase: phase}
}

func finishAct(s saga.Status) saga.Action {
	return saga.Action{Kind: saga.ActionFinish, Status: s}
}

func TestApply(t *testing.T) {
	t.Parallel()

	const timeout10 = 10 * time.Second
	tests := []struct {
		name  string
		def   func() *saga.Definition // nil: testDef
		setup []saga.Event
		edit  func(*saga.Instance) // changes the instance before the event, to make it invalid
		event saga.Event

		wantErr error
		// On success:
		status       saga.Status
		step         int
		attempt      int
		phase        saga.Phase
		toCompensate []int
		actions      []saga.Action
		check        func(t *testing.T, inst saga.Instance)
	}{
		// Start.
		{
			name: "StartSendsFirstCommand", event: startEv(),
			status: saga.StatusRunning, step: 0, attempt: 1, phase: saga.PhaseAwaitingReply,
			actions: []saga.Action{sendCmd("a", 1), deadlineAct("a", 1, false, saga.PhaseAwaitingReply, timeout10)},
			check: func(t *testing.T, inst saga.Instance) {
				require.Equal(t, "saga-1", inst.ID)
				require.Equal(t, "order", inst.Definition)
				require.Equal(t, 1, inst.Version)
				require.Equal(t, "order-7", inst.BusinessKey)
				require.JSONEq(t, `{"qty":2}`, string(inst.Data.Input))
				require.Empty(t, inst.Data.Steps)
				require.Equal(t, now, inst.CreatedAt)
				require.Equal(t, saga.StepRunning, inst.Steps[0].Status)
				require.Equal(t, 1, inst.Steps[0].Attempts)
				require.Equal(t, now, inst.Steps[0].StartedAt)
				for _, st := range inst.Steps[1:] {
					require.Equal(t, saga.StepPending, st.Status)
				}
			},
		},
		{name: "StartTwice", setup: started, event: startEv(), wantErr: saga.ErrAlreadyStarted},
		{name: "StartWithoutID", event: saga.Event{Kind: saga.EventStart}, wantErr: saga.ErrInvalidEvent},
		{name: "StartWithInvalidInput", event: saga.Event{Kind: saga.EventStart, ID: "x", Input: json.RawMessage(`{`)}, wantErr: saga.ErrInvalidEvent},
		{
			name: "StartWithoutInput", event: saga.Event{Kind: saga.EventStart, ID: "x"},
			status: saga.StatusRunning, step: 0, attempt: 1, phase: saga.PhaseAwaitingReply,
			actions: []saga.Action{sendCmd("a", 1), deadlineAct("a", 1, false, saga.PhaseAwaitingReply, timeout10)},
		},
		{name: "ReplyBeforeStart", event: ok("a", 1), wantErr: saga.ErrNotStarted},

		// Forward replies.
		{
			name: "SuccessStartsNextStep", setup: started, event: ok("a", 1),
			status: saga.StatusRunning, step: 1, attempt: 1, phase: saga.PhaseAwaitingReply,
			actions: []saga.Action{sendCmd("b", 1), deadlineAct("b", 1, false, saga.PhaseAwaitingReply, timeout10)},
			check: func(t *testing.T, inst saga.Instance) {
				require.JSONEq(t, `{"step":"a"}`, string(inst.Data.Steps["a"]))
				require.Equal(t, saga.StepCompleted, inst.Steps[0].Status)
				require.Equal(t, now, inst.Steps[0].FinishedAt)
				require.Equal(t, saga.StepRunning, inst.Steps[1].Status)
			},
		},
		{
			name: "SuccessWithoutOutputStoresNull", setup: started,
			event:  saga.Event{Kind: saga.EventReply, Step: "a", Attempt: 1, Outcome: saga.OutcomeSuccess},
			status: saga.StatusRunning, step: 1, attempt: 1, phase: saga.PhaseAwaitingReply,
			actions: []saga.Action{sendCmd("b", 1), deadlineAct("b", 1, false, saga.PhaseAwaitingReply, timeout10)},
			check: func(t *testing.T, inst saga.Instance) {
				b, err := json.Marshal(inst.Data)
				require.NoError(t, err)
				require.JSONEq(t, `{"input":{"qty":2},"steps":{"a":null}}`, string(b))
			},
		},
		{
			name: "SuccessOfLastStepCompletes", setup: atD, event: ok("d", 1),
			status: saga.StatusCompleted, step: 3, attempt: 1,
			actions: []saga.Action{finishAct(saga.StatusCompleted)},
			check: func(t *testing.T, inst saga.Instance) {
				require.Len(t, inst.Data.Steps, 4)
				require.Equal(t, now, inst.FinishedAt)
				for _, st := range inst.Steps {
					require.Equal(t, saga.StepCompleted, st.Status)
				}
			},
		},
		{
			name: "FailureCompensatesCompletedStepsInReverse", setup: atD, event: fail("d", 1),
			status: saga.StatusCompensating, step: 2, attempt: 1, phase: saga.PhaseAwaitingReply, toCompensate: []int{2, 0},
			actions: []saga.Action{sendComp("c", 1), deadlineAct("c", 1, true, saga.PhaseAwaitingReply, timeout10)},
			check: func(t *testing.T, inst saga.Instance) {
				require.Equal(t, saga.StepFailed, inst.Steps[3].Status)
				require.Equal(t, "attempt 1 failed: declined", inst.Steps[3].LastError)
				require.Equal(t, `step "d": attempt 1 failed: declined`, inst.LastError)
				require.Equal(t, saga.StepCompleted, inst.Steps[1].Status, "b has nothing to undo")
				require.Equal(t, saga.StepCompensating, inst.Steps[2].Status)
				require.Equal(t, 1, inst.Steps[2].CompensationAttempts)
			},
		},
		{
			name: "FailureOfFirstStepCompensatesNothing", setup: started, event: fail("a", 1),
			status: saga.StatusCompensated, step: 0, attempt: 1,
			actions: []saga.Action{finishAct(saga.StatusCompensated)},
			check: func(t *testing.T, inst saga.Instance) {
				require.Equal(t, saga.StepFailed, inst.Steps[0].Status)
				for _, st := range inst.Steps[1:] {
					require.Equal(t, saga.StepSkipped, st.Status)
				}
			},
		},
		{
			name: "RefusedCommandCountsAsFailure", setup: atC,
			event:  saga.Event{Kind: saga.EventReply, Step: "c", Attempt: 1, Outcome: saga.OutcomeCancelled},
			status: saga.StatusCompensating, step: 0, attempt: 1, phase: saga.PhaseAwaitingReply, toCompensate: []int{0},
			actions: []saga.Action{sendComp("a", 1), deadlineAct("a", 1, true, saga.PhaseAwaitingReply, timeout10)},
			check: func(t *testing.T, inst saga.Instance) {
				require.Equal(t, saga.StepFailed, inst.Steps[2].Status)
				require.Equal(t, "attempt 1 refused (cancelled)", inst.Steps[2].LastError)
			},
		},
		{
			name: "LateSuccessWhileBackingOffCompletesStep", setup: backingOffA, event: ok("a", 1),
			status: saga.StatusRunning, step: 1, attempt: 1, phase: saga.PhaseAwaitingReply,
			actions: []saga.Action{sendCmd("b", 1), deadlineAct("b", 1, false, saga.PhaseAwaitingReply, timeout10)},
		},
		{
			name: "LateFailureWhileBackingOffCompensates", setup: backingOffA, event: fail("a", 1),
			status: saga.StatusCompensated, step: 0, attempt: 2,
			actions: []saga.Action{finishAct(saga.StatusCompensated)},
		},
		{name: "ReplyForOldAttempt", setup: then(backingOffA, retryDue("a", 2)), event: ok("a", 1), wantErr: saga.ErrStale},
		{name: "ReplyForFutureAttempt", setup: started, event: ok("a", 2), wantErr: saga.ErrStale},
		{name: "ReplyForAttemptAboutToBeSent", setup: backingOffA, event: ok("a", 2), wantErr: saga.ErrStale},
		{name: "DuplicateReply", setup: atB, event: ok("a", 1), wantErr: saga.ErrStale},
		{name: "ReplyForFutureStep", setup: started, event: ok("b", 1), wantErr: saga.ErrStale},
		{name: "ReplyForUnknownStep", setup: started, event: ok("zz", 1), wantErr: saga.ErrUnknownStep},
		{name: "CompensationReplyWhileRunning", setup: atB, event: compOK("a", 1), wantErr: saga.ErrStale},
		{name: "ForwardReplyWhileCompensating", setup: compensatingC, event: ok("c", 1), wantErr: saga.ErrStale},
		{name: "ReplyAfterCompleted", setup: completed, event: ok("d", 1), wantErr: saga.ErrFinished},
		{name: "ReplyAfterCompensated", setup: compensated, event: compOK("a", 1), wantErr: saga.ErrFinished},
		{name: "ReplyAfterFailed", setup: failedAtC, event: compOK("c", 2), wantErr: saga.ErrFinished},
		{
			name: "ReplyWithUnknownOutcome", setup: started,
			event: saga.Event{Kind: saga.EventReply, Step: "a", Attempt: 1, Outcome: "maybe"}, wantErr: saga.ErrInvalidEvent,
		},
		{
			name: "ReplyWithInvalidOutput", setup: started,
			event:   saga.Event{Kind: saga.EventReply, Step: "a", Attempt: 1, Outcome: saga.OutcomeSuccess, Output: json.RawMessage(`{"a":`)},
			wantErr: saga.ErrInvalidEvent,
		},

		// Forward deadlines.
		{
			name: "TimeoutBacksOff", setup: started, event: timeout("a", 1),
			status: saga.StatusRunning, step: 0, attempt: 2, phase: saga.PhaseBackingOff,
			actions: []saga.Action{deadlineAct("a", 2, false, saga.PhaseBackingOff, time.Second)},
			check: func(t *testing.T, inst saga.Instance) {
				require.Equal(t, 1, inst.Steps[0].Attempts, "attempt 2 is not sent yet")
				require.Equal(t, saga.StepRunning, inst.Steps[0].Status)
				require.Equal(t, "attempt 1 timed out", inst.Steps[0].LastError)
			},
		},
		{
			name: "BackoffDeadlineResendsCommand", setup: backingOffA, event: retryDue("a", 2),
			status: saga.StatusRunning, step: 0, attempt: 2, phase: saga.PhaseAwaitingReply,
			actions: []saga.Action{sendCmd("a", 2), deadlineAct("a", 2, false, saga.PhaseAwaitingReply, timeout10)},
		},
		{
			name: "TimeoutOnEveryAttemptCompensatesTheStep", setup: then(atC, timeout("c", 1), retryDue("c", 2)), event: timeout("c", 2),
			status: saga.StatusCompensating, step: 2, attempt: 1, phase: saga.PhaseAwaitingReply, toCompensate: []int{2, 0},
			actions: []saga.Action{sendComp("c", 1), deadlineAct("c", 1, true, saga.PhaseAwaitingReply, timeout10)},
			check: func(t *testing.T, inst saga.Instance) {
				require.Equal(t, `step "c": timed out on all 2 attempts`, inst.LastError)
				require.Equal(t, now, inst.Steps[2].FinishedAt)
			},
		},
		{
			name: "TimeoutOnEveryAttemptWithoutCompensation", setup: then(atB, timeout("b", 1), retryDue("b", 2)), event: timeout("b", 2),
			status: saga.StatusCompensating, step: 0, attempt: 1, phase: saga.PhaseAwaitingReply, toCompensate: []int{0},
			actions: []saga.Action{sendComp("a", 1), deadlineAct("a", 1, true, saga.PhaseAwaitingReply, timeout10)},
			check: func(t *testing.T, inst saga.Instance) {
				require.Equal(t, saga.StepTimedOut, inst.Steps[1].Status)
			},
		},
		{name: "DuplicateTimeoutWhileBackingOff", setup: backingOffA, event: timeout("a", 1), wantErr: saga.ErrStale},
		{name: "DuplicateBackoffDeadline", setup: then(backingOffA, retryDue("a", 2)), event: retryDue("a", 2), wantErr: saga.ErrStale},
		{name: "BackoffDeadlineWhileAwaiting", setup: started, event: retryDue("a", 1), wantErr: saga.ErrStale},
		{name: "DeadlineForOldStep", setup: atB, event: timeout("a", 1), wantErr: saga.ErrStale},
		{name: "DeadlineForUnknownStep", setup: started, event: timeout("zz", 1), wantErr: saga.ErrUnknownStep},
		{name: "CompensationDeadlineWhileRunning", setup: started, event: compTimeout("a", 1), wantErr: saga.ErrStale},
		{name: "ForwardDeadlineWhileCompensating", setup: compensatingC, event: timeout("c", 1), wantErr: saga.ErrStale},
		{name: "DeadlineAfterFinished", setup: completed, event: timeout("d", 1), wantErr: saga.ErrFinished},
		{
			name: "DeadlineWithoutPhase", setup: started,
			event: saga.Event{Kind: saga.EventDeadline, Step: "a", Attempt: 1}, wantErr: saga.ErrInvalidEvent,
		},

		// Compensation.
		{
			name: "CompensationSuccessCompensatesNext", setup: compensatingC, event: compOK("c", 1),
			status: saga.StatusCompensating, step: 0, attempt: 1, phase: saga.PhaseAwaitingReply, toCompensate: []int{0},
			actions: []saga.Action{sendComp("a", 1), deadlineAct("a", 1, true, saga.PhaseAwaitingReply, timeout10)},
			check: func(t *testing.T, inst saga.Instance) {
				require.Equal(t, saga.StepCompensated, inst.Steps[2].Status)
				require.Equal(t, now, inst.Steps[2].CompensationFinishedAt)
			},
		},
		{
			name: "LastCompensationSuccessCompensates", setup: compensatingA, event: compOK("a", 1),
			status: saga.StatusCompensated, step: 0, attempt: 1,
			actions: []saga.Action{finishAct(saga.StatusCompensated)},
			check: func(t *testing.T, inst saga.Instance) {
				require.Equal(t, []saga.StepStatus{saga.StepCompensated, saga.StepCompleted, saga.StepCompensated, saga.StepFailed},
					stepStatuses(inst))
				require.Zero(t, inst.Deadline)
			},
		},
		{
			name: "CompensationFailureBacksOff", setup: compensatingC, event: compFail("c", 1),
			status: saga.StatusCompensating, step: 2, attempt: 2, phase: saga.PhaseBackingOff, toCompensate: []int{2, 0},
			actions: []saga.Action{deadlineAct("c", 2, true, saga.PhaseBackingOff, time.Second)},
		},
		{
			name: "CompensationRefusalBacksOff", setup: compensatingC,
			event:  saga.Event{Kind: saga.EventReply, Step: "c", Attempt: 1, Compensation: true, Outcome: saga.OutcomeCancelled},
			status: saga.StatusCompensating, step: 2, attempt: 2, phase: saga.PhaseBackingOff, toCompensate: []int{2, 0},
			actions: []saga.Action{deadlineAct("c", 2, true, saga.PhaseBackingOff, time.Second)},
		},
		{
			name: "CompensationTimeoutBacksOff", setup: compensatingC, event: compTimeout("c", 1),
			status: saga.StatusCompensating, step: 2, attempt: 2, phase: saga.PhaseBackingOff, toCompensate: []int{2, 0},
			actions: []saga.Action{deadlineAct("c", 2, true, saga.PhaseBackingOff, time.Second)},
		},
		{
			name: "CompensationBackoffDeadlineResends", setup: compBackingOff, event: compRetryDue("c", 2),
			status: saga.StatusCompensating, step: 2, attempt: 2, phase: saga.PhaseAwaitingReply, toCompensate: []int{2, 0},
			actions: []saga.Action{sendComp("c", 2), deadlineAct("c", 2, true, saga.PhaseAwaitingReply, timeout10)},
		},
		{name: "CompensationFailureAlreadyCounted", setup: compBackingOff, event: compFail("c", 1), wantErr: saga.ErrStale},
		{
			name: "LateCompensationSuccessWhileBackingOff", setup: compBackingOff, event: compOK("c", 1),
			status: saga.StatusCompensating, step: 0, attempt: 1, phase: saga.PhaseAwaitingReply, toCompensate: []int{0},
			actions: []saga.Action{sendComp("a", 1), deadlineAct("a", 1, true, saga.PhaseAwaitingReply, timeout10)},
		},
		{
			name: "CompensationExhaustedFails", setup: then(compBackingOff, compRetryDue("c", 2)), event: compTimeout("c", 2),
			status: saga.StatusFailed, step: 2, attempt: 2, toCompensate: []int{2, 0},
			actions: []saga.Action{finishAct(saga.StatusFailed)},
			check: func(t *testing.T, inst saga.Instance) {
				require.Equal(t, `step "c": compensation failed on all 2 attempts: compensation attempt 2 timed out`, inst.LastError)
				require.Equal(t, saga.StepCompensationFailed, inst.Steps[2].Status)
				require.Zero(t, inst.Deadline)
				require.Equal(t, now, inst.FinishedAt)
			},
		},

		// Cancel.
		{
			name: "CancelCompensatesInFlightStepAndCompletedOnes", setup: atD, event: cancelEv(),
			status: saga.StatusCompensating, step: 3, attempt: 1, phase: saga.PhaseAwaitingReply, toCompensate: []int{3, 2, 0},
			actions: []saga.Action{sendComp("d", 1), deadlineAct("d", 1, true, saga.PhaseAwaitingReply, timeout10)},
			check: func(t *testing.T, inst saga.Instance) {
				require.Equal(t, "cancelled by alice: customer asked", inst.LastError)
				require.Equal(t, "cancelled by alice: customer asked", inst.Steps[3].LastError)
			},
		},
		{
			name: "CancelInFlightStepWithoutCompensation", setup: atC[:2], event: saga.Event{Kind: saga.EventCancel},
			status: saga.StatusCompensating, step: 0, attempt: 1, phase: saga.PhaseAwaitingReply, toCompensate: []int{0},
			actions: []saga.Action{sendComp("a", 1), deadlineAct("a", 1, true, saga.PhaseAwaitingReply, timeout10)},
			check: func(t *testing.T, inst saga.Instance) {
				require.Equal(t, saga.StepAborted, inst.Steps[1].Status)
				require.Equal(t, "cancelled", inst.LastError)
			},
		},
		{
			name: "CancelWhileBackingOff", setup: backingOffA, event: cancelEv(),
			status: saga.StatusCompensating, step: 0, attempt: 1, phase: saga.PhaseAwaitingReply, toCompensate: []int{0},
			actions: []saga.Action{sendComp("a", 1), deadlineAct("a", 1, true, saga.PhaseAwaitingReply, timeout10)},
		},
		{
			name: "CancelWithNothingToUndo", def: noCompensationDef, setup: started, event: cancelEv(),
			status: saga.StatusCompensated, step: 0, attempt: 1,
			actions: []saga.Action{finishAct(saga.StatusCompensated)},
			check: func(t *testing.T, inst saga.Instance) {
				require.Equal(t, []saga.StepStatus{saga.StepAborted, saga.StepSkipped}, stepStatuses(inst))
			},
		},
		{name: "CancelWhileCompensating", setup: compensatingC, event: cancelEv(), wantErr: saga.ErrCompensating},
		{name: "CancelCompleted", setup: completed, event: cancelEv(), wantErr: saga.ErrFinished},
		{name: "CancelCompensated", setup: compensated, event: cancelEv(), wantErr: saga.ErrFinished},
		{name: "CancelFailed", setup: failedAtC, event: cancelEv(), wantErr: saga.ErrFinished},
		{name: "CancelBeforeStart", event: cancelEv(), wantErr: saga.ErrNotStarted},

		// Redrive.
		{
			name: "RedriveResumesWithFreshBudgetAndNewAttemptNumber", setup: failedAtC, event: redriveEv(),
			status: saga.StatusCompensating, step: 2, attempt: 3, phase: saga.PhaseAwaitingReply, toCompensate: []int{2, 0},
			actions: []saga.Action{sendComp("c", 3), deadlineAct("c", 3, true, saga.PhaseAwaitingReply, timeout10)},
			check: func(t *testing.T, inst saga.Instance) {
				require.Equal(t, 2, inst.Steps[2].CompensationBase)
				require.Equal(t, saga.StepCompensating, inst.Steps[2].Status)
				require.Zero(t, inst.FinishedAt)
				require.Zero(t, inst.Steps[2].CompensationFinishedAt)
			},
		},
		{
			name: "RedriveBudgetCountsFromRedrive", setup: then(failedAtC, redriveEv()), event: compTimeout("c", 3),
			status: saga.StatusCompensating, step: 2, attempt: 4, phase: saga.PhaseBackingOff, toCompensate: []int{2, 0},
			actions: []saga.Action{deadlineAct("c", 4, true, saga.PhaseBackingOff, time.Second)},
		},
		{
			name: "RedrivenCompensationExhaustsAgain", setup: then(failedAtC, redriveEv(), compTimeout("c", 3), compRetryDue("c", 4)),
			event:  compFail("c", 4),
			status: saga.StatusFailed, step: 2, attempt: 4, toCompensate: []int{2, 0},
			actions: []saga.Action{finishAct(saga.StatusFailed)},
		},
		{name: "ReplyForAttemptBeforeRedrive", setup: then(failedAtC, redriveEv()), event: compOK("c", 2), wantErr: saga.ErrStale},
		{name: "RedriveTwice", setup: then(failedAtC, redriveEv()), event: redriveEv(), wantErr: saga.ErrNotFailed},
		{name: "RedriveRunning", setup: started, event: redriveEv(), wantErr: saga.ErrNotFailed},
		{name: "RedriveCompleted", setup: completed, event: redriveEv(), wantErr: saga.ErrNotFailed},
		{name: "RedriveCompensated", setup: compensated, event: redriveEv(), wantErr: saga.ErrNotFailed},

		// Forward recovery (forwardDef: c and d cannot be undone).
		{
			name: "RetryForwardStepBacksOffOnTimeout", def: forwardDef, setup: atC, event: timeout("c", 1),
			status: saga.StatusRunning, step: 2, attempt: 2, phase: saga.PhaseBackingOff,
			actions: []saga.Action{deadlineAct("c", 2, false, saga.PhaseBackingOff, time.Second)},
		},
		{
			name: "RetryForwardStepHaltsWhenBudgetSpent", def: forwardDef, setup: then(atC, timeout("c", 1), retryDue("c", 2)),
			event:  timeout("c", 2),
			status: saga.StatusFailed, step: 2, attempt: 2,
			actions: []saga.Action{finishAct(saga.StatusFailed)},
			check: func(t *testing.T, inst saga.Instance) {
				require.Equal(t, []saga.StepStatus{saga.StepCompleted, saga.StepCompleted, saga.StepHalted, saga.StepPending},
					stepStatuses(inst), "nothing compensated; d still to run after a redrive")
				require.Equal(t, `step "c": halted: timed out on all 2 attempts; it cannot be undone and its outcome is unknown`, inst.LastError)
				require.Equal(t, now, inst.FinishedAt)
				require.Zero(t, inst.Deadline)
			},
		},
		{
			name: "RetryForwardStepFailureCompensatesTheStepsBefore", def: forwardDef, setup: atC, event: fail("c", 1),
			status: saga.StatusCompensating, step: 1, attempt: 1, phase: saga.PhaseAwaitingReply, toCompensate: []int{1, 0},
			actions: []saga.Action{sendComp("b", 1), deadlineAct("b", 1, true, saga.PhaseAwaitingReply, timeout10)},
			check: func(t *testing.T, inst saga.Instance) {
				require.Equal(t, saga.StepFailed, inst.Steps[2].Status, "the participant says nothing happened")
			},
		},
		{
			name: "FailureAfterPointOfNoReturnHalts", def: forwardDef, setup: atD, event: fail("d", 1),
			status: saga.StatusFailed, step: 3, attempt: 1,
			actions: []saga.Action{finishAct(saga.StatusFailed)},
			check: func(t *testing.T, inst saga.Instance) {
				require.Equal(t, saga.StepHalted, inst.Steps[3].Status)
				require.Equal(t, saga.StepCompleted, inst.Steps[0].Status, "nothing compensated")
				require.Equal(t, `step "d": halted: attempt 1 failed: declined, after the point of no return`, inst.LastError)
			},
		},
		{
			name: "LateSuccessOfHaltedStepDoesNotApply", def: forwardDef, setup: haltedC, event: ok("c", 2),
			wantErr: saga.ErrFinished,
		},
		{name: "CancelRetryForwardStep", def: forwardDef, setup: atC, event: cancelEv(), wantErr: saga.ErrNotCancellable},
		{name: "CancelRetryForwardStepBackingOff", def: forwardDef, setup: then(atC, timeout("c", 1)), event: cancelEv(), wantErr: saga.ErrNotCancellable},
		{name: "CancelPastPointOfNoReturn", def: forwardDef, setup: atD, event: cancelEv(), wantErr: saga.ErrNotCancellable},
		{name: "CancelHalted", def: forwardDef, setup: haltedC, event: cancelEv(), wantErr: saga.ErrFinished},
		{
			name: "CancelBeforePointOfNoReturn", def: forwardDef, setup: atB, event: cancelEv(),
			status: saga.StatusCompensating, step: 1, attempt: 1, phase: saga.PhaseAwaitingReply, toCompensate: []int{1, 0},
			actions: []saga.Action{sendComp("b", 1), deadlineAct("b", 1, true, saga.PhaseAwaitingReply, timeout10)},
		},
		{
			name: "RedriveHaltedStepResumesForward", def: forwardDef, setup: haltedC, event: redriveEv(),
			status: saga.StatusRunning, step: 2, attempt: 3, phase: saga.PhaseAwaitingReply,
			actions: []saga.Action{sendCmd("c", 3), deadlineAct("c", 3, false, saga.PhaseAwaitingReply, timeout10)},
			check: func(t *testing.T, inst saga.Instance) {
				require.Equal(t, 2, inst.Steps[2].AttemptBase)
				require.Equal(t, saga.StepRunning, inst.Steps[2].Status)
				require.Zero(t, inst.FinishedAt)
				require.Zero(t, inst.Steps[2].FinishedAt)
			},
		},
		{
			name: "RedrivenHaltedStepBudgetCountsFromRedrive", def: forwardDef, setup: redrivenHaltedC, event: timeout("c", 3),
			status: saga.StatusRunning, step: 2, attempt: 4, phase: saga.PhaseBackingOff,
			actions: []saga.Action{deadlineAct("c", 4, false, saga.PhaseBackingOff, time.Second)},
		},
		{
			name: "RedrivenHaltedStepHaltsAgain", def: forwardDef, setup: then(redrivenHaltedC, timeout("c", 3), retryDue("c", 4)),
			event:  timeout("c", 4),
			status: saga.StatusFailed, step: 2, attempt: 4,
			actions: []saga.Action{finishAct(saga.StatusFailed)},
		},
		{
			name: "RedrivenHaltedStepSucceedsAndGoesOn", def: forwardDef, setup: redrivenHaltedC, event: ok("c", 3),
			status: saga.StatusRunning, step: 3, attempt: 1, phase: saga.PhaseAwaitingReply,
			actions: []saga.Action{sendCmd("d", 1), deadlineAct("d", 1, false, saga.PhaseAwaitingReply, timeout10)},
		},
		{
			name: "RedriveStepHaltedByFailure", def: forwardDef, setup: haltedD, event: redriveEv(),
			status: saga.StatusRunning, step: 3, attempt: 2, phase: saga.PhaseAwaitingReply,
			actions: []saga.Action{sendCmd("d", 2), deadlineAct("d", 2, false, saga.PhaseAwaitingReply, timeout10)},
		},
		{name: "ReplyForAttemptBeforeHaltedRedrive", def: forwardDef, setup: redrivenHaltedC, event: ok("c", 2), wantErr: saga.ErrStale},

		// Retry a step (fix and continue).
		{
			name: "RetryStepHaltedByFailureIsANewGenerationWithNewInput", def: forwardDef, setup: haltedD, event: retryEv(`{"qty":3}`),
			status: saga.StatusRunning, step: 3, attempt: 2, phase: saga.PhaseAwaitingReply,
			actions: []saga.Action{withGeneration(sendCmd("d", 2), 1), deadlineAct("d", 2, false, saga.PhaseAwaitingReply, timeout10)},
			check: func(t *testing.T, inst saga.Instance) {
				require.JSONEq(t, `{"qty":3}`, string(inst.Data.Input))
				require.Equal(t, 1, inst.Steps[3].Generation)
				require.Equal(t, 1, inst.Steps[3].AttemptBase)
				require.False(t, inst.Steps[3].FailedReply)
				require.Equal(t, saga.StepRunning, inst.Steps[3].Status)
				require.Zero(t, inst.FinishedAt)
				require.JSONEq(t, `{"step":"a"}`, string(inst.Data.Steps["a"]), "outputs kept")
			},
		},
		{
			name: "RetryStepHaltedByTimeoutsKeepsGeneration", def: forwardDef, setup: haltedC, event: retryEv(""),
			status: saga.StatusRunning, step: 2, attempt: 3, phase: saga.PhaseAwaitingReply,
			actions: []saga.Action{sendCmd("c", 3), deadlineAct("c", 3, false, saga.PhaseAwaitingReply, timeout10)},
			check: func(t *testing.T, inst saga.Instance) {
				require.Zero(t, inst.Steps[2].Generation, "its effect may exist: the barrier must answer from its record")
				require.JSONEq(t, `{"qty":2}`, string(inst.Data.Input), "no input given: kept")
			},
		},
		{
			name: "RetriedStepFailsAgainAndIsRetriedInANewerGeneration", def: forwardDef,
			setup: then(haltedD, retryEv(""), fail("d", 2)), event: retryEv(""),
			status: saga.StatusRunning, step: 3, attempt: 3, phase: saga.PhaseAwaitingReply,
			actions: []saga.Action{withGeneration(sendCmd("d", 3), 2), deadlineAct("d", 3, false, saga.PhaseAwaitingReply, timeout10)},
		},
		{
			name: "RetriedStepSucceedsAndCompletes", def: forwardDef, setup: then(haltedD, retryEv(`{"qty":3}`)), event: ok("d", 2),
			status: saga.StatusCompleted, step: 3, attempt: 2,
			actions: []saga.Action{finishAct(saga.StatusCompleted)},
		},
		{name: "ReplyForAttemptBeforeRetry", def: forwardDef, setup: then(haltedD, retryEv("")), event: fail("d", 1), wantErr: saga.ErrStale},
		{name: "RetryRunning", setup: started, event: retryEv(""), wantErr: saga.ErrNotRetryable},
		{name: "RetryCompensating", setup: compensatingC, event: retryEv(""), wantErr: saga.ErrNotRetryable},
		{name: "RetryCompleted", setup: completed, event: retryEv(""), wantErr: saga.ErrNotRetryable},
		{name: "RetryCompensated", setup: compensated, event: retryEv(""), wantErr: saga.ErrNotRetryable},
		{name: "RetryCompensationFailed", setup: failedAtC, event: retryEv(""), wantErr: saga.ErrNotRetryable},
		{name: "RetryWithInvalidInput", def: forwardDef, setup: haltedD, event: retryEv(`{"qty":`), wantErr: saga.ErrInvalidEvent},

		// Pivot (pivotDef: b is the pivot; c and d, compensations or not, are retried forward).
		{
			name: "PivotTimeoutCompensatesIt", def: pivotDef, setup: then(atB, timeout("b", 1), retryDue("b", 2)), event: timeout("b", 2),
			status: saga.StatusCompensating, step: 1, attempt: 1, phase: saga.PhaseAwaitingReply, toCompensate: []int{1, 0},
			actions: []saga.Action{sendComp("b", 1), deadlineAct("b", 1, true, saga.PhaseAwaitingReply, timeout10)},
		},
		{
			name: "PivotFailureCompensatesTheStepsBefore", def: pivotDef, setup: atB, event: fail("b", 1),
			status: saga.StatusCompensating, step: 0, attempt: 1, phase: saga.PhaseAwaitingReply, toCompensate: []int{0},
			actions: []saga.Action{sendComp("a", 1), deadlineAct("a", 1, true, saga.PhaseAwaitingReply, timeout10)},
		},
		{
			name: "FailureAfterPivotHalts", def: pivotDef, setup: atC, event: fail("c", 1),
			status: saga.StatusFailed, step: 2, attempt: 1,
			actions: []saga.Action{finishAct(saga.StatusFailed)},
			check: func(t *testing.T, inst saga.Instance) {
				require.Equal(t, saga.StepHalted, inst.Steps[2].Status)
			},
		},
		{
			name: "StepAfterPivotHaltsWhenBudgetSpent", def: pivotDef, setup: then(atC, timeout("c", 1), retryDue("c", 2)), event: timeout("c", 2),
			status: saga.StatusFailed, step: 2, attempt: 2,
			actions: []saga.Action{finishAct(saga.StatusFailed)},
		},
		{name: "CancelAfterPivot", def: pivotDef, setup: atC, event: cancelEv(), wantErr: saga.ErrNotCancellable},
		{
			name: "CancelPivotInFlight", def: pivotDef, setup: atB, event: cancelEv(),
			status: saga.StatusCompensating, step: 1, attempt: 1, phase: saga.PhaseAwaitingReply, toCompensate: []int{1, 0},
			actions: []saga.Action{sendComp("b", 1), deadlineAct("b", 1, true, saga.PhaseAwaitingReply, timeout10)},
		},

		// Invalid events and instances.
		{
			name: "HaltedWithStepsToCompensate", def: forwardDef, setup: haltedC, event: redriveEv(), wantErr: saga.ErrInvalidInstance,
			edit: func(in *saga.Instance) { in.ToCompensate = []int{0} },
		},
		{name: "ZeroTime", setup: started, event: saga.Event{Kind: saga.EventCancel, Time: time.Time{}}, wantErr: saga.ErrInvalidEvent},
		{name: "RandOutOfRange", setup: started, event: saga.Event{Kind: saga.EventCancel, Rand: 1}, wantErr: saga.ErrInvalidEvent},
		{name: "UnknownKind", setup: started, event: saga.Event{Kind: "poke"}, wantErr: saga.ErrInvalidEvent},
		{
			name: "OtherDefinitionVersion", setup: started, event: ok("a", 1), wantErr: saga.ErrInvalidInstance,
			edit: func(in *saga.Instance) { in.Version = 2 },
		},
		{
			name: "WrongNumberOfSteps", setup: started, event: ok("a", 1), wantErr: saga.ErrInvalidInstance,
			edit: func(in *saga.Instance) { in.Steps = in.Steps[:2] },
		},
		{
			name: "StepOutOfRange", setup: started, event: ok("a", 1), wantErr: saga.ErrInvalidInstance,
			edit: func(in *saga.Instance) { in.Step = 9 },
		},
		{
			name: "CompensationQueueOutOfRange", setup: compensatingC, event: compOK("c", 1), wantErr: saga.ErrInvalidInstance,
			edit: func(in *saga.Instance) { in.ToCompensate = []int{2, 7} },
		},
		{
			name: "CompensatingOtherStepThanQueued", setup: compensatingC, event: compOK("c", 1), wantErr: saga.ErrInvalidInstance,
			edit: func(in *saga.Instance) { in.ToCompensate = []int{0} },
		},
		{
			name: "UnknownStatus", setup: started, event: ok("a", 1), wantErr: saga.ErrInvalidInstance,
			edit: func(in *saga.Instance) { in.Status = "paused" },
		},
		{
			name: "UnknownPhase", setup: started, event: ok("a", 1), wantErr: saga.ErrInvalidInstance,
			edit: func(in *saga.Instance) { in.Phase = "" },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()

			def := testDef()
			if tt.def != nil {
				def = tt.def()
			}
			inst := drive(t, def, tt.setup...)
			if tt.edit != nil {
				inst = inst.Clone()
				tt.edit(&inst)
			}
			before := inst.Clone()
			ev := tt.event
			if ev.Kind != "" && ev.Time.IsZero() && tt.name != "ZeroTime" {
				ev.Time = now
			}

			got, actions, err := saga.Apply(def, inst, ev)
			require.Equal(t, before, inst, "Apply modified its input")
			if tt.wantErr != nil {
				require.ErrorIs(t, err, tt.wantErr)
				var rejected *saga.RejectedError
				require.ErrorAs(t, err, &rejected)
				require.Equal(t, ev.Kind, rejected.Kind)
				require.Equal(t, inst, got, "a rejected event changed the instance")
				require.Nil(t, actions)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.status, got.Status)
			require.Equal(t, tt.step, got.Step)
			require.Equal(t, tt.attempt, got.Attempt)
			require.Equal(t, tt.phase, got.Phase)
			require.Equal(t, tt.toCompensate, got.ToCompensate)
			require.Equal(t, tt.actions, actions)
			require.Equal(t, now, got.UpdatedAt)
			if got.Status.Finished() {
				require.Zero(t, got.Deadline)
			} else {
				require.Equal(t, actions[len(actions)-1].At, got.Deadline)
			}
			if tt.check != nil {
				tt.check(t, got)
			}

			// The same event again changes nothing.
			again, actions, err := saga.Apply(def, got, ev)
			require.Error(t, err)
			require.Nil(t, actions)
			require.Equal(t, got, again)
		})
	}
}

func noCompensationDef() *saga.Definition {
	def := testDef()
	def.Steps = def.Steps[1:3]
	def.Steps[1].Compensation = ""
	return def
}

func stepStatuses(inst saga.Instance) []saga.StepStatus {
	out := make([]saga.StepStatus, len(inst.Steps))
	for i, st := range inst.Steps {
		out[i] = st.Status
	}
	return out
}

func TestStatusFinished(t *testing.T) {
	t.Parallel()

	tests := []struct {
		status saga.Status
		want   bool
	}{
		{saga.StatusRunning, false},
		{saga.StatusCompensating, false},
		{saga.StatusCompleted, true},
		{saga.StatusCompensated, true},
		{saga.StatusFailed, true},
		{"", false},
	}
	for _, tt := range tests {
		t.Run(string(tt.status), func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tt.want, tt.status.Finished())
		})
	}
}

func TestRejectedError(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name string
		err  *saga.RejectedError
		want string
	}{
		{
			name: "Reply",
			err: &saga.RejectedError{Err: saga.ErrStale, SagaID: "42", Kind: saga.EventReply, Step: "pay", Attempt: 2,
				Detail: "attempt 3 is the last sent"},
			want: `saga 42: reply step "pay" attempt 2: stale event: attempt 3 is the last sent`,
		},
		{
			name: "Compensation",
			err:  &saga.RejectedError{Err: saga.ErrFinished, SagaID: "42", Kind: saga.EventDeadline, Step: "pay", Attempt: 1, Compensation: true},
			want: `saga 42: deadline step "pay" attempt 1 (compensation): saga finished`,
		},
		{
			name: "NoSentinel",
			err:  &saga.RejectedError{SagaID: "42", Kind: saga.EventCancel},
			want: `saga 42: cancel: rejected`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tt.want, tt.err.Error())
			require.Equal(t, tt.err.Err != nil, errors.Is(tt.err, tt.err.Err))
			require.NotErrorIs(t, tt.err, saga.ErrNotFailed)
		})
	}
}

func TestInstanceClone(t *testing.T) {
	t.Parallel()

	def := testDef()
	inst := drive(t, def, compensatingC...)
	c := inst.Clone()
	require.Equal(t, inst, c)

	c.Steps[0].Status = saga.StepFailed
	c.ToCompensate[0] = 3
	c.Data.Input[0] = '['
	c.Data.Steps["a"][0] = '['
	c.Data.Steps["z"] = nil
	require.Equal(t, saga.StepCompleted, inst.Steps[0].Status)
	require.Equal(t, []int{2, 0}, inst.ToCompensate)
	require.JSONEq(t, `{"qty":2}`, string(inst.Data.Input))
	require.JSONEq(t, `{"step":"a"}`, string(inst.Data.Steps["a"]))
	require.NotContains(t, inst.Data.Steps, "z")

	require.Equal(t, saga.Instance{}, saga.Instance{}.Clone())
}

func TestInstanceDeadlineEvent(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name  string
		setup []saga.Event
		want  saga.Event
		ok    bool
	}{
		{name: "AwaitingReply", setup: started, want: timeout("a", 1), ok: true},
		{name: "BackingOff", setup: backingOffA, want: retryDue("a", 2), ok: true},
		{name: "Compensating", setup: compBackingOff, want: compRetryDue("c", 2), ok: true},
		{name: "Finished", setup: completed},
		{name: "NotStarted"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()

			def := testDef()
			inst := drive(t, def, tt.setup...)
			ev, ok := inst.DeadlineEvent(now, 0.5)
			require.Equal(t, tt.ok, ok)
			if !tt.ok {
				require.Zero(t, ev)
				return
			}
			tt.want.Time, tt.want.Rand = now, 0.5
			require.Equal(t, tt.want, ev)
			_, _, err := saga.Apply(def, inst, ev)
			require.NoError(t, err, "the deadline event applies")
		})
	}
}

func TestDefinitionRecovery(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name string
		def  func() *saga.Definition
		want []saga.Recovery
	}{
		{name: "DefaultsFollowCompensations", def: forwardDef,
			want: []saga.Recovery{saga.RecoveryCompensate, saga.RecoveryCompensate, saga.RecoveryRetryForward, saga.RecoveryRetryForward}},
		{name: "DeclaredNothingToUndo", def: testDef,
			want: []saga.Recovery{saga.RecoveryCompensate, saga.RecoveryCompensate, saga.RecoveryCompensate, saga.RecoveryCompensate}},
		{name: "AfterPivot", def: pivotDef,
			want: []saga.Recovery{saga.RecoveryCompensate, saga.RecoveryCompensate, saga.RecoveryRetryForward, saga.RecoveryRetryForward}},
		{name: "ExplicitRetryForward", def: func() *saga.Definition {
			def := testDef()
			def.Steps[0].Recovery = saga.RecoveryRetryForward
			return def
		}, want: []saga.Recovery{saga.RecoveryRetryForward, saga.RecoveryCompensate, saga.RecoveryCompensate, saga.RecoveryCompensate}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			def := tt.def()
			got := make([]saga.Recovery, len(def.Steps))
			for i := range def.Steps {
				got[i] = def.Recovery(i)
			}
			require.Equal(t, tt.want, got)
		})
	}
}

func TestLateEffect(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name  string
		def   func() *saga.Definition // nil: testDef
		setup []saga.Event
		event saga.Event
		want  bool
	}{
		{name: "HaltedStepApplied", def: forwardDef, setup: haltedC, event: ok("c", 2), want: true},
		{name: "HaltedStepEarlierAttempt", def: forwardDef, setup: haltedC, event: ok("c", 1), want: true},
		{name: "AttemptNeverSent", def: forwardDef, setup: haltedC, event: ok("c", 3)},
		{name: "FailedStepAppliedAfterAll", setup: compensated, event: ok("d", 1), want: true},
		{name: "FailedStepWhileCompensating", setup: compensatingC, event: ok("d", 1), want: true},
		{name: "NothingToUndoTimedOut", setup: then(atB, timeout("b", 1), retryDue("b", 2), timeout("b", 2)), event: ok("b", 2), want: true},
		{name: "CompensatedStep", setup: compensated, event: ok("c", 1)},
		{name: "CompensatingStep", setup: compensatingC, event: ok("c", 1)},
		{name: "TimedOutStepBeingCompensated", setup: then(atC, timeout("c", 1), retryDue("c", 2), timeout("c", 2)), event: ok("c", 2)},
		{name: "CompensationFailedStep", setup: failedAtC, event: ok("c", 1)},
		{name: "CompletedStep", setup: compensated, event: ok("b", 1)},
		{name: "CompletedSaga", setup: completed, event: ok("d", 1)},
		{name: "RunningSaga", setup: atB, event: ok("a", 1)},
		{name: "FailureReply", def: forwardDef, setup: haltedC, event: fail("c", 2)},
		{name: "CompensationReply", setup: compensated, event: compOK("d", 1)},
		{name: "UnknownStep", setup: compensated, event: ok("zz", 1)},
		{name: "NotAReply", def: forwardDef, setup: haltedC, event: timeout("c", 2)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			def := testDef()
			if tt.def != nil {
				def = tt.def()
			}
			inst := drive(t, def, tt.setup...)
			ev := tt.event
			ev.Time = now
			_, _, err := saga.Apply(def, inst, ev)
			require.Error(t, err, "LateEffect judges replies that do not apply")
			require.Equal(t, tt.want, saga.LateEffect(def, inst, ev))
		})
	}
}

func retrying(step string, attempt int, reason string) saga.Event {
	return saga.Event{Kind: saga.EventReply, Step: step, Attempt: attempt, Outcome: saga.OutcomeRetrying, Reason: reason}
}

// TestApplyRetrying: a participant's news that an awaited attempt failed transiently changes
// nothing but the last errors, which a timeout of that attempt then names; news of an attempt no
// longer awaited is stale.
func TestApplyRetrying(t *testing.T) {
	t.Parallel()
	def := testDef()
	base := drive(t, def, startEv())

	inst, actions, err := saga.Apply(def, base, withTime(retrying("a", 1, "ledger locked")))
	require.NoError(t, err)
	require.Empty(t, actions, "news changes no state: nothing is sent, no deadline moves")
	require.Equal(t, base.Status, inst.Status)
	require.Equal(t, base.Phase, inst.Phase)
	require.Equal(t, base.Attempt, inst.Attempt)
	require.Equal(t, saga.StepRunning, inst.Steps[0].Status)
	require.Equal(t, "attempt 1: handler error: ledger locked", inst.Steps[0].LastError)
	require.Equal(t, `step "a": attempt 1: handler error: ledger locked`, inst.LastError)

	inst, _, err = saga.Apply(def, inst, withTime(timeout("a", 1)))
	require.NoError(t, err)
	require.Equal(t, "attempt 1 timed out (the handler's last error: ledger locked)", inst.Steps[0].LastError)

	// Backing off before attempt 2: news of attempt 1 is stale, and attempt 2 times out plainly.
	_, _, err = saga.Apply(def, inst, withTime(retrying("a", 1, "late news")))
	require.ErrorIs(t, err, saga.ErrStale)
	inst, _, err = saga.Apply(def, inst, withTime(retryDue("a", 2)))
	require.NoError(t, err)
	inst, _, err = saga.Apply(def, inst, withTime(timeout("a", 2)))
	require.NoError(t, err)
	require.Contains(t, inst.LastError, "timed out")
	require.NotContains(t, inst.LastError, "the handler's last error", "attempt 2 had no news")
}

// withTime gives ev the time and randomness Apply needs.
func withTime(ev saga.Event) saga.Event {
	ev.Time, ev.Rand = now, 0.5
	return ev
}
