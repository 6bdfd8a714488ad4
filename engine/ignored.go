package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/sagaflow/sagaflow/internal/sqldb"
)

// maxRepeatedIgnored bounds the history a spammed saga grows by: once a saga's last
// maxRepeatedIgnored entries are identical ignored events (the same step, attempt, action, outcome,
// event and reason: a participant or an attacker re-sending one reply), a further identical one is
// not appended but counted in the latest entry's detail ("repeated": how many more arrived,
// "last_at" and "last_message_id": the latest of them).
const maxRepeatedIgnored = 10

// ignoredKey is what makes two ignored entries identical.
type ignoredKey struct {
	step, action, outcome, event, reason string
	attempt                              int
}

// ignoredDetail is the part of an ignored entry's detail that collapsing reads and writes.
type ignoredDetail struct {
	Event    string `json:"event"`
	Reason   string `json:"reason"`
	Repeated int    `json:"repeated,omitempty"`
}

func keyOfIgnored(h *HistoryEntry) (ignoredKey, bool) {
	if h.Kind != HistoryIgnored {
		return ignoredKey{}, false
	}
	var d ignoredDetail
	_ = json.Unmarshal(h.Detail, &d) // a detail of another shape has an empty event and reason
	return ignoredKey{step: h.Step, action: h.Action, outcome: h.Outcome, event: d.Event, reason: d.Reason, attempt: h.Attempt}, true
}

// bump counts one more identical ignored event, arrived at at with message id msgID, in h's detail.
func bump(h *HistoryEntry, at time.Time, msgID string) {
	m := map[string]any{}
	_ = json.Unmarshal(h.Detail, &m)
	n, _ := m["repeated"].(float64)
	m["repeated"] = int(n) + 1
	m["last_at"] = at.UTC().Format(time.RFC3339Nano)
	if msgID != "" {
		m["last_message_id"] = msgID
	}
	h.Detail, _ = json.Marshal(m) // decoded JSON values: cannot fail
}

// collapseIgnored drops, before they are written, the ignored entries of this transaction that
// repeat the saga's last maxRepeatedIgnored entries, counting each in the latest of those instead,
// and renumbers what follows. It reads the stored tail of the history only for sagas that have an
// ignored entry in this transaction, so the hot path pays nothing. Call it before the rows are
// stored (it moves their history sequence back).
func (t *tx) collapseIgnored(ctx context.Context) error {
	bySaga := map[string]*row{}
	for _, r := range t.changed {
		bySaga[r.inst.ID] = r
	}
	type entryKey struct {
		sagaID string
		seq    int64
	}
	tails := map[string][]HistoryEntry{} // per saga whose tail is loaded: its latest entries, oldest first
	bumped := map[entryKey]json.RawMessage{}
	shift := map[string]int64{}
	out := t.history[:0]
	for _, h := range t.history {
		h.Seq -= shift[h.SagaID]
		key, ignored := keyOfIgnored(&h)
		tail, loaded := tails[h.SagaID]
		if ignored && !loaded {
			stored, err := t.e.store.historyTail(ctx, t.sql, h.SagaID, h.Seq, maxRepeatedIgnored)
			if err != nil {
				return err
			}
			tail = stored
			for _, p := range out { // this transaction's earlier entries of the saga
				if p.SagaID == h.SagaID {
					tail = append(tail, p)
				}
			}
			loaded = true
		}
		if ignored && repeats(tail, key) {
			last := &tail[len(tail)-1]
			var d struct {
				MessageID string `json:"message_id"`
			}
			_ = json.Unmarshal(h.Detail, &d)
			bump(last, h.At, d.MessageID)
			bumped[entryKey{h.SagaID, last.Seq}] = last.Detail
			shift[h.SagaID]++
			bySaga[h.SagaID].historySeq--
			tails[h.SagaID] = tail
			continue
		}
		out = append(out, h)
		if loaded {
			tail = append(tail, h)
			if len(tail) > maxRepeatedIgnored {
				tail = tail[len(tail)-maxRepeatedIgnored:]
			}
			tails[h.SagaID] = tail
		}
	}
	t.history = out
	// Write the bumped details: into an entry of this transaction, or over a stored one.
	for i := range t.history {
		k := entryKey{t.history[i].SagaID, t.history[i].Seq}
		if d, ok := bumped[k]; ok {
			t.history[i].Detail = d
			delete(bumped, k)
		}
	}
	for k, d := range bumped {
		if err := t.e.store.updateHistoryDetail(ctx, t.sql, k.sagaID, k.seq, d); err != nil {
			return err
		}
	}
	return nil
}

// repeats reports whether tail holds maxRepeatedIgnored entries that are all ignored ones with key.
func repeats(tail []HistoryEntry, key ignoredKey) bool {
	if len(tail) < maxRepeatedIgnored {
		return false
	}
	for i := range tail[len(tail)-maxRepeatedIgnored:] {
		k, ok := keyOfIgnored(&tail[len(tail)-maxRepeatedIgnored+i])
		if !ok || k != key {
			return false
		}
	}
	return true
}

// historyTail returns the stored entries of saga id before sequence number before, the latest n of
// them, oldest first.
func (s *store) historyTail(ctx context.Context, q sqlx.QueryerContext, id string, before int64, n int) ([]HistoryEntry, error) {
	var rows []struct {
		Seq     int64  `db:"seq"`
		Kind    string `db:"kind"`
		Step    string `db:"step"`
		Attempt int    `db:"attempt"`
		Action  string `db:"action"`
		Outcome string `db:"outcome"`
		Detail  []byte `db:"detail"`
	}
	query := `SELECT seq, kind, step, attempt, action, outcome, detail FROM sagaflow_history WHERE saga_id = ? AND seq < ? ORDER BY seq DESC LIMIT ?`
	if err := sqlx.SelectContext(ctx, q, &rows, sqlx.Rebind(bindOf(s.dialect), query), id, before, n); err != nil {
		return nil, fmt.Errorf("read history tail of saga %s: %w", id, sqldb.Translate(err))
	}
	out := make([]HistoryEntry, len(rows))
	for i, r := range rows {
		out[len(rows)-1-i] = HistoryEntry{SagaID: id, Seq: r.Seq, Kind: HistoryKind(r.Kind), Step: r.Step, Attempt: r.Attempt,
			Action: r.Action, Outcome: r.Outcome, Detail: json.RawMessage(r.Detail)}
	}
	return out, nil
}

// updateHistoryDetail replaces the detail of one stored history entry.
func (s *store) updateHistoryDetail(ctx context.Context, tx sqlx.ExecerContext, id string, seq int64, detail json.RawMessage) error {
	q := `UPDATE sagaflow_history SET detail = ? WHERE saga_id = ? AND seq = ?`
	if _, err := tx.ExecContext(ctx, sqlx.Rebind(bindOf(s.dialect), q), string(detail), id, seq); err != nil {
		return fmt.Errorf("update history %d of saga %s: %w", seq, id, sqldb.Translate(err))
	}
	return nil
}
