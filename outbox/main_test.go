package outbox_test

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// lib/pq's Listener and database/sql's connection openers outlive a closed pool briefly.
		goleak.IgnoreTopFunction("database/sql.(*DB).connectionOpener"),
	)
}
