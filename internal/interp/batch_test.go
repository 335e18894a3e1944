package interp_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowcraft/sqsadapter"
	"github.com/flowcraft/sqsadapter/internal/interp"
)

// itemModel is the batch worker "item" of these tests. An item function
// has no params, so its input says what it does: a number n gives 2n; an
// object fails ("fail"), fails for good ("fatal"), fails its first k
// attempts ("k"), and otherwise outputs {"v", "by"} and writes its "v"
// under the key its "set" names. Anything else is echoed.
func itemModel(c interp.Call) interp.Outcome {
	switch in := c.Input.(type) {
	case int64:
		return interp.Outcome{Output: 2 * in}
	case map[string]any:
		switch {
		case in["fail"] == true:
			return interp.Outcome{Err: fmt.Errorf("item %s refused", c.NodeID)}
		case in["fatal"] == true:
			return interp.Outcome{Err: sqsadapter.Permanent(fmt.Errorf("item %s is poison", c.NodeID))}
		}
		if k, _ := in["k"].(int64); int64(c.Attempt) <= k {
			return interp.Outcome{Err: fmt.Errorf("item %s: flaky attempt %d", c.NodeID, c.Attempt)}
		}
		o := interp.Outcome{Output: map[string]any{"v": in["v"], "by": c.NodeID}}
		if k, ok := in["set"].(string); ok {
			o.Sets = map[string]any{k: in["v"]}
		}
		return o
	}
	return interp.Outcome{Output: c.Input}
}

// mapBP is a blueprint whose map node "m" (params merged from params,
// config from config) is followed by "after", which echoes its input.
func mapBP(t *testing.T, params, config string) *sqsadapter.Blueprint {
	t.Helper()
	if config == "" {
		config = "{}"
	}
	return parse(t, `{"id": "mapped", "nodes": [
		{"id": "m", "uses": "map", "params": {"worker": "item"`+params+`}, "config": `+config+`},
		{"id": "after", "uses": "emit"}],
	  "edges": [{"source": "m", "target": "after"}]}`)
}

func batchOf(items ...any) map[string]any { return map[string]any{"_inputs.m": items} }

var (
	refuse = map[string]any{"fail": true, "v": int64(2)}
	poison = map[string]any{"fatal": true}
)

type batchCase struct {
	name    string
	bp      func(t *testing.T) *sqsadapter.Blueprint
	initial map[string]any
	check   func(t *testing.T, r *interp.Result)
}

var batchCases = []batchCase{{
	name: "flowcraft pair",
	bp: func(t *testing.T) *sqsadapter.Blueprint {
		return parse(t, `{"id": "pair", "nodes": [
			{"id": "b_scatter", "uses": "batch-scatter", "inputs": "items",
			 "params": {"workerUsesKey": "item", "outputKey": "out", "gatherNodeId": "b_gather", "chunkSize": 2}},
			{"id": "b_gather", "uses": "batch-gather", "params": {"outputKey": "out", "gatherNodeId": "b_gather"}, "config": {"joinStrategy": "all"}},
			{"id": "after", "uses": "emit"}],
		  "edges": [{"source": "b_scatter", "target": "b_gather"}, {"source": "b_gather", "target": "after"}]}`)
	},
	initial: map[string]any{"items": []any{1, 2, 3}},
	check: func(t *testing.T, r *interp.Result) {
		results := []any{int64(2), int64(4), int64(6)}
		require.Equal(t, sqsadapter.StatusCompleted, r.Status)
		assert.Equal(t, map[string]any{
			"items": []any{int64(1), int64(2), int64(3)}, "out": results,
			"_outputs.b_scatter": map[string]any{"gatherNodeId": "b_gather", "count": int64(3)},
			"_outputs.b_gather":  results, "_outputs.after": results,
		}, r.Context, "the frozen items are deleted; the items' outputs are no context keys")
		assert.Equal(t, results, r.Outputs["after"], "the gather's successor gets the results")
		for i := range 3 {
			assert.Equal(t, interp.Ran, r.States[interp.ItemRecord("b_scatter", i)])
			assert.Equal(t, 1, r.Attempts[interp.ItemName("b_scatter", i)])
		}
		assert.Len(t, r.Items["b_scatter"], 3)
		assert.Equal(t, []string{"after", "b_gather", "b_scatter", "b_scatter\x1f0", "b_scatter\x1f1", "b_scatter\x1f2"}, r.Nodes(interp.Ran))
	},
}, {
	name:    "no items",
	bp:      func(t *testing.T) *sqsadapter.Blueprint { return mapBP(t, "", "") },
	initial: batchOf(),
	check: func(t *testing.T, r *interp.Result) {
		require.Equal(t, sqsadapter.StatusCompleted, r.Status)
		assert.Equal(t, []any{}, r.Context["m"], "the results under the gather's id")
		assert.Equal(t, []any{}, r.Outputs["m"])
		assert.Equal(t, map[string]any{"gatherNodeId": "m", "count": int64(0)}, r.Outputs["m_scatter"])
		assert.Empty(t, r.Items["m_scatter"])
		assert.NotContains(t, r.Context, "_batch.m_scatter")
	},
}, {
	name: "null input",
	bp:   func(t *testing.T) *sqsadapter.Blueprint { return mapBP(t, "", "") },
	check: func(t *testing.T, r *interp.Result) {
		require.Equal(t, sqsadapter.StatusCompleted, r.Status)
		assert.Equal(t, []any{}, r.Context["m"])
	},
}, {
	name:    "not an array",
	bp:      func(t *testing.T) *sqsadapter.Blueprint { return mapBP(t, "", "") },
	initial: map[string]any{"_inputs.m": "nope"},
	check: func(t *testing.T, r *interp.Result) {
		require.Equal(t, sqsadapter.StatusFailed, r.Status)
		assert.Equal(t, map[string]string{"m_scatter": `node "m_scatter": the input of a batch must be an array, not a string`}, r.Errors)
		assert.Equal(t, interp.Blocked, r.States["m"])
	},
}, {
	name:    "failing items, none tolerated",
	bp:      func(t *testing.T) *sqsadapter.Blueprint { return mapBP(t, "", `{"maxRetries": 2}`) },
	initial: batchOf(1, refuse, 3, poison),
	check: func(t *testing.T, r *interp.Result) {
		require.Equal(t, sqsadapter.StatusFailed, r.Status)
		first := `node "m_scatter" failed after 2 attempt(s): batch item 1: item m_scatter[1] refused`
		assert.Equal(t, map[string]string{"m_scatter": first}, r.Errors)
		assert.Equal(t, []string{first, `node "m_scatter" failed after 1 attempt(s): batch item 3: item m_scatter[3] is poison`},
			r.ItemErrors("m_scatter"))
		assert.Equal(t, []string{"m_scatter\x1f1", "m_scatter\x1f3"}, r.Nodes(interp.Failed))
		assert.Equal(t, []string{"m_scatter", "m_scatter\x1f0", "m_scatter\x1f2"}, r.Nodes(interp.Ran), "the scatter committed")
		assert.Equal(t, []string{"after", "m"}, r.Nodes(interp.Blocked))
		assert.Equal(t, map[string]any{"gatherNodeId": "m", "count": int64(4)}, r.Outputs["m_scatter"], "the scatter committed")
	},
}, {
	name: "failing items within tolerance",
	bp: func(t *testing.T) *sqsadapter.Blueprint {
		return mapBP(t, `, "toleratedFailures": 2`, `{"maxRetries": 2}`)
	},
	initial: batchOf(1, refuse, 3, poison),
	check: func(t *testing.T, r *interp.Result) {
		require.Equal(t, sqsadapter.StatusCompleted, r.Status, "errors: %v", r.Errors)
		assert.Equal(t, []any{int64(2), int64(6)}, r.Context["m"], "the committed items' outputs, in input order")
		assert.Equal(t, interp.Failed, r.States["m_scatter\x1f1"])
		assert.Empty(t, r.Errors)
	},
}, {
	name: "failing items beyond tolerance",
	bp: func(t *testing.T) *sqsadapter.Blueprint {
		return mapBP(t, `, "toleratedFailures": 1`, `{"maxRetries": 2}`)
	},
	initial: batchOf(1, refuse, 3, poison),
	check: func(t *testing.T, r *interp.Result) {
		require.Equal(t, sqsadapter.StatusFailed, r.Status)
		assert.Equal(t, map[string]string{"m": `node "m": 2 of 4 batch items failed, more than toleratedFailures (1); first: ` +
			`item 1: node "m_scatter" failed after 2 attempt(s): batch item 1: item m_scatter[1] refused`}, r.Errors)
		assert.Equal(t, interp.Ran, r.States["m_scatter"])
		assert.Equal(t, interp.Blocked, r.States["after"])
	},
}, {
	name: "writes, retries and an output key",
	bp: func(t *testing.T) *sqsadapter.Blueprint {
		return mapBP(t, `, "outputKey": "results"`, `{"maxRetries": 3}`)
	},
	initial: batchOf(map[string]any{"v": 1, "set": "a"}, map[string]any{"v": 2, "set": "b", "k": 2}),
	check: func(t *testing.T, r *interp.Result) {
		require.Equal(t, sqsadapter.StatusCompleted, r.Status)
		want := []any{map[string]any{"v": int64(1), "by": "m_scatter[0]"}, map[string]any{"v": int64(2), "by": "m_scatter[1]"}}
		assert.Equal(t, want, r.Context["results"])
		assert.NotContains(t, r.Context, "m")
		assert.Equal(t, int64(1), r.Context["a"])
		assert.Equal(t, int64(2), r.Context["b"])
		assert.Equal(t, 3, r.Attempts["m_scatter[1]"])
		assert.Empty(t, r.Racy)
	},
}, {
	name: "items race on a key",
	bp: func(t *testing.T) *sqsadapter.Blueprint {
		return parse(t, `{"id": "race", "nodes": [{"id": "m", "uses": "map", "params": {"worker": "item"}}], "edges": []}`)
	},
	initial: batchOf(map[string]any{"v": 1, "set": "same"}, map[string]any{"v": 2, "set": "same"}),
	check: func(t *testing.T, r *interp.Result) {
		assert.Equal(t, map[string][]any{"same": {int64(1), int64(2)}}, r.Racy, "the items of a batch are concurrent")
	},
}, {
	name: "a node after the batch overwrites its items",
	bp: func(t *testing.T) *sqsadapter.Blueprint {
		return parse(t, `{"id": "over", "nodes": [{"id": "m", "uses": "map", "params": {"worker": "item"}},
			{"id": "after", "uses": "emit", "params": {"set": {"same": 9}}}], "edges": [{"source": "m", "target": "after"}]}`)
	},
	initial: batchOf(map[string]any{"v": 1, "set": "same"}, map[string]any{"v": 2, "set": "same"}),
	check: func(t *testing.T, r *interp.Result) {
		assert.Empty(t, r.Racy)
		assert.Equal(t, int64(9), r.Context["same"])
	},
}, {
	name: "many items in small pages",
	bp:   func(t *testing.T) *sqsadapter.Blueprint { return mapBP(t, `, "chunkSize": 7`, "") },
	initial: func() map[string]any {
		items := make([]any, 200)
		for i := range items {
			items[i] = i
		}
		return batchOf(items...)
	}(),
	check: func(t *testing.T, r *interp.Result) {
		require.Equal(t, sqsadapter.StatusCompleted, r.Status)
		results, _ := r.Context["m"].([]any)
		require.Len(t, results, 200)
		for i, v := range results {
			require.Equal(t, int64(2*i), v)
		}
		assert.Len(t, r.Nodes(interp.Ran), 3+200)
	},
}}

func TestRunBatch(t *testing.T) {
	for _, tc := range batchCases {
		t.Run(tc.name, func(t *testing.T) {
			r, err := interp.Run(tc.bp(t), tc.initial, model)
			require.NoError(t, err)
			tc.check(t, r)
		})
	}
}

// TestRunBatchAgreesWithEngine runs every batch case on the engine, the
// items through interp.Registry, and checks the run against the
// interpreter, the exact error of a failed run included.
func TestRunBatchAgreesWithEngine(t *testing.T) {
	for _, tc := range batchCases {
		t.Run(tc.name, func(t *testing.T) {
			bp := tc.bp(t)
			want, err := interp.Run(bp, tc.initial, model)
			require.NoError(t, err)
			st := runOnEngine(t, bp, tc.initial)
			if len(want.Racy) > 0 {
				st.Context["same"] = int64(1) // either item may commit last
			}
			assert.Empty(t, want.Check(st), "context: %v", st.Context)
			if st.Status == sqsadapter.StatusFailed {
				errs := append(want.ItemErrors(st.FailedNode), want.Errors[st.FailedNode])
				assert.Contains(t, errs, st.Error, "the engine's error, exactly")
			}
			for id := range st.Nodes {
				assert.NotContains(t, id, "\x1f", "item records are no nodes")
			}
		})
	}
}

// Check holds a batch's failure to the error the engine records, up to
// what timing changes.
func TestCheckBatchError(t *testing.T) {
	r, err := interp.Run(mapBP(t, "", `{"maxRetries": 2}`), batchOf(1, refuse, 3, poison), model)
	require.NoError(t, err)
	failed := func(node, msg string) *sqsadapter.RunStatus {
		return &sqsadapter.RunStatus{Status: sqsadapter.StatusFailed, FailedNode: node, Error: msg,
			Context: map[string]any{"_outputs.m_scatter": map[string]any{"gatherNodeId": "m", "count": int64(4)}}}
	}
	item1 := `node "m_scatter" failed after 2 attempt(s): batch item 1: item m_scatter[1] refused`
	item3 := `node "m_scatter" failed after 1 attempt(s): batch item 3: item m_scatter[3] is poison`
	for _, ok := range []string{
		item1, item3,
		`node "m_scatter" failed after 3 attempt(s): batch item 3: item m_scatter[3] is poison`, // crashes consumed attempts
		`node "m_scatter" failed after 2 attempt(s): batch item 1: attempt abandoned: the worker running it stopped or lost the job`,
	} {
		assert.Empty(t, r.Check(failed("m_scatter", ok)), ok)
	}
	for _, bad := range []string{
		`node "m_scatter" failed after 2 attempt(s): batch item 0: item m_scatter[0] refused`, // item 0 committed
		`node "m_scatter" failed after 2 attempt(s): batch item 1: item m_scatter[1] refused twice`,
		`node "m_scatter" failed after 2 attempt(s): batch item 1: attempt abandoned`,
		`node "m_scatter": something else`,
	} {
		problems := r.Check(failed("m_scatter", bad))
		require.Len(t, problems, 1, bad)
		assert.Contains(t, problems[0], "the interpreter expects one of", bad)
	}

	r, err = interp.Run(mapBP(t, `, "toleratedFailures": 1`, `{"maxRetries": 2}`), batchOf(1, refuse, 3, poison), model)
	require.NoError(t, err)
	gather := r.Errors["m"]
	require.NotEmpty(t, gather)
	assert.Empty(t, r.Check(failed("m", gather)))
	abandoned, _, _ := strings.Cut(gather, "item m_scatter[1] refused")
	assert.Empty(t, r.Check(failed("m", abandoned+"attempt abandoned: the worker running it stopped or lost the job")))
	assert.Len(t, r.Check(failed("m", strings.Replace(gather, "2 of 4", "3 of 4", 1))), 1, "the count of failed items is exact")
	problems := r.Check(failed("m_scatter", item1))
	require.Len(t, problems, 1)
	assert.Contains(t, problems[0], "does not see failing", "the scatter does not fail a batch that tolerates failures")
}

func TestParseItemName(t *testing.T) {
	for _, tc := range []struct {
		id      string
		scatter string
		i       int
		ok      bool
	}{
		{"S[3]", "S", 3, true}, {"m_scatter[0]", "m_scatter", 0, true}, {"x[1][12]", "x[1]", 12, true},
		{"[1]", "", 0, false}, {"a[b]", "", 0, false}, {"a[]", "", 0, false}, {"a[1", "", 0, false}, {"a[1234567890]", "", 0, false},
	} {
		s, i, ok := interp.ParseItemName(tc.id)
		assert.Equal(t, tc.ok, ok, tc.id)
		if tc.ok {
			assert.Equal(t, tc.scatter, s, tc.id)
			assert.Equal(t, tc.i, i, tc.id)
			assert.Equal(t, tc.id, interp.ItemName(s, i))
		}
	}
}

func TestRunBatchInvalid(t *testing.T) {
	for name, src := range map[string]string{
		"no worker":   `{"id": "x", "nodes": [{"id": "m", "uses": "map"}], "edges": []}`,
		"taken id":    `{"id": "x", "nodes": [{"id": "m", "uses": "map", "params": {"worker": "item"}}, {"id": "m_scatter", "uses": "emit"}], "edges": []}`,
		"no gather":   `{"id": "x", "nodes": [{"id": "s", "uses": "batch-scatter", "params": {"workerUsesKey": "item", "gatherNodeId": "g"}}], "edges": []}`,
		"negative":    `{"id": "x", "nodes": [{"id": "m", "uses": "map", "params": {"worker": "item", "toleratedFailures": -1}}], "edges": []}`,
		"builtin":     `{"id": "x", "nodes": [{"id": "m", "uses": "map", "params": {"worker": "sleep"}}], "edges": []}`,
		"two targets": `{"id": "x", "nodes": [{"id": "s", "uses": "batch-scatter", "params": {"workerUsesKey": "item", "gatherNodeId": "g"}}, {"id": "g", "uses": "batch-gather"}, {"id": "o", "uses": "emit"}], "edges": [{"source": "s", "target": "g"}, {"source": "s", "target": "o"}]}`,
	} {
		_, err := interp.Run(parse(t, src), nil, model)
		assert.Error(t, err, name)
	}
}

// Check holds a completed run's item counts to the interpreter's, when
// the status lists the nodes.
func TestCheckBatchCounts(t *testing.T) {
	bp := mapBP(t, `, "toleratedFailures": 2`, `{"maxRetries": 2}`)
	initial := batchOf(1, refuse, 3, poison)
	r, err := interp.Run(bp, initial, model)
	require.NoError(t, err)
	st := runOnEngine(t, bp, initial)
	require.Equal(t, 4, st.Nodes["m_scatter"].BatchItems)
	assert.Empty(t, r.Check(st))
	ns := st.Nodes["m_scatter"]
	ns.BatchCompleted, ns.BatchFailed = 3, 1
	st.Nodes["m_scatter"] = ns
	problems := r.Check(st)
	require.Len(t, problems, 1)
	assert.Contains(t, problems[0], `batch "m_scatter": 4 items, 3 committed, 1 failed; the interpreter expects 4, 2, 2`)
}
