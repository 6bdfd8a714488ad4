package bus

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sagaflow/sagaflow/internal/natstest"
)

// TestNamespaceNames pins the names of every stream, subject filter and durable with and without a
// namespace: the empty namespace must keep today's names exactly, or existing deployments lose
// their streams and consumers.
func TestNamespaceNames(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		ns       Namespace
		streams  []streamSubject
		durable  string
		dlqTopic string
	}{
		{
			name: "Default",
			streams: []streamSubject{
				{"SAGA_COMMANDS", "saga.cmd.>"}, {"SAGA_REPLIES", "saga.reply.>"},
				{"EVENTS", "events.>"}, {"SAGA_DLQ", "saga.dlq.>"},
			},
			durable:  "sagaflow-orchestrator",
			dlqTopic: "saga.dlq.",
		},
		{
			name: "Acme",
			ns:   "acme-eu-1",
			streams: []streamSubject{
				{"ACME_EU_1_SAGA_COMMANDS", "acme-eu-1.saga.cmd.>"}, {"ACME_EU_1_SAGA_REPLIES", "acme-eu-1.saga.reply.>"},
				{"ACME_EU_1_EVENTS", "acme-eu-1.events.>"}, {"ACME_EU_1_SAGA_DLQ", "acme-eu-1.saga.dlq.>"},
			},
			durable:  "acme-eu-1-sagaflow-orchestrator",
			dlqTopic: "acme-eu-1.saga.dlq.",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			require.NoError(t, tt.ns.Validate())
			require.Equal(t, tt.streams, tt.ns.streams())
			require.Equal(t, tt.durable, tt.ns.Durable("sagaflow-orchestrator"))
			require.Equal(t, tt.dlqTopic, tt.ns.Subject(DLQPrefix))
			for _, s := range tt.streams {
				sc, err := StreamConfig(s.name, StreamsConfig{Namespace: tt.ns})
				require.NoError(t, err)
				require.Equal(t, []string{s.subject}, sc.Subjects)
				ns, _, ok := namespaceOf(streamSubject{sc.Name, sc.Subjects[0]})
				require.True(t, ok, s.name)
				require.Equal(t, tt.ns, ns)
				require.Equal(t, s.name, observedStreams(sc).Namespace.Stream(trimNS(tt.ns, s.name)))
			}
			cmd := tt.ns.Subject("saga.cmd.svc.Do")
			require.True(t, tt.ns.OwnSubject(cmd))
			name, ok := tt.ns.StreamOf(cmd)
			require.True(t, ok)
			require.Equal(t, tt.streams[0].name, name)
		})
	}
	t.Run("Isolated", func(t *testing.T) {
		t.Parallel()
		require.False(t, Namespace("a").OwnSubject("b.saga.cmd.svc.Do"))
		require.False(t, Namespace("a").OwnSubject("saga.cmd.svc.Do"))
		_, err := StreamConfig("SAGA_COMMANDS", StreamsConfig{Namespace: "a"})
		require.Error(t, err, "a namespace has no unprefixed stream")
	})
}

// trimNS is the stream name without ns's prefix.
func trimNS(ns Namespace, name string) string {
	return name[len(ns.Stream("")):]
}

func TestNamespaceValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		ns Namespace
		ok bool
	}{
		{"", true}, {"a", true}, {"acme-1", true}, {"abcdefghijklmnopqrstuvwxyz012345", true},
		{"abcdefghijklmnopqrstuvwxyz0123456", false}, {"Acme", false}, {"a.b", false}, {"a_b", false},
		{"a>", false}, {"a b", false}, {"events", false}, {"events-1", true},
	}
	for _, tt := range tests {
		t.Run(string(tt.ns), func(t *testing.T) {
			t.Parallel()
			err := tt.ns.Validate()
			if tt.ok {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			require.Error(t, StreamsConfig{Namespace: tt.ns}.validate(), "StreamsConfig reports it")
		})
	}
}

// TestRememberNamespace: a connection on which EnsureStreams was not called still knows its
// namespace's streams (readiness names them, healing recreates them), and a Subscriber's
// observation of an existing stream fills in the other settings.
func TestRememberNamespace(t *testing.T) {
	t.Parallel()
	js := natstest.New(t, nil).JetStream(t)
	RememberNamespace(js, "a")
	require.Equal(t, StreamsConfig{Namespace: "a"}, streamsFor(js))
	missing, err := MissingStreams(t.Context(), js)
	require.NoError(t, err)
	require.Equal(t, []string{"A_SAGA_COMMANDS", "A_SAGA_REPLIES", "A_EVENTS", "A_SAGA_DLQ"}, missing)

	observed := StreamsConfig{Namespace: "a", Replicas: 1, Duplicates: 5 * time.Second}
	rememberStreams(js, observed, false)
	require.Equal(t, observed, streamsFor(js), "an observation fills in a namespace-only entry")
	RememberNamespace(js, "a")
	require.Equal(t, observed, streamsFor(js), "and is not overwritten by it")

	other := natstest.New(t, nil).JetStream(t)
	RememberNamespace(other, "")
	require.Equal(t, StreamsConfig{}, streamsFor(other), "the empty namespace records nothing")
}
