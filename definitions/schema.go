package definitions

import (
	"bytes"
	_ "embed" // for schema.json
)

//go:embed schema.json
var schema []byte

// Schema returns the JSON Schema (draft 2020-12) of the definition format, for editors: point the
// YAML language server or an IDE at it to get completion, descriptions and most errors while
// typing. It states the same rules as Parse except those JSON Schema cannot express (unique step
// names, backoff <= max_backoff, the range of a duration, and the YAML-level rules: no anchors,
// aliases, tags, duplicate keys or second documents). Each call returns a new copy.
func Schema() []byte {
	return bytes.Clone(schema)
}
