//go:build !unix

package benchmeter

import (
	"errors"
	"time"
)

// ProcessCPU is unix only.
func ProcessCPU() (time.Duration, error) {
	return 0, errors.New("process CPU time: unix only")
}
