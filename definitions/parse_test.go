package definitions_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sagaflow/sagaflow/definitions"
	"github.com/sagaflow/sagaflow/saga"
)

// corpus returns the files of testdata/<dir>.
func corpus(t testing.TB, dir string) []string {
	t.Helper()
	var files []string
	for _, pattern := range []string{"*.yaml", "*.json"} {
		m, err := filepath.Glob(filepath.Join("testdata", dir, pattern))
		require.NoError(t, err)
		files = append(files, m...)
	}
	require.NotEmpty(t, files)
	return files
}

// errorList returns the ErrorList inside err.
func errorList(t *testing.T, err error) definitions.ErrorList {
	t.Helper()
	require.ErrorIs(t, err, definitions.ErrInvalid)
	var list definitions.ErrorList
	require.ErrorAs(t, err, &list)
	require.NotEmpty(t, list)
	return list
}

func TestParseGood(t *testing.T) {
	t.Parallel()
	for _, file := range corpus(t, "good") {
		t.Run(filepath.Base(file), func(t *testing.T) {
			t.Parallel()
			d, err := definitions.ParseFile(file)
			require.NoError(t, err)
			require.NoError(t, definitions.Validate(d))
		})
	}
}

// want is one expected error, from a "# want: LINE:COL substring" line at the top of a bad file.
type want struct {
	line, col int
	substr    string
}

var wantRe = regexp.MustCompile(`^# want: (\d+):(\d+) (.+)$`)

func readWants(t *testing.T, src []byte) []want {
	t.Helper()
	var wants []want
	for _, line := range strings.Split(string(src), "\n") {
		m := wantRe.FindStringSubmatch(line)
		if m == nil {
			break
		}
		l, _ := strconv.Atoi(m[1])
		c, _ := strconv.Atoi(m[2])
		wants = append(wants, want{l, c, m[3]})
	}
	require.NotEmpty(t, wants, "a bad file starts with # want: LINE:COL substring")
	return wants
}

// TestParseBad checks that each file of the bad corpus, which holds one mistake, gives exactly the
// errors its "# want:" lines announce, at their positions.
func TestParseBad(t *testing.T) {
	t.Parallel()
	files := corpus(t, "bad")
	require.GreaterOrEqual(t, len(files), 25)
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			t.Parallel()
			src, err := os.ReadFile(file)
			require.NoError(t, err)
			wants := readWants(t, src)
			d, err := definitions.Parse(file, src)
			require.Nil(t, d)
			list := errorList(t, err)
			require.Len(t, list, len(wants), "errors:\n%v", err)
			for i, w := range wants {
				e := list[i]
				require.Equal(t, file, e.File)
				require.Equal(t, fmt.Sprintf("%d:%d", w.line, w.col), fmt.Sprintf("%d:%d", e.Line, e.Column), "error: %v", e)
				require.Contains(t, e.Error(), w.substr)
				require.True(t, strings.HasPrefix(e.Error(), file+":"), e.Error())
			}
		})
	}
}

func TestParseReportsAllErrors(t *testing.T) {
	t.Parallel()
	src := `name: Billing
version: 0
colour: blue
trigger:
  subject: events.>
steps:
  - name: charge
    service: payment
    command: Charge
    timeout: 5
  - name: charge
    command: Post
    retry: {max_attempts: 0, backoff: 1m}
`
	_, err := definitions.Parse("billing.yaml", []byte(src))
	require.Equal(t, strings.Join([]string{
		`billing.yaml:1:7: name: must be lowercase letters, digits and dashes, not starting or ending with a dash; got "Billing"`,
		`billing.yaml:2:10: version: must be an integer >= 1, got 0`,
		`billing.yaml:3:1: colour: unknown field; expected one of defaults, description, name, pivot, steps, trigger, version`,
		`billing.yaml:4:1: trigger.key: is required`,
		`billing.yaml:5:12: trigger.subject: must be a concrete subject: wildcards * and > are not allowed; got "events.>"`,
		`billing.yaml:10:14: steps[0].timeout: duration needs a unit, e.g. 5s; got the number 5`,
		`billing.yaml:11:5: steps[1].service: is required`,
		`billing.yaml:11:11: steps[1].name: duplicate step name "charge" (already used by steps[0])`,
		`billing.yaml:13:27: steps[1].retry.max_attempts: must be between 1 and 1000, got 0`,
		`billing.yaml:13:39: steps[1].retry.backoff: must not exceed max_backoff (1m > 30s)`,
	}, "\n"), err.Error())
	require.Len(t, errorList(t, err), 10)
}

func TestParseLimits(t *testing.T) {
	t.Parallel()
	steps := func(n int) string {
		var b strings.Builder
		b.WriteString("name: many\nversion: 1\nsteps:\n")
		for i := range n {
			fmt.Fprintf(&b, "  - {name: s%d, service: svc, command: Do}\n", i)
		}
		return b.String()
	}

	t.Run("MaxSteps", func(t *testing.T) {
		t.Parallel()
		d, err := definitions.Parse("many.yaml", []byte(steps(256)))
		require.NoError(t, err)
		require.Len(t, d.Steps, 256)
	})
	t.Run("TooManySteps", func(t *testing.T) {
		t.Parallel()
		_, err := definitions.Parse("many.yaml", []byte(steps(257)))
		require.EqualError(t, err, "many.yaml:4:3: steps: has 257 steps, at most 256 are allowed")
	})
	t.Run("TooLarge", func(t *testing.T) {
		t.Parallel()
		src := []byte(steps(1) + "# " + strings.Repeat("x", 1<<20) + "\n")
		_, err := definitions.Parse("big.yaml", src)
		list := errorList(t, err)
		require.Len(t, list, 1)
		require.Equal(t, 1, list[0].Line)
		require.Equal(t, 1, list[0].Column)
		require.Contains(t, list[0].Msg, "too large")

		path := filepath.Join(t.TempDir(), "big.yaml")
		require.NoError(t, os.WriteFile(path, src, 0o600))
		_, err = definitions.ParseFile(path)
		require.ErrorIs(t, err, definitions.ErrInvalid)
		require.Contains(t, err.Error(), path+":1:1: file is too large")
	})
	t.Run("ExactlyMaxSize", func(t *testing.T) {
		t.Parallel()
		src := steps(1) + "# "
		src += strings.Repeat("x", 1<<20-len(src)-1) + "\n"
		require.Len(t, src, 1<<20)
		_, err := definitions.Parse("max.yaml", []byte(src))
		require.NoError(t, err)
	})
	t.Run("ManyErrorsAreCapped", func(t *testing.T) {
		t.Parallel()
		var b strings.Builder
		b.WriteString(steps(1))
		for i := range 150 {
			fmt.Fprintf(&b, "unknown%d: x\n", i)
		}
		list := errorList(t, func() error { _, err := definitions.Parse("f.yaml", []byte(b.String())); return err }())
		require.Len(t, list, 101)
		require.Equal(t, "f.yaml: too many errors (50 more)", list[100].Error())
	})
}

func TestParseYAMLDocuments(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, src, err string
	}{
		{"Empty", "", "f.yaml:1:1: empty document: a definition needs name, version and steps"},
		{"OnlyComments", "# nothing\n\n", "f.yaml:1:1: empty document: a definition needs name, version and steps"},
		{"OnlySeparator", "---\n", "f.yaml:1:1: empty document: a definition needs name, version and steps"},
		{"Null", "null\n", "f.yaml:1:1: empty document: a definition needs name, version and steps"},
		{"Scalar", "order\n", `f.yaml:1:1: a definition must be a mapping with name, version and steps, got "order"`},
		{"EmptySecondDocument", "name: a\n---\n", "f.yaml:2:1: only one YAML document is allowed: put each definition in its own file"},
		{"Directive", "%YAML 1.2\n---\nname: a\n", "f.yaml: invalid YAML: found incompatible YAML document"},
		{"SyntaxErrorInSecondDocument", "name: a\n---\n[\n", "f.yaml:3:1: invalid YAML: flow sequence opened here is never closed: expected ',' or ']'"},
		{"UnclosedFlowSequence", "name: a\nversion: 1\nsteps:\n  - name: r\n    service: [inventory\n    command: R\n",
			"f.yaml:5:14: invalid YAML: flow sequence opened here is never closed: expected ',' or ']'"},
		{"UnclosedFlowMapping", "name: a\nretry: {max_attempts: 3\nsteps: []\n", "f.yaml:2:8: invalid YAML: flow mapping opened here is never closed: expected ',' or '}'"},
		{"UnclosedNestedFlowSequence", "steps: [a, [b, c]\n", "f.yaml:1:8: invalid YAML: flow sequence opened here is never closed: expected ',' or ']'"},
		{"MappingValueInPlainScalar", "name: a\nsteps:\n  - service: payment: api\n", "f.yaml:3:14: invalid YAML: mapping value is not allowed in this context"},
		{"UnterminatedQuote", "name: \"a\nversion: 1\n", "f.yaml:1:7: invalid YAML: could not find end character of double-quoted text"},
		{"NonStringKey", "? [name]\n: a\n", "f.yaml:1:3: keys must be field names, got a list"},
		{"TaggedKey", "!!str name: a\n", "f.yaml:1:1: name: YAML tags are not allowed (!!str)"},
		{"AnchoredMapping", "&root {name: a}\n", "f.yaml:1:1: YAML anchors are not allowed (&root): write the value out in full"},
		{"DeepNesting", strings.Repeat("[", 20000), "f.yaml: invalid YAML: exceeded max depth of 10000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := definitions.Parse("f.yaml", []byte(tt.src))
			require.ErrorIs(t, err, definitions.ErrInvalid)
			require.Contains(t, strings.Split(err.Error(), "\n"), tt.err)
		})
	}
}

func TestParseDefaults(t *testing.T) {
	t.Parallel()
	d, err := definitions.ParseFile("testdata/good/defaults.yaml")
	require.NoError(t, err)
	defaults := saga.RetryPolicy{MaxAttempts: 4, Backoff: 250 * time.Millisecond, MaxBackoff: 8 * time.Second, Jitter: 0}
	compDefaults := saga.RetryPolicy{MaxAttempts: 20, Backoff: time.Second, MaxBackoff: 5 * time.Minute, Jitter: 0.2}
	require.Equal(t, &saga.Definition{
		Name:    "subscription-renewal",
		Version: 12,
		Steps: []saga.Step{{
			Name: "charge", Service: "billing", Command: "Charge", Compensation: "Refund", Recovery: saga.RecoveryCompensate,
			Timeout:           90 * time.Second,
			Retry:             saga.RetryPolicy{MaxAttempts: 1, Backoff: 250 * time.Millisecond, MaxBackoff: 8 * time.Second, Jitter: 0},
			CompensationRetry: saga.RetryPolicy{MaxAttempts: 20, Backoff: time.Second, MaxBackoff: 5 * time.Minute, Jitter: 0.5},
		}, {
			Name: "extend", Service: "subscriptions", Command: "Extend", Compensation: "Shorten", Recovery: saga.RecoveryCompensate,
			Timeout:           200 * time.Millisecond,
			Retry:             saga.RetryPolicy{MaxAttempts: 4, Backoff: time.Millisecond, MaxBackoff: time.Millisecond, Jitter: 1},
			CompensationRetry: compDefaults,
		}, {
			Name: "0-receipt", Service: "mail", Command: "SendReceipt", Recovery: saga.RecoveryRetryForward,
			Timeout:           24 * time.Hour,
			Retry:             defaults,
			CompensationRetry: compDefaults,
		}},
	}, d)

	d, err = definitions.ParseFile("testdata/good/minimal.yaml")
	require.NoError(t, err)
	require.Equal(t, []saga.Step{{
		Name: "ping", Service: "echo", Command: "Ping", Recovery: saga.RecoveryRetryForward,
		Timeout:           30 * time.Second,
		Retry:             saga.RetryPolicy{MaxAttempts: 3, Backoff: time.Second, MaxBackoff: 30 * time.Second, Jitter: 0.2},
		CompensationRetry: saga.RetryPolicy{MaxAttempts: 10, Backoff: time.Second, MaxBackoff: time.Minute, Jitter: 0.2},
	}}, d.Steps)
}

// TestParseInvalidDefaultsReportedOnce checks that a bad value in defaults is reported at the
// defaults only, not again at every step that would inherit it.
func TestParseInvalidDefaultsReportedOnce(t *testing.T) {
	t.Parallel()
	src := `name: a
version: 1
defaults:
  retry: {backoff: 1m, jitter: -1}
  compensation_retry: {max_attempts: 0}
steps:
  - {name: a, service: s, command: A}
  - {name: b, service: s, command: B}
`
	_, err := definitions.Parse("f.yaml", []byte(src))
	require.EqualError(t, err, strings.Join([]string{
		"f.yaml:4:20: defaults.retry.backoff: must not exceed max_backoff (1m > 30s)",
		"f.yaml:4:32: defaults.retry.jitter: must be between 0 and 1, got -1",
		"f.yaml:5:38: defaults.compensation_retry.max_attempts: must be between 1 and 1000, got 0",
	}, "\n"))
}

func TestParseFileNotFound(t *testing.T) {
	t.Parallel()
	_, err := definitions.ParseFile(filepath.Join(t.TempDir(), "missing.yaml"))
	require.ErrorIs(t, err, os.ErrNotExist)
	require.NotErrorIs(t, err, definitions.ErrInvalid)
}

// billionLaughs returns an alias bomb: levels of anchors, each a list of width aliases to the
// previous one, so that a decoder that expands aliases builds width^levels strings. The classic
// "billion laughs" is billionLaughs(9, 10).
func billionLaughs(levels, width int) []byte {
	var b strings.Builder
	b.WriteString("name: lol\nversion: 1\nl0: &l0 [\"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\"]\n")
	for i := 1; i <= levels; i++ {
		fmt.Fprintf(&b, "l%d: &l%d [%s]\n", i, i, strings.TrimSuffix(strings.Repeat(fmt.Sprintf("*l%d, ", i-1), width), ", "))
	}
	fmt.Fprintf(&b, "steps: *l%d\n", levels)
	return []byte(b.String())
}

// TestParseAliasBomb checks that alias bombs are rejected without being expanded: at the anchors
// and aliases, allocating far less than 50 MiB. It does not call t.Parallel: it measures the
// allocations of the whole process. The time taken is logged, not asserted; see
// BenchmarkParseAliasBomb.
func TestParseAliasBomb(t *testing.T) {
	t.Run("BillionLaughs", func(t *testing.T) {
		list := parseBomb(t, billionLaughs(9, 10))
		require.Equal(t, "bomb.yaml:3:5: l0: YAML anchors are not allowed (&l0): write the value out in full", list[0].Error())
		require.Equal(t, "bomb.yaml:4:10: l1[0]: YAML aliases are not allowed (*l0): write the value out in full", list[2].Error())
		require.Len(t, list, 101, "10 anchors and 91 aliases: 100 listed, 1 counted")
	})
	t.Run("Wide", func(t *testing.T) {
		list := parseBomb(t, billionLaughs(30, 1000)) // 1000^30 strings, in 200 KiB
		require.Equal(t, "bomb.yaml:3:5: l0: YAML anchors are not allowed (&l0): write the value out in full", list[0].Error())
	})
}

func parseBomb(t *testing.T, src []byte) definitions.ErrorList {
	t.Helper()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start := time.Now()
	_, err := definitions.Parse("bomb.yaml", src)
	elapsed := time.Since(start)
	runtime.ReadMemStats(&after)

	allocated := after.TotalAlloc - before.TotalAlloc
	require.Less(t, allocated, uint64(50<<20), "allocated %d bytes", allocated)
	t.Logf("alias bomb of %d bytes rejected in %v, allocating %d KiB", len(src), elapsed, allocated>>10)
	return errorList(t, err)
}

// BenchmarkParseAliasBomb shows the time an alias bomb takes to be rejected (well under 1 s), and
// what a dense 1 MiB document costs: the YAML library's node tree, not alias expansion, dominates.
func BenchmarkParseAliasBomb(b *testing.B) {
	dense := `{a: &a [{a}` + strings.Repeat(`,{a}`, 1000*1024/4-100) + `], b: &b [*a` + strings.Repeat(`,*a`, 99) + `]}`
	for _, bb := range []struct {
		name string
		src  []byte
	}{
		{"BillionLaughs", billionLaughs(9, 10)},
		{"Wide", billionLaughs(30, 1000)},
		{"Dense1MiB", []byte(dense)},
	} {
		b.Run(bb.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := definitions.Parse("bomb.yaml", bb.src); !errors.Is(err, definitions.ErrInvalid) {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkParse(b *testing.B) {
	src, err := os.ReadFile("../examples/order/order-fulfilment.yaml")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := definitions.Parse("order.yaml", src); err != nil {
			b.Fatal(err)
		}
	}
}
