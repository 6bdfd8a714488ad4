package engine

import (
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jmoiron/sqlx"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/sagaflow/sagaflow/definitions"
	"github.com/sagaflow/sagaflow/internal/bus"
	"github.com/sagaflow/sagaflow/internal/dbtest"
)

func TestBusinessKey(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		payload string
		path    string
		want    string
		wantErr string
	}{
		{name: "TopLevelString", payload: `{"order_id":"o-1"}`, path: "order_id", want: "o-1"},
		{name: "TopLevelNumber", payload: `{"order_id":42}`, path: "order_id", want: "42"},
		{name: "DottedPath", payload: `{"output":{"flight_ref":"LH-400"}}`, path: "output.flight_ref", want: "LH-400"},
		{name: "DeepPath", payload: `{"a":{"b":{"c":7}}}`, path: "a.b.c", want: "7"},
		{name: "FieldNamedWithADotWins", payload: `{"a.b":"flat","a":{"b":"nested"}}`, path: "a.b", want: "flat"},
		{name: "MissingLeaf", payload: `{"output":{}}`, path: "output.flight_ref", wantErr: `payload has no field "output.flight_ref"`},
		{name: "MissingParent", payload: `{"x":1}`, path: "output.flight_ref", wantErr: `payload has no field "output.flight_ref"`},
		{name: "ParentNotAnObject", payload: `{"output":"s"}`, path: "output.flight_ref", wantErr: `payload has no field "output.flight_ref"`},
		{name: "Null", payload: `{"output":{"flight_ref":null}}`, path: "output.flight_ref", wantErr: "no field"},
		{name: "Empty", payload: `{"output":{"flight_ref":""}}`, path: "output.flight_ref", wantErr: "is empty"},
		{name: "Object", payload: `{"output":{"flight_ref":{}}}`, path: "output.flight_ref", wantErr: "want a string or a number"},
		{name: "NotAnObject", payload: `[1]`, path: "a", wantErr: "not a JSON object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := businessKey([]byte(tt.payload), tt.path)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				require.ErrorIs(t, err, ErrInvalidInput)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}
}

// nextDead returns the next dead-lettered message, waiting up to 30 seconds.
func nextDead(t *testing.T, dlq jetstream.Consumer) jetstream.Msg {
	t.Helper()
	dead, err := dlq.Next(jetstream.FetchMaxWait(30 * time.Second))
	require.NoError(t, err)
	return dead
}

func TestTriggerDottedKey(t *testing.T) {
	t.Parallel()
	dbtest.Each(t, func(t *testing.T, db *sqlx.DB) {
		w := newWorld(t)
		def, err := definitions.New("booked", 1).Trigger("events.flight.booked", "output.flight_ref").
			Step("confirm", "booking", "Confirm").Build()
		require.NoError(t, err)
		e := w.startEngine(db, registry(t, def), nil)
		w.participant("booking", succeed(`{}`))
		dlq, err := w.js.OrderedConsumer(t.Context(), bus.StreamDLQ, jetstream.OrderedConsumerConfig{})
		require.NoError(t, err)

		require.NoError(t, w.pub.Publish("events.flight.booked", message.NewMessage("ev-1", []byte(`{"output":{"flight_ref":"LH-400"}}`))))
		var inst *Instance
		eventually(t, "the event starts a saga keyed by output.flight_ref", func() bool {
			inst, err = e.GetByKey(t.Context(), "booked", "LH-400")
			return err == nil
		})
		require.Equal(t, "LH-400", wait(t, e, inst.ID).BusinessKey)

		require.NoError(t, w.pub.Publish("events.flight.booked", message.NewMessage("ev-2", []byte(`{"output":{"ref":"x"}}`))))
		dead := nextDead(t, dlq)
		require.Equal(t, "saga.dlq.events.flight.booked", dead.Subject())
		require.Contains(t, dead.Headers().Get(bus.HeaderDLQReason), `"output.flight_ref"`)
		list, err := e.List(t.Context(), Filter{Definition: "booked"})
		require.NoError(t, err)
		require.Len(t, list, 1)
	})
}
