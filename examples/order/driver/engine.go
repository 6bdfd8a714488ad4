package driver

import (
	"context"
	"encoding/json"

	"github.com/sagaflow/sagaflow/engine"
)

// EngineStarter adapts an engine (the orchestrator's Go client) to Starter: orders start sagas of
// definition keyed by order id, and the business key is also the idempotency key, so a retried
// start starts nothing new.
func EngineStarter(e *engine.Engine, definition string) Starter {
	return engineStarter{e: e, def: definition}
}

type engineStarter struct {
	e   *engine.Engine
	def string
}

func (st engineStarter) Start(ctx context.Context, key string, input json.RawMessage) (string, error) {
	return st.e.Start(ctx, st.def, key, input, engine.StartOptions{IdempotencyKey: key, Actor: "driver"})
}

func (st engineStarter) Wait(ctx context.Context, id string) (string, error) {
	in, err := st.e.Wait(ctx, id)
	if err != nil {
		return "", err
	}
	return string(in.Status), nil
}
