package console_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if a goroutine outlives them (the node, the participants and
// the browser's connection must all stop).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// The pool of internal/pgtest's admin connection lives for the whole test binary.
		goleak.IgnoreTopFunction("database/sql.(*DB).connectionOpener"),
	)
}
