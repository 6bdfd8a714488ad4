package order

import (
	_ "embed"

	"github.com/sagaflow/sagaflow/definitions"
	"github.com/sagaflow/sagaflow/saga"
)

//go:embed order-fulfilment.yaml
var definitionYAML []byte

// DefinitionYAML returns the text of order-fulfilment.yaml, the example's definition.
func DefinitionYAML() []byte { return append([]byte(nil), definitionYAML...) }

// LoadDefinition parses the example's definition (embedded in the binary).
func LoadDefinition() (*saga.Definition, error) {
	return definitions.Parse("examples/order/order-fulfilment.yaml", definitionYAML)
}
