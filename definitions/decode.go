package definitions

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/sagaflow/sagaflow/saga"
)

// decoder turns a tree of YAML nodes into a spec.
//
// It walks the nodes by hand rather than calling yaml.Node.Decode on structs because the YAML
// decoder stops at the first type error, drops positions, and accepts things the format forbids
// (duplicate keys, numbers where durations belong). Walking lets it report every problem of a file
// at once, each at the position of the offending value, and record where every field is so that
// the validation rules, which run on the decoded model, can point into the file too.
type decoder struct {
	file string
	errs ErrorList
	// nodes maps a field path ("steps[2].retry") to the node of its value, and keys to the node of
	// its key when it has one, for positions.
	nodes, keys map[string]*yaml.Node
	// failed holds the paths of values that could not be decoded; the validation rules stay quiet
	// about them and their children, so that one mistake gives one error.
	failed map[string]bool
}

func newDecoder(file string) *decoder {
	return &decoder{
		file:   file,
		nodes:  make(map[string]*yaml.Node),
		keys:   make(map[string]*yaml.Node),
		failed: make(map[string]bool),
	}
}

// errorAt records a problem at node n.
func (d *decoder) errorAt(n *yaml.Node, field, format string, args ...any) {
	d.errs = append(d.errs, &Error{File: d.file, Line: n.Line, Column: n.Column, Field: field, Msg: fmt.Sprintf(format, args...)})
}

// fail records that the value of field, at node n, could not be decoded.
func (d *decoder) fail(n *yaml.Node, field, format string, args ...any) {
	d.failed[field] = true
	d.errorAt(n, field, format, args...)
}

// report records a problem found by the validation rules, at the value of field or, when the field
// is missing, at the key of its closest enclosing field ("trigger:") or, for a list item or the
// whole definition, at the start of the mapping that lacks it.
func (d *decoder) report(field, msg string) {
	for f := field; ; f = parentField(f) {
		if d.failed[f] {
			return
		}
		if f == "" {
			break
		}
	}
	n := d.nodes[field]
	for f := parentField(field); n == nil; f = parentField(f) {
		if n = d.keys[f]; n == nil {
			n = d.nodes[f]
		}
		if f == "" && n == nil {
			n = &yaml.Node{Line: 1, Column: 1}
		}
	}
	d.errorAt(n, field, "%s", msg)
}

// parentField returns the path of the value that holds field: "steps[2].retry" for
// "steps[2].retry.backoff", "steps" for "steps[2]", "" for "steps".
func parentField(field string) string {
	i := strings.LastIndexAny(field, ".[")
	if i < 0 {
		return ""
	}
	return field[:i]
}

func joinField(parent, key string) string {
	if parent == "" {
		return key
	}
	return parent + "." + key
}

// fieldFunc decodes the value v of the field at path field.
type fieldFunc func(field string, v *yaml.Node)

// mapping decodes the mapping n at field, calling the fieldFunc of each key. It reports unknown and
// duplicate keys, and reports whether n is a mapping.
func (d *decoder) mapping(field string, n *yaml.Node, fields map[string]fieldFunc) bool {
	if n.Kind != yaml.MappingNode {
		d.fail(n, field, "must be a mapping, got %s", describe(n))
		return false
	}
	d.nodes[field] = n
	seen := make(map[string]*yaml.Node, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			d.errorAt(k, field, "keys must be field names, got %s", describe(k))
			continue
		}
		path := joinField(field, k.Value)
		if first, dup := seen[k.Value]; dup {
			d.errorAt(k, path, "duplicate key (first at line %d, column %d)", first.Line, first.Column)
			continue
		}
		seen[k.Value] = k
		decode, ok := fields[k.Value]
		if !ok {
			d.errorAt(k, path, "unknown field; %s", suggest(k.Value, slices.Sorted(maps.Keys(fields))))
			continue
		}
		d.keys[path] = k
		d.nodes[path] = v
		decode(path, v)
	}
	return true
}

// suggest names the known field closest to an unknown one, or lists them all.
func suggest(unknown string, known []string) string {
	// Suggest only within an edit distance that grows with the length: 1 for "ky", 3 for "retries".
	best, bestDist := "", min(3, 1+len(unknown)/3)+1
	for _, k := range known {
		if dist := editDistance(strings.ToLower(unknown), k); dist < bestDist {
			best, bestDist = k, dist
		}
	}
	if best != "" {
		return fmt.Sprintf("did you mean %q?", best)
	}
	return "expected one of " + strings.Join(known, ", ")
}

// editDistance is the Levenshtein distance of a and b, bytewise; unknown keys are short, and an
// absurdly long one is not worth comparing.
func editDistance(a, b string) int {
	if len(a) > 64 {
		return len(a)
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func (d *decoder) definition(root *yaml.Node) *spec {
	s := &spec{}
	if root.Kind != yaml.MappingNode {
		d.fail(root, "", "a definition must be a mapping with name, version and steps, got %s", describe(root))
		return s
	}
	d.mapping("", root, map[string]fieldFunc{
		"name":        d.stringInto(&s.name),
		"version":     d.intInto(&s.version),
		"description": d.stringInto(&s.description),
		"trigger":     func(f string, v *yaml.Node) { s.trigger = d.trigger(f, v) },
		"pivot":       d.stringInto(&s.pivot),
		"defaults": func(f string, v *yaml.Node) {
			d.mapping(f, v, d.stepDefaultFields(&s.defaults))
		},
		"steps": func(f string, v *yaml.Node) { s.steps = d.steps(f, v) },
	})
	return s
}

func (d *decoder) trigger(field string, n *yaml.Node) *saga.Trigger {
	var t saga.Trigger
	if !d.mapping(field, n, map[string]fieldFunc{
		"subject": d.stringInto(&t.Subject),
		"key":     d.stringInto(&t.Key),
	}) {
		return nil
	}
	return &t
}

// stepDefaultFields returns the decoders of the fields that a step and the definition's defaults
// have in common.
func (d *decoder) stepDefaultFields(sd *stepDefaults) map[string]fieldFunc {
	return map[string]fieldFunc{
		"timeout": func(f string, v *yaml.Node) {
			if t, ok := d.duration(f, v); ok {
				sd.timeout = &t
			}
		},
		"retry":              func(f string, v *yaml.Node) { sd.retry = d.retry(f, v) },
		"compensation_retry": func(f string, v *yaml.Node) { sd.compensationRetry = d.retry(f, v) },
	}
}

func (d *decoder) steps(field string, n *yaml.Node) []stepSpec {
	if n.Kind != yaml.SequenceNode {
		d.fail(n, field, "must be a list of steps, got %s", describe(n))
		return nil
	}
	if len(n.Content) > maxSteps {
		d.fail(n, field, "has %d steps, at most %d are allowed", len(n.Content), maxSteps)
		return nil
	}
	steps := make([]stepSpec, len(n.Content))
	for i, item := range n.Content {
		st := &steps[i]
		fields := d.stepDefaultFields(&st.stepDefaults)
		fields["name"] = d.stringInto(&st.name)
		fields["service"] = d.stringInto(&st.service)
		fields["command"] = d.stringInto(&st.command)
		fields["compensation"] = d.stringInto(&st.compensation)
		fields["recovery"] = func(f string, v *yaml.Node) {
			var r string
			d.stringInto(&r)(f, v)
			st.recovery = saga.Recovery(r)
		}
		d.mapping(field+"["+strconv.Itoa(i)+"]", item, fields)
	}
	return steps
}

func (d *decoder) retry(field string, n *yaml.Node) *retrySpec {
	var r retrySpec
	if !d.mapping(field, n, map[string]fieldFunc{
		"max_attempts": func(f string, v *yaml.Node) {
			if i, ok := d.integer(f, v); ok {
				r.maxAttempts = &i
			}
		},
		"backoff": func(f string, v *yaml.Node) {
			if t, ok := d.duration(f, v); ok {
				r.backoff = &t
			}
		},
		"max_backoff": func(f string, v *yaml.Node) {
			if t, ok := d.duration(f, v); ok {
				r.maxBackoff = &t
			}
		},
		"jitter": func(f string, v *yaml.Node) {
			if x, ok := d.number(f, v); ok {
				r.jitter = &x
			}
		},
	}) {
		return nil
	}
	return &r
}

func (d *decoder) stringInto(dst *string) fieldFunc {
	return func(field string, n *yaml.Node) {
		if n.Kind != yaml.ScalarNode || n.Tag != "!!str" {
			hint := ""
			if n.Kind == yaml.ScalarNode && n.Tag != "!!null" {
				hint = fmt.Sprintf(" (quote it: %q)", n.Value)
			}
			d.fail(n, field, "must be a string, got %s%s", describe(n), hint)
			return
		}
		*dst = n.Value
	}
}

func (d *decoder) intInto(dst *int) fieldFunc {
	return func(field string, n *yaml.Node) {
		if i, ok := d.integer(field, n); ok {
			*dst = i
		}
	}
}

func (d *decoder) integer(field string, n *yaml.Node) (int, bool) {
	var i int
	// Decoding a scalar node is safe: a scalar holds no aliases.
	if n.Kind != yaml.ScalarNode || n.Tag != "!!int" || n.Decode(&i) != nil {
		d.fail(n, field, "must be an integer, got %s", describe(n))
		return 0, false
	}
	return i, true
}

func (d *decoder) number(field string, n *yaml.Node) (float64, bool) {
	var x float64
	if n.Kind != yaml.ScalarNode || (n.Tag != "!!int" && n.Tag != "!!float") || n.Decode(&x) != nil {
		d.fail(n, field, "must be a number, got %s", describe(n))
		return 0, false
	}
	return x, true
}

// duration decodes a Go duration string such as "5s", "1m30s" or "200ms". Its range is checked by
// the validation rules.
func (d *decoder) duration(field string, n *yaml.Node) (time.Duration, bool) {
	const needsUnit = "duration needs a unit, e.g. 5s"
	if n.Kind == yaml.ScalarNode && (n.Tag == "!!int" || n.Tag == "!!float") {
		d.fail(n, field, "%s; got the number %s", needsUnit, n.Value)
		return 0, false
	}
	if n.Kind != yaml.ScalarNode || n.Tag != "!!str" {
		d.fail(n, field, "must be a duration such as 5s, got %s", describe(n))
		return 0, false
	}
	t, err := time.ParseDuration(n.Value)
	if err != nil {
		if _, numErr := strconv.ParseFloat(n.Value, 64); numErr == nil {
			d.fail(n, field, "%s; got %q", needsUnit, n.Value)
		} else {
			d.fail(n, field, "invalid duration %q: use Go syntax such as 5s, 1m30s or 200ms", n.Value)
		}
		return 0, false
	}
	return t, true
}

// describe says what a node is, for messages: "a mapping", "a list", "null", or the scalar as
// written (quoted when it is a string).
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		v, runes := n.Value, 0
		for i := range v {
			if runes == 40 {
				v = v[:i] + "..."
				break
			}
			runes++
		}
		switch n.Tag {
		case "!!null":
			return "null"
		case "!!str":
			return strconv.Quote(v)
		}
		return v
	}
	return "an unexpected YAML node"
}
