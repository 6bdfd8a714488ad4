package main

import (
	"encoding/csv"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	order "github.com/sagaflow/sagaflow/examples/order"
)

// TestMain lets "bench soak" run under go test: it starts "sagaflow serve" by re-running its own
// binary (os.Executable), which here is the test binary, so the test binary runs the command then.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "serve" {
		main()
	}
	os.Exit(m.Run())
}

// TestBenchSoak runs a short soak of the order system as separate processes (serve and the four
// services, against real PostgreSQL and an in-process NATS server): it prints a block of rows per
// sample with every process in it, every saga it started finishes, there is a verdict per series,
// and the CSV holds the same samples.
func TestBenchSoak(t *testing.T) {
	t.Parallel()
	csvPath := filepath.Join(t.TempDir(), "soak.csv")
	code, stdout, stderr := runCLI(t, "bench", "soak", "--rate", "4", "--duration", "20s", "--interval", "5s",
		"--drain", "2m", "--csv", csvPath)
	t.Logf("stdout:\n%s\nstderr:\n%s", stdout, stderr)
	require.Equal(t, 0, code)

	// A block of five lines per sample, every process of the system in its "procs" line.
	procs := regexp.MustCompile(`(?m)^\[\d\d:\d\d\] procs +(.*)$`).FindAllStringSubmatch(stdout, -1)
	require.Len(t, procs, 4, "a sample every 5s for 20s")
	for _, line := range procs {
		for _, p := range append([]string{"serve", "soak"}, order.Services...) {
			require.Regexp(t, `\b`+p+`\.rss_mb=\d`, line[1])
			require.Regexp(t, `\b`+p+`\.fds=\d`, line[1])
		}
	}
	for _, group := range []string{"load", "postgres", "rows", "jetstream"} {
		require.Len(t, regexp.MustCompile(`(?m)^\[\d\d:\d\d\] `+group+` `).FindAllString(stdout, -1), 4, group)
	}
	started := 0
	for _, m := range regexp.MustCompile(`(?m)^\[\d\d:\d\d\] load +started=(\d+)`).FindAllStringSubmatch(stdout, -1) {
		n, err := strconv.Atoi(m[1])
		require.NoError(t, err)
		started += n
	}
	require.Equal(t, 80, started, "4/s for 20s, open loop: late starts are counted, never skipped")

	// Every saga started finished (completed, or compensated when payment declined it).
	total := regexp.MustCompile(`soak: (\d+) sagas started at the rate \(\d+ late\) after (\d+) before it, 0 failed starts; ` +
		`finished: (\d+) completed, (\d+) compensated, 0 failed; 0 not finished`).FindStringSubmatch(stdout)
	require.NotNil(t, total, "the totals line")
	var n [4]int
	for i := range n {
		var err error
		n[i], err = strconv.Atoi(total[i+1])
		require.NoError(t, err)
	}
	require.Equal(t, []int{80, 1}, n[:2], "the soak's sagas, and the first one")
	require.Equal(t, n[0]+n[1], n[2]+n[3])

	// A verdict for every series, and the CSV has every series at every sample.
	verdicts := regexp.MustCompile(`(?m)^verdict (\S+): (flat|growing|GROWING|too few)`).FindAllStringSubmatch(stdout, -1)
	series := map[string]bool{}
	for _, v := range verdicts {
		series[v[1]] = true
	}
	for _, want := range []string{"p99_ms", "in_flight", "proc.serve.rss_mb", "proc.serve.fds", "pg.orchestrator.conns",
		"rows.orchestrator.sagaflow_instances", "rows.orchestrator.sagaflow_history", "rows.orchestrator.sagaflow_inbox",
		"rows.payment.sagaflow_barrier", "rows.order.sagaflow_outbox"} {
		require.True(t, series[want], "verdict of %s", want)
	}
	f, err := os.Open(csvPath)
	require.NoError(t, err)
	defer f.Close()
	records, err := csv.NewReader(f).ReadAll()
	require.NoError(t, err)
	require.Equal(t, []string{"elapsed_s", "series", "value"}, records[0])
	perSeries := map[string]int{}
	for _, r := range records[1:] {
		_, err := strconv.ParseFloat(r[0], 64)
		require.NoError(t, err, r)
		if r[2] != "" {
			_, err = strconv.ParseFloat(r[2], 64)
			require.NoError(t, err, r)
		}
		perSeries[r[1]]++
	}
	require.Len(t, perSeries, len(series), "the CSV and the verdicts cover the same series")
	for s, n := range perSeries {
		require.Equal(t, 4, n, s)
		require.True(t, series[s], s)
	}
	require.True(t, strings.HasSuffix(strings.TrimSpace(stdout), "series growing unexpectedly"))
}

func TestSoakVerdicts(t *testing.T) {
	t.Parallel()
	s := newSoakSeries()
	nan := math.NaN()
	for i := range 9 {
		x := float64(i)
		s.add([]soakPoint{
			{"proc.serve.fds", 40 + float64(i%2)},            // noise
			{"rows.orchestrator.sagaflow_history", 1000 * x}, // a leak
			{"rows.order.orders", 1000 * x},                  // business data
			{"rows.orchestrator.sagaflow_inbox", min(x, 3)},  // settles by the middle third
			{"p99_ms", []float64{nan, 100, 120}[i%3]},        // intervals without a figure
			{"rows.inventory.sagaflow_barrier", 10_000 * x},  // retention longer than the run
			{"pg.payment.mb", 10 * x},                        // business data and barrier
			{"proc.order.rss_mb", 30 + 20*float64(i/6)},      // a jump in the last third
		})
	}
	s.add([]soakPoint{{"late", 0}})
	got := map[string]soakVerdict{}
	for _, v := range soakVerdicts(s) {
		got[v.series] = v
	}
	require.False(t, got["proc.serve.fds"].growing)
	require.True(t, got["rows.orchestrator.sagaflow_history"].growing)
	require.Empty(t, got["rows.orchestrator.sagaflow_history"].expected, "a leak")
	require.True(t, got["rows.order.orders"].growing)
	require.NotEmpty(t, got["rows.order.orders"].expected)
	require.False(t, got["rows.orchestrator.sagaflow_inbox"].growing)
	require.False(t, got["p99_ms"].growing)
	require.InDelta(t, 110, got["p99_ms"].last, 0.01)
	require.NotEmpty(t, got["rows.inventory.sagaflow_barrier"].expected)
	require.NotEmpty(t, got["pg.payment.mb"].expected)
	require.True(t, got["proc.order.rss_mb"].growing)
	require.Equal(t, 1, got["late"].samples)

	var out strings.Builder
	require.Equal(t, 2, printSoakVerdicts(&out, soakVerdicts(s)), out.String())
	require.Contains(t, out.String(), "verdict late: too few samples (1)")
	require.Contains(t, out.String(), "verdict rows.orchestrator.sagaflow_history: GROWING")
	require.Contains(t, out.String(), "verdict rows.order.orders: growing, expected")
}

func TestPercentile(t *testing.T) {
	t.Parallel()
	require.True(t, math.IsNaN(percentile(nil, 0.5)))
	xs := []float64{5, 1, 4, 2, 3}
	require.InDelta(t, 3.0, percentile(xs, 0.5), 0)
	require.InDelta(t, 5.0, percentile(xs, 0.99), 0)
	require.InDelta(t, 1.0, percentile(xs, 0.01), 0)
}

func TestBenchSoakUsage(t *testing.T) {
	t.Parallel()
	code, _, stderr := runCLI(t, "bench", "soak", "--rate", "0", "--interval", "1h", "--payment-decline-rate", "2")
	require.Equal(t, exitUsage, code)
	for _, want := range []string{"--rate 0: must be positive", "--interval 1h0m0s is longer than --duration", "--payment-decline-rate 2"} {
		require.Contains(t, stderr, want)
	}
}
