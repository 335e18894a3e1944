package sqsadapter_test

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/flowcraft/sqsadapter"
	"github.com/flowcraft/sqsadapter/internal/interp"
)

// Batches in the randomized protocol test. The generator makes a share of
// the main nodes batches (protoBatches): map nodes, or the
// batch-scatter/batch-gather pair Flowcraft's builder writes, with 0, 1, a
// few, dozens or up to 200 items, in pages of 1 to 10 items or the
// default 100, some of whose items fail (for good, or with a permanent
// error), with and without toleratedFailures. The interpreter runs the
// batches itself, each item through the same model as the engine's worker
// ("pass"): an item function has no params, so the item's own fields say
// how it behaves (protoItemParams).
//
// Every run is compared with the interpreter as usual: its status, the
// gather's results in input order, its context (the items' writes
// included) and, for a run failed by a batch, the exact error the engine
// records; and, for a completed run, each scatter's item counts (committed
// and failed). The interpreter lists each item under its record id
// (interp.ItemRecord), so that the session's commit counts hold every item
// record to one commit if the interpreter commits it (for a completed run)
// and to none if it fails.

// TestProtocolRandomBatches runs blueprints a fifth of whose nodes are
// batches, under the chaos of TestProtocolRandom (faults, duplicates,
// crashes at every step), a share of the runs cancelled (which closes the
// open item records).
func TestProtocolRandomBatches(t *testing.T) {
	runProtoSession(t, protocolSeed(t), protoBatchClass(protoRuns(20, 12)), newProtoEnv)
}

func protoBatchClass(n int) protoClass {
	return protoClass{name: "batches", runs: n, cancel: 0.15, shape: protoShape{batches: 0.2, waits: 0.1},
		chaos: protoChaos{faultRate: 0.05, crashRate: 0.10, duplicateRate: 0.10}}
}

// protoBatchWorker is the "uses" of every batch's worker: the model of
// the generated nodes.
const protoBatchWorker = "pass"

// protoBatches makes about share of c's main nodes (not fallbacks of
// others, not built-ins) batches; a batch has no fallback (its
// fallback-only node goes). Half are map nodes; the others the pair
// Flowcraft's builder writes, scatter "<id>_scatter" and gather <id>,
// the scatter taking the node's incoming edges and the gather its
// outgoing ones. The items come from a context key of the initial
// context, from "_inputs.<id>" for a start map node, or, for a node with
// one predecessor, from that edge's transform, which makes an array; now
// and then the input is a number, which fails the scatter.
func protoBatches(c *protoCase, r *rand.Rand, share float64) {
	bp := c.bp
	fbOnly := protoFallbackOnly(bp)
	preds := map[string][]string{}
	for _, e := range bp.Edges {
		if !slices.Contains(preds[e.Target], e.Source) {
			preds[e.Target] = append(preds[e.Target], e.Source)
		}
	}
	isFallback := map[string]bool{}
	for _, d := range bp.Nodes {
		isFallback[d.Config.Fallback] = true
	}
	var pairs []sqsadapter.NodeDefinition
	scatterOf := map[string]string{}
	for i := range bp.Nodes {
		d := &bp.Nodes[i]
		if fbOnly[d.ID] || isFallback[d.ID] || interp.Builtin(d.Uses) != "" || r.Float64() >= share {
			continue
		}
		items, tolerated := protoBatchItems(r)
		maxK := int64(0)
		for _, it := range items {
			if m, ok := it.(map[string]any); ok {
				maxK = max(maxK, protoInt(m["k"]))
			}
		}
		params := map[string]any{}
		if k := r.IntN(4); k > 0 && (k > 1 || len(items) <= 60) {
			params["chunkSize"] = int64([]int{1, 3, 10}[k-1]) // pages of one item only for small batches: a job each
		}
		if tolerated > 0 || r.IntN(4) == 0 {
			params["toleratedFailures"] = int64(tolerated)
		}
		outputKey := ""
		if r.IntN(3) == 0 {
			outputKey = "out_" + d.ID
		}
		if d.Config.JoinStrategy == "any" && len(preds[d.ID]) > 1 {
			// An "any" join's input is what its firing edge staged, and a
			// transform on that edge replaces its "inputs": which edge
			// fires depends on timing, so none of them transforms.
			for j := range bp.Edges {
				if e := &bp.Edges[j]; e.Target == d.ID {
					e.Transform = ""
				}
			}
		}
		// The items' input: a key of the initial context, "_inputs.<id>"
		// for a start node, or an array made by the one incoming edge.
		var inputs any
		key := "items_" + d.ID
		switch ps := preds[d.ID]; {
		case r.IntN(20) == 0:
			inputs = "limit" // a number: the scatter fails
		case len(ps) == 0 && r.IntN(2) == 0:
			c.initial["_inputs."+d.ID] = items
		case len(ps) == 1 && r.IntN(3) == 0:
			for j := range bp.Edges {
				if e := &bp.Edges[j]; e.Target == d.ID {
					e.Transform = []string{"[input.v, input.v + 1, input.flag]", "[]", "[input]", `[{kind: "ok", salt: input.v, v: 1}]`}[r.IntN(4)]
				}
			}
		default:
			c.initial[key] = items
			inputs = key
		}
		cfg := sqsadapter.NodeConfig{JoinStrategy: d.Config.JoinStrategy, MaxRetries: int(1 + maxK + 8)}
		if r.IntN(4) == 0 {
			cfg.MaxRetries = int(1+maxK+1) + r.IntN(8) // failing items take every attempt: fewer of them
		}
		if r.IntN(2) == 0 {
			params["worker"] = protoBatchWorker
			if outputKey != "" {
				params["outputKey"] = outputKey
			}
			*d = sqsadapter.NodeDefinition{ID: d.ID, Uses: interp.BuiltinMap, Inputs: inputs, Params: params, Config: cfg}
			continue
		}
		s := d.ID + "_scatter"
		params["workerUsesKey"], params["gatherNodeId"] = protoBatchWorker, d.ID
		gparams := map[string]any{"gatherNodeId": d.ID}
		if outputKey != "" {
			// Flowcraft's builder writes it on both; the gather's wins.
			params["outputKey"], gparams["outputKey"] = "ignored_"+d.ID, outputKey
		}
		if inputs == nil && len(preds[d.ID]) == 0 {
			inputs = "_inputs." + d.ID
		}
		pairs = append(pairs, sqsadapter.NodeDefinition{ID: s, Uses: interp.BuiltinScatter, Inputs: inputs, Params: params, Config: cfg})
		*d = sqsadapter.NodeDefinition{ID: d.ID, Uses: interp.BuiltinGather, Params: gparams, Config: sqsadapter.NodeConfig{JoinStrategy: "all"}}
		scatterOf[d.ID] = s
	}
	for j, e := range bp.Edges {
		if s, ok := scatterOf[e.Target]; ok {
			bp.Edges[j].Target = s
		}
	}
	for _, g := range slices.Sorted(maps.Keys(scatterOf)) {
		bp.Edges = append(bp.Edges, sqsadapter.EdgeDefinition{Source: scatterOf[g], Target: g})
	}
	bp.Nodes = append(bp.Nodes, pairs...)
	// Fallback-only nodes whose node became a batch go.
	used := map[string]bool{}
	for _, d := range bp.Nodes {
		used[d.Config.Fallback] = true
	}
	bp.Nodes = slices.DeleteFunc(bp.Nodes, func(d sqsadapter.NodeDefinition) bool { return fbOnly[d.ID] && !used[d.ID] })
}

// protoBatchItems draws a batch's items and its toleratedFailures: mostly
// a few items, now and then none, one, dozens or up to 200. A third of the
// batches have failing items: as many failures as they tolerate, or more,
// or tolerate none.
func protoBatchItems(r *rand.Rand) (items []any, tolerated int) {
	var n int
	switch k := r.IntN(100); {
	case k < 10:
		n = 0
	case k < 25:
		n = 1
	case k < 80:
		n = 2 + r.IntN(11)
	case k < 95:
		n = 13 + r.IntN(48)
	default:
		n = 100 + r.IntN(101)
	}
	failing := n > 0 && r.IntN(3) == 0
	items = make([]any, 0, n)
	failures := 0
	for i := range n {
		if r.IntN(7) == 0 {
			items = append(items, []any{int64(i), "item " + fmt.Sprint(i), r.IntN(2) == 0}[r.IntN(3)]) // plain values behave as "ok"
			continue
		}
		it := map[string]any{"kind": "ok", "salt": int64(r.IntN(1000)), "v": int64(i)}
		switch k := r.IntN(10); {
		case failing && (k < 2 || i == n-1 && failures == 0):
			it["kind"] = []string{"fail", "fail", "fatal"}[r.IntN(3)]
			failures++
		case k < 4:
			it["kind"], it["k"] = "flaky", int64(1+r.IntN(2))
		}
		if r.IntN(8) == 0 {
			it["write"] = true // writes "k_<scatter>[i]"
		}
		items = append(items, it)
	}
	switch k := r.IntN(10); {
	case failures == 0:
		tolerated = r.IntN(2)
	case k < 4:
		tolerated = failures + r.IntN(2) // completes
	case k < 7 && failures > 1:
		tolerated = 1 + r.IntN(failures-1) // fails at the gather
	}
	return items, tolerated
}

// protoItemParams gives a batch item's behaviour (protoBehave's params):
// an item function has no params, so an item that is an object with a
// "kind" behaves as its fields say; any other item as "ok".
func protoItemParams(item any) map[string]any {
	if m, ok := item.(map[string]any); ok && m["kind"] != nil {
		return m
	}
	return map[string]any{"kind": "ok"}
}

// protoRecordID is the id of the record whose acquisition a node
// function call belongs to: a batch item's ("S[i]", called without
// params) is the item's record.
func protoRecordID(nc *sqsadapter.NodeContext) string {
	if nc.Params == nil {
		if s, i, ok := interp.ParseItemName(nc.NodeID); ok {
			return interp.ItemRecord(s, i)
		}
	}
	return nc.NodeID
}
