package httpapi

import (
	_ "embed"
	"fmt"
	"net/http"
	"sync"

	goccy "github.com/goccy/go-yaml"
)

// openAPIYAML is the API's OpenAPI 3.1 document, written by hand next to the handlers it
// describes; TestOpenAPI checks every route and every answer against it.
//
//go:embed openapi.yaml
var openAPIYAML []byte

// OpenAPI returns the API's OpenAPI 3.1 document as JSON, the body of GET /openapi.json.
var OpenAPI = sync.OnceValue(func() []byte {
	b, err := goccy.YAMLToJSON(openAPIYAML)
	if err != nil {
		panic(fmt.Sprintf("httpapi: the embedded openapi.yaml is not YAML: %v", err)) // a build defect, caught by every test
	}
	return b
})

// openAPI serves GET /openapi.json. It needs no token (auth.go, openPaths): it describes the
// routes, which are public in the source anyway, and reveals no data.
func openAPI(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(OpenAPI()) // the client went away; nothing to do
}
