package interp

import (
	"fmt"
	"slices"
	"strings"

	"github.com/flowcraft/sqsadapter"
)

// The built-in node kinds the engine runs itself (docs/protocol.md,
// "Waiting", "Subflows" and "Batches"; the batch kinds are in batch.go).
const (
	BuiltinWait    = "wait"
	BuiltinWebhook = "webhook"
	BuiltinSleep   = "sleep"
	BuiltinSubflow = "subflow"
)

// Builtin returns the built-in kind a node's "uses" names, or "".
func Builtin(uses string) string {
	switch uses {
	case BuiltinWait, BuiltinWebhook, BuiltinSleep, BuiltinSubflow, BuiltinScatter, BuiltinGather, BuiltinMap:
		return uses
	}
	return ""
}

// PairedWebhook returns the webhook node that wait node def of bp is
// paired with — params.eventName "webhook:<id>" naming a webhook
// predecessor — or "". Such a wait node never waits: it passes its input
// on.
func PairedWebhook(bp *sqsadapter.Blueprint, def *sqsadapter.NodeDefinition) string {
	if def.Uses != BuiltinWait {
		return ""
	}
	ev, _ := def.Params["eventName"].(string)
	id, ok := strings.CutPrefix(ev, "webhook:")
	if !ok {
		return ""
	}
	isWebhook := slices.ContainsFunc(bp.Nodes, func(d sqsadapter.NodeDefinition) bool { return d.ID == id && d.Uses == BuiltinWebhook })
	isPred := slices.ContainsFunc(bp.Edges, func(e sqsadapter.EdgeDefinition) bool { return e.Source == id && e.Target == def.ID })
	if isWebhook && isPred {
		return id
	}
	return ""
}

// builtin gives the outcome of a built-in node with input in: a sleep's
// or a paired wait's input, or the model's resume answer for a wait or
// webhook node. An answer the engine could not be resumed with is an
// error: the model is wrong.
func (x *Result) builtin(model Model, bpID string, g *graph, def *sqsadapter.NodeDefinition, in any) (Outcome, error) {
	kind := Builtin(def.Uses)
	if kind == BuiltinSleep || (kind == BuiltinWait && g.pairedWebhook(def) != "") {
		return Outcome{Output: in}, nil
	}
	x.Attempts[def.ID]++
	o := callModel(model, Call{BlueprintID: bpID, NodeID: def.ID, Def: def, Input: in, Attempt: 1, Resume: true})
	switch {
	case o.Err != nil:
		return Outcome{}, fmt.Errorf("interp: resume of %s node %s: the model failed it: %w", kind, def.ID, o.Err)
	case len(o.Sets) > 0 || len(o.Deletes) > 0:
		return Outcome{}, fmt.Errorf("interp: resume of %s node %s: the model writes the context, which a resume cannot", kind, def.ID)
	case kind == BuiltinWebhook && o.Action != "":
		return Outcome{}, fmt.Errorf("interp: resume of webhook node %s: action %q, but a delivery carries none", def.ID, o.Action)
	}
	out, err := Normalize(o.Output)
	if err != nil {
		return Outcome{}, fmt.Errorf("interp: resume of %s node %s: output: %w", kind, def.ID, err)
	}
	res := Outcome{Output: out, Action: o.Action}
	x.Resumes[def.ID] = res
	return res, nil
}

// pairedWebhook is PairedWebhook on the graph.
func (g *graph) pairedWebhook(def *sqsadapter.NodeDefinition) string {
	ev, _ := def.Params["eventName"].(string)
	id, ok := strings.CutPrefix(ev, "webhook:")
	if !ok {
		return ""
	}
	if w := g.defs[id]; w != nil && w.Uses == BuiltinWebhook && slices.Contains(g.preds[def.ID], id) {
		return id
	}
	return ""
}
