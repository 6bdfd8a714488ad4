package natsembed

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
)

// TestStreamsSurviveRestart publishes to a stream, restarts the server on the same directory and
// reads the message back: dev mode keeps its streams across restarts.
func TestStreamsSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	srv, err := Start(Config{Dir: dir})
	require.NoError(t, err)
	t.Cleanup(srv.Shutdown)
	require.Regexp(t, `^nats://127\.0\.0\.1:\d+$`, srv.ClientURL())

	js := connect(t, srv.ClientURL())
	_, err = js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}, Storage: jetstream.FileStorage})
	require.NoError(t, err)
	_, err = js.Publish(ctx, "t.x", []byte("kept"))
	require.NoError(t, err)
	srv.Shutdown()

	srv2, err := Start(Config{Dir: dir})
	require.NoError(t, err)
	t.Cleanup(srv2.Shutdown)
	stream, err := connect(t, srv2.ClientURL()).Stream(ctx, "T")
	require.NoError(t, err)
	msg, err := stream.GetLastMsgForSubject(ctx, "t.x")
	require.NoError(t, err)
	require.Equal(t, "kept", string(msg.Data))
}

func TestStartNeedsDir(t *testing.T) {
	_, err := Start(Config{})
	require.ErrorContains(t, err, "Dir")
}

func connect(t *testing.T, url string) jetstream.JetStream {
	nc, err := nats.Connect(url)
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	return js
}
