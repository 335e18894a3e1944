package interp_test

import (
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowcraft/sqsadapter"
	"github.com/flowcraft/sqsadapter/internal/interp"
	"github.com/flowcraft/sqsadapter/sqsadaptertest"
)

// loopModel is model with two kinds that depend on the pass:
//
//	iter    outputs {"it": the pass, "in": its input} and writes "last": the pass
//	failAt  fails in pass params["at"], else behaves as emit
func loopModel(c interp.Call) interp.Outcome {
	switch c.Def.Uses {
	case "iter":
		return interp.Outcome{Output: map[string]any{"it": c.Iteration, "in": c.Input}, Sets: map[string]any{"last": c.Iteration}}
	case "failAt":
		if at, _ := c.Def.Params["at"].(int64); int64(c.Iteration) == at {
			return interp.Outcome{Err: fmt.Errorf("boom: %s in pass %d", c.NodeID, c.Iteration)}
		}
	}
	return model(c)
}

var loopCases = []testCase{
	{
		name: "entered at the body",
		bp: `{"id": "dowhile", "nodes": [
			{"id": "init", "uses": "emit", "params": {"out": "start"}},
			{"id": "s", "uses": "iter"}, {"id": "e", "uses": "emit"},
			{"id": "l", "uses": "loop-controller", "params": {"condition": "last < 2"}},
			{"id": "fin", "uses": "emit"}],
		  "edges": [{"source": "init", "target": "s"}, {"source": "s", "target": "e"}, {"source": "e", "target": "l"},
			{"source": "l", "target": "s", "action": "continue", "transform": "context[\"e\"].it"},
			{"source": "l", "target": "fin", "action": "break", "transform": "context[\"e\"]"}]}`,
		check: func(t *testing.T, r *interp.Result) {
			assert.Equal(t, sqsadapter.StatusCompleted, r.Status)
			assert.Equal(t, []int{0, 1, 2}, r.Passes["s"])
			assert.Equal(t, []int{0, 1, 2}, r.Passes["e"])
			assert.Equal(t, []int{0, 1, 2}, r.Passes["l"])
			last := map[string]any{"it": int64(2), "in": int64(1)}
			assert.Equal(t, last, r.Context["_outputs.s"], "the last pass's output; its input staged by the continue edge")
			assert.Equal(t, last, r.Context["_outputs.fin"], "the break edge's transform sees the last pass")
			assert.Equal(t, int64(2), r.Context["last"])
			assert.Nil(t, r.Context["_outputs.l"])
			assert.Contains(t, r.Context, "_outputs.l")
			assert.Equal(t, 3, r.Attempts["s"])
			assert.Empty(t, r.Racy)
		},
	},
	{
		name: "entered at the controller, branches inside",
		bp: `{"id": "while", "nodes": [
			{"id": "init", "uses": "emit", "params": {"out": "start"}},
			{"id": "s", "uses": "iter"}, {"id": "odd", "uses": "emit"}, {"id": "even", "uses": "emit"},
			{"id": "j", "uses": "emit", "config": {"joinStrategy": "all"}},
			{"id": "l", "uses": "loop-controller", "params": {"condition": "(last ?? 0) < 3"}},
			{"id": "fin", "uses": "emit"}],
		  "edges": [{"source": "init", "target": "l"},
			{"source": "s", "target": "odd", "condition": "result.output.it % 2 == 1"},
			{"source": "s", "target": "even", "condition": "result.output.it % 2 == 0"},
			{"source": "odd", "target": "j"}, {"source": "even", "target": "j"}, {"source": "j", "target": "l"},
			{"source": "l", "target": "s", "action": "continue"},
			{"source": "l", "target": "fin", "action": "break"}]}`,
		check: func(t *testing.T, r *interp.Result) {
			assert.Equal(t, sqsadapter.StatusCompleted, r.Status)
			assert.Equal(t, []int{1, 2, 3}, r.Passes["s"], "the first pass of a while loop is pass 1")
			assert.Equal(t, []int{1, 3}, r.Passes["odd"])
			assert.Equal(t, []int{2}, r.Passes["even"])
			assert.Equal(t, []int{1, 2, 3}, r.Passes["j"])
			assert.Equal(t, []int{0, 1, 2, 3}, r.Passes["l"])
			assert.Equal(t, map[string]any{"it": int64(2), "in": nil}, r.Context["_outputs.even"], "the last pass it ran in")
			assert.Equal(t, map[string]any{"odd": map[string]any{"it": int64(3), "in": nil}}, r.Context["_outputs.j"])
			assert.Nil(t, r.Context["_outputs.fin"], "the break edge stages the controller's null")
			assert.Equal(t, interp.Skipped, r.States["even"], "as of the last pass")
		},
	},
	{
		name: "no pass",
		bp: `{"id": "zero", "nodes": [
			{"id": "init", "uses": "emit"}, {"id": "s", "uses": "iter"},
			{"id": "l", "uses": "loop-controller", "params": {"condition": "go"}},
			{"id": "fin", "uses": "emit", "params": {"out": "done"}}],
		  "edges": [{"source": "init", "target": "l"}, {"source": "s", "target": "l"},
			{"source": "l", "target": "s", "action": "continue"}, {"source": "l", "target": "fin", "action": "break"}]}`,
		initial: map[string]any{"go": false},
		check: func(t *testing.T, r *interp.Result) {
			assert.Equal(t, sqsadapter.StatusCompleted, r.Status)
			assert.Empty(t, r.Passes["s"])
			assert.NotContains(t, r.States, "s")
			assert.Equal(t, []int{0}, r.Passes["l"])
			assert.Equal(t, "done", r.Context["_outputs.fin"])
			assert.NotContains(t, r.Context, "_outputs.s")
		},
	},
	{
		name: "iteration limit",
		bp: `{"id": "forever", "nodes": [
			{"id": "s", "uses": "iter"},
			{"id": "l", "uses": "loop-controller", "params": {"condition": "1 == 1", "maxIterations": 3}},
			{"id": "never", "uses": "emit"}],
		  "edges": [{"source": "s", "target": "l"}, {"source": "l", "target": "s", "action": "continue"},
			{"source": "l", "target": "never", "action": "break"}]}`,
		check: func(t *testing.T, r *interp.Result) {
			assert.Equal(t, sqsadapter.StatusFailed, r.Status)
			assert.Equal(t, []string{"l"}, r.Nodes(interp.Failed))
			assert.Equal(t, `loop "l" exceeded 3 iterations (params.maxIterations)`, r.Errors["l"])
			assert.Equal(t, []int{0, 1, 2}, r.Passes["s"])
			assert.Equal(t, []int{0, 1}, r.Passes["l"], "the pass that would exceed the limit commits nothing")
			assert.Equal(t, interp.Blocked, r.States["never"])
		},
	},
	{
		name: "a body node fails in a later pass",
		bp: `{"id": "fails", "nodes": [
			{"id": "s", "uses": "iter"}, {"id": "f", "uses": "failAt", "params": {"at": 2}},
			{"id": "l", "uses": "loop-controller", "params": {"condition": "1 == 1"}}],
		  "edges": [{"source": "s", "target": "f"}, {"source": "f", "target": "l"}, {"source": "l", "target": "s", "action": "continue"}]}`,
		check: func(t *testing.T, r *interp.Result) {
			assert.Equal(t, sqsadapter.StatusFailed, r.Status)
			assert.Equal(t, []string{"f"}, r.Nodes(interp.Failed))
			assert.Equal(t, "boom: f in pass 2", r.Errors["f"])
			assert.Equal(t, []int{0, 1, 2}, r.Passes["s"])
			assert.Equal(t, []int{0, 1}, r.Passes["f"])
			assert.Equal(t, []int{0, 1}, r.Passes["l"])
			assert.Equal(t, interp.Blocked, r.States["l"])
		},
	},
	{
		name: "a dead end ends the loop",
		bp: `{"id": "dead", "nodes": [
			{"id": "s", "uses": "iter"}, {"id": "e", "uses": "emit"},
			{"id": "l", "uses": "loop-controller", "params": {"condition": "1 == 1"}},
			{"id": "fin", "uses": "emit"}, {"id": "other", "uses": "emit", "params": {"out": 7}},
			{"id": "after", "uses": "emit", "inputs": "s.it", "config": {"joinStrategy": "all"}}],
		  "edges": [{"source": "s", "target": "e", "condition": "result.output.it < 2"}, {"source": "e", "target": "l"},
			{"source": "l", "target": "s", "action": "continue"}, {"source": "l", "target": "fin", "action": "break"},
			{"source": "fin", "target": "after"}, {"source": "other", "target": "after"}]}`,
		check: func(t *testing.T, r *interp.Result) {
			assert.Equal(t, sqsadapter.StatusCompleted, r.Status)
			assert.Equal(t, []int{0, 1, 2}, r.Passes["s"])
			assert.Equal(t, []int{0, 1}, r.Passes["e"])
			assert.Equal(t, []int{0, 1}, r.Passes["l"])
			assert.Equal(t, interp.Skipped, r.States["l"])
			assert.Equal(t, interp.Skipped, r.States["fin"])
			assert.Equal(t, interp.Ran, r.States["after"])
			assert.Equal(t, int64(2), r.Context["_outputs.after"], "after the loop, the last pass's outputs")
		},
	},
	{
		name: "writes across passes",
		bp: `{"id": "writes", "nodes": [
			{"id": "s", "uses": "emit", "params": {"set": {"k": "body"}}}, {"id": "e", "uses": "iter"},
			{"id": "l", "uses": "loop-controller", "params": {"condition": "last < 1"}},
			{"id": "side", "uses": "emit", "params": {"set": {"k": "side", "j": "side"}}},
			{"id": "fin", "uses": "emit", "params": {"set": {"j": "fin"}}}],
		  "edges": [{"source": "s", "target": "e"}, {"source": "e", "target": "l"},
			{"source": "l", "target": "s", "action": "continue"}, {"source": "l", "target": "fin", "action": "break"}]}`,
		check: func(t *testing.T, r *interp.Result) {
			assert.Equal(t, []int{0, 1}, r.Passes["s"])
			assert.Equal(t, map[string][]any{"k": {"side", "body"}, "j": {"side", "fin"}}, r.Racy,
				"the side node races the loop's last write, not its earlier ones, and whatever follows the loop")
		},
	},
}

func TestRunLoops(t *testing.T) {
	for _, tc := range loopCases {
		t.Run(tc.name, func(t *testing.T) {
			r, err := interp.Run(parse(t, tc.bp), tc.initial, loopModel)
			require.NoError(t, err)
			tc.check(t, r)
		})
	}
}

// TestRunLoopsAgreeWithEngine runs every loop case on the engine and checks
// the run against the interpreter, and that the engine called each node
// once in each pass the interpreter has it run in, and in no other.
func TestRunLoopsAgreeWithEngine(t *testing.T) {
	for _, tc := range loopCases {
		t.Run(tc.name, func(t *testing.T) {
			bp := parse(t, tc.bp)
			want, err := interp.Run(bp, tc.initial, loopModel)
			require.NoError(t, err)
			var mu sync.Mutex
			calls := map[string][]int{}
			counting := func(c interp.Call) interp.Outcome {
				mu.Lock()
				calls[c.NodeID] = append(calls[c.NodeID], c.Iteration)
				mu.Unlock()
				return loopModel(c)
			}
			h := sqsadaptertest.New(t, sqsadaptertest.Config{
				Registry: interp.Registry(counting, bp), Blueprints: []*sqsadapter.Blueprint{bp}, Workers: 2, LogLevel: slog.LevelError,
			})
			st := h.Run(bp.ID, tc.initial)
			assert.Empty(t, want.Check(st), "context: %v", st.Context)
			mu.Lock()
			defer mu.Unlock()
			for _, d := range bp.Nodes {
				got := calls[d.ID]
				slices.Sort(got)
				passes := want.Passes[d.ID]
				if passes == nil && want.Is(d.ID, interp.Ran) {
					passes = []int{0} // not in a loop
				}
				// The failing node's failed pass is called, not run.
				if want.Is(d.ID, interp.Failed) && len(got) > 0 {
					got = got[:len(got)-1]
				}
				if d.Uses != interp.LoopController && (passes != nil || len(got) > 0) {
					assert.Equal(t, passes, got, "passes %s was called in", d.ID)
				}
			}
		})
	}
}

// Shapes the interpreter cannot run are errors (the engine refuses them
// when it validates the blueprint; Run does not validate).
func TestRunLoopErrors(t *testing.T) {
	node := func(id, uses string, params map[string]any) sqsadapter.NodeDefinition {
		return sqsadapter.NodeDefinition{ID: id, Uses: uses, Params: params}
	}
	edge := func(src, dst, action string) sqsadapter.EdgeDefinition {
		return sqsadapter.EdgeDefinition{Source: src, Target: dst, Action: action}
	}
	cond := map[string]any{"condition": "go"}
	for name, bp := range map[string]*sqsadapter.Blueprint{
		"no way back": {ID: "c", Nodes: []sqsadapter.NodeDefinition{node("a", "emit", nil), node("b", "emit", nil), node("l", interp.LoopController, cond)},
			Edges: []sqsadapter.EdgeDefinition{edge("b", "l", ""), edge("l", "a", "continue")}},
		"bad limit": {ID: "c", Nodes: []sqsadapter.NodeDefinition{node("a", "emit", nil), node("l", interp.LoopController, map[string]any{"condition": "go", "maxIterations": int64(0)})},
			Edges: []sqsadapter.EdgeDefinition{edge("a", "l", ""), edge("l", "a", "continue")}},
		"entered in the middle": {ID: "c", Nodes: []sqsadapter.NodeDefinition{node("a", "emit", nil), node("b", "emit", nil), node("x", "emit", nil), node("l", interp.LoopController, cond)},
			Edges: []sqsadapter.EdgeDefinition{edge("a", "b", ""), edge("b", "l", ""), edge("x", "b", ""), edge("l", "a", "continue")}},
		"two ends": {ID: "c", Nodes: []sqsadapter.NodeDefinition{node("a", "emit", nil), node("b", "emit", nil), node("l", interp.LoopController, cond)},
			Edges: []sqsadapter.EdgeDefinition{edge("a", "b", ""), edge("a", "l", ""), edge("b", "l", ""), edge("l", "a", "continue")}},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := interp.Run(bp, nil, loopModel)
			assert.ErrorContains(t, err, "interp: loop l")
		})
	}
}
