package sqsadapter_test

import (
	"context"
	"errors"
	"maps"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowcraft/sqsadapter"
)

var loopScenarios = []struct {
	name string
	run  func(t *testing.T, mk subRigMaker)
}{
	{"entered at the body", scenarioLoopDoWhile},
	{"entered at the controller", scenarioLoopWhile},
	{"no iteration", scenarioLoopZero},
	{"iteration limit", scenarioLoopLimit},
	{"branches inside the body", scenarioLoopBranches},
	{"failing body node", scenarioLoopFails},
	{"fallback and own id in a pass", scenarioLoopFallback},
	{"dead pass", scenarioLoopDeadPass},
	{"fallback in a later pass", scenarioLoopFallbackCatch},
}

func TestLoop(t *testing.T) {
	t.Parallel()
	for _, sc := range loopScenarios {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			sc.run(t, memorySubRig)
		})
	}
}

func TestIntegrationLoop(t *testing.T) {
	integrationEndpoints(t)
	for _, sc := range loopScenarios {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			sc.run(t, emulatorSubRig)
		})
	}
}

// counter reads "count", writes count+1 and outputs it.
func counter(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
	v, _, err := nc.Get(ctx, "count")
	if err != nil {
		return sqsadapter.NodeResult{}, err
	}
	n, _ := v.(int64)
	if err := nc.Set("count", n+1); err != nil {
		return sqsadapter.NodeResult{}, err
	}
	return sqsadapter.NodeResult{Output: n + 1}, nil
}

// The documentation's counter, as Flowcraft's builder wires it: the body
// is entered at its first node, runs, and the controller decides after each
// pass; the loop has no exit, so its end completes the run.
func scenarioLoopDoWhile(t *testing.T, mk subRigMaker) {
	bp := mustParse(t, `{"id": "counter", "nodes": [
		{"id": "initialize", "uses": "n"},
		{"id": "increment", "uses": "n"},
		{"id": "loop", "uses": "loop-controller", "params": {"condition": "count < 5"}, "config": {"joinStrategy": "any"}}],
	  "edges": [{"source": "increment", "target": "loop"},
		{"source": "loop", "target": "increment", "action": "continue", "transform": "context[\"increment\"]"},
		{"source": "initialize", "target": "increment"}]}`)
	r := mk(t, map[string]sqsadapter.NodeFunc{"increment": counter}, bp)
	id := r.start("counter", map[string]any{"count": 0})
	st := r.wait(id)
	requireStatus(t, sqsadapter.StatusCompleted, st)
	assert.Equal(t, int64(5), st.Context["count"])
	assert.Equal(t, int64(5), st.Context["_outputs.increment"], "the output of the last pass")
	assert.Nil(t, st.Context["_outputs.loop"], "the controller breaks with null")
	calls := r.calls().get("increment")
	require.Len(t, calls, 5)
	want := []any{map[string]any{"from": "initialize"}, int64(1), int64(2), int64(3), int64(4)}
	keys := map[string]bool{}
	for i, c := range calls {
		assert.Equal(t, want[i], c.Input, "pass %d: the continue edge stages the last output", i)
		keys[c.Key] = true
	}
	assert.Len(t, keys, 5, "each pass has its own idempotency key")
	assert.Equal(t, 5, st.Nodes["increment"].Iterations)
	assert.Equal(t, "completed", st.Nodes["increment"].State)
	for k := range st.Context {
		assert.NotContains(t, k, "\x1f", "no internal record in the context")
	}
}

// Entered at the controller, the condition is checked first; the break
// edge's transform hands the body's last output on.
func scenarioLoopWhile(t *testing.T, mk subRigMaker) {
	bp := mustParse(t, `{"id": "while", "nodes": [
		{"id": "init", "uses": "n"},
		{"id": "a", "uses": "n"},
		{"id": "b", "uses": "n", "inputs": "a"},
		{"id": "loop", "uses": "loop-controller", "params": {"condition": "count < 3"}},
		{"id": "fin", "uses": "n"}],
	  "edges": [{"source": "init", "target": "loop"},
		{"source": "a", "target": "b"}, {"source": "b", "target": "loop"},
		{"source": "loop", "target": "a", "action": "continue", "transform": "context[\"b\"]"},
		{"source": "loop", "target": "fin", "action": "break", "transform": "context[\"b\"]"}]}`)
	a := func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
		return sqsadapter.NodeResult{Output: map[string]any{"pass": nc.Iteration, "in": nc.Input}}, nil
	}
	r := mk(t, map[string]sqsadapter.NodeFunc{"a": a, "b": counter}, bp)
	id := r.start("while", map[string]any{"count": 0})
	st := r.wait(id)
	requireStatus(t, sqsadapter.StatusCompleted, st)
	assert.Equal(t, 3, r.calls().count("a"))
	assert.Equal(t, 3, r.calls().count("b"))
	assert.Equal(t, 1, r.calls().count("fin"))
	assert.Equal(t, int64(3), r.calls().input(t, "fin"), "the break edge's transform: the body's last output")
	assert.Equal(t, int64(2), r.calls().input(t, "a"), "pass 3 gets pass 2's last output")
	assert.Equal(t, map[string]any{"pass": int64(3), "in": int64(2)}, st.Context["_outputs.a"])
	assert.Equal(t, int64(3), st.Context["count"])
	assert.Equal(t, map[string]any{"from": "fin"}, st.Context["_outputs.fin"])
}

// A condition false at entry runs no iteration: the exits run at once.
func scenarioLoopZero(t *testing.T, mk subRigMaker) {
	bp := mustParse(t, `{"id": "zero", "nodes": [
		{"id": "init", "uses": "n"}, {"id": "body", "uses": "n"},
		{"id": "loop", "uses": "loop-controller", "params": {"condition": "go"}},
		{"id": "fin", "uses": "n"}],
	  "edges": [{"source": "init", "target": "loop"}, {"source": "body", "target": "loop"},
		{"source": "loop", "target": "body", "action": "continue"},
		{"source": "loop", "target": "fin", "action": "break"}]}`)
	r := mk(t, nil, bp)
	st := r.wait(r.start("zero", map[string]any{"go": false}))
	requireStatus(t, sqsadapter.StatusCompleted, st)
	assert.Equal(t, 0, r.calls().count("body"))
	assert.Equal(t, 1, r.calls().count("fin"))
	assert.NotContains(t, st.Nodes, "body")
}

// A loop that would run its body more than params.maxIterations times
// fails the run, naming the loop.
func scenarioLoopLimit(t *testing.T, mk subRigMaker) {
	bp := mustParse(t, `{"id": "forever", "nodes": [
		{"id": "body", "uses": "n"},
		{"id": "loop", "uses": "loop-controller", "params": {"condition": "go", "maxIterations": 4}},
		{"id": "never", "uses": "n"}],
	  "edges": [{"source": "body", "target": "loop"},
		{"source": "loop", "target": "body", "action": "continue"},
		{"source": "loop", "target": "never", "action": "break"}]}`)
	r := mk(t, nil, bp)
	st := r.wait(r.start("forever", map[string]any{"go": true}))
	requireStatus(t, sqsadapter.StatusFailed, st)
	assert.Equal(t, 4, r.calls().count("body"))
	assert.Equal(t, 0, r.calls().count("never"))
	assert.Equal(t, "loop", st.FailedNode)
	assert.Contains(t, st.Error, `loop "loop" exceeded 4 iterations`)
}

// Inside a pass, branches and an "all" join work as anywhere: the dead
// branch is skipped and the join runs once per pass.
func scenarioLoopBranches(t *testing.T, mk subRigMaker) {
	bp := mustParse(t, `{"id": "branches", "nodes": [
		{"id": "s", "uses": "n"}, {"id": "odd", "uses": "n"}, {"id": "even", "uses": "n"},
		{"id": "j", "uses": "n"},
		{"id": "loop", "uses": "loop-controller", "params": {"condition": "count < 4"}},
		{"id": "fin", "uses": "n"}],
	  "edges": [{"source": "s", "target": "odd", "condition": "result.output % 2 == 1"},
		{"source": "s", "target": "even", "condition": "result.output % 2 == 0"},
		{"source": "odd", "target": "j"}, {"source": "even", "target": "j"}, {"source": "j", "target": "loop"},
		{"source": "loop", "target": "s", "action": "continue"},
		{"source": "loop", "target": "fin", "action": "break"}]}`)
	r := mk(t, map[string]sqsadapter.NodeFunc{"s": counter}, bp)
	st := r.wait(r.start("branches", map[string]any{"count": 0}))
	requireStatus(t, sqsadapter.StatusCompleted, st)
	assert.Equal(t, 4, r.calls().count("s"))
	assert.Equal(t, 2, r.calls().count("odd"))
	assert.Equal(t, 2, r.calls().count("even"))
	assert.Equal(t, 4, r.calls().count("j"))
	assert.Equal(t, map[string]any{"even": map[string]any{"from": "even"}}, r.calls().input(t, "j"), "pass 4: only the taken branch")
	assert.Equal(t, 1, r.calls().count("fin"))
	assert.Equal(t, "skipped", st.Nodes["odd"].State, "shown as of its latest pass")
}

// A body node that fails for good fails the run in that pass; later passes
// never start.
func scenarioLoopFails(t *testing.T, mk subRigMaker) {
	bp := mustParse(t, `{"id": "fails", "nodes": [
		{"id": "s", "uses": "n"},
		{"id": "loop", "uses": "loop-controller", "params": {"condition": "go"}}],
	  "edges": [{"source": "s", "target": "loop"}, {"source": "loop", "target": "s", "action": "continue"}]}`)
	s := func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
		if nc.Iteration == 2 {
			return sqsadapter.NodeResult{}, errors.New("third pass fails")
		}
		return sqsadapter.NodeResult{Output: nc.Iteration}, nil
	}
	r := mk(t, map[string]sqsadapter.NodeFunc{"s": s}, bp)
	st := r.wait(r.start("fails", map[string]any{"go": true}))
	requireStatus(t, sqsadapter.StatusFailed, st)
	assert.Equal(t, "s", st.FailedNode)
	assert.Contains(t, st.Error, "s (iteration 2)")
	assert.Contains(t, st.Error, "third pass fails")
	assert.Equal(t, 3, r.calls().count("s"))
	assert.Equal(t, "failed", st.Nodes["s"].State)
}

// A pass whose end is on a dead path skips the controller: the loop ends
// and its exits are dead. A node after the loop (an "all" join of a dead
// exit and another branch) reads the body's outputs of that last pass, as
// after a loop that breaks — not those of pass 0.
func scenarioLoopDeadPass(t *testing.T, mk subRigMaker) {
	bp := mustParse(t, `{"id": "deadpass", "nodes": [
		{"id": "s", "uses": "n"}, {"id": "e", "uses": "n"},
		{"id": "loop", "uses": "loop-controller", "params": {"condition": "go"}},
		{"id": "fin", "uses": "n"}, {"id": "other", "uses": "n"},
		{"id": "after", "uses": "n", "inputs": "s", "config": {"joinStrategy": "all"}}],
	  "edges": [{"source": "s", "target": "e", "condition": "result.output < 2"}, {"source": "e", "target": "loop"},
		{"source": "loop", "target": "s", "action": "continue"}, {"source": "loop", "target": "fin", "action": "break"},
		{"source": "fin", "target": "after"}, {"source": "other", "target": "after"}]}`)
	s := func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
		return sqsadapter.NodeResult{Output: nc.Iteration}, nil
	}
	r := mk(t, map[string]sqsadapter.NodeFunc{"s": s}, bp)
	st := r.wait(r.start("deadpass", map[string]any{"go": true}))
	requireStatus(t, sqsadapter.StatusCompleted, st)
	assert.Equal(t, 3, r.calls().count("s"))
	assert.Equal(t, 2, r.calls().count("e"))
	assert.Equal(t, 0, r.calls().count("fin"))
	assert.Equal(t, 1, r.calls().count("after"))
	assert.Equal(t, int64(2), r.calls().input(t, "after"), "the body's last pass")
	assert.Equal(t, int64(2), st.Context["_outputs.s"])
}

// A body node's fallback runs in the pass its node fails in; the
// "_catch_error" it writes names the node by its id, as anywhere.
func scenarioLoopFallbackCatch(t *testing.T, mk subRigMaker) {
	bp := mustParse(t, `{"id": "fallback", "nodes": [
		{"id": "s", "uses": "n", "config": {"fallback": "fb"}}, {"id": "fb", "uses": "n"},
		{"id": "loop", "uses": "loop-controller", "params": {"condition": "count < 3"}}],
	  "edges": [{"source": "s", "target": "loop"}, {"source": "loop", "target": "s", "action": "continue"}]}`)
	s := func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
		if nc.Iteration == 1 {
			return sqsadapter.NodeResult{}, errors.New("second pass fails")
		}
		return counter(ctx, nc)
	}
	fb := func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
		assert.Equal(t, 1, nc.Iteration, "the fallback runs in its node's pass")
		return counter(ctx, nc)
	}
	r := mk(t, map[string]sqsadapter.NodeFunc{"s": s, "fb": fb}, bp)
	st := r.wait(r.start("fallback", map[string]any{"count": 0}))
	requireStatus(t, sqsadapter.StatusCompleted, st)
	assert.Equal(t, 1, r.calls().count("fb"))
	assert.Equal(t, int64(3), st.Context["count"])
	assert.Equal(t, map[string]any{"message": "second pass fails", "nodeId": "s", "blueprintId": "fallback"}, st.Context["_catch_error"])
}

// Cycles are allowed only through a loop controller's continue edge, and
// loops keep their shape; each refusal says why.
func TestLoopValidation(t *testing.T) {
	t.Parallel()
	const loopNodes = `{"id": "a", "uses": "n"}, {"id": "b", "uses": "n"}, {"id": "x", "uses": "n"},
		{"id": "l", "uses": "loop-controller", "params": {"condition": "go"}}`
	cases := []struct{ name, bp, want string }{
		{"cycle without a controller", `{"id": "c", "nodes": [{"id": "a", "uses": "n"}, {"id": "b", "uses": "n"}],
			"edges": [{"source": "a", "target": "b"}, {"source": "b", "target": "a"}]}`, "cycle: a -> b -> a"},
		{"no continue edge", `{"id": "c", "nodes": [` + loopNodes + `],
			"edges": [{"source": "a", "target": "l"}, {"source": "l", "target": "x"}]}`, `has 0 edges with action "continue"`},
		{"cycle through a controller's other edge", `{"id": "c", "nodes": [` + loopNodes + `],
			"edges": [{"source": "a", "target": "l"}, {"source": "l", "target": "a"}]}`, `cycle: a -> l -> a (a cycle must go through a loop controller's "continue" edge)`},
		{"no way back", `{"id": "c", "nodes": [` + loopNodes + `],
			"edges": [{"source": "l", "target": "a", "action": "continue"}, {"source": "a", "target": "b"}]}`, "does not lead back"},
		{"leaves the body", `{"id": "c", "nodes": [` + loopNodes + `],
			"edges": [{"source": "a", "target": "l"}, {"source": "l", "target": "a", "action": "continue"}, {"source": "a", "target": "x"}]}`, "leaves the body"},
		{"enters the body", `{"id": "c", "nodes": [` + loopNodes + `],
			"edges": [{"source": "a", "target": "b"}, {"source": "b", "target": "l"}, {"source": "l", "target": "a", "action": "continue"}, {"source": "x", "target": "b"}]}`, "enters the body"},
		{"two ends", `{"id": "c", "nodes": [` + loopNodes + `],
			"edges": [{"source": "a", "target": "b"}, {"source": "a", "target": "l"}, {"source": "b", "target": "l"}, {"source": "l", "target": "a", "action": "continue"}]}`, "2 body nodes lead to the controller"},
		{"entered twice", `{"id": "c", "nodes": [` + loopNodes + `],
			"edges": [{"source": "a", "target": "l"}, {"source": "l", "target": "a", "action": "continue"}, {"source": "x", "target": "a"}, {"source": "x", "target": "l"}]}`, "entered both"},
		{"no condition", `{"id": "c", "nodes": [{"id": "a", "uses": "n"}, {"id": "l", "uses": "loop-controller"}],
			"edges": [{"source": "a", "target": "l"}, {"source": "l", "target": "a", "action": "continue"}]}`, "params.condition"},
		{"bad limit", `{"id": "c", "nodes": [{"id": "a", "uses": "n"}, {"id": "l", "uses": "loop-controller", "params": {"condition": "go", "maxIterations": 0}}],
			"edges": [{"source": "a", "target": "l"}, {"source": "l", "target": "a", "action": "continue"}]}`, "maxIterations"},
		{"any join in the body", `{"id": "c", "nodes": [` + loopNodes + `, {"id": "j", "uses": "n", "config": {"joinStrategy": "any"}}],
			"edges": [{"source": "a", "target": "b"}, {"source": "a", "target": "x"}, {"source": "b", "target": "j"}, {"source": "x", "target": "j"}, {"source": "j", "target": "l"}, {"source": "l", "target": "a", "action": "continue"}]}`, `joins with "any"`},
		{"wait in the body", `{"id": "c", "nodes": [{"id": "a", "uses": "wait"}, {"id": "l", "uses": "loop-controller", "params": {"condition": "go"}}],
			"edges": [{"source": "a", "target": "l"}, {"source": "l", "target": "a", "action": "continue"}]}`, `uses "wait"`},
		{"nested", `{"id": "c", "nodes": [` + loopNodes + `, {"id": "m", "uses": "loop-controller", "params": {"condition": "go"}}],
			"edges": [{"source": "a", "target": "m"}, {"source": "m", "target": "b", "action": "continue"}, {"source": "b", "target": "m"}, {"source": "m", "target": "l"}, {"source": "l", "target": "a", "action": "continue"}]}`, "nested loops"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			bp, err := sqsadapter.ParseBlueprint([]byte(c.bp))
			if err == nil {
				err = bp.Validate()
			}
			var be *sqsadapter.BlueprintError
			require.ErrorAs(t, err, &be)
			assert.Contains(t, err.Error(), c.want)
		})
	}
}

// The README's loop runs as the README says: the body's first node runs,
// then the condition decides; the exit gets the last pass's output.
func TestReadmeLoop(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("README.md")
	require.NoError(t, err)
	_, section, ok := strings.Cut(string(readme), "## Loops")
	require.True(t, ok, "README.md has a Loops section")
	_, block, ok := strings.Cut(section, "```json\n")
	require.True(t, ok)
	block, _, _ = strings.Cut(block, "```")
	bp := mustParse(t, block)
	check := func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
		status := "pending"
		if nc.Iteration == 2 {
			status = "ready"
		}
		if err := nc.Set("status", status); err != nil {
			return sqsadapter.NodeResult{}, err
		}
		return sqsadapter.NodeResult{Output: map[string]any{"pass": nc.Iteration}}, nil
	}
	reg := map[string]sqsadapter.NodeFunc{}
	for _, n := range bp.Nodes {
		if n.Uses != "loop-controller" {
			reg[n.Uses] = func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
				if n.ID == "check" {
					return check(ctx, nc)
				}
				return sqsadapter.NodeResult{Output: nc.Input}, nil
			}
		}
	}
	r := newRig(t, rigConfig{registry: reg}, bp)
	st := r.wait(r.start(bp.ID, nil))
	requireStatus(t, sqsadapter.StatusCompleted, st)
	assert.Equal(t, "ready", st.Context["status"])
	assert.Equal(t, map[string]any{"pass": int64(2)}, st.Context["_outputs.download"], "the exit's input: the last pass's output")
	assert.Equal(t, 3, st.Nodes["check"].Iterations)
}

// In a pass, a body node's fallback runs in its place with that pass's
// idempotency key, and an edge condition naming the node itself reads this
// pass's output.
func scenarioLoopFallback(t *testing.T, mk subRigMaker) {
	bp := mustParse(t, `{"id": "fb", "nodes": [
		{"id": "s", "uses": "n", "config": {"fallback": "rescue"}},
		{"id": "rescue", "uses": "n"},
		{"id": "mark", "uses": "n"}, {"id": "plain", "uses": "n"},
		{"id": "j", "uses": "n"},
		{"id": "loop", "uses": "loop-controller", "params": {"condition": "count < 3"}}],
	  "edges": [{"source": "s", "target": "mark", "condition": "s.rescued == true"},
		{"source": "s", "target": "plain", "condition": "s.rescued != true"},
		{"source": "mark", "target": "j"}, {"source": "plain", "target": "j"}, {"source": "j", "target": "loop"},
		{"source": "loop", "target": "s", "action": "continue"}]}`)
	s := func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
		if _, err := counter(ctx, nc); err != nil {
			return sqsadapter.NodeResult{}, err
		}
		if nc.Iteration == 1 {
			return sqsadapter.NodeResult{}, errors.New("pass 1 needs rescue")
		}
		return sqsadapter.NodeResult{Output: map[string]any{"rescued": false}}, nil
	}
	rescue := func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
		if _, err := counter(ctx, nc); err != nil {
			return sqsadapter.NodeResult{}, err
		}
		return sqsadapter.NodeResult{Output: map[string]any{"rescued": true, "key": nc.IdempotencyKey()}}, nil
	}
	r := mk(t, map[string]sqsadapter.NodeFunc{"s": s, "rescue": rescue}, bp)
	id := r.start("fb", map[string]any{"count": 0})
	st := r.wait(id)
	requireStatus(t, sqsadapter.StatusCompleted, st)
	assert.Equal(t, 3, r.calls().count("s"))
	require.Equal(t, 1, r.calls().count("rescue"))
	assert.Equal(t, id+"/rescue#1", r.calls().get("rescue")[0].Key, "the fallback runs in its node's pass")
	assert.Equal(t, 1, r.calls().count("mark"), "pass 1: the condition reads this pass's output of s")
	assert.Equal(t, 2, r.calls().count("plain"))
	assert.Equal(t, int64(3), st.Context["count"])
	assert.Equal(t, map[string]any{"rescued": false}, st.Context["_outputs.s"])
}

// What a pass of a loop costs: its body's nodes as anywhere, plus the
// controller's read of what its condition names, its acquire and its
// commit, and one message each when each is sent (a chain runs them
// inline, under one message: TestLoopChained). Measured as the difference
// between a loop of five passes and one of a single pass.
func TestLoopCost(t *testing.T) {
	t.Parallel()
	cost := func(passes int) (map[string]int, int) {
		bp := mustParse(t, `{"id": "cost", "nodes": [
			{"id": "body", "uses": "n"},
			{"id": "loop", "uses": "loop-controller", "params": {"condition": "count < limit"}},
			{"id": "after", "uses": "n"}],
		  "edges": [{"source": "body", "target": "loop"},
			{"source": "loop", "target": "body", "action": "continue", "transform": "context[\"body\"]"},
			{"source": "loop", "target": "after", "action": "break", "transform": "context[\"body\"]"}]}`)
		r := newRig(t, rigConfig{workers: 1, nodes: map[string]sqsadapter.NodeFunc{"body": counter}, opts: noChains}, bp)
		requireStatus(t, sqsadapter.StatusCompleted, r.wait(r.start("cost", map[string]any{"count": 0, "limit": passes})))
		require.Equal(t, passes, r.calls().count("body"))
		calls := maps.Clone(r.contexts.Calls())
		maps.Copy(calls, r.coord.Calls())
		// GetRun, ListNodes, Snapshot and SnapshotNodes are also the client's polls.
		delete(calls, "GetRun")
		delete(calls, "ListNodes")
		delete(calls, "Snapshot")
		delete(calls, "SnapshotNodes")
		return calls, r.sqs.Stats().Sent
	}
	one, oneSent := cost(1)
	five, fiveSent := cost(5)
	perPass := map[string]int{}
	for op, n := range five {
		if d := n - one[op]; d != 0 {
			require.Zero(t, d%4, "%s: %d more calls for 4 more passes", op, d)
			perPass[op] = d / 4
		}
	}
	t.Logf("one pass: %v, %d sent; five: %v, %d sent; per pass: %v, %d sent", one, oneSent, five, fiveSent, perPass, (fiveSent-oneSent)/4)
	assert.Equal(t, map[string]int{"AcquireNode": 2, "CommitNode": 2, "GetMany": 2}, perPass,
		"a pass: the body node's acquire, its own read of count and its commit; the controller's read, acquire and commit")
	assert.Equal(t, 8, fiveSent-oneSent, "two messages a pass: the controller's and the next body's")
	assert.Equal(t, 1, one["CommitNode"]-3, "beyond the three nodes' commits: the done record")
}
