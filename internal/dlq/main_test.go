package dlq_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if a goroutine outlives them (the test participants must stop).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// modernc.org/sqlite's and database/sql's pool goroutines of a closed test database.
		goleak.IgnoreTopFunction("database/sql.(*DB).connectionOpener"),
	)
}
