package bus

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestNakDelay(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name          string
		base, ceiling time.Duration
		delivered     uint64
		want          time.Duration
	}{
		{"FirstDelivery", time.Second, 30 * time.Second, 1, time.Second},
		{"Doubles", time.Second, 30 * time.Second, 4, 8 * time.Second},
		{"CappedAtAckWait", time.Second, 30 * time.Second, 6, 30 * time.Second},
		{"StaysCapped", time.Second, 30 * time.Second, 1000, 30 * time.Second},
		{"BaseAboveCeiling", time.Minute, 30 * time.Second, 3, time.Minute},
		{"NoMetadata", 200 * time.Millisecond, 30 * time.Second, 0, 200 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tt.want, nakDelay(tt.base, tt.ceiling, tt.delivered))
		})
	}
	// The engine's and participant's defaults: ten deliveries span about two and a half minutes.
	var total time.Duration
	for n := uint64(1); n < 10; n++ {
		total += nakDelay(time.Second, 30*time.Second, n)
	}
	require.Equal(t, 151*time.Second, total)
}
