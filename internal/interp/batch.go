package interp

import (
	"encoding/json"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/flowcraft/sqsadapter"
	"github.com/flowcraft/sqsadapter/internal/jsonvalue"
)

// The batch built-ins (docs/protocol.md, "Batches"; the engine's
// batchmap.go): a batch-scatter node S and its batch-gather node G, as
// Flowcraft's builder writes them, and the "map" node m, which the engine
// compiles to the scatter "m_scatter" and the gather "m".
const (
	BuiltinScatter = "batch-scatter"
	BuiltinGather  = "batch-gather"
	BuiltinMap     = "map"
)

// batchKeyPrefix begins the context key of a scatter's frozen items.
const batchKeyPrefix = "_batch."

// itemSeparator separates a scatter's id and an item's index in the id of
// the item's record, as in the engine.
const itemSeparator = "\x1f"

// Item is what became of one batch item in the interpreter's run.
type Item struct {
	Input any
	// State is Ran (its output committed) or Failed (failed for good).
	State  State
	Output any
	// Error is what the engine records for a failed item, and fails the
	// run with when the batch tolerates no failure: `node "S" failed
	// after N attempt(s): batch item i: <error>`.
	Error string
}

// ItemName is the node id a batch item's function sees, "S[i]" (i from
// 0), as the engine's NodeContext.NodeID; the model is called with it.
func ItemName(scatter string, i int) string { return scatter + "[" + strconv.Itoa(i) + "]" }

// ItemRecord is the id of the engine's record of item i of scatter S,
// "S␟i" (U+001F): the key under which Result.States gives the item's fate
// and under which the engine commits the item's output.
func ItemRecord(scatter string, i int) string { return scatter + itemSeparator + strconv.Itoa(i) }

// ParseItemName splits an item's node id "S[i]" into the scatter's id and
// the index. Only a model that knows its blueprints can tell such an id
// from a node's: the engine refuses node ids of that form only next to a
// scatter S.
func ParseItemName(id string) (scatter string, i int, ok bool) {
	open := strings.LastIndexByte(id, '[')
	if open <= 0 || !strings.HasSuffix(id, "]") {
		return "", 0, false
	}
	digits := id[open+1 : len(id)-1]
	if digits == "" || len(digits) > 9 || strings.Trim(digits, "0123456789") != "" {
		return "", 0, false
	}
	i, err := strconv.Atoi(digits)
	return id[:open], i, err == nil
}

// batch is a scatter and gather pair of a blueprint.
type batch struct {
	scatter, gather string
	worker          string // the "uses" of the function that runs each item
	tolerated       int
	outputKey       string
	// Filled in when the scatter runs, for its gather.
	results []any
	failed  int
	first   string // "item i: <error>" of the first failed item
}

// batches are a blueprint's batches, by scatter and by gather id.
type batches struct {
	byScatter, byGather map[string]*batch
}

// expandMaps replaces every "map" node m of bp, as the engine does, by a
// scatter "m_scatter" that takes the edges into m, m's inputs, config and
// params, and a gather m that keeps the edges out of m; a start map node
// without inputs reads "_inputs.m". bp is returned as it is when it has no
// map node.
func expandMaps(bp *sqsadapter.Blueprint) (*sqsadapter.Blueprint, error) {
	if !slices.ContainsFunc(bp.Nodes, func(n sqsadapter.NodeDefinition) bool { return n.Uses == BuiltinMap }) {
		return bp, nil
	}
	ids := map[string]bool{}
	targets := map[string]bool{}
	for _, n := range bp.Nodes {
		ids[n.ID] = true
	}
	for _, e := range bp.Edges {
		targets[e.Target] = true
	}
	out := &sqsadapter.Blueprint{ID: bp.ID, Metadata: bp.Metadata, Edges: slices.Clone(bp.Edges)}
	scatterOf := map[string]string{}
	for _, n := range bp.Nodes {
		if n.Uses != BuiltinMap {
			out.Nodes = append(out.Nodes, n)
			continue
		}
		s := n.ID + "_scatter"
		if ids[s] {
			return nil, fmt.Errorf("interp: blueprint %s: map node %s: its scatter's id %q is taken", bp.ID, n.ID, s)
		}
		for k := range n.Params {
			if !slices.Contains([]string{"worker", "chunkSize", "toleratedFailures", "outputKey"}, k) {
				return nil, fmt.Errorf("interp: blueprint %s: map node %s: unknown param %q", bp.ID, n.ID, k)
			}
		}
		worker, _ := n.Params["worker"].(string)
		params := map[string]any{"workerUsesKey": worker, "gatherNodeId": n.ID}
		gparams := map[string]any{"gatherNodeId": n.ID}
		for _, k := range []string{"chunkSize", "toleratedFailures", "outputKey"} {
			if v, ok := n.Params[k]; ok {
				params[k] = v
			}
		}
		if v, ok := n.Params["outputKey"]; ok {
			gparams["outputKey"] = v
		}
		inputs := n.Inputs
		if inputs == nil && !targets[n.ID] {
			inputs = "_inputs." + n.ID
		}
		cfg := n.Config
		cfg.Fallback = ""
		out.Nodes = append(out.Nodes,
			sqsadapter.NodeDefinition{ID: s, Uses: BuiltinScatter, Inputs: inputs, Params: params, Config: cfg},
			sqsadapter.NodeDefinition{ID: n.ID, Uses: BuiltinGather, Params: gparams,
				Config: sqsadapter.NodeConfig{JoinStrategy: "all", Fallback: n.Config.Fallback}})
		scatterOf[n.ID] = s
	}
	for i, e := range out.Edges {
		if s, ok := scatterOf[e.Target]; ok {
			out.Edges[i].Target = s
		}
	}
	for _, m := range slices.Sorted(maps.Keys(scatterOf)) {
		out.Edges = append(out.Edges, sqsadapter.EdgeDefinition{Source: scatterOf[m], Target: m})
	}
	return out, nil
}

// compileBatches pairs the scatters and gathers of bp (maps expanded) and
// refuses what the engine refuses to compile: a worker that is missing or
// a built-in, a gather that is not a scatter's only successor and the
// scatter its only predecessor, an edge to the gather with an action, a
// condition or a transform, a fallback on or to a batch node, a
// toleratedFailures that is not a non-negative integer, and an outputKey
// that is not a context key a node can write.
func compileBatches(bp *sqsadapter.Blueprint) (*batches, error) {
	bs := &batches{byScatter: map[string]*batch{}, byGather: map[string]*batch{}}
	defs := map[string]*sqsadapter.NodeDefinition{}
	for i := range bp.Nodes {
		defs[bp.Nodes[i].ID] = &bp.Nodes[i]
	}
	isBatch := func(id string) bool {
		d := defs[id]
		return d != nil && (d.Uses == BuiltinScatter || d.Uses == BuiltinGather)
	}
	fail := func(format string, args ...any) (*batches, error) {
		return nil, fmt.Errorf("interp: blueprint %s: "+format, append([]any{bp.ID}, args...)...)
	}
	for _, d := range bp.Nodes {
		if isBatch(d.Config.Fallback) {
			return fail("node %s: its fallback %s is a batch node", d.ID, d.Config.Fallback)
		}
		if isBatch(d.ID) && d.Config.Fallback != "" {
			return fail("batch node %s has a fallback", d.ID)
		}
		if d.Uses != BuiltinScatter {
			continue
		}
		w, _ := d.Params["workerUsesKey"].(string)
		if w == "" || Builtin(w) != "" {
			return fail("scatter %s: params.workerUsesKey %q must name a registered function", d.ID, w)
		}
		gid, _ := d.Params["gatherNodeId"].(string)
		if g := defs[gid]; g == nil || g.Uses != BuiltinGather {
			return fail("scatter %s: params.gatherNodeId %q must name a batch-gather node", d.ID, gid)
		}
		if bs.byGather[gid] != nil {
			return fail("gather %s has several scatters", gid)
		}
		b := &batch{scatter: d.ID, gather: gid, worker: w, outputKey: gid}
		if v, ok := d.Params["toleratedFailures"]; ok && v != nil {
			n, valid := intValue(v)
			if !valid || n < 0 {
				return fail("scatter %s: toleratedFailures must be a non-negative integer, not %v", d.ID, v)
			}
			b.tolerated = n
		}
		for _, params := range []map[string]any{d.Params, defs[gid].Params} {
			v, ok := params["outputKey"]
			if !ok || v == nil {
				continue
			}
			k, isString := v.(string)
			if !isString || k == "" || strings.HasPrefix(k, "_outputs.") || k == batchKeyPrefix+d.ID {
				return fail("batch %s: outputKey %v is not a context key a node can write", d.ID, v)
			}
			b.outputKey = k // the gather's wins
		}
		bs.byScatter[d.ID], bs.byGather[gid] = b, b
	}
	var outOf, into = map[string][]sqsadapter.EdgeDefinition{}, map[string][]string{}
	for _, e := range bp.Edges {
		outOf[e.Source] = append(outOf[e.Source], e)
		if !slices.Contains(into[e.Target], e.Source) {
			into[e.Target] = append(into[e.Target], e.Source)
		}
	}
	for _, d := range bp.Nodes {
		if d.Uses == BuiltinGather && bs.byGather[d.ID] == nil {
			return fail("gather %s: no scatter names it", d.ID)
		}
	}
	for _, b := range bs.byScatter {
		es := outOf[b.scatter]
		if len(es) != 1 || es[0].Target != b.gather {
			return fail("scatter %s: its only outgoing edge must be the one to its gather %s", b.scatter, b.gather)
		}
		if e := es[0]; e.Action != "" || e.Condition != "" || e.Transform != "" {
			return fail("scatter %s: the edge to its gather has an action, a condition or a transform", b.scatter)
		}
		if ps := into[b.gather]; len(ps) != 1 {
			return fail("gather %s: its only predecessor must be its scatter %s", b.gather, b.scatter)
		}
		if gid, ok := defs[b.gather].Params["gatherNodeId"]; ok && gid != b.gather {
			return fail("gather %s: params.gatherNodeId %v is not its own id", b.gather, gid)
		}
	}
	return bs, nil
}

// intValue reads an integer param as the engine does.
func intValue(v any) (int, bool) {
	switch x := v.(type) {
	case int:
		return x, true
	case int64:
		return int(x), x == int64(int(x))
	case float64:
		return int(x), x == float64(int64(x)) && x > -1e15 && x < 1e15
	case json.Number:
		i, err := x.Int64()
		return int(i), err == nil
	}
	return 0, false
}

// scatter runs scatter node def of batch b with input in: it commits the
// scatter (its output {"gatherNodeId", "count"}, the items frozen under
// "_batch.S"), then runs every item through the worker, in order, each
// under its record: a committed item's writes join the context; a failed
// one, when the batch tolerates no failure, fails the run at the scatter
// with the first failed item's error (in a distributed run, whichever
// failed item is recorded first names the failure: ItemErrors lists them
// all); the scatter is then in Errors, but Ran, as it committed. An input
// that is not an array (null is empty) fails the scatter.
func (x *Result) scatter(model Model, bpID string, g *graph, b *batch, def *sqsadapter.NodeDefinition, in any,
	view map[string]any, taken map[string]map[string]bool, staged map[string]map[string]any, writers map[string][]write) {
	id := def.ID
	items, ok := in.([]any)
	if !ok && in != nil {
		x.States[id] = Failed
		x.Errors[id] = fmt.Sprintf("node %q: the input of a batch must be an array, not %s", id, jsonvalue.Kind(in))
		x.batchErrors[id] = []string{x.Errors[id]}
		return
	}
	if items == nil {
		items = []any{}
	}
	out := map[string]any{"gatherNodeId": b.gather, "count": int64(len(items))}
	x.commit(g, id, Outcome{Output: out, Sets: map[string]any{batchKeyPrefix + id: items}}, in, view, taken, staged, writers)

	b.results = []any{}
	list := make([]Item, len(items))
	var failedItem string
	for i, item := range items {
		name := ItemName(id, i)
		g.items[name] = id
		idef := &sqsadapter.NodeDefinition{ID: name, Uses: b.worker}
		res, err := x.attempts(model, bpID, idef, item, max(def.Config.MaxRetries, 1))
		list[i] = Item{Input: item}
		if err != nil {
			msg := fmt.Sprintf("node %q failed after %d attempt(s): batch item %d: %v", id, x.Attempts[name], i, err)
			list[i].State, list[i].Error = Failed, msg
			x.States[ItemRecord(id, i)] = Failed
			if b.failed++; b.first == "" {
				b.first, failedItem = fmt.Sprintf("item %d: %s", i, msg), msg
			}
			continue
		}
		list[i].State, list[i].Output = Ran, res.Output
		x.States[ItemRecord(id, i)] = Ran
		b.results = append(b.results, res.Output)
		x.apply(name, res, view, writers)
	}
	x.Items[id] = list
	if b.failed > 0 && b.tolerated == 0 {
		x.Errors[id] = failedItem // the scatter stays Ran: it committed
		x.batchErrors[id] = x.ItemErrors(id)
	}
}

// gather runs gather node def of batch b, whose scatter ran: it commits
// the outputs of the committed items, in input order, as its output and
// under the batch's outputKey, and deletes the frozen items; or, when
// more items failed than the batch tolerates, it fails.
func (x *Result) gather(g *graph, b *batch, def *sqsadapter.NodeDefinition, in any,
	view map[string]any, taken map[string]map[string]bool, staged map[string]map[string]any, writers map[string][]write) {
	if _, failing := x.Errors[b.scatter]; failing {
		x.States[def.ID] = Blocked // the items failed the run at the scatter
		return
	}
	if b.failed > b.tolerated {
		x.States[def.ID] = Failed
		x.Errors[def.ID] = fmt.Sprintf("node %q: %d of %d batch items failed, more than toleratedFailures (%d); first: %s",
			def.ID, b.failed, len(x.Items[b.scatter]), b.tolerated, b.first)
		x.batchErrors[def.ID] = []string{x.Errors[def.ID]}
		return
	}
	res := Outcome{Output: b.results, Sets: map[string]any{b.outputKey: b.results}, Deletes: []string{batchKeyPrefix + b.scatter}}
	x.commit(g, def.ID, res, in, view, taken, staged, writers)
}

// ItemErrors returns the errors of scatter id's failed items: when the
// batch tolerates no failure, a distributed run fails with whichever is
// recorded first.
func (r *Result) ItemErrors(id string) []string {
	var errs []string
	for _, it := range r.Items[id] {
		if it.State == Failed {
			errs = append(errs, it.Error)
		}
	}
	return errs
}

// attemptCount matches the attempt count in an item's error.
var attemptCount = regexp.MustCompile(`failed after \d+ attempt\(s\): batch item \d+: `)

// sameBatchError reports whether got, a run's error, is the batch error
// want, allowing for what timing changes: crashes consume attempts, so the
// attempt count may differ; and an item whose last attempt was cut short
// is recorded as abandoned instead of with its function's error.
func sameBatchError(want, got string) bool {
	if got == want {
		return true
	}
	mask := func(s string) string {
		return attemptCount.ReplaceAllStringFunc(s, func(m string) string {
			_, item, _ := strings.Cut(m, ": ")
			return "failed after 0 attempt(s): " + item
		})
	}
	w, gt := mask(want), mask(got)
	if w == gt {
		return true
	}
	loc := attemptCount.FindStringIndex(w)
	if loc == nil {
		return false
	}
	// The abandoned form: the same up to the item, then the abandonment.
	return gt == w[:loc[1]]+abandoned
}

// abandoned is the engine's error of an attempt cut short.
const abandoned = "attempt abandoned: the worker running it stopped or lost the job"
