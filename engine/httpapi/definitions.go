package httpapi

import (
	"net/http"

	"github.com/sagaflow/sagaflow/engine"
	"github.com/sagaflow/sagaflow/saga"
)

// DefinitionsResponse is the answer to GET /v1/definitions: every version the orchestrator runs,
// with its body (Definitions) and with its hash, its registration time and its sagas per status
// (Versions), both sorted by name and version.
type DefinitionsResponse struct {
	Definitions []*saga.Definition         `json:"definitions"`
	Versions    []engine.DefinitionVersion `json:"versions"`
}

func (h *handler) definitions(w http.ResponseWriter, r *http.Request) {
	resp := DefinitionsResponse{Definitions: []*saga.Definition{}, Versions: []engine.DefinitionVersion{}}
	if h.defs != nil {
		resp.Definitions = append(resp.Definitions, h.defs.List()...)
	}
	versions, err := h.e.DefinitionVersions(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	resp.Versions = append(resp.Versions, versions...)
	writeJSON(w, http.StatusOK, resp)
}
