package interp

import (
	"fmt"
	"maps"
	"slices"

	"github.com/flowcraft/sqsadapter"
)

// Option configures Run.
type Option func(*options)

type options struct {
	blueprints map[string]*sqsadapter.Blueprint
}

// WithBlueprints makes blueprints available to subflow nodes, by id.
func WithBlueprints(bps ...*sqsadapter.Blueprint) Option {
	return func(o *options) {
		if o.blueprints == nil {
			o.blueprints = map[string]*sqsadapter.Blueprint{}
		}
		for _, bp := range bps {
			o.blueprints[bp.ID] = bp
		}
	}
}

// subflow runs a subflow node (reference §4.4, docs/protocol.md
// "Subflows"): each attempt interprets the child blueprint from the
// initial context the node's params give it, with the same model; a
// completed child gives the node's outcome, a failed one fails the attempt
// (and every attempt fails alike: the model is deterministic). fatal is a
// blueprint the interpreter cannot run.
func (x *Result) subflow(model Model, def *sqsadapter.NodeDefinition, in any, view map[string]any, o options) (res Outcome, err, fatal error) {
	childID, _ := def.Params["blueprintId"].(string)
	child := o.blueprints[childID]
	if child == nil {
		return Outcome{}, nil, fmt.Errorf("interp: subflow node %s: blueprint %q is not given (WithBlueprints)", def.ID, childID)
	}
	inputs, _ := def.Params["inputs"].(map[string]any)
	outputs, _ := def.Params["outputs"].(map[string]any)
	initial := map[string]any{}
	if len(inputs) > 0 {
		for k, ref := range inputs {
			parent, _ := ref.(string)
			v := view[parent]
			if v == nil {
				v = view["_outputs."+parent]
			}
			if v != nil {
				initial[k] = v
			}
		}
	} else if in != nil {
		targets := map[string]bool{}
		for _, e := range child.Edges {
			targets[e.Target] = true
		}
		for _, d := range child.Nodes {
			if !targets[d.ID] {
				initial["_inputs."+d.ID] = in
			}
		}
	}
	for attempt := 1; attempt <= max(def.Config.MaxRetries, 1); attempt++ {
		x.Attempts[def.ID]++
		r, ferr := Run(child, initial, model, func(co *options) { *co = o })
		if ferr != nil {
			return Outcome{}, nil, fmt.Errorf("interp: subflow node %s: %w", def.ID, ferr)
		}
		x.Children[def.ID] = append(x.Children[def.ID], r)
		if r.Status != sqsadapter.StatusCompleted {
			msg := "Unknown error"
			if failed := r.failing(); len(failed) > 0 {
				msg = r.Errors[failed[0]]
			}
			err = fmt.Errorf("Sub-workflow '%s' did not complete successfully. Status: %s. Error: %s", childID, r.Status, msg)
			continue
		}
		if len(outputs) > 0 {
			sets := map[string]any{}
			for _, k := range slices.Sorted(maps.Keys(outputs)) {
				sub, _ := outputs[k].(string)
				v := r.Context["_outputs."+sub]
				if v == nil {
					v = r.Context[sub]
				}
				if v != nil {
					sets[k] = v
				}
			}
			return Outcome{Output: maps.Clone(r.Context), Sets: sets}, nil, nil
		}
		sources := map[string]bool{}
		for _, e := range child.Edges {
			sources[e.Source] = true
		}
		var terminals []string
		for _, d := range child.Nodes {
			if !sources[d.ID] {
				terminals = append(terminals, d.ID)
			}
		}
		if len(terminals) == 1 {
			return Outcome{Output: r.Outputs[terminals[0]]}, nil, nil
		}
		out := map[string]any{}
		for _, t := range terminals {
			if v, ok := r.Outputs[t]; ok && v != nil {
				out[t] = v
			}
		}
		return Outcome{Output: out}, nil, nil
	}
	return Outcome{}, err, nil
}
