package main

import (
	"fmt"
	"io"
	"math"
	"strings"

	order "github.com/sagaflow/sagaflow/examples/order"
)

// soakSeries holds every sample of every series, in the order the series first appeared.
type soakSeries struct {
	order  []string
	values map[string][]float64
}

func newSoakSeries() *soakSeries { return &soakSeries{values: map[string][]float64{}} }

func (s *soakSeries) add(pts []soakPoint) {
	for _, p := range pts {
		if _, ok := s.values[p.series]; !ok {
			s.order = append(s.order, p.series)
		}
		s.values[p.series] = append(s.values[p.series], p.value)
	}
}

// soakVerdict says whether one series stayed flat: the mean of the last third of its samples
// against the mean of the middle third (the first third is the warm-up: tables fill up to what
// retention keeps, pools open, caches warm).
type soakVerdict struct {
	series    string
	mid, last float64
	samples   int
	growing   bool
	// expected, when the series grows, is why it must in a run this short (empty: a leak).
	expected string
}

// soakGrowthTolerance is how much the last third may exceed the middle third, relative, before a
// series counts as growing; soakSlack adds an absolute margin for small values.
const soakGrowthTolerance = 0.10

// soakMinSamples is the fewest samples a verdict needs (one in each third).
const soakMinSamples = 3

func soakVerdicts(s *soakSeries) []soakVerdict {
	var out []soakVerdict
	for _, name := range s.order {
		vs := s.values[name]
		v := soakVerdict{series: name, samples: len(vs)}
		if len(vs) >= soakMinSamples {
			n := len(vs)
			v.mid, v.last = mean(vs[n/3:2*n/3]), mean(vs[2*n/3:])
			v.growing = v.last > v.mid*(1+soakGrowthTolerance)+soakSlack(name)
			if v.growing {
				v.expected = expectedGrowth(name)
			}
		}
		out = append(out, v)
	}
	return out
}

// mean is the mean of xs, NaN values (intervals without a figure) left out; NaN if none is left.
func mean(xs []float64) float64 {
	sum, n := 0.0, 0
	for _, x := range xs {
		if !math.IsNaN(x) {
			sum += x
			n++
		}
	}
	if n == 0 {
		return math.NaN()
	}
	return sum / float64(n)
}

// soakSlack is the absolute margin of a series: the noise of its unit on a busy machine.
func soakSlack(series string) float64 {
	switch {
	case strings.HasSuffix(series, "_ms"):
		return 50
	case strings.HasSuffix(series, ".rss_mb"):
		return 16
	case strings.HasSuffix(series, ".fds"):
		return 5
	case strings.HasSuffix(series, ".conns"):
		return 2
	case strings.HasSuffix(series, ".cpu_pct"):
		return 10
	case strings.HasSuffix(series, ".mb"):
		return 4
	case strings.HasSuffix(series, ".kb"):
		return 256
	case strings.HasSuffix(series, ".msgs"), strings.HasPrefix(series, "rows."):
		return 100
	default: // started, finished, in_flight, late, errors per interval
		return 10
	}
}

// businessTables are the order example's own tables: a row per order, kept as any business keeps
// its orders (no retention applies to them).
var businessTables = []string{"orders", "payment_ledger", "shipping_shipments", "inventory_reservations"}

// expectedGrowth says why series grows by design in a run of minutes, or "" when it should not.
func expectedGrowth(series string) string {
	for _, t := range businessTables {
		if strings.HasSuffix(series, "."+t) {
			return "the example's business data, a row per order, kept by design"
		}
	}
	if strings.HasSuffix(series, ".sagaflow_barrier") {
		return "the participant barrier keeps a saga's rows at least 1h (BarrierRetention's minimum), longer than the run"
	}
	for _, s := range order.Services {
		if series == "pg."+s+".mb" {
			return "the service's database holds the business data and the barrier"
		}
	}
	return ""
}

// printSoakVerdicts prints a verdict per series and returns how many grew unexpectedly.
func printSoakVerdicts(w io.Writer, verdicts []soakVerdict) (leaks int) {
	for _, v := range verdicts {
		switch {
		case v.samples < soakMinSamples:
			fmt.Fprintf(w, "verdict %s: too few samples (%d)\n", v.series, v.samples)
		case !v.growing:
			fmt.Fprintf(w, "verdict %s: flat (middle third %s, last third %s)\n", v.series, fmtValue(round1(v.mid)), fmtValue(round1(v.last)))
		case v.expected != "":
			fmt.Fprintf(w, "verdict %s: growing, expected: %s (middle third %s, last third %s)\n", v.series, v.expected,
				fmtValue(round1(v.mid)), fmtValue(round1(v.last)))
		default:
			leaks++
			fmt.Fprintf(w, "verdict %s: GROWING (middle third %s, last third %s)\n", v.series, fmtValue(round1(v.mid)), fmtValue(round1(v.last)))
		}
	}
	return leaks
}

func round1(x float64) float64 { return math.Round(x*10) / 10 }
