package bus_test

import (
	"fmt"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/tests"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/sagaflow/sagaflow/internal/bus"
	"github.com/sagaflow/sagaflow/internal/natstest"
)

// pubSubFeatures are the honest features of the bus for Watermill's universal suite.
func pubSubFeatures() tests.Features {
	return tests.Features{
		// A Subscriber's Durable is a consumer group: every Subscriber with the same Durable (and
		// topic) shares one durable consumer, each message going to one of them; another Durable
		// gets every message again.
		ConsumerGroups: true,
		// At least once, not exactly once: a message not acknowledged within AckWait (or whose
		// double ack is lost) is delivered again. Publish-side dedup (Nats-Msg-Id) is not
		// consumer-side exactly-once; Sagaflow's inbox and participant barrier provide that.
		ExactlyOnceDelivery: false,
		// No: a Subscriber hands up to MaxInFlight messages out before the first is acknowledged
		// (the router handles them concurrently), a Nacked message comes back after later ones, and
		// consumers of one group share messages. Not even with a single subscriber (TestNoAck
		// expects the next message only after the previous one's ack).
		GuaranteedOrder:                     false,
		GuaranteedOrderWithSingleSubscriber: false,
		// Streams use file storage and durable consumers survive their Subscriber: a new
		// Subscriber resumes where the last one of its group stopped.
		Persistent: true,
		// Publisher and Subscriber are separate values over one connection; any number of them
		// work together.
		RequireSingleInstance: false,
		// No: a new Subscriber of an existing group resumes after what the group acknowledged; only
		// a new group (a new Durable) reads the stream from its beginning.
		NewSubscriberReceivesOldMessages: false,
		// The message's context is the subscription's, not the publisher's (the trace context
		// travels in headers instead).
		ContextPreserved: false,
		// Broker restarts are tested in heal_test.go and internal/e2e with natstest's Stop/Start;
		// the suite's restart hook runs an external command, so TestReconnect is skipped.
		RestartServiceCommand: nil,
		// Topics are subjects the EVENTS stream captures; TestConcurrentSubscribeMultipleTopics
		// and TestTopic add "-<n>" to them.
		GenerateTopicFunc: func(tctx tests.TestContext) string { return "events.wmtest." + string(tctx.TestID) },
	}
}

// pubSubConstructors returns the suite's constructors over one in-process JetStream server.
func pubSubConstructors(t *testing.T) (tests.PubSubConstructor, tests.ConsumerGroupPubSubConstructor) {
	t.Helper()
	js := natstest.New(t, nil).JetStream(t)
	require.NoError(t, bus.EnsureStreams(t.Context(), js, bus.StreamsConfig{}))
	group := func(t *testing.T, consumerGroup string) (message.Publisher, message.Subscriber) {
		return newPubSub(t, js, consumerGroup)
	}
	plain := func(t *testing.T) (message.Publisher, message.Subscriber) {
		return newPubSub(t, js, "wmtest")
	}
	return plain, group
}

func newPubSub(t *testing.T, js jetstream.JetStream, durable string) (message.Publisher, message.Subscriber) {
	pub, err := bus.NewPublisher(js, bus.PublisherConfig{})
	require.NoError(t, err)
	sub, err := bus.NewSubscriber(js, bus.SubscriberConfig{
		Stream:  bus.StreamEvents,
		Durable: durable,
		// The suite assumes that a Nacked message comes back however often it is Nacked
		// (TestContinueAfterErrors Nacks each of its messages about six times). Sagaflow bounds
		// deliveries and dead-letters the last one instead (TestDeadLetter*, TestSubscriberAbandons).
		MaxDeliver: 1000,
	})
	require.NoError(t, err)
	return pub, sub
}

// TestPubSub runs Watermill's universal Pub/Sub suite (watermill/pubsub/tests) against the bus.
func TestPubSub(t *testing.T) {
	t.Parallel()
	plain, group := pubSubConstructors(t)
	tests.TestPubSub(t, pubSubFeatures(), plain, group)
}

// TestPubSubStress runs the suite a few times at once in short mode, as Watermill's
// TestPubSubStressTest does (ten times by default, too many for a shared 2-core machine).
func TestPubSubStress(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("a stress run: the whole suite three times at once, a soak test that -short leaves out (STYLE.md §8)")
	}
	features := pubSubFeatures()
	features.ForceShort = true
	for i := range 3 {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			t.Parallel()
			plain, group := pubSubConstructors(t)
			tests.TestPubSub(t, features, plain, group)
		})
	}
}
