package saga

import "slices"

// LateEffect reports whether ev, a reply that Apply rejected for inst, reports an effect that
// nothing will undo: a forward success, on a finished or compensating saga, for a step whose
// effect the saga neither kept (the step did not complete) nor undoes (its compensation has not
// run, is not running and is not queued). Such a reply must not be ignored silently: the effect
// exists outside the saga's account of itself (a halted step applied after all, a step that failed
// then applied, a step declared to have nothing to undo), and an operator has to look at it.
//
// A late success for a step whose compensation has run, is running or is queued is no late
// effect: the participant's barrier refuses a forward command that arrives after its compensation
// (answering it cancelled), so a forward that succeeded ran before its compensation, which undoes
// it. A late success for a step that completed repeats what the saga already knows.
//
// LateEffect is pure and reads only its arguments; it returns false for any other event, for an
// unknown step, and for an attempt that was never sent.
func LateEffect(def *Definition, inst Instance, ev Event) bool {
	if ev.Kind != EventReply || ev.Compensation || ev.Outcome != OutcomeSuccess {
		return false
	}
	if !inst.Status.Finished() && inst.Status != StatusCompensating {
		return false
	}
	i := def.StepIndex(ev.Step)
	if i < 0 || i >= len(inst.Steps) || ev.Attempt < 1 || ev.Attempt > inst.Steps[i].Attempts {
		return false
	}
	switch inst.Steps[i].Status {
	case StepCompleted, StepCompensating, StepCompensated, StepCompensationFailed:
		return false
	}
	return def.Steps[i].Compensation == "" || !slices.Contains(inst.ToCompensate, i)
}
