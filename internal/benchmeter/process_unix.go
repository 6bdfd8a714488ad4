//go:build unix

package benchmeter

import (
	"fmt"
	"syscall"
	"time"
)

// ProcessCPU returns the CPU time (user + system, every thread) this process has used so far.
func ProcessCPU() (time.Duration, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, fmt.Errorf("getrusage: %w", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}
