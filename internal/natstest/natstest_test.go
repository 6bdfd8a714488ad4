package natstest_test

import (
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/sagaflow/sagaflow/internal/natstest"
)

func TestServerKeepsStreamAcrossRestart(t *testing.T) {
	t.Parallel()
	srv := natstest.New(t, nil)
	js := srv.JetStream(t)
	ctx := t.Context()
	_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}, Storage: jetstream.FileStorage})
	require.NoError(t, err)
	_, err = js.Publish(ctx, "t.a", []byte("one"))
	require.NoError(t, err)

	url := srv.URL()
	srv.Stop()
	srv.Start()
	require.Equal(t, url, srv.URL())

	js2 := srv.JetStream(t)
	st, err := js2.Stream(ctx, "T")
	require.NoError(t, err)
	require.Equal(t, uint64(1), st.CachedInfo().State.Msgs)
}

func TestServerRestartsEmptyAfterWipeStore(t *testing.T) {
	t.Parallel()
	srv := natstest.New(t, nil)
	js := srv.JetStream(t)
	ctx := t.Context()
	_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}, Storage: jetstream.FileStorage})
	require.NoError(t, err)

	url := srv.URL()
	srv.Stop()
	srv.WipeStore()
	srv.Start()
	require.Equal(t, url, srv.URL())
	_, err = srv.JetStream(t).Stream(ctx, "T")
	require.ErrorIs(t, err, jetstream.ErrStreamNotFound)
}
