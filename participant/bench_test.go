package participant_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"

	"github.com/sagaflow/sagaflow/internal/pgtest"
	"github.com/sagaflow/sagaflow/internal/protocol"
	"github.com/sagaflow/sagaflow/participant"
)

// BenchmarkParticipant measures commands handled per second on PostgreSQL, end to end: publish to
// JetStream, barrier + handler write + reply in the outbox per command, relay to SAGA_REPLIES.
// Batch=1 is one commit per command; larger batches share a commit.
//
//	go test -run '^$' -bench BenchmarkParticipant -benchtime 20x ./participant
func BenchmarkParticipant(b *testing.B) {
	for _, batch := range []int{1, 32, 128} {
		b.Run(fmt.Sprintf("Postgres/Batch=%d", batch), func(b *testing.B) {
			const perRound = 500
			bd := setup(b, pgtest.New(b))
			bd.participant(b, participant.Config{Batch: batch}, func(p *participant.Participant) {
				p.Handle("Do", func(ctx context.Context, tx *sqlx.Tx, cmd participant.Command) (participant.Result, error) {
					if _, err := tx.ExecContext(ctx, tx.Rebind(`INSERT INTO effects (saga_id, step, action) VALUES (?, ?, 'forward')`), cmd.SagaID, cmd.Step); err != nil {
						return participant.Result{}, err
					}
					return participant.Success(map[string]bool{"ok": true}), nil
				})
			})
			replies := bd.replies(b)
			b.ReportAllocs()
			for b.Loop() {
				msgs := make([]*message.Message, perRound)
				for i := range msgs {
					msgs[i] = command(uuid.NewString(), "one", "Do", protocol.ActionForward, 1).Message()
				}
				require.NoError(b, bd.pub.Publish(protocol.CommandSubject(service, "Do"), msgs...))
				for range perRound {
					next(b, replies)
				}
			}
			b.ReportMetric(float64(perRound*b.N)/b.Elapsed().Seconds(), "commands/s")
		})
	}
}
