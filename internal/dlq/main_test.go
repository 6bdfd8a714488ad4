package dlq_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if a goroutine outlives them (the scans' consumers, the test
// participants and their relays must all stop).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
