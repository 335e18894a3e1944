package flow

// The equivalence test: testdata/createflow.mjs builds a set of named flows
// with Flowcraft's own createFlow (the package folder in
// SQSADAPTER_FLOWCRAFT, which scripts/emulators.sh installs and exports),
// and each must equal the blueprint the Go Builder assembles from the same
// calls, in equivalentFlows.

import (
	"bytes"
	"context"
	"encoding/json"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/flowcraft/sqsadapter"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// equivalentFlows are the Go twins of the flows in testdata/createflow.mjs,
// by name. Flows with a loop assemble but do not pass Validate while it
// refuses every cycle.
// refusedShapes are the flows whose loop has a shape Build's validation
// refuses, with why: a body node's edge leaving the loop ("loop", as in
// Flowcraft's loop demo: that exit would run in every pass, after the pass
// has moved on), and an edge from the controller back into its body that is
// not its continue edge ("loop-exit"). Flowcraft's builder emits both; its
// runtime runs neither as written (a body entered at its first node never
// starts there: reference §4.6).
var refusedShapes = map[string]string{
	"loop":      `edge #4 (check -> final) leaves the body of loop "test-loop"`,
	"loop-exit": `cycle: body -> again -> body (a cycle must go through a loop controller's "continue" edge)`,
}

var equivalentFlows = map[string]func() *Builder{
	"chain": func() *Builder {
		return New("chain").
			Node("fetch", "fetchOrder", WithInputs("orderId"), WithConfig(sqsadapter.NodeConfig{MaxRetries: 3, RetryDelay: 100})).
			Node("check", "checkStock", WithParams(map[string]any{"warehouse": "north", "limit": 5, "ratio": 0.5, "tags": []string{"a", "b"}})).
			Node("charge", "charge", WithInputs(map[string]string{"id": "orderId", "total": "total"}),
				WithConfig(sqsadapter.NodeConfig{Timeout: 2000, Fallback: "refund"})).
			Node("refund", "refund").
			Edge("fetch", "check", WithCondition("fetch.total < 500")).
			Edge("check", "charge", WithAction("approve"), WithTransform("({id: fetch.id, amount: fetch.total})"))
	},
	"fan": func() *Builder {
		return New("fan").
			Node("start", "stub").
			Node("left", "stub").
			Node("right", "stub").
			Node("join", "merge", WithConfig(sqsadapter.NodeConfig{JoinStrategy: "all"})).
			Node("first", "merge", WithConfig(sqsadapter.NodeConfig{JoinStrategy: "any"})).
			Edge("start", "left").
			Edge("start", "right").
			Edge("left", "join").
			Edge("right", "join").
			Edge("left", "first").
			Edge("right", "first")
	},
	"batch-between": func() *Builder {
		return New("batch-between").
			Node("load", "load").
			Edge("load", "items", WithCondition("load.length > 0")).
			Batch("items", "double", BatchOptions{InputKey: "load", OutputKey: "doubled"}).
			Node("sum", "sum", WithInputs("doubled")).
			Edge("items", "sum").
			Node("audit", "audit").
			Edge("load", "audit").
			Edge("items", "audit", WithAction("done"))
	},
	"batch-chunk": func() *Builder {
		return New("batch-chunk").
			Batch("chunks", "worker", BatchOptions{InputKey: "input", OutputKey: "output", ChunkSize: 2}).
			Node("report", "report").
			Edge("chunks", "report")
	},
	// Built the same as Flowcraft; the engine refuses the loop's shape.
	"loop": func() *Builder {
		return New("loop").
			Node("initialize", "initialize").
			Node("increment", "increment").
			Node("check", "check").
			Node("final", "final").
			Edge("initialize", "increment").
			Edge("increment", "check").
			Loop("test-loop", LoopOptions{StartNodeID: "increment", EndNodeID: "check", Condition: "counter < 3"}).
			Edge("check", "final")
	},
	// Built the same as Flowcraft; the engine refuses the loop's shape.
	"loop-exit": func() *Builder {
		return New("loop-exit").
			Node("init", "init").
			Node("body", "body").
			Node("after", "after").
			Node("alarm", "alarm").
			Node("log", "log").
			Edge("init", "body").
			Loop("again", LoopOptions{StartNodeID: "body", EndNodeID: "body", Condition: "body.n < 10"}).
			Edge("again", "after").
			Edge("again", "alarm", WithAction("overflow"), WithCondition("body.n > 100"), WithTransform("ignored")).
			Edge("again", "body", WithCondition("body.retry")).
			Edge("init", "log")
	},
	"subflow": func() *Builder {
		return New("subflow").
			Node("prepare", "prepare").
			Subflow("child", "child-flow", SubflowOptions{
				Inputs:  map[string]string{"orderId": "prepare"},
				Outputs: map[string]string{"receipt": "charge"},
			}, WithConfig(sqsadapter.NodeConfig{MaxRetries: 2})).
			Subflow("bare", "other", SubflowOptions{Inputs: map[string]string{}}).
			Edge("prepare", "child").
			Edge("child", "bare")
	},
	"sleep": func() *Builder {
		return New("sleep").
			Node("before", "stub").
			Sleep("nap", "15m").
			Sleep("blink", 500*time.Millisecond).
			Edge("before", "nap").
			Edge("nap", "blink")
	},
	"wait": func() *Builder {
		return New("wait").
			Node("ask", "ask").
			Wait("approval").
			Wait("callback", WithInputs("ask"), WithParams(map[string]any{"eventName": "paid"}),
				WithConfig(sqsadapter.NodeConfig{Timeout: 60000})).
			Edge("ask", "approval").
			Edge("approval", "callback", WithAction("approved"))
	},
	"mix": func() *Builder {
		return New("mix").
			Node("fetch", "fetch", WithInputs("query")).
			Batch("enrich", "enrichOne", BatchOptions{InputKey: "fetch", OutputKey: "enriched", ChunkSize: 10}).
			Edge("fetch", "enrich").
			Node("score", "score").
			Node("tune", "tune").
			Edge("enrich", "score").
			Edge("score", "tune").
			Loop("refine", LoopOptions{StartNodeID: "score", EndNodeID: "tune", Condition: "tune.delta > 0.01"}).
			Wait("review", WithParams(map[string]any{"eventName": "reviewed"})).
			Edge("refine", "review").
			Sleep("cool", "1h").
			Edge("review", "cool", WithAction("later")).
			Node("publish", "publish").
			Edge("review", "publish", WithAction("now"), WithTransform("review.payload")).
			Edge("cool", "publish")
	},
}

// flowcraftBlueprints runs testdata/createflow.mjs and returns its
// blueprints by name, as raw JSON.
func flowcraftBlueprints(t *testing.T) map[string]json.RawMessage {
	t.Helper()
	pkg := os.Getenv("SQSADAPTER_FLOWCRAFT")
	if pkg == "" {
		t.Skip("SQSADAPTER_FLOWCRAFT is not set: run under make test, or: state=$(scripts/emulators.sh start) && . $state/env")
	}
	_, err := os.Stat(filepath.Join(pkg, "dist", "index.mjs"))
	require.NoError(t, err, "SQSADAPTER_FLOWCRAFT=%s: no flowcraft package there", pkg)
	_, err = exec.LookPath("node")
	require.NoError(t, err, "SQSADAPTER_FLOWCRAFT is set but node is missing")
	script, err := filepath.Abs(filepath.Join("testdata", "createflow.mjs"))
	require.NoError(t, err)

	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", script, pkg)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	require.NoError(t, cmd.Run(), "createflow.mjs: %s", stderr.String())
	var out map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(stdout.Bytes(), &out), "createflow.mjs output")
	return out
}

// canonical returns a blueprint's JSON as generic values, for a comparison
// that ignores key order and Go types. A node's empty "config" is dropped:
// Go's encoding writes it, as NodeConfig is a struct, and Flowcraft omits it.
func canonical(t *testing.T, v any) map[string]any {
	t.Helper()
	data, ok := v.(json.RawMessage)
	if !ok {
		var err error
		data, err = json.Marshal(v)
		require.NoError(t, err)
	}
	var out map[string]any
	require.NoError(t, json.Unmarshal(data, &out))
	nodes, _ := out["nodes"].([]any)
	for _, n := range nodes {
		if n, ok := n.(map[string]any); ok {
			if c, ok := n["config"].(map[string]any); ok && len(c) == 0 {
				delete(n, "config")
			}
		}
	}
	return out
}

func TestEquivalenceWithFlowcraft(t *testing.T) {
	t.Parallel()
	fc := flowcraftBlueprints(t)
	names := slices.Sorted(maps.Keys(equivalentFlows))
	require.Equal(t, names, slices.Sorted(maps.Keys(fc)), "the flows of createflow.mjs and equivalentFlows")

	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := equivalentFlows[name]()
			got, err := b.assemble()
			require.NoError(t, err)
			assert.Equal(t, canonical(t, fc[name]), canonical(t, got), "as JSON")

			// The same Go values as decoding Flowcraft's JSON (ParseBlueprint
			// without its validation): int64 integers, map[string]any maps.
			var want sqsadapter.Blueprint
			require.NoError(t, json.Unmarshal(fc[name], &want))
			assert.Equal(t, &want, got, "as Go values")

			built, err := b.Build()
			if why, ok := refusedShapes[name]; ok {
				require.ErrorIs(t, err, sqsadapter.ErrInvalidBlueprint)
				assert.ErrorContains(t, err, why)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, got, built)
		})
	}
}
