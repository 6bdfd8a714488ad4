package dlq

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestFetchBatch: a scan fetches about fetchBytes at a time, whatever the messages weigh.
func TestFetchBatch(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		bytes, msgs uint64
		want        uint64
	}{
		{"EmptyStream", 0, 0, 256},
		{"SmallMessages", 1000 * 200, 1000, 256},
		{"OneMegabyteMessages", 100 << 20, 100, 3},
		{"HugeMessages", 100 << 20, 10, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := fetchBatch(tt.bytes, tt.msgs)
			require.Equal(t, tt.want, got)
			if tt.msgs > 0 && got > 1 {
				require.LessOrEqual(t, got*(tt.bytes/tt.msgs), uint64(fetchBytes), "a batch stays within fetchBytes")
			}
		})
	}
}
