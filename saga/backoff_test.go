package saga_test

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sagaflow/sagaflow/saga"
)

func TestBackoff(t *testing.T) {
	t.Parallel()

	const ms = time.Millisecond
	p := saga.RetryPolicy{MaxAttempts: 10, Backoff: 100 * ms, MaxBackoff: time.Second}
	jittered := p
	jittered.Jitter = 0.2
	tests := []struct {
		name    string
		policy  saga.RetryPolicy
		attempt int
		rnd     float64
		want    time.Duration
	}{
		{name: "FirstRetryWaitsBackoff", policy: p, attempt: 1, want: 100 * ms},
		{name: "Doubles", policy: p, attempt: 2, want: 200 * ms},
		{name: "DoublesAgain", policy: p, attempt: 4, want: 800 * ms},
		{name: "CappedAtMaxBackoff", policy: p, attempt: 5, want: time.Second},
		{name: "HugeAttemptDoesNotOverflow", policy: p, attempt: 1000, want: time.Second},
		{name: "LongDurationsDoNotOverflow", policy: saga.RetryPolicy{Backoff: time.Duration(math.MaxInt64 / 3), MaxBackoff: math.MaxInt64}, attempt: 3, want: math.MaxInt64},
		{name: "AttemptBelowOneCountsAsOne", policy: p, attempt: 0, want: 100 * ms},
		{name: "BackoffAboveMaxIsCapped", policy: saga.RetryPolicy{Backoff: time.Minute, MaxBackoff: time.Second}, attempt: 1, want: time.Second},
		{name: "NegativeIsZero", policy: saga.RetryPolicy{Backoff: -time.Second, MaxBackoff: -time.Second}, attempt: 1, want: 0},
		{name: "JitterLowest", policy: jittered, attempt: 1, rnd: 0, want: 80 * ms},
		{name: "JitterMiddle", policy: jittered, attempt: 1, rnd: 0.5, want: 100 * ms},
		{name: "JitterHighest", policy: jittered, attempt: 1, rnd: 0.999999, want: 119999960},
		{name: "JitterCappedAtMaxBackoff", policy: jittered, attempt: 5, rnd: 0.9, want: time.Second},
		{name: "JitterBelowCapStaysBelow", policy: jittered, attempt: 5, rnd: 0.1, want: 840 * ms},
		{name: "RandAboveOneIsClamped", policy: jittered, attempt: 1, rnd: 7, want: 120 * ms},
		{name: "NegativeRandIsClamped", policy: jittered, attempt: 1, rnd: -3, want: 80 * ms},
		{name: "NaNRandCountsAsZero", policy: jittered, attempt: 1, rnd: math.NaN(), want: 80 * ms},
		{name: "JitterAboveOneIsClamped", policy: saga.RetryPolicy{Backoff: 100 * ms, MaxBackoff: time.Second, Jitter: 5}, attempt: 1, rnd: 0, want: 0},
		{name: "NaNJitterIsNone", policy: saga.RetryPolicy{Backoff: 100 * ms, MaxBackoff: time.Second, Jitter: math.NaN()}, attempt: 1, rnd: 0, want: 100 * ms},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tt.want, saga.Backoff(tt.policy, tt.attempt, tt.rnd))
		})
	}
}

// TestBackoffBounds checks random policies: the wait grows with the attempt (without jitter), and
// with jitter stays within [d*(1-Jitter), min(d*(1+Jitter), MaxBackoff)].
func TestBackoffBounds(t *testing.T) {
	t.Parallel()

	r := rand.New(rand.NewPCG(1, 2))
	for range 5000 {
		backoff := time.Duration(1 + r.Int64N(int64(time.Minute)))
		p := saga.RetryPolicy{
			MaxAttempts: 1 + r.IntN(1000),
			Backoff:     backoff,
			MaxBackoff:  backoff + time.Duration(r.Int64N(int64(24*time.Hour))),
			Jitter:      r.Float64(),
		}
		attempt := 1 + r.IntN(p.MaxAttempts)
		rnd := r.Float64()

		plain := p
		plain.Jitter = 0
		d := saga.Backoff(plain, attempt, rnd)
		require.GreaterOrEqual(t, d, p.Backoff)
		require.LessOrEqual(t, d, p.MaxBackoff)
		require.GreaterOrEqual(t, saga.Backoff(plain, attempt+1, rnd), d, "the wait never shrinks")
		if exp := float64(p.Backoff) * math.Pow(2, float64(attempt-1)); exp < float64(p.MaxBackoff) {
			require.Equal(t, time.Duration(exp), d)
		} else {
			require.Equal(t, p.MaxBackoff, d)
		}

		got := saga.Backoff(p, attempt, rnd)
		lo := time.Duration(float64(d) * (1 - p.Jitter))
		hi := min(time.Duration(float64(d)*(1+p.Jitter)), p.MaxBackoff)
		require.GreaterOrEqual(t, got, lo-1, "policy %+v attempt %d rnd %v", p, attempt, rnd)
		require.LessOrEqual(t, got, hi, "policy %+v attempt %d rnd %v", p, attempt, rnd)
	}
}
