package outbox_test

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if raw := os.Getenv(helperEnv); raw != "" {
		if err := runHelperRelay(raw); err != nil {
			fmt.Fprintln(os.Stderr, "helper relay:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	goleak.VerifyTestMain(m,
		// lib/pq's Listener and database/sql's connection openers outlive a closed pool briefly.
		goleak.IgnoreTopFunction("database/sql.(*DB).connectionOpener"),
	)
}
