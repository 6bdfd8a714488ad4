package console

import (
	"net/http"
	"net/url"
	"strconv"

	"github.com/sagaflow/sagaflow/engine"
	"github.com/sagaflow/sagaflow/saga"
)

// definitionView is one definition version: its flow and its sagas.
type definitionView struct {
	Def    *saga.Definition
	Counts engine.VersionCounts
	// Active is the sagas that run (running and compensating).
	Active int64
	// Finished is the sagas that finished well (completed and compensated).
	Finished int64
	Flow     []flowStep
	// Link lists the version's sagas.
	Link string
}

// flowStep is one box of the forward row and, beneath it, its compensation (if any).
type flowStep struct {
	saga.Step
	Index      int
	Pivot      bool
	Undoable   bool
	Retriable  bool
	TimeoutStr string
}

// definitionsView is the definitions page's content.
type definitionsView struct {
	Versions []definitionView
}

func (c *Console) definitions(r *http.Request, _ *user) (string, view, error) {
	versions, err := c.cfg.Engine.DefinitionVersions(r.Context())
	if err != nil {
		return "", view{}, err
	}
	var v definitionsView
	for _, dv := range versions {
		def, err := c.cfg.Definitions.Get(dv.Name, dv.Version)
		if err != nil {
			continue // in the catalog, not in the registry: nothing to draw
		}
		q := url.Values{"definition": {dv.Name}, "version": {strconv.Itoa(dv.Version)}}
		d := definitionView{Def: def, Counts: dv.Counts, Active: dv.Counts.Running + dv.Counts.Compensating,
			Finished: dv.Counts.Completed + dv.Counts.Compensated, Link: "/ui/sagas?" + q.Encode()}
		for i, st := range def.Steps {
			d.Flow = append(d.Flow, flowStep{Step: st, Index: i + 1, Pivot: def.Pivot == st.Name, Undoable: st.Compensation != "",
				Retriable: def.Recovery(i) == saga.RecoveryRetryForward, TimeoutStr: formatDuration(st.Timeout)})
		}
		v.Versions = append(v.Versions, d)
	}
	return "definitions", view{Title: "Definitions", Nav: "definitions", Content: v}, nil
}
