package engine

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if a goroutine outlives them (Run, the timers, the batcher,
// the PostgreSQL listener and the test participants must all stop).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// The pool of internal/pgtest's admin connection lives for the whole test binary.
		goleak.IgnoreTopFunction("database/sql.(*DB).connectionOpener"),
	)
}
