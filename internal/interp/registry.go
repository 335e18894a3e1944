package interp

import (
	"context"
	"fmt"

	"github.com/flowcraft/sqsadapter"
)

// Registry returns a node registry that runs model in the engine, for
// every "uses" key of the blueprints: each call finds its node definition
// by blueprint and node id, calls the model with the node's input and
// attempt, and applies the outcome (context writes, output, action, error).
// The engine and the interpreter then execute the very same functions. The
// model is called from several goroutines at once. The built-in kinds
// (wait, webhook, sleep, loop-controller) are left out: the engine runs
// them.
func Registry(model Model, bps ...*sqsadapter.Blueprint) sqsadapter.NodeRegistry {
	defs := map[[2]string]*sqsadapter.NodeDefinition{}
	reg := sqsadapter.NodeRegistry{}
	fn := func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
		def := defs[[2]string{nc.BlueprintID, nc.NodeID}]
		if def == nil {
			return sqsadapter.NodeResult{}, sqsadapter.Permanent(fmt.Errorf("interp: no node %q in blueprint %q", nc.NodeID, nc.BlueprintID))
		}
		o := ApplyModel(model, def, nc)
		return sqsadapter.NodeResult{Output: o.Output, Action: o.Action}, o.Err
	}
	for _, bp := range bps {
		for i := range bp.Nodes {
			d := &bp.Nodes[i]
			defs[[2]string{bp.ID, d.ID}] = d
			if Builtin(d.Uses) == "" && d.Uses != LoopController {
				reg[d.Uses] = fn
			}
		}
	}
	return reg
}

// ApplyModel runs one attempt of the model for a node of a running engine:
// it calls the model with the node's definition, input and attempt, and
// buffers the outcome's context writes in nc. A write the engine refuses
// becomes the outcome's error.
func ApplyModel(model Model, def *sqsadapter.NodeDefinition, nc *sqsadapter.NodeContext) Outcome {
	o := callModel(model, Call{BlueprintID: nc.BlueprintID, NodeID: nc.NodeID, Def: def, Input: nc.Input, Attempt: nc.Attempt, Iteration: nc.Iteration})
	if o.Err != nil {
		return o
	}
	for k, v := range o.Sets {
		if err := nc.Set(k, v); err != nil {
			return Outcome{Err: err}
		}
	}
	for _, k := range o.Deletes {
		if err := nc.Delete(k); err != nil {
			return Outcome{Err: err}
		}
	}
	return o
}
