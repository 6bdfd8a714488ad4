package definitions_test

import (
	"errors"
	"os"
	"testing"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/sagaflow/sagaflow/definitions"
	"github.com/sagaflow/sagaflow/saga"
)

// render writes d in the definition format with every field of every step spelled out, so that
// parsing the result needs no default.
func render(t testing.TB, d *saga.Definition) []byte {
	t.Helper()
	type retry struct {
		MaxAttempts int     `yaml:"max_attempts"`
		Backoff     string  `yaml:"backoff"`
		MaxBackoff  string  `yaml:"max_backoff"`
		Jitter      float64 `yaml:"jitter"`
	}
	type step struct {
		Name              string `yaml:"name"`
		Service           string `yaml:"service"`
		Command           string `yaml:"command"`
		Compensation      string `yaml:"compensation,omitempty"`
		Recovery          string `yaml:"recovery,omitempty"`
		Timeout           string `yaml:"timeout"`
		Retry             retry  `yaml:"retry"`
		CompensationRetry retry  `yaml:"compensation_retry"`
	}
	type trigger struct {
		Subject string `yaml:"subject"`
		Key     string `yaml:"key"`
	}
	type definition struct {
		Name        string   `yaml:"name"`
		Version     int      `yaml:"version"`
		Description string   `yaml:"description,omitempty"`
		Trigger     *trigger `yaml:"trigger,omitempty"`
		Pivot       string   `yaml:"pivot,omitempty"`
		Steps       []step   `yaml:"steps"`
	}
	toRetry := func(p saga.RetryPolicy) retry {
		return retry{p.MaxAttempts, p.Backoff.String(), p.MaxBackoff.String(), p.Jitter}
	}
	out := definition{Name: d.Name, Version: d.Version, Description: d.Description, Pivot: d.Pivot}
	if d.Trigger != nil {
		out.Trigger = &trigger{d.Trigger.Subject, d.Trigger.Key}
	}
	for _, s := range d.Steps {
		out.Steps = append(out.Steps, step{
			s.Name, s.Service, s.Command, s.Compensation, string(s.Recovery), s.Timeout.String(),
			toRetry(s.Retry), toRetry(s.CompensationRetry),
		})
	}
	src, err := yaml.Marshal(out)
	require.NoError(t, err)
	return src
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	for _, file := range corpus(t, "good") {
		d, err := definitions.ParseFile(file)
		require.NoError(t, err)
		again, err := definitions.Parse("rendered.yaml", render(t, d))
		require.NoError(t, err)
		require.Equal(t, d, again, file)
	}
}

// FuzzParse checks that Parse never panics, that it fails only with a complete ErrorList, and that
// whatever it accepts is valid and survives a round trip through the format.
func FuzzParse(f *testing.F) {
	for _, dir := range []string{"good", "bad"} {
		for _, file := range corpus(f, dir) {
			src, err := os.ReadFile(file)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(src)
		}
	}
	f.Fuzz(func(t *testing.T, src []byte) {
		d, err := definitions.Parse("fuzz.yaml", src)
		if err != nil {
			require.Nil(t, d)
			require.ErrorIs(t, err, definitions.ErrInvalid)
			var list definitions.ErrorList
			require.True(t, errors.As(err, &list))
			require.NotEmpty(t, list)
			for _, e := range list {
				require.Equal(t, "fuzz.yaml", e.File)
				require.NotEmpty(t, e.Msg)
			}
			return
		}
		require.NoError(t, definitions.Validate(d))
		again, err := definitions.Parse("rendered.yaml", render(t, d))
		require.NoError(t, err)
		require.Equal(t, d, again)
	})
}
