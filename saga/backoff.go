package saga

import (
	"math"
	"time"
)

// Backoff returns how long to wait after failed attempt number attempt (1 for the first) before
// the next one, under policy p: min(p.Backoff * 2^(attempt-1), p.MaxBackoff), then spread by
// p.Jitter to d * (1 - Jitter + 2*Jitter*rnd) and capped at p.MaxBackoff again.
//
// rnd is a random number in [0, 1) (values outside are clamped), so with rnd uniform the wait is
// uniform in [d*(1-Jitter), d*(1+Jitter)) before the cap. An attempt below 1 counts as 1, a Jitter
// outside [0, 1] is clamped, and the result is never negative. Backoff is pure and safe for
// concurrent use.
func Backoff(p RetryPolicy, attempt int, rnd float64) time.Duration {
	maxWait := max(p.MaxBackoff, 0)
	d := min(max(p.Backoff, 0), maxWait)
	for n := 1; n < attempt && d < maxWait; n++ {
		if d > maxWait/2 {
			d = maxWait
			break
		}
		d *= 2
	}
	jitter := p.Jitter
	if !(jitter > 0) { // also NaN
		return d
	}
	jitter = min(jitter, 1)
	if !(rnd > 0) { // also NaN
		rnd = 0
	}
	rnd = min(rnd, math.Nextafter(1, 0))
	w := float64(d) * (1 - jitter + 2*jitter*rnd)
	if w >= float64(maxWait) {
		return maxWait
	}
	return max(time.Duration(w), 0)
}
