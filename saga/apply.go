package saga

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Apply applies event ev to instance inst of definition def and returns the new instance and the
// actions the engine must carry out, in order, in the same transaction that stores it.
//
// For EventStart, inst is the zero Instance. Apply never modifies inst: the new instance shares
// with it only the slices and maps it did not change (copy on write), so the caller may keep both.
// When the event does not apply — a stale or duplicate reply or deadline, a finished saga, an
// unknown step, an invalid event — Apply returns inst unchanged, no action and a *RejectedError
// matching one of the sentinels in errors.go; the caller records the event, logs and ignores it.
//
// Apply is pure and deterministic: it reads no clock and no global random source (Event.Time and
// Event.Rand stand in for them), performs no I/O and is safe for concurrent use. def must be a
// valid definition (see the definitions package); Apply panics on one without steps.
func Apply(def *Definition, inst Instance, ev Event) (Instance, []Action, error) {
	m := machine{def: def, ev: ev, in: inst}
	if err := m.apply(); err != nil {
		return inst, nil, err
	}
	return m.in, m.actions, nil
}

// machine carries one transition: the instance being built and the actions it emits.
type machine struct {
	def *Definition
	ev  Event
	in  Instance
	// stepsOwned is set once in.Steps is a copy this transition may write.
	stepsOwned bool
	actions    []Action
}

func (m *machine) apply() error {
	if err := m.checkEvent(); err != nil {
		return err
	}
	if m.ev.Kind == EventStart {
		return m.start()
	}
	if m.in.Status == "" {
		return m.reject(ErrNotStarted, "")
	}
	if err := m.checkInstance(); err != nil {
		return err
	}
	switch m.ev.Kind {
	case EventReply:
		return m.reply()
	case EventDeadline:
		return m.deadline()
	case EventCancel:
		return m.cancel()
	case EventRetryStep:
		return m.retryStep()
	default: // EventRedrive; checkEvent rejected the rest
		return m.redrive()
	}
}

func (m *machine) checkEvent() error {
	ev := &m.ev
	switch {
	case ev.Time.IsZero():
		return m.reject(ErrInvalidEvent, "zero time")
	case !(ev.Rand >= 0 && ev.Rand < 1):
		return m.reject(ErrInvalidEvent, "rand "+strconv.FormatFloat(ev.Rand, 'g', -1, 64)+" outside [0, 1)")
	}
	switch ev.Kind {
	case EventStart:
		if ev.ID == "" {
			return m.reject(ErrInvalidEvent, "empty saga id")
		}
		if len(ev.Input) > 0 && !json.Valid(ev.Input) {
			return m.reject(ErrInvalidEvent, "input is not valid JSON")
		}
	case EventReply:
		switch ev.Outcome {
		case OutcomeSuccess:
			if len(ev.Output) > 0 && !json.Valid(ev.Output) {
				return m.reject(ErrInvalidEvent, "output is not valid JSON")
			}
		case OutcomeFailure, OutcomeCancelled, OutcomeRetrying:
		default:
			return m.reject(ErrInvalidEvent, "unknown outcome "+strconv.Quote(string(ev.Outcome)))
		}
	case EventDeadline:
		if ev.Phase != PhaseAwaitingReply && ev.Phase != PhaseBackingOff {
			return m.reject(ErrInvalidEvent, "unknown deadline phase "+strconv.Quote(string(ev.Phase)))
		}
	case EventRetryStep:
		if len(ev.Input) > 0 && !json.Valid(ev.Input) {
			return m.reject(ErrInvalidEvent, "input is not valid JSON")
		}
	case EventCancel, EventRedrive:
	default:
		return m.reject(ErrInvalidEvent, "unknown kind "+strconv.Quote(string(ev.Kind)))
	}
	return nil
}

// checkInstance rejects an instance that def cannot have produced, so that the transitions can
// index without further checks.
func (m *machine) checkInstance() error {
	in, def := &m.in, m.def
	switch {
	case in.Definition != def.Name || in.Version != def.Version:
		return m.reject(ErrInvalidInstance, fmt.Sprintf("instance of %s v%d, definition %s v%d",
			in.Definition, in.Version, def.Name, def.Version))
	case len(in.Steps) != len(def.Steps):
		return m.reject(ErrInvalidInstance, fmt.Sprintf("%d step states for %d steps", len(in.Steps), len(def.Steps)))
	case in.Step < 0 || in.Step >= len(def.Steps):
		return m.reject(ErrInvalidInstance, fmt.Sprintf("step index %d out of range", in.Step))
	}
	for _, i := range in.ToCompensate {
		if i < 0 || i >= len(def.Steps) {
			return m.reject(ErrInvalidInstance, fmt.Sprintf("step index %d to compensate out of range", i))
		}
	}
	switch in.Status {
	case StatusRunning, StatusCompensating:
		if in.Phase != PhaseAwaitingReply && in.Phase != PhaseBackingOff {
			return m.reject(ErrInvalidInstance, "unknown phase "+strconv.Quote(string(in.Phase)))
		}
	case StatusCompleted, StatusCompensated, StatusFailed:
	default:
		return m.reject(ErrInvalidInstance, "unknown status "+strconv.Quote(string(in.Status)))
	}
	halted := in.Status == StatusFailed && in.Steps[in.Step].Status == StepHalted
	if halted && len(in.ToCompensate) > 0 {
		return m.reject(ErrInvalidInstance, "halted with steps to compensate")
	}
	if (in.Status == StatusCompensating || (in.Status == StatusFailed && !halted)) &&
		(len(in.ToCompensate) == 0 || in.ToCompensate[0] != in.Step) {
		return m.reject(ErrInvalidInstance, "current step is not the first to compensate")
	}
	return nil
}

func (m *machine) start() error {
	if m.in.Status != "" || m.in.ID != "" {
		return m.reject(ErrAlreadyStarted, "status "+string(m.in.Status))
	}
	ev, def := &m.ev, m.def
	steps := make([]StepState, len(def.Steps))
	for i := range def.Steps {
		steps[i] = StepState{Name: def.Steps[i].Name, Status: StepPending}
	}
	m.in = Instance{
		ID:          ev.ID,
		Definition:  def.Name,
		Version:     def.Version,
		BusinessKey: ev.BusinessKey,
		Status:      StatusRunning,
		Steps:       steps,
		Data:        Data{Input: ev.Input, Steps: map[string]json.RawMessage{}},
		CreatedAt:   ev.Time,
		UpdatedAt:   ev.Time,
	}
	m.stepsOwned = true
	m.sendForward(0)
	return nil
}

func (m *machine) reply() error {
	in, ev := &m.in, &m.ev
	if in.Status.Finished() {
		return m.reject(ErrFinished, "status "+string(in.Status))
	}
	i := m.def.StepIndex(ev.Step)
	if i < 0 {
		return m.reject(ErrUnknownStep, "")
	}
	compensating := in.Status == StatusCompensating
	if err := m.checkCurrent(i, compensating); err != nil {
		return err
	}
	// The reply is for the last attempt sent: Attempt while awaiting it, Attempt-1 while backing
	// off before the next one (a late reply to the attempt that timed out still tells the outcome).
	sent := in.Attempt
	if in.Phase == PhaseBackingOff {
		sent--
	}
	if ev.Attempt != sent {
		return m.reject(ErrStale, "attempt "+strconv.Itoa(sent)+" is the last sent")
	}
	if ev.Outcome == OutcomeRetrying {
		return m.retrying(i)
	}
	if compensating && ev.Outcome != OutcomeSuccess && in.Phase == PhaseBackingOff {
		return m.reject(ErrStale, "attempt already counted as failed")
	}
	m.touch()
	if compensating {
		if ev.Outcome != OutcomeSuccess {
			m.compensationAttemptFailed(i, "compensation attempt "+strconv.Itoa(ev.Attempt)+" "+outcomeText(ev))
			return nil
		}
		m.compensated(i)
		return nil
	}
	if ev.Outcome != OutcomeSuccess {
		m.forwardFailed(i)
		return nil
	}
	st := m.stepState(i)
	st.Status = StepCompleted
	st.FinishedAt = ev.Time
	in.Data = in.Data.withOutput(m.def.Steps[i].Name, ev.Output)
	if i+1 < len(m.def.Steps) {
		m.sendForward(i + 1)
	} else {
		m.finish(StatusCompleted)
	}
	return nil
}

// retrying records the participant's news that the awaited attempt of step i could not be applied
// this time: the step's and the saga's LastError say why; the state does not change (the deadline
// still decides). News of an attempt no longer awaited is stale.
func (m *machine) retrying(i int) error {
	if m.in.Phase != PhaseAwaitingReply {
		return m.reject(ErrStale, "attempt "+strconv.Itoa(m.ev.Attempt)+" is no longer awaited")
	}
	m.touch()
	st := m.stepState(i)
	what := "attempt "
	if m.in.Status == StatusCompensating {
		what = "compensation attempt "
	}
	st.LastError = what + strconv.Itoa(m.ev.Attempt) + retryingPrefix + m.ev.Reason
	m.in.LastError = "step " + strconv.Quote(st.Name) + ": " + st.LastError
	return nil
}

// retryingPrefix follows the attempt number in the LastError that news of a handler error leaves.
const retryingPrefix = ": handler error: "

// timedOut is the LastError of attempt n of a step that timed out, naming the handler's last error
// for that attempt when the participant reported one.
func timedOut(what string, n int, prev string) string {
	s := what + strconv.Itoa(n) + " timed out"
	if cause, ok := strings.CutPrefix(prev, what+strconv.Itoa(n)+retryingPrefix); ok {
		s += " (the handler's last error: " + cause + ")"
	}
	return s
}

func (m *machine) deadline() error {
	in, ev := &m.in, &m.ev
	if in.Status.Finished() {
		return m.reject(ErrFinished, "status "+string(in.Status))
	}
	i := m.def.StepIndex(ev.Step)
	if i < 0 {
		return m.reject(ErrUnknownStep, "")
	}
	compensating := in.Status == StatusCompensating
	if err := m.checkCurrent(i, compensating); err != nil {
		return err
	}
	if ev.Attempt != in.Attempt || ev.Phase != in.Phase {
		return m.reject(ErrStale, "the pending deadline is for attempt "+strconv.Itoa(in.Attempt)+" ("+string(in.Phase)+")")
	}
	m.touch()
	switch {
	case in.Phase == PhaseBackingOff && compensating:
		m.sendCompensation(i)
	case in.Phase == PhaseBackingOff:
		m.sendForward(i)
	case compensating:
		m.compensationAttemptFailed(i, timedOut("compensation attempt ", ev.Attempt, m.stepState(i).LastError))
	default:
		m.forwardTimedOut(i)
	}
	return nil
}

// checkCurrent rejects a reply or deadline that is not for the current step in the current
// direction.
func (m *machine) checkCurrent(i int, compensating bool) error {
	switch {
	case m.ev.Compensation && !compensating:
		return m.reject(ErrStale, "compensation event while "+string(m.in.Status))
	case !m.ev.Compensation && compensating:
		return m.reject(ErrStale, "forward event while compensating")
	case i != m.in.Step:
		return m.reject(ErrStale, "step "+strconv.Quote(m.in.Steps[m.in.Step].Name)+" is current")
	}
	return nil
}

func (m *machine) cancel() error {
	in, ev := &m.in, &m.ev
	switch in.Status {
	case StatusRunning:
	case StatusCompensating:
		return m.reject(ErrCompensating, "")
	default:
		return m.reject(ErrFinished, "status "+string(in.Status))
	}
	// Compensating would abandon the current step's effect (its command is in flight or backing
	// off, so it may have applied) or one that an earlier step committed to.
	switch i := in.Step; {
	case m.def.Recovery(i) == RecoveryRetryForward:
		return m.reject(ErrNotCancellable, "step "+strconv.Quote(m.def.Steps[i].Name)+" cannot be undone: it is retried forward")
	case m.committed(i):
		return m.reject(ErrNotCancellable, "the saga passed its point of no return: it only goes forward")
	}
	m.touch()
	cause := "cancelled"
	if ev.Actor != "" {
		cause += " by " + ev.Actor
	}
	if ev.Reason != "" {
		cause += ": " + ev.Reason
	}
	// A command was sent for the current step (a running saga always has one in flight or backing
	// off), so its outcome is unknown: compensate it too.
	i := in.Step
	st := m.stepState(i)
	st.Status = StepAborted
	st.FinishedAt = ev.Time
	st.LastError = cause
	in.LastError = cause
	m.compensate(m.toCompensate(i, true))
	return nil
}

func (m *machine) redrive() error {
	in := &m.in
	if in.Status != StatusFailed {
		return m.reject(ErrNotFailed, "status "+string(in.Status))
	}
	m.touch()
	i := in.Step
	st := m.stepState(i)
	in.FinishedAt = time.Time{}
	if st.Status == StepHalted {
		// Resume going forward: the barrier answers a retry of an applied command from its record.
		st.AttemptBase = st.Attempts
		st.FinishedAt = time.Time{}
		m.sendForward(i)
		return nil
	}
	st.CompensationBase = st.CompensationAttempts
	st.CompensationFinishedAt = time.Time{}
	m.sendCompensation(i)
	return nil
}

// retryStep retries the halted forward step of a failed saga with a fresh budget, with the event's
// input (if any) replacing the saga's. Only a halted step qualifies: a saga that compensated (or
// is compensating, or failed compensating) undid steps, and going forward again would redo them.
// After a failure or refusal reply the step did not apply and the participant recorded that
// outcome, so the retry is a new generation of the step; after timeouts its outcome is unknown, so
// the generation stays and the participant answers from its record if the step applied.
func (m *machine) retryStep() error {
	in, ev := &m.in, &m.ev
	i := in.Step
	switch {
	case in.Status == StatusCompensated:
		return m.reject(ErrNotRetryable, "the saga is compensated: its compensations ran")
	case in.Status != StatusFailed:
		return m.reject(ErrNotRetryable, "status "+string(in.Status)+", want failed on a halted step")
	case in.Steps[i].Status != StepHalted:
		return m.reject(ErrNotRetryable, "step "+strconv.Quote(in.Steps[i].Name)+" is "+string(in.Steps[i].Status)+
			": its compensation failed (redrive resumes it)")
	}
	m.touch()
	if len(ev.Input) > 0 {
		in.Data.Input = ev.Input
	}
	st := m.stepState(i)
	if st.FailedReply {
		st.Generation++
	}
	st.AttemptBase = st.Attempts
	st.FinishedAt = time.Time{}
	in.FinishedAt = time.Time{}
	m.sendForward(i)
	return nil
}

// forwardFailed handles a business failure or refusal of step i: it did not apply, so it is not
// compensated; the steps before it are — unless one of them committed the saga to going forward,
// which then stops for an operator.
func (m *machine) forwardFailed(i int) {
	ev := &m.ev
	st := m.stepState(i)
	st.LastError = "attempt " + strconv.Itoa(ev.Attempt) + " " + outcomeText(ev)
	if m.committed(i) {
		m.halt(i, st.LastError+", after the point of no return")
		st.FailedReply = true
		return
	}
	st.Status = StepFailed
	st.FinishedAt = ev.Time
	m.in.LastError = "step " + strconv.Quote(st.Name) + ": " + st.LastError
	m.compensate(m.toCompensate(i, false))
}

// forwardTimedOut handles the timeout of the awaited forward attempt of step i: retry after a
// backoff or, with the budget spent, compensate the step (its outcome is unknown) and the ones
// before it; a step that cannot be undone, or one past the point of no return, halts instead: its
// effect may exist, so the saga must not end compensated.
func (m *machine) forwardTimedOut(i int) {
	st := m.stepState(i)
	st.LastError = timedOut("attempt ", m.in.Attempt, st.LastError)
	m.in.LastError = "step " + strconv.Quote(st.Name) + ": " + st.LastError
	policy := &m.def.Steps[i].Retry
	used := st.Attempts - st.AttemptBase
	if m.backOff(policy, used) {
		return
	}
	if m.def.Recovery(i) == RecoveryRetryForward || m.committed(i) {
		m.halt(i, "timed out on all "+strconv.Itoa(used)+" attempts; it cannot be undone and its outcome is unknown")
		return
	}
	st.Status = StepTimedOut
	st.FinishedAt = m.ev.Time
	m.in.LastError = "step " + strconv.Quote(st.Name) + ": timed out on all " + strconv.Itoa(st.Attempts) + " attempts"
	m.compensate(m.toCompensate(i, true))
}

// committed reports whether the saga passed its point of no return before step i: a step before
// it that cannot be undone (retried forward, or the pivot) completed. From there on the saga can
// only go forward.
func (m *machine) committed(i int) bool {
	for j := range i {
		if m.in.Steps[j].Status == StepCompleted && m.def.irreversible(j) {
			return true
		}
	}
	return false
}

// halt stops the saga failed on step i, which cannot go forward and must not be abandoned: an
// operator redrives it (resuming its forward attempts) once the cause is fixed.
func (m *machine) halt(i int, why string) {
	st := m.stepState(i)
	st.Status = StepHalted
	st.FinishedAt = m.ev.Time
	st.LastError = why
	m.in.LastError = "step " + strconv.Quote(st.Name) + ": halted: " + why
	m.in.ToCompensate = nil
	m.finish(StatusFailed)
}

// compensationAttemptFailed handles a timed-out, failed or refused compensation attempt of step i:
// retry after a backoff or, with the budget spent, end failed.
func (m *machine) compensationAttemptFailed(i int, why string) {
	st := m.stepState(i)
	st.LastError = why
	m.in.LastError = "step " + strconv.Quote(st.Name) + ": " + why
	policy := &m.def.Steps[i].CompensationRetry
	used := st.CompensationAttempts - st.CompensationBase
	if m.backOff(policy, used) {
		return
	}
	st.Status = StepCompensationFailed
	st.CompensationFinishedAt = m.ev.Time
	m.in.LastError = "step " + strconv.Quote(st.Name) + ": compensation failed on all " + strconv.Itoa(used) +
		" attempts: " + why
	m.finish(StatusFailed)
}

// backOff schedules the next attempt of the current action after the used-th failed one, and
// reports false when policy allows no more.
func (m *machine) backOff(policy *RetryPolicy, used int) bool {
	if used >= policy.MaxAttempts {
		return false
	}
	m.in.Attempt++
	m.schedule(m.ev.Time.Add(Backoff(*policy, used, m.ev.Rand)), PhaseBackingOff)
	return true
}

// compensated handles the success of step i's compensation: compensate the next step, or finish.
func (m *machine) compensated(i int) {
	st := m.stepState(i)
	st.Status = StepCompensated
	st.CompensationFinishedAt = m.ev.Time
	rest := m.in.ToCompensate[1:]
	if len(rest) == 0 {
		m.in.ToCompensate = nil
		m.finish(StatusCompensated)
		return
	}
	m.in.ToCompensate = rest
	m.sendCompensation(rest[0])
}

// toCompensate lists, in the order to compensate them, the steps up to i that have a compensation
// and applied or may have: the completed ones before i, and i itself if withCurrent (its outcome is
// unknown). Steps run one at a time in order, so reverse index order is reverse order of completion.
func (m *machine) toCompensate(i int, withCurrent bool) []int {
	var q []int
	if withCurrent && m.def.Steps[i].Compensation != "" && m.in.Steps[i].Attempts > 0 {
		q = make([]int, 0, i+1)
		q = append(q, i)
	}
	for j := i - 1; j >= 0; j-- {
		if m.in.Steps[j].Status == StepCompleted && m.def.Steps[j].Compensation != "" {
			if q == nil {
				q = make([]int, 0, j+1)
			}
			q = append(q, j)
		}
	}
	return q
}

// compensate starts compensating the steps in q, or finishes compensated when q is empty.
func (m *machine) compensate(q []int) {
	m.in.ToCompensate = q
	if len(q) == 0 {
		m.finish(StatusCompensated)
		return
	}
	m.sendCompensation(q[0])
}

func (m *machine) sendForward(i int) {
	step, st := &m.def.Steps[i], m.stepState(i)
	st.Attempts++
	st.Status = StepRunning
	st.FailedReply = false
	if st.StartedAt.IsZero() {
		st.StartedAt = m.ev.Time
	}
	m.in.Status = StatusRunning
	m.in.Step = i
	m.in.Attempt = st.Attempts
	m.emit(Action{Kind: ActionSendCommand, Step: step.Name, Service: step.Service, Command: step.Command, Attempt: st.Attempts,
		Generation: st.Generation})
	m.schedule(m.ev.Time.Add(step.Timeout), PhaseAwaitingReply)
}

func (m *machine) sendCompensation(i int) {
	step, st := &m.def.Steps[i], m.stepState(i)
	st.CompensationAttempts++
	st.Status = StepCompensating
	if st.CompensationStartedAt.IsZero() {
		st.CompensationStartedAt = m.ev.Time
	}
	m.in.Status = StatusCompensating
	m.in.Step = i
	m.in.Attempt = st.CompensationAttempts
	m.emit(Action{
		Kind: ActionSendCompensation, Step: step.Name, Service: step.Service, Command: step.Compensation,
		Attempt: st.CompensationAttempts, Compensation: true, Generation: st.Generation,
	})
	m.schedule(m.ev.Time.Add(step.Timeout), PhaseAwaitingReply)
}

// schedule sets the instance's single pending deadline for its current action and emits it.
func (m *machine) schedule(at time.Time, phase Phase) {
	m.in.Deadline = at
	m.in.Phase = phase
	m.emit(Action{
		Kind: ActionScheduleDeadline, Step: m.def.Steps[m.in.Step].Name, Attempt: m.in.Attempt,
		Compensation: m.in.Status == StatusCompensating, At: at, Phase: phase,
	})
}

func (m *machine) finish(status Status) {
	m.in.Status = status
	m.in.Phase = PhaseNone
	m.in.Deadline = time.Time{}
	m.in.FinishedAt = m.ev.Time
	// The steps after a halted one still run after a redrive: they stay pending.
	if status != StatusCompleted && m.in.Steps[m.in.Step].Status != StepHalted {
		for i := range m.in.Steps {
			if m.in.Steps[i].Status == StepPending {
				m.stepState(i).Status = StepSkipped
			}
		}
	}
	m.emit(Action{Kind: ActionFinish, Status: status})
}

// stepState returns step i's state for writing, copying the shared slice on first write.
func (m *machine) stepState(i int) *StepState {
	if !m.stepsOwned {
		m.in.Steps = slices.Clone(m.in.Steps)
		m.stepsOwned = true
	}
	return &m.in.Steps[i]
}

func (m *machine) touch() {
	m.in.UpdatedAt = m.ev.Time
}

func (m *machine) emit(a Action) {
	if m.actions == nil {
		m.actions = make([]Action, 0, 2)
	}
	m.actions = append(m.actions, a)
}

func (m *machine) reject(sentinel error, detail string) error {
	e := &RejectedError{Err: sentinel, SagaID: m.in.ID, Kind: m.ev.Kind, Detail: detail}
	if m.ev.Kind == EventStart {
		e.SagaID = m.ev.ID
	}
	if m.ev.Kind == EventReply || m.ev.Kind == EventDeadline {
		e.Step, e.Attempt, e.Compensation = m.ev.Step, m.ev.Attempt, m.ev.Compensation
	}
	return e
}

// outcomeText describes a non-success reply for LastError.
func outcomeText(ev *Event) string {
	s := "failed"
	if ev.Outcome == OutcomeCancelled {
		s = "refused (cancelled)"
	}
	if ev.Reason != "" {
		s += ": " + ev.Reason
	}
	return s
}
