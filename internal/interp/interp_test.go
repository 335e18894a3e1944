package interp_test

import (
	"errors"
	"fmt"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowcraft/sqsadapter"
	"github.com/flowcraft/sqsadapter/internal/interp"
	"github.com/flowcraft/sqsadapter/sqsadaptertest"
)

// model is the node model of these tests; params select the behaviour:
//
//	emit    output params["out"] (default: the input), action params["action"],
//	        context writes params["set"] (a map) and deletes params["del"] (a list)
//	flaky   fails attempts 1..params["k"], then behaves as emit
//	fail    always fails
//	fatal   fails with a permanent error
//	sum     outputs the sum of the "v" fields of its input's values
//	item    a batch worker (batch_test.go): itemModel
func model(c interp.Call) interp.Outcome {
	p := c.Def.Params
	switch c.Def.Uses {
	case "item":
		return itemModel(c)
	case "fail":
		return interp.Outcome{Err: fmt.Errorf("boom: %s attempt %d", c.NodeID, c.Attempt)}
	case "fatal":
		return interp.Outcome{Err: sqsadapter.Permanent(fmt.Errorf("fatal: %s", c.NodeID))}
	case "flaky":
		if k, _ := p["k"].(int64); c.Attempt <= int(k) {
			return interp.Outcome{Err: fmt.Errorf("flaky: %s attempt %d", c.NodeID, c.Attempt)}
		}
	case "sum":
		total := int64(0)
		if m, ok := c.Input.(map[string]any); ok {
			for _, v := range m {
				if vm, ok := v.(map[string]any); ok {
					n, _ := vm["v"].(int64)
					total += n
				}
			}
		}
		return interp.Outcome{Output: map[string]any{"v": total}}
	}
	o := interp.Outcome{Output: c.Input}
	if out, ok := p["out"]; ok {
		o.Output = out
	}
	o.Action, _ = p["action"].(string)
	if set, ok := p["set"].(map[string]any); ok {
		o.Sets = set
	}
	if del, ok := p["del"].([]any); ok {
		for _, k := range del {
			o.Deletes = append(o.Deletes, k.(string))
		}
	}
	return o
}

type testCase struct {
	name    string
	bp      string
	initial map[string]any
	check   func(t *testing.T, r *interp.Result)
}

var cases = []testCase{
	{
		name: "chain with transform and inputs",
		bp: `{"id": "chain", "nodes": [
			{"id": "a", "uses": "emit", "inputs": "order", "params": {"set": {"seen": true}}},
			{"id": "b", "uses": "emit"},
			{"id": "c", "uses": "emit", "inputs": {"qty": "a.qty", "first": ["missing", "b"], "raw": "_outputs.a", "flag": "seen"}}],
		  "edges": [{"source": "a", "target": "b", "transform": "input.qty * 2"}, {"source": "b", "target": "c"}]}`,
		initial: map[string]any{"order": map[string]any{"id": "o1", "qty": 3}},
		check: func(t *testing.T, r *interp.Result) {
			assert.Equal(t, sqsadapter.StatusCompleted, r.Status)
			assert.Equal(t, int64(6), r.Outputs["b"])
			assert.Equal(t, map[string]any{"qty": int64(3), "first": int64(6),
				"raw": map[string]any{"id": "o1", "qty": int64(3)}, "flag": true}, r.Outputs["c"])
			assert.Equal(t, true, r.Context["seen"])
			assert.Equal(t, []string{"a", "b", "c"}, r.Order)
		},
	},
	{
		name: "fan-out, conditional edge and all join with a dead branch",
		bp: `{"id": "fan", "nodes": [
			{"id": "start", "uses": "emit", "params": {"out": {"v": 5}}},
			{"id": "x", "uses": "emit"}, {"id": "y", "uses": "emit"},
			{"id": "z", "uses": "emit"}, {"id": "after", "uses": "emit"},
			{"id": "join", "uses": "sum"}],
		  "edges": [{"source": "start", "target": "x"}, {"source": "start", "target": "y"},
			{"source": "start", "target": "z", "condition": "result.output.v > 10"},
			{"source": "z", "target": "after"},
			{"source": "x", "target": "join"}, {"source": "y", "target": "join"}, {"source": "after", "target": "join"}]}`,
		check: func(t *testing.T, r *interp.Result) {
			assert.Equal(t, sqsadapter.StatusCompleted, r.Status)
			assert.Equal(t, []string{"after", "z"}, r.Nodes(interp.Skipped))
			assert.Equal(t, map[string]any{"v": int64(10)}, r.Outputs["join"])
		},
	},
	{
		name: "action routing, default edges and an any join",
		bp: `{"id": "route", "nodes": [
			{"id": "decide", "uses": "emit", "params": {"out": {"n": 1}, "action": "review"}},
			{"id": "approve", "uses": "emit"}, {"id": "review", "uses": "emit"}, {"id": "reject", "uses": "emit"},
			{"id": "notify", "uses": "emit", "config": {"joinStrategy": "any"}}],
		  "edges": [{"source": "decide", "target": "approve", "action": "approve"},
			{"source": "decide", "target": "review", "action": "review", "condition": "result.output.n > 5"},
			{"source": "decide", "target": "reject"},
			{"source": "approve", "target": "notify"}, {"source": "review", "target": "notify"}, {"source": "reject", "target": "notify"}]}`,
		check: func(t *testing.T, r *interp.Result) {
			// The review edge's condition is false: the default edge is taken.
			assert.Equal(t, []string{"decide", "notify", "reject"}, r.Nodes(interp.Ran))
			assert.Equal(t, map[string]any{"n": int64(1)}, r.Outputs["notify"], "an \"any\" join's input is what its firing edge staged")
		},
	},
	{
		name: "flaky node within its attempts",
		bp:   `{"id": "flaky", "nodes": [{"id": "f", "uses": "flaky", "params": {"k": 2, "out": "ok"}, "config": {"maxRetries": 3}}], "edges": []}`,
		check: func(t *testing.T, r *interp.Result) {
			assert.Equal(t, sqsadapter.StatusCompleted, r.Status)
			assert.Equal(t, 3, r.Attempts["f"])
			assert.Equal(t, "ok", r.Outputs["f"])
		},
	},
	{
		name: "flaky node out of attempts fails the run and blocks only its dependents",
		bp: `{"id": "flakyfail", "nodes": [
			{"id": "s", "uses": "emit", "params": {"out": 1}},
			{"id": "f", "uses": "flaky", "params": {"k": 2}, "config": {"maxRetries": 2}},
			{"id": "g", "uses": "emit"}, {"id": "other", "uses": "emit", "params": {"set": {"k": 1}}}],
		  "edges": [{"source": "s", "target": "f"}, {"source": "f", "target": "g"}, {"source": "s", "target": "other"}]}`,
		check: func(t *testing.T, r *interp.Result) {
			assert.Equal(t, sqsadapter.StatusFailed, r.Status)
			assert.Equal(t, []string{"f"}, r.Nodes(interp.Failed))
			assert.Equal(t, []string{"g"}, r.Nodes(interp.Blocked))
			assert.Equal(t, []string{"other", "s"}, r.Nodes(interp.Ran))
			assert.Contains(t, r.Errors["f"], "attempt 2")
			assert.Nil(t, r.Context)
		},
	},
	{
		name: "fallback replaces a failing node; a permanent error skips it",
		bp: `{"id": "fallback", "nodes": [
			{"id": "s", "uses": "emit", "params": {"out": {"v": 2}}},
			{"id": "bad", "uses": "fail", "config": {"maxRetries": 2, "fallback": "fb"}},
			{"id": "fb", "uses": "emit", "params": {"set": {"recovered": true}}},
			{"id": "next", "uses": "emit"}],
		  "edges": [{"source": "s", "target": "bad"}, {"source": "bad", "target": "next"}]}`,
		check: func(t *testing.T, r *interp.Result) {
			assert.Equal(t, sqsadapter.StatusCompleted, r.Status)
			assert.Equal(t, map[string]any{"v": int64(2)}, r.Outputs["bad"], "the fallback gets the node's input")
			assert.Equal(t, r.Outputs["bad"], r.Outputs["next"])
			assert.Equal(t, []map[string]any{{"message": "boom: bad attempt 2", "nodeId": "bad", "blueprintId": "fallback"}}, r.Catches)
			assert.Equal(t, true, r.Context["recovered"])
			assert.NotContains(t, r.Context, interp.CatchErrorKey)
			_, isState := r.States["fb"]
			assert.False(t, isState, "fallback-only nodes are not scheduled")
		},
	},
	{
		name: "permanent error skips the fallback",
		bp: `{"id": "fatal", "nodes": [
			{"id": "bad", "uses": "fatal", "config": {"maxRetries": 5, "fallback": "fb"}},
			{"id": "fb", "uses": "emit"}], "edges": []}`,
		check: func(t *testing.T, r *interp.Result) {
			assert.Equal(t, sqsadapter.StatusFailed, r.Status)
			assert.Equal(t, 1, r.Attempts["bad"])
			assert.Zero(t, r.Attempts["fb"])
		},
	},
	{
		name: "concurrent writers of one key",
		bp: `{"id": "racy", "nodes": [
			{"id": "s", "uses": "emit", "params": {"set": {"k": "s"}}},
			{"id": "l", "uses": "emit", "params": {"set": {"k": "l"}}},
			{"id": "r", "uses": "emit", "params": {"del": ["k"], "set": {"only": "r"}}},
			{"id": "j", "uses": "emit", "params": {"set": {"after": "j"}}}],
		  "edges": [{"source": "s", "target": "l"}, {"source": "s", "target": "r"}, {"source": "l", "target": "j"}, {"source": "r", "target": "j"}]}`,
		check: func(t *testing.T, r *interp.Result) {
			assert.Equal(t, map[string][]any{"k": {"l", interp.Absent}}, r.Racy)
			assert.True(t, r.Deleted["k"])
		},
	},
}

func parse(t *testing.T, src string) *sqsadapter.Blueprint {
	t.Helper()
	bp, err := sqsadapter.ParseBlueprint([]byte(src))
	require.NoError(t, err)
	return bp
}

func TestRun(t *testing.T) {
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, err := interp.Run(parse(t, tc.bp), tc.initial, model)
			require.NoError(t, err)
			tc.check(t, r)
		})
	}
}

// TestRunAgreesWithEngine runs every case on the engine, over the in-memory
// SQS and stores, and checks the run against the interpreter.
func TestRunAgreesWithEngine(t *testing.T) {
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			bp := parse(t, tc.bp)
			want, err := interp.Run(bp, tc.initial, model)
			require.NoError(t, err)
			st := runOnEngine(t, bp, tc.initial)
			assert.Empty(t, want.Check(st), "context: %v", st.Context)
		})
	}
}

func runOnEngine(t *testing.T, bp *sqsadapter.Blueprint, initial map[string]any) *sqsadapter.RunStatus {
	t.Helper()
	h := sqsadaptertest.New(t, sqsadaptertest.Config{
		Registry: interp.Registry(model, bp), Blueprints: []*sqsadapter.Blueprint{bp}, Workers: 1, LogLevel: slog.LevelWarn,
	})
	return h.Run(bp.ID, initial)
}

func TestCheck(t *testing.T) {
	bp := parse(t, cases[5].bp) // the fallback case
	want, err := interp.Run(bp, nil, model)
	require.NoError(t, err)
	good := func() *sqsadapter.RunStatus {
		ctx := map[string]any{
			"_outputs.s": map[string]any{"v": 2}, "_outputs.bad": map[string]any{"v": 2}, "_outputs.next": map[string]any{"v": 2},
			"recovered":    true,
			"_catch_error": map[string]any{"message": "boom: bad attempt 2", "nodeId": "bad", "blueprintId": "fallback"},
		}
		return &sqsadapter.RunStatus{Status: sqsadapter.StatusCompleted, Context: ctx}
	}
	assert.Empty(t, want.Check(good()))

	st := good()
	st.Context["_catch_error"].(map[string]any)["message"] = "attempt abandoned: the worker running it stopped or lost the job"
	assert.Empty(t, want.Check(st), "an abandoned last attempt is recorded as such")

	st = good()
	st.Context["_outputs.next"] = map[string]any{"v": 3}
	st.Context["extra"] = 1
	assert.Len(t, want.Check(st), 1)
	assert.Contains(t, want.Check(st)[0], "differs _outputs.next")
	assert.Contains(t, want.Check(st)[0], "extra   extra")

	st = good()
	delete(st.Context, "_catch_error")
	assert.Len(t, want.Check(st), 1)

	st = good()
	st.Status = sqsadapter.StatusFailed
	assert.Len(t, want.Check(st), 1)
	assert.Contains(t, want.Check(st)[0], `the interpreter expects "completed"`)

	// A failed run: the committed keys must be the interpreter's values.
	bp = parse(t, cases[4].bp)
	want, err = interp.Run(bp, nil, model)
	require.NoError(t, err)
	failed := &sqsadapter.RunStatus{Status: sqsadapter.StatusFailed, FailedNode: "f", Error: `node "f" failed`,
		Context: map[string]any{"_outputs.s": 1}}
	assert.Empty(t, want.Check(failed))
	failed.Context["k"] = 2
	failed.FailedNode = "s"
	assert.Len(t, want.Check(failed), 3)
}

// A run stopped part-way (cancelled) holds some of the predicted keys and
// outputs, each with its predicted value, and nothing else.
func TestCheckPrefix(t *testing.T) {
	want, err := interp.Run(parse(t, cases[5].bp), map[string]any{"in": 1}, model) // the fallback case
	require.NoError(t, err)
	assert.Empty(t, want.CheckPrefix(nil))
	assert.Empty(t, want.CheckPrefix(map[string]any{"in": 1, "_outputs.s": map[string]any{"v": 2}}))
	assert.Empty(t, want.CheckPrefix(map[string]any{"_outputs.bad": map[string]any{"v": 2}, "recovered": true,
		"_catch_error": map[string]any{"message": "boom: bad attempt 2", "nodeId": "bad", "blueprintId": "fallback"}}))

	problems := want.CheckPrefix(map[string]any{"in": 2, "_outputs.s": map[string]any{"v": 3}, "_outputs.nope": 1,
		"_catch_error": map[string]any{"message": "other", "nodeId": "bad", "blueprintId": "fallback"}})
	require.Len(t, problems, 4, "%q", problems)
	assert.Contains(t, problems[0], "_catch_error")
	assert.Contains(t, problems[1], `"_outputs.nope"`)
	assert.Contains(t, problems[2], `"_outputs.s"`)
	assert.Contains(t, problems[3], `"in" = 2`)
}

func TestRunErrors(t *testing.T) {
	bp := &sqsadapter.Blueprint{ID: "cycle", Nodes: []sqsadapter.NodeDefinition{{ID: "a", Uses: "emit"}, {ID: "b", Uses: "emit"}},
		Edges: []sqsadapter.EdgeDefinition{{Source: "a", Target: "b"}, {Source: "b", Target: "a"}}}
	_, err := interp.Run(bp, nil, model)
	assert.ErrorContains(t, err, "cycle")

	bp = parse(t, `{"id": "p", "nodes": [{"id": "a", "uses": "emit"}], "edges": []}`)
	r, err := interp.Run(bp, nil, func(interp.Call) interp.Outcome { panic("oops") })
	require.NoError(t, err)
	assert.Equal(t, sqsadapter.StatusFailed, r.Status)
	assert.Contains(t, r.Errors["a"], "panicked")

	r, err = interp.Run(bp, nil, func(interp.Call) interp.Outcome { return interp.Outcome{Err: errors.New("x")} })
	require.NoError(t, err)
	assert.Equal(t, "x", r.Errors["a"])
	assert.Empty(t, r.ExpressionErrors, "a node function's failure is not an expression error")

	bp = parse(t, `{"id": "route", "nodes": [{"id": "a", "uses": "emit", "params": {"out": {"v": 1}}},
		{"id": "b", "uses": "emit"}, {"id": "c", "uses": "emit", "params": {"out": {"v": 1}}}, {"id": "d", "uses": "emit"},
		{"id": "e", "uses": "fail"}],
		"edges": [{"source": "a", "target": "b", "condition": "result.output.v - result.output > 0"},
			{"source": "c", "target": "d", "transform": "input.v - input"}]}`)
	r, err = interp.Run(bp, nil, model)
	require.NoError(t, err)
	// A failed condition is false and a failed transform stages nil: the
	// run fails only through e.
	assert.Equal(t, sqsadapter.StatusFailed, r.Status)
	assert.Equal(t, []string{"e"}, r.Nodes(interp.Failed))
	assert.Equal(t, interp.Skipped, r.States["b"])
	assert.Equal(t, interp.Ran, r.States["d"])
	assert.Nil(t, r.Outputs["d"], "d echoes its input: the failed transform's nil")
	require.Len(t, r.ExpressionErrors["a"], 1)
	assert.Contains(t, r.ExpressionErrors["a"][0], "condition of edge a -> b")
	require.Len(t, r.ExpressionErrors["c"], 1)
	assert.Contains(t, r.ExpressionErrors["c"][0], "transform of edge c -> d")
	assert.NotContains(t, r.ExpressionErrors, "e", "a node function's failure is not an expression error")
}
