// Package saga is the pure model of Sagaflow: definitions, saga instances, the events that move
// them and the actions they ask for, and the one function, Apply, that turns (definition,
// instance, event) into (new instance, actions).
//
// It performs no I/O, reads no clock, uses no global randomness and starts no goroutine: the time
// and the random number a transition needs arrive inside the event, so the same inputs always give
// the same outputs. The engine package stores instances, turns actions into outbox messages and
// timers, and feeds replies, expired deadlines and operator requests back in as events.
//
// # Types
//
//   - [Definition]: the immutable workflow, built and validated by the definitions package. Each
//     step's [Recovery] says whether it is compensated or retried forward.
//   - [Instance]: one saga's state, a plain value stored as JSON and columns. Its [Status] is
//     running, compensating, completed, compensated or failed; Steps holds each step's
//     [StepState]; Data holds the input and the outputs of completed steps and is the payload of
//     every command; Deadline is its single pending deadline.
//   - [Event]: start, reply, deadline, cancel or redrive, with the current time and a random
//     number.
//   - [Action]: send a command, send a compensation, schedule the deadline, or finish.
//   - [RejectedError]: why an event did not apply, matching a sentinel of errors.go.
//   - [LateEffect]: whether a rejected reply reports an effect that nothing will undo.
//
// # Usage
//
// The engine runs every event through Apply inside one database transaction:
//
//	inst, err := store.Lock(ctx, tx, sagaID)            // the zero Instance for a start
//	next, actions, err := saga.Apply(def, inst, saga.Event{
//		Kind: saga.EventReply, Time: clock.Now(), Rand: rng.Float64(),
//		Step: hdr.Step, Attempt: hdr.Attempt, Compensation: hdr.Compensation,
//		Outcome: hdr.Outcome, Output: body,
//	})
//	if err != nil {                                      // stale, duplicate, finished...
//		history.Record(ctx, tx, inst, ev, err)           // recorded and ignored
//		return nil
//	}
//	store.Save(ctx, tx, next)                            // next.Deadline drives the timer
//	for _, a := range actions {
//		switch a.Kind {
//		case saga.ActionSendCommand, saga.ActionSendCompensation:
//			outbox.Write(ctx, tx, a, next.Data)          // payload: the JSON of next.Data
//		case saga.ActionScheduleDeadline, saga.ActionFinish:
//			// recorded with the instance (Deadline, Status) and in its history
//		}
//	}
//
// When an instance's Deadline passes, the engine applies the event that
// [Instance.DeadlineEvent] builds.
//
// # Semantics
//
// Steps run one at a time, in order. Each command waits for its reply until the step's Timeout;
// a timed-out attempt is retried per the step's Retry policy, after [Backoff], re-sending the
// same command (the participant's barrier answers a retry from its record). A success reply's
// output is merged into Data.Steps under the step's name and the next step starts; after the last
// one the saga is completed.
//
// A business failure (or a refusal of a hanging command) means the step did not apply: it is not
// retried and not compensated, and the saga compensates the completed steps before it. A step that
// timed out on every attempt has an unknown outcome and is compensated too, as is the step in
// flight when an operator cancels. Compensations run one at a time, in reverse order of
// completion, skipping steps without a compensation command; each is retried, on timeout or on
// any non-success reply, per the step's CompensationRetry policy. When every compensation has
// succeeded the saga is compensated; when one exhausts its budget the saga is failed and waits for
// an operator, whose redrive resumes that compensation with a fresh budget.
//
// # Forward recovery
//
// After the compensatable, pivot and retriable steps of the saga literature, each step has a
// [Recovery]. A compensatable step (RecoveryCompensate, the default with a compensation) behaves
// as above. A retriable step (RecoveryRetryForward, the default without a compensation and for
// every step after the Definition's Pivot) cannot be undone, so it is never abandoned: its
// timeouts are retried per its Retry policy and, when that budget is spent, the saga stops failed
// with the step [StepHalted] instead of compensating the steps before it — its outcome is unknown,
// so its effect may exist. Once a retriable step or the pivot has completed, the saga has passed
// its point of no return: any later failure halts it the same way, and it cannot be cancelled
// (ErrNotCancellable), nor while a retriable step is in flight. A business failure of a retriable
// step before that point says nothing happened, so the steps before it are compensated. A redrive
// of a halted saga resumes the step's forward attempts with a fresh budget.
//
// # Guarantees
//
// After every event Apply accepts:
//   - a saga never compensates, and so never ends compensated, while the effect of a step that
//     cannot be undone may exist (a retriable step that completed or timed out, a pivot that
//     completed);
//   - a finished instance (completed, compensated, failed) never changes, except that a redrive
//     resumes a failed one;
//   - at most one command or compensation is awaited at a time, and an unfinished instance has
//     exactly one pending deadline, emitted as an ActionScheduleDeadline equal to its Deadline;
//   - a compensation is sent only for a step that completed or whose outcome is unknown, and
//     compensations go out in reverse order of completion;
//   - attempt numbers of a step's command and of its compensation are never reused, even across
//     redrives, so a late reply or deadline is always recognised as stale;
//   - an event that does not apply, including a duplicate of one already applied, returns an
//     error and the instance unchanged, so applying an event twice is the same as once;
//   - feeding only deadlines, every saga finishes: nothing waits forever.
//
// Apply never modifies the instance it is given (copy on write), so a caller may keep the old
// value, and it is safe for concurrent use.
package saga
