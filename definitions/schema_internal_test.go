package definitions

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestSchemaPatternsMatchGo checks that schema.json states the syntax rules with the very patterns
// the Go validator uses, and the same limits.
func TestSchemaPatternsMatchGo(t *testing.T) {
	t.Parallel()
	type prop struct {
		Ref       string  `json:"$ref"`
		Pattern   string  `json:"pattern"`
		MaxLength int     `json:"maxLength"`
		MinItems  int     `json:"minItems"`
		MaxItems  int     `json:"maxItems"`
		Minimum   float64 `json:"minimum"`
		Maximum   float64 `json:"maximum"`
	}
	type object struct {
		Properties map[string]prop `json:"properties"`
	}
	var s struct {
		object
		Defs struct {
			Name     prop   `json:"name"`
			Command  prop   `json:"command"`
			Trigger  object `json:"trigger"`
			Retry    object `json:"retry"`
			Step     object `json:"step"`
			Duration prop   `json:"duration"`
		} `json:"$defs"`
	}
	require.NoError(t, json.Unmarshal(Schema(), &s))

	require.Equal(t, nameRe.String(), s.Defs.Name.Pattern)
	require.Equal(t, commandRe.String(), s.Defs.Command.Pattern)
	require.Equal(t, keyRe.String(), s.Defs.Trigger.Properties["key"].Pattern)
	require.Equal(t, maxKeyLen, s.Defs.Trigger.Properties["key"].MaxLength)
	require.Equal(t, maxSubjectLen, s.Defs.Trigger.Properties["subject"].MaxLength)
	require.Equal(t, maxDescriptionLen, s.Properties["description"].MaxLength)
	require.Equal(t, 1, s.Properties["steps"].MinItems)
	require.Equal(t, maxSteps, s.Properties["steps"].MaxItems)
	require.Equal(t, float64(1), s.Properties["version"].Minimum)
	require.Equal(t, float64(maxAttemptsLimit), s.Defs.Retry.Properties["max_attempts"].Maximum)
	require.Equal(t, float64(1), s.Defs.Retry.Properties["jitter"].Maximum)
	for _, f := range []string{"name", "service"} {
		require.Equal(t, "#/$defs/name", s.Defs.Step.Properties[f].Ref, f)
	}
	for _, f := range []string{"command", "compensation"} {
		require.Equal(t, "#/$defs/command", s.Defs.Step.Properties[f].Ref, f)
	}
}
