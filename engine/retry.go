package engine

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/jmoiron/sqlx"

	"github.com/sagaflow/sagaflow/internal/sqldb"
	"github.com/sagaflow/sagaflow/saga"
)

// RetryOpts are the knobs of RetryStep. The zero value retries with the saga's input unchanged.
type RetryOpts struct {
	// Actor names who retries, for the history (for example "cli:alice").
	Actor string
	// Reason says why, for the history.
	Reason string
	// InputPatch is a JSON merge patch (RFC 7386) applied to the saga's input: members set to
	// null are removed, objects are merged, anything else replaces. Exclusive with Input.
	InputPatch json.RawMessage
	// Input replaces the saga's input. Exclusive with InputPatch.
	Input json.RawMessage
}

// RetryStep retries the halted forward step of the failed saga id ("fix and continue"): with a
// fresh retry budget and, when opts gives one, a corrected input (merged into or replacing the
// saga's input, which every later command carries too). The saga then continues from that step.
//
// Only a saga failed on a halted step can be retried: a step that failed after the point of no
// return, or a step that cannot be undone and timed out on its whole budget. After a failure reply
// the retry is a new generation of the step (Sagaflow-Step-Generation), so the participant runs
// its handler again instead of answering the recorded failure; after timeouts the step's effect
// may exist, so the generation stays and the participant answers from its record if it applied.
//
// The retry is recorded in the history (HistoryRetryStep) with actor, reason and the input before
// and after, and clears NeedsAttention. RetryStep fails with an error matching saga.ErrNotRetryable
// for any other saga (running, compensating, completed, compensated — its compensations ran — or
// failed on a compensation, which Redrive resumes), ErrInvalidInput for a patch or input that is
// not JSON, and ErrNotFound when there is no such instance.
func (e *Engine) RetryStep(ctx context.Context, id string, opts *RetryOpts) error {
	var o RetryOpts
	if opts != nil {
		o = *opts
	}
	if len(o.InputPatch) > 0 && len(o.Input) > 0 {
		return fmt.Errorf("retry saga %s: give an input patch or a new input, not both: %w", id, ErrInvalidInput)
	}
	for _, raw := range []json.RawMessage{o.InputPatch, o.Input} {
		if len(raw) > 0 && !json.Valid(raw) {
			return fmt.Errorf("retry saga %s: input is not valid JSON: %w", id, ErrInvalidInput)
		}
	}
	var t *tx
	err := sqldb.InTx(ctx, e.cfg.DB, func(sqlTx *sqlx.Tx) error {
		r, err := e.store.lockOne(ctx, sqlTx, "retry", id)
		if err != nil {
			return err
		}
		def, err := e.cfg.Definitions.Get(r.inst.Definition, r.inst.Version)
		if err != nil {
			return fmt.Errorf("retry saga %s: %w", id, err)
		}
		before := r.inst.Data.Input
		if len(before) == 0 {
			before = json.RawMessage("null")
		}
		after := o.Input
		if len(o.InputPatch) > 0 {
			if after, err = mergePatch(before, o.InputPatch); err != nil {
				return fmt.Errorf("retry saga %s: %w", id, err)
			}
		}
		kv := []any{"reason", o.Reason}
		if i := r.inst.Step; i >= 0 && i < len(r.inst.Steps) {
			kv = append(kv, "step", r.inst.Steps[i].Name)
		}
		if len(o.InputPatch) > 0 {
			kv = append(kv, "input_patch", o.InputPatch)
		}
		if len(after) > 0 {
			kv = append(kv, "input_before", before, "input_after", after)
		}
		t = e.newTx(sqlTx)
		ev := saga.Event{Kind: saga.EventRetryStep, Time: t.now, Rand: e.rand(), Actor: o.Actor, Reason: o.Reason, Input: after}
		meta := eventMeta{actor: o.Actor, detail: detail(kv...)}
		if inst, _, err := saga.Apply(def, r.inst, ev); err == nil {
			// The generation the retry runs in, for the history.
			kv = append(kv, "generation", inst.Steps[inst.Step].Generation)
			meta.detail = detail(kv...)
		}
		rejected, err := t.apply(def, r, ev, meta)
		if err != nil {
			return err
		}
		if rejected != nil { // rolled back: a refused request leaves no trace
			return fmt.Errorf("retry saga %s: %w", id, rejected)
		}
		if err := e.checkHeaders(t.msgs); err != nil {
			return fmt.Errorf("retry saga %s: %w", id, err)
		}
		return t.flush(ctx)
	})
	if err != nil {
		return err
	}
	t.committed(ctx)
	return nil
}

// mergePatch applies the JSON merge patch (RFC 7386) patch to doc. It is written here rather than
// taken from a library: the algorithm is the dozen lines of the RFC's pseudo-code, and the
// libraries that offer it bring JSON Patch (RFC 6902) and reflection along.
func mergePatch(doc, patch json.RawMessage) (json.RawMessage, error) {
	var d, p any
	if err := json.Unmarshal(doc, &d); err != nil {
		return nil, fmt.Errorf("decode input: %w", err)
	}
	if err := json.Unmarshal(patch, &p); err != nil {
		return nil, fmt.Errorf("decode input patch: %w: %w", ErrInvalidInput, err)
	}
	out, err := json.Marshal(mergeValue(d, p))
	if err != nil {
		return nil, fmt.Errorf("encode patched input: %w", err)
	}
	return out, nil
}

func mergeValue(target, patch any) any {
	p, ok := patch.(map[string]any)
	if !ok {
		return patch
	}
	t, ok := target.(map[string]any)
	if !ok {
		t = map[string]any{}
	}
	for k, v := range p {
		if v == nil {
			delete(t, k)
			continue
		}
		t[k] = mergeValue(t[k], v)
	}
	return t
}
