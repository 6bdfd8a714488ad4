package server

import (
	"context"

	"golang.org/x/sync/errgroup"
)

// StackConfig configures a stack: an orchestrator node and participant nodes that run in one
// process.
type StackConfig struct {
	// Orchestrator configures the orchestrator node (see Config). Its Orchestrator and Relay may
	// both be false: the node then only gives the engine's Go client and the streams.
	Orchestrator Config
	// Participants configures one participant node each (see ParticipantConfig); none is fine.
	Participants []ParticipantConfig
}

// Stack is an orchestrator node and participant nodes run as one system: "sagaflow dev --example
// order", "sagaflow bench saga" and the end-to-end tests run the order example this way.
type Stack struct {
	node         *Node
	participants []*ParticipantNode
}

// NewStack builds the orchestrator node (New) and then each participant node (NewParticipant).
// The databases must be migrated already.
func NewStack(ctx context.Context, cfg StackConfig) (*Stack, error) {
	node, err := New(ctx, cfg.Orchestrator)
	if err != nil {
		return nil, err
	}
	s := &Stack{node: node}
	for _, pcfg := range cfg.Participants {
		pn, err := NewParticipant(pcfg)
		if err != nil {
			node.close()
			return nil, err
		}
		s.participants = append(s.participants, pn)
	}
	return s, nil
}

// Node returns the orchestrator node: its engine (the Go client that starts and reads sagas,
// whether or not the node runs the orchestrator) and its API's address.
func (s *Stack) Node() *Node { return s.node }

// Run runs every node until ctx is done, then returns nil once all have stopped; if one fails,
// the others are stopped and its error is returned.
func (s *Stack) Run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.node.Run(gctx) })
	for _, pn := range s.participants {
		g.Go(func() error { return pn.Run(gctx) })
	}
	return g.Wait()
}
