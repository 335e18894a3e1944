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
// (wait, webhook, sleep, subflow, loop-controller and the batch kinds) are
// left out: the engine runs them. The workers of batches are in: a batch
// item's call gets the definition the interpreter gives it (ItemName).
func Registry(model Model, bps ...*sqsadapter.Blueprint) sqsadapter.NodeRegistry {
	defs := map[[2]string]*sqsadapter.NodeDefinition{}
	workers := map[[2]string]string{} // blueprint and scatter id → the worker's "uses"
	reg := sqsadapter.NodeRegistry{}
	fn := func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
		def := defs[[2]string{nc.BlueprintID, nc.NodeID}]
		if s, _, ok := ParseItemName(nc.NodeID); ok && def == nil && workers[[2]string{nc.BlueprintID, s}] != "" {
			def = &sqsadapter.NodeDefinition{ID: nc.NodeID, Uses: workers[[2]string{nc.BlueprintID, s}]}
		}
		if def == nil {
			return sqsadapter.NodeResult{}, sqsadapter.Permanent(fmt.Errorf("interp: no node %q in blueprint %q", nc.NodeID, nc.BlueprintID))
		}
		o := ApplyModel(model, def, nc)
		return sqsadapter.NodeResult{Output: o.Output, Action: o.Action}, o.Err
	}
	for _, bp := range bps {
		if expanded, err := expandMaps(bp); err == nil {
			bp = expanded
		}
		for i := range bp.Nodes {
			d := &bp.Nodes[i]
			defs[[2]string{bp.ID, d.ID}] = d
			if Builtin(d.Uses) == "" && d.Uses != LoopController {
				reg[d.Uses] = fn
			}
			if w, _ := d.Params["workerUsesKey"].(string); d.Uses == BuiltinScatter && w != "" && Builtin(w) == "" {
				workers[[2]string{bp.ID, d.ID}] = w
				reg[w] = fn
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
