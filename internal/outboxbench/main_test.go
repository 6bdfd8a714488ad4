package outboxbench_test

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// database/sql's opener of a pool closed at the end of Run may still be exiting.
		goleak.IgnoreTopFunction("database/sql.(*DB).connectionOpener"),
	)
}
