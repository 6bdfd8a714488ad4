package definitions_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/sagaflow/sagaflow/definitions"
)

// compileSchema compiles the schema that the package embeds.
func compileSchema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(definitions.Schema()))
	require.NoError(t, err)
	c := jsonschema.NewCompiler()
	require.NoError(t, c.AddResource("schema.json", doc))
	sch, err := c.Compile("schema.json")
	require.NoError(t, err)
	return sch
}

var errNotJSON = errors.New("not expressible as JSON")

// yamlToJSON reads a YAML file into plain JSON values (map[string]any, []any, string, json.Number,
// bool, nil), as an editor's YAML language server would hand them to the schema. It reads only
// the first document and refuses aliases rather than expand them.
func yamlToJSON(src []byte) (any, error) {
	var doc yaml.Node
	if err := yaml.NewDecoder(bytes.NewReader(src)).Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, err
	}
	if len(doc.Content) == 0 {
		return nil, nil
	}
	return nodeToJSON(doc.Content[0])
}

func nodeToJSON(n *yaml.Node) (any, error) {
	switch n.Kind {
	case yaml.MappingNode:
		m := make(map[string]any, len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Kind != yaml.ScalarNode {
				return nil, fmt.Errorf("non-scalar key: %w", errNotJSON)
			}
			v, err := nodeToJSON(n.Content[i+1])
			if err != nil {
				return nil, err
			}
			m[n.Content[i].Value] = v
		}
		return m, nil
	case yaml.SequenceNode:
		s := make([]any, len(n.Content))
		for i, c := range n.Content {
			v, err := nodeToJSON(c)
			if err != nil {
				return nil, err
			}
			s[i] = v
		}
		return s, nil
	case yaml.ScalarNode:
		switch n.Tag {
		case "!!null":
			return nil, nil
		case "!!bool":
			var b bool
			return b, n.Decode(&b)
		case "!!int":
			var i int64
			if err := n.Decode(&i); err != nil {
				return nil, err
			}
			return json.Number(strconv.FormatInt(i, 10)), nil
		case "!!float":
			var f float64
			return f, n.Decode(&f)
		}
		return n.Value, nil // !!str, and tagged scalars as the text they hold
	}
	return nil, fmt.Errorf("YAML %v node: %w", n.Kind, errNotJSON)
}

func validateWithSchema(t *testing.T, sch *jsonschema.Schema, file string) error {
	t.Helper()
	src, err := os.ReadFile(file)
	require.NoError(t, err)
	v, err := yamlToJSON(src)
	require.NoError(t, err, "convert %s", file)
	return sch.Validate(v)
}

// exampleDefinitions returns the definition files under examples/: the YAML files whose top level
// has name and steps (compose files and manifests may live there too).
func exampleDefinitions(t *testing.T) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir("../examples", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || (filepath.Ext(path) != ".yaml" && filepath.Ext(path) != ".yml") {
			return err
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		var top map[string]yaml.Node // decoding into yaml.Node values does not expand aliases
		if yaml.Unmarshal(src, &top) == nil && top["name"].Kind != 0 && top["steps"].Kind != 0 {
			files = append(files, path)
		}
		return nil
	})
	require.NoError(t, err)
	require.NotEmpty(t, files)
	return files
}

func TestSchemaAcceptsGood(t *testing.T) {
	t.Parallel()
	sch := compileSchema(t)
	files := append(corpus(t, "good"), exampleDefinitions(t)...)
	for _, file := range files {
		t.Run(strings.TrimPrefix(file, "../"), func(t *testing.T) {
			t.Parallel()
			_, err := definitions.ParseFile(file)
			require.NoError(t, err)
			require.NoError(t, validateWithSchema(t, sch, file))
		})
	}
}

// schemaCannotExpress lists the bad files whose one mistake JSON Schema cannot see, and why. The
// schema must accept exactly these and reject every other bad file.
var schemaCannotExpress = map[string]string{
	"duplicate-step-names.yaml":              "uniqueness of one property across array items",
	"backoff-over-max-backoff.yaml":          "comparing two values (backoff <= max_backoff)",
	"backoff-over-defaults-max-backoff.yaml": "comparing a value with one inherited from defaults",
	"timeout-over-24h.yaml":                  "the numeric range of a duration string",
	"defaults-timeout-over-24h.yaml":         "the numeric range of a duration string",
	"backoff-below-1ms.yaml":                 "the numeric range of a duration string",
	"anchor-only.yaml":                       "anchors are YAML syntax, gone in the JSON data model",
	"anchor-alias.yaml":                      "anchors and aliases are YAML syntax, gone in the JSON data model",
	"binary-tag.yaml":                        "tags are YAML syntax, gone in the JSON data model",
	"custom-tag.yaml":                        "tags are YAML syntax, gone in the JSON data model",
	"duplicate-key.yaml":                     "a JSON object cannot hold a key twice (the last one wins)",
	"multi-document.yaml":                    "a schema validates one document",
	"syntax-error.yaml":                      "not YAML at all: there is nothing to validate",
	"unclosed-flow-sequence.yaml":            "not YAML at all: there is nothing to validate",
	"pivot-unknown.yaml":                     "a value that must name another item (a step of the list)",
	"compensation-after-pivot.yaml":          "a rule on the items after the one another value names",
	"compensated-after-retry-forward.yaml":   "a rule on the order of the items of an array",
}

func TestSchemaAgreesOnBad(t *testing.T) {
	t.Parallel()
	sch := compileSchema(t)
	for _, file := range corpus(t, "bad") {
		name := filepath.Base(file)
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			src, err := os.ReadFile(file)
			require.NoError(t, err)
			v, convErr := yamlToJSON(src)
			if reason, ok := schemaCannotExpress[name]; ok {
				if convErr == nil {
					require.NoError(t, sch.Validate(v), "the schema catches this mistake (%s): remove it from schemaCannotExpress", reason)
				}
				return
			}
			require.NoError(t, convErr)
			require.Error(t, sch.Validate(v), "the schema accepts a file that Parse rejects")
		})
	}
}

func TestSchemaStepLimits(t *testing.T) {
	t.Parallel()
	sch := compileSchema(t)
	steps := func(n int) map[string]any {
		s := make([]any, n)
		for i := range s {
			s[i] = map[string]any{"name": fmt.Sprintf("s%d", i), "service": "svc", "command": "Do"}
		}
		return map[string]any{"name": "many", "version": json.Number("1"), "steps": s}
	}
	require.NoError(t, sch.Validate(steps(256)))
	require.Error(t, sch.Validate(steps(257)))
	require.Error(t, sch.Validate(steps(0)))
}

// TestSchemaDurationPattern checks the duration pattern of the schema against time.ParseDuration
// and the positive-duration rule.
func TestSchemaDurationPattern(t *testing.T) {
	t.Parallel()
	var raw struct {
		Defs map[string]struct {
			Pattern string `json:"pattern"`
		} `json:"$defs"`
	}
	require.NoError(t, json.Unmarshal(definitions.Schema(), &raw))
	re := regexp.MustCompile(raw.Defs["duration"].Pattern)
	for _, s := range []string{
		"5s", "1m30s", "200ms", "1h", "24h", "1.5s", ".5s", "1.s", "01s", "10.0ms", "0.001s", "1us", "1µs", "1μs", "1ns",
		"0s1ms", "1h0m0s", "0.5h", "+5s", "2h45m", "1000000h",
		"", "0", "0s", "0.0s", "00ms", "0h0m0s", "-5s", "-0s", "5", "5 s", "s", ".s", "5sec", "5S", "1d", "1h 30m", " 5s", "5s ", "1e3s", "abc",
	} {
		d, err := time.ParseDuration(s)
		goOK := err == nil && d > 0
		if s == "1000000h" {
			goOK = true // overflows time.Duration: the pattern cannot know
		}
		require.Equal(t, goOK, re.MatchString(s), "duration %q", s)
	}
}

func TestSchemaObjectsAreClosed(t *testing.T) {
	t.Parallel()
	var doc any
	require.NoError(t, json.Unmarshal(definitions.Schema(), &doc))
	var walk func(path string, v any)
	objects := 0
	walk = func(path string, v any) {
		switch v := v.(type) {
		case map[string]any:
			if v["type"] == "object" {
				objects++
				require.Equal(t, false, v["additionalProperties"], "%s allows unknown fields", path)
				for name, p := range v["properties"].(map[string]any) {
					require.NotEmpty(t, p.(map[string]any)["description"], "%s.%s has no description", path, name)
				}
			}
			for k, c := range v {
				walk(path+"/"+k, c)
			}
		case []any:
			for i, c := range v {
				walk(fmt.Sprintf("%s/%d", path, i), c)
			}
		}
	}
	walk("#", doc)
	require.Equal(t, 5, objects, "definition, defaults, trigger, retry, step")
}

func TestSchemaIsACopy(t *testing.T) {
	t.Parallel()
	s := definitions.Schema()
	s[0] = 'x'
	require.Equal(t, byte('{'), definitions.Schema()[0])
}
