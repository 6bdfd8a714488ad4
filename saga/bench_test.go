package saga_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/sagaflow/sagaflow/saga"
)

// BenchmarkApply measures the state machine alone, per event: a four-step saga run to completion
// (start + four replies) and one compensated after its last step fails (start, four replies, three
// compensation replies).
func BenchmarkApply(b *testing.B) {
	def := testDef()
	out := json.RawMessage(`{"id":"x-1"}`)
	runs := []struct {
		name   string
		events []saga.Event
	}{
		{"Completed", []saga.Event{startEv(), ok("a", 1), ok("b", 1), ok("c", 1), ok("d", 1)}},
		{"Compensated", []saga.Event{startEv(), ok("a", 1), ok("b", 1), ok("c", 1), fail("d", 1),
			compOK("c", 1), compOK("a", 1)}},
	}
	for _, r := range runs {
		for i := range r.events {
			r.events[i].Time = t0.Add(time.Duration(i) * time.Second)
			if r.events[i].Output != nil {
				r.events[i].Output = out
			}
		}
		b.Run(r.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				var inst saga.Instance
				for _, ev := range r.events {
					var err error
					inst, _, err = saga.Apply(def, inst, ev)
					if err != nil {
						b.Fatal(err)
					}
				}
				if !inst.Status.Finished() {
					b.Fatalf("saga ended %s", inst.Status)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(r.events)), "ns/event")
		})
	}
}

// ExampleApply runs a two-step saga whose second step fails: the first step is compensated.
func ExampleApply() {
	def := &saga.Definition{Name: "transfer", Version: 1, Steps: []saga.Step{
		{Name: "debit", Service: "bank", Command: "Debit", Compensation: "Credit",
			Timeout: 5 * time.Second, Retry: saga.RetryPolicy{MaxAttempts: 1}, CompensationRetry: saga.RetryPolicy{MaxAttempts: 3, Backoff: time.Second, MaxBackoff: time.Second}},
		{Name: "notify", Service: "mail", Command: "Send",
			Timeout: 5 * time.Second, Retry: saga.RetryPolicy{MaxAttempts: 1}},
	}}
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	events := []saga.Event{
		{Kind: saga.EventStart, ID: "s-1", Input: json.RawMessage(`{"amount":10}`)},
		{Kind: saga.EventReply, Step: "debit", Attempt: 1, Outcome: saga.OutcomeSuccess, Output: json.RawMessage(`{"tx":7}`)},
		{Kind: saga.EventReply, Step: "notify", Attempt: 1, Outcome: saga.OutcomeFailure, Reason: "no address"},
		{Kind: saga.EventReply, Step: "debit", Attempt: 1, Compensation: true, Outcome: saga.OutcomeSuccess},
	}
	var inst saga.Instance
	for _, ev := range events {
		ev.Time = at
		var actions []saga.Action
		var err error
		inst, actions, err = saga.Apply(def, inst, ev)
		if err != nil {
			fmt.Println("rejected:", err)
			return
		}
		for _, a := range actions {
			switch a.Kind {
			case saga.ActionSendCommand, saga.ActionSendCompensation:
				fmt.Printf("%s %s.%s attempt %d\n", a.Kind, a.Service, a.Command, a.Attempt)
			case saga.ActionFinish:
				fmt.Printf("%s %s\n", a.Kind, a.Status)
			}
		}
	}
	// Output:
	// send_command bank.Debit attempt 1
	// send_command mail.Send attempt 1
	// send_compensation bank.Credit attempt 1
	// finish compensated
}
