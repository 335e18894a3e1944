package flow

import (
	"errors"
	"testing"
	"time"

	"github.com/flowcraft/sqsadapter"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// edge is an EdgeDefinition, shorter.
func edge(source, target string, opts ...EdgeOption) sqsadapter.EdgeDefinition {
	e := sqsadapter.EdgeDefinition{Source: source, Target: target}
	for _, o := range opts {
		o(&e)
	}
	return e
}

func TestNodeAndEdge(t *testing.T) {
	t.Parallel()
	type item struct {
		SKU string `json:"sku"`
		Qty int    `json:"qty"`
	}
	params := map[string]any{"n": 3, "ratio": 0.25, "item": item{"A1", 2}, "list": []int{1, 2}}
	bp, err := New("orders").
		Node("fetch", "fetchOrder", WithInputs("orderId"), WithParams(params),
			WithConfig(sqsadapter.NodeConfig{MaxRetries: 3, Fallback: "fallback"})).
		Node("charge", "charge", WithInputs(map[string]string{"id": "orderId"})).
		Node("fallback", "noop").
		Edge("fetch", "charge", WithAction("ok"), WithCondition("fetch.total > 0"), WithTransform("fetch.total")).
		Build()
	require.NoError(t, err)

	assert.Equal(t, "orders", bp.ID)
	assert.Equal(t, []sqsadapter.NodeDefinition{
		{
			ID: "fetch", Uses: "fetchOrder", Inputs: "orderId",
			Params: map[string]any{
				"n": int64(3), "ratio": 0.25,
				"item": map[string]any{"sku": "A1", "qty": int64(2)},
				"list": []any{int64(1), int64(2)},
			},
			Config: sqsadapter.NodeConfig{MaxRetries: 3, Fallback: "fallback"},
		},
		{ID: "charge", Uses: "charge", Inputs: map[string]any{"id": "orderId"}},
		{ID: "fallback", Uses: "noop"},
	}, bp.Nodes)
	assert.Equal(t, []sqsadapter.EdgeDefinition{{
		Source: "fetch", Target: "charge", Action: "ok", Condition: "fetch.total > 0", Transform: "fetch.total",
	}}, bp.Edges)
}

func TestLaterOptionWins(t *testing.T) {
	t.Parallel()
	bp, err := New("x").
		Node("a", "a", WithInputs("one"), WithInputs("two")).
		Build()
	require.NoError(t, err)
	assert.Equal(t, "two", bp.Nodes[0].Inputs)
}

func TestBatch(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		chunkSize int
		params    map[string]any
	}{
		{"no chunk size", 0, map[string]any{"workerUsesKey": "double", "outputKey": "out", "gatherNodeId": "b_gather"}},
		{"chunk size", 5, map[string]any{"workerUsesKey": "double", "outputKey": "out", "gatherNodeId": "b_gather", "chunkSize": int64(5)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			bp, err := New("x").
				Node("load", "load").
				Edge("load", "b", WithCondition("load.length > 0")).
				Batch("b", "double", BatchOptions{InputKey: "in", OutputKey: "out", ChunkSize: tt.chunkSize}).
				Node("sum", "sum").
				Edge("b", "sum", WithAction("done")).
				Build()
			require.NoError(t, err)
			assert.Equal(t, []sqsadapter.NodeDefinition{
				{ID: "load", Uses: "load"},
				{ID: "b_scatter", Uses: "batch-scatter", Inputs: "in", Params: tt.params},
				{
					ID: "b_gather", Uses: "batch-gather",
					Params: map[string]any{"outputKey": "out", "gatherNodeId": "b_gather"},
					Config: sqsadapter.NodeConfig{JoinStrategy: "all"},
				},
				{ID: "sum", Uses: "sum"},
			}, bp.Nodes)
			// The batch's edges first, in before out; the rest as added.
			assert.Equal(t, []sqsadapter.EdgeDefinition{
				edge("load", "b_scatter", WithCondition("load.length > 0")),
				edge("b_gather", "sum", WithAction("done")),
				edge("b_scatter", "b_gather"),
			}, bp.Edges)
		})
	}
}

func TestLoop(t *testing.T) {
	t.Parallel()
	b := New("x").
		Node("init", "init").
		Node("inc", "inc").
		Node("check", "check").
		Node("done", "done").
		Node("alarm", "alarm").
		Edge("init", "inc").
		Edge("inc", "check").
		Loop("again", LoopOptions{StartNodeID: "inc", EndNodeID: "check", Condition: "counter < 3"}).
		Edge("again", "done").
		Edge("again", "alarm", WithAction("overflow"), WithTransform("replaced")).
		Edge("again", "inc", WithCondition("check.retry"))
	// That last edge, into the body, is one the engine refuses (only the
	// continue edge leads back); the builder keeps it as Flowcraft does.
	bp, err := b.assemble()
	require.NoError(t, err)

	assert.Equal(t, sqsadapter.NodeDefinition{
		ID: "again", Uses: "loop-controller",
		Params: map[string]any{"condition": "counter < 3"},
		Config: sqsadapter.NodeConfig{JoinStrategy: "any"},
	}, bp.Nodes[len(bp.Nodes)-1])
	const body = `context["check"]`
	assert.Equal(t, []sqsadapter.EdgeDefinition{
		// Rewired, first: the edges leaving the controller, except to the
		// loop's start node. An action given is kept; the transform is not.
		edge("again", "done", WithAction("break"), WithTransform(body)),
		edge("again", "alarm", WithAction("overflow"), WithTransform(body)),
		edge("init", "inc"),
		edge("inc", "check"),
		edge("check", "again"),
		edge("again", "inc", WithAction("continue"), WithTransform(body)),
		edge("again", "inc", WithCondition("check.retry")), // to the start node: as given
	}, bp.Edges)

	_, err = b.Build()
	require.ErrorIs(t, err, sqsadapter.ErrInvalidBlueprint)
	assert.ErrorContains(t, err, `cycle: inc -> check -> again -> inc (a cycle must go through a loop controller's "continue" edge)`)

	bp, err = New("x").Node("init", "init").Node("inc", "inc").Node("check", "check").Node("done", "done").
		Edge("init", "inc").Edge("inc", "check").
		Loop("again", LoopOptions{StartNodeID: "inc", EndNodeID: "check", Condition: "counter < 3"}).
		Edge("again", "done").
		Build()
	require.NoError(t, err, "a loop's blueprint builds and validates")
	assert.Len(t, bp.Edges, 5)
}

// An edge that two rewiring rules match becomes one edge; Flowcraft makes
// two of it, each with an end that is not a node.
func TestRewiringComposes(t *testing.T) {
	t.Parallel()
	t.Run("batch into batch", func(t *testing.T) {
		t.Parallel()
		bp, err := New("x").
			Batch("first", "w", BatchOptions{InputKey: "in", OutputKey: "mid"}).
			Batch("second", "w", BatchOptions{InputKey: "mid", OutputKey: "out"}).
			Edge("first", "second", WithAction("next")).
			Build()
		require.NoError(t, err)
		assert.Equal(t, []sqsadapter.EdgeDefinition{
			edge("first_gather", "second_scatter", WithAction("next")),
			edge("first_scatter", "first_gather"),
			edge("second_scatter", "second_gather"),
		}, bp.Edges)
	})
	t.Run("loop into batch", func(t *testing.T) {
		t.Parallel()
		bp, err := New("x").
			Node("body", "body").
			Loop("again", LoopOptions{StartNodeID: "body", EndNodeID: "body", Condition: "body.more"}).
			Batch("after", "w", BatchOptions{InputKey: "in", OutputKey: "out"}).
			Edge("again", "after").
			assemble()
		require.NoError(t, err)
		assert.Equal(t, []sqsadapter.EdgeDefinition{
			edge("again", "after_scatter", WithAction("break"), WithTransform(`context["body"]`)),
			edge("body", "again"),
			edge("again", "body", WithAction("continue"), WithTransform(`context["body"]`)),
			edge("after_scatter", "after_gather"),
		}, bp.Edges)
	})
}

func TestSubflow(t *testing.T) {
	t.Parallel()
	extra := map[string]any{"mode": "strict"}
	bp, err := New("x").
		Subflow("child", "child-flow", SubflowOptions{
			Inputs:  map[string]string{"orderId": "id"},
			Outputs: map[string]string{"receipt": "charge"},
		}, WithParams(extra), WithConfig(sqsadapter.NodeConfig{Timeout: 1000})).
		Subflow("bare", "other", SubflowOptions{Outputs: map[string]string{}}).
		Edge("child", "bare").
		Build()
	require.NoError(t, err)
	assert.Equal(t, []sqsadapter.NodeDefinition{
		{
			ID: "child", Uses: "subflow",
			Params: map[string]any{
				"mode": "strict", "blueprintId": "child-flow",
				"inputs": map[string]any{"orderId": "id"}, "outputs": map[string]any{"receipt": "charge"},
			},
			Config: sqsadapter.NodeConfig{Timeout: 1000},
		},
		{ID: "bare", Uses: "subflow", Params: map[string]any{"blueprintId": "other"}},
	}, bp.Nodes)
	assert.Equal(t, map[string]any{"mode": "strict"}, extra, "the caller's params are not modified")
}

func TestSleepAndWait(t *testing.T) {
	t.Parallel()
	bp, err := New("x").
		Sleep("ms", 250).
		Sleep("text", "15m").
		Sleep("go", 90*time.Second).
		Wait("approval", WithParams(map[string]any{"eventName": "approved"})).
		Edge("ms", "text").
		Edge("text", "go").
		Edge("go", "approval").
		Build()
	require.NoError(t, err)
	assert.Equal(t, []sqsadapter.NodeDefinition{
		{ID: "ms", Uses: "sleep", Params: map[string]any{"duration": int64(250)}},
		{ID: "text", Uses: "sleep", Params: map[string]any{"duration": "15m"}},
		{ID: "go", Uses: "sleep", Params: map[string]any{"duration": int64(90000)}},
		{ID: "approval", Uses: "wait", Params: map[string]any{"eventName": "approved"}},
	}, bp.Nodes)
}

func TestBuildErrors(t *testing.T) {
	t.Parallel()
	loop := LoopOptions{StartNodeID: "a", EndNodeID: "a", Condition: "a.more"}
	batch := BatchOptions{InputKey: "in", OutputKey: "out"}
	tests := []struct {
		name  string
		build func(*Builder)
		want  []string // one problem each
	}{
		{"no nodes", func(b *Builder) {}, []string{"blueprint has no nodes"}},
		{"empty node id", func(b *Builder) { b.Node("a", "a").Node("", "fetch") }, []string{`a node using "fetch" has an empty id`}},
		{"empty wait id", func(b *Builder) { b.Node("a", "a").Wait("") }, []string{`a node using "wait" has an empty id`}},
		{"empty loop id", func(b *Builder) { b.Node("a", "a").Loop("", loop) }, []string{`a loop from "a" to "a" has an empty id`}},
		{"empty batch id", func(b *Builder) { b.Batch("", "w", batch) }, []string{`a batch of "w" has an empty id`, "blueprint has no nodes"}},
		{"duplicate node", func(b *Builder) { b.Node("a", "a").Node("a", "b").Node("a", "c") }, []string{`node "a" is defined more than once`}},
		{"loop id is a node", func(b *Builder) { b.Node("a", "a").Loop("a", loop) }, []string{`node "a" is defined more than once`}},
		{"batch id is a node", func(b *Builder) { b.Node("b", "b").Batch("b", "w", batch) }, []string{`batch "b" has the id of a node`}},
		{"batch id is a loop", func(b *Builder) { b.Node("a", "a").Loop("l", loop).Batch("l", "w", batch) }, []string{`batch "l" has the id of a node`}},
		{"batch node id taken", func(b *Builder) { b.Node("b_gather", "x").Batch("b", "w", batch) }, []string{`node "b_gather" is defined more than once`}},
		{"duplicate batch", func(b *Builder) { b.Batch("b", "w", batch).Batch("b", "w", batch) }, []string{
			`node "b_scatter" is defined more than once`, `node "b_gather" is defined more than once`, `batch "b" is defined more than once`,
		}},
		{"batch without keys", func(b *Builder) { b.Batch("b", "", BatchOptions{ChunkSize: -1}) }, []string{
			`batch "b": worker uses is empty`, `batch "b": InputKey is empty`, `batch "b": OutputKey is empty`, `batch "b": ChunkSize is negative (-1)`,
		}},
		{"loop without condition", func(b *Builder) { b.Node("a", "a").Loop("l", LoopOptions{StartNodeID: "a", EndNodeID: "a"}) }, []string{
			`loop "l": Condition is empty`,
		}},
		{"loop body missing", func(b *Builder) {
			b.Node("a", "a").Loop("l", LoopOptions{StartNodeID: "s", EndNodeID: "e", Condition: "true"})
		}, []string{`loop "l": start node "s" is not a node`, `loop "l": end node "e" is not a node`}},
		{"loop body is a batch", func(b *Builder) {
			b.Batch("b", "w", batch).Loop("l", LoopOptions{StartNodeID: "b", EndNodeID: "b", Condition: "true"})
		}, []string{`loop "l": start node "b" is not a node`, `loop "l": end node "b" is not a node`}},
		{"params not JSON", func(b *Builder) { b.Node("a", "a", WithParams(map[string]any{"ch": make(chan int)})) }, []string{
			`node "a": params: value is not JSON-marshalable: json: unsupported type: chan int`,
		}},
		{"inputs not JSON", func(b *Builder) { b.Node("a", "a", WithInputs(func() {})) }, []string{
			`node "a": inputs: value is not JSON-marshalable: json: unsupported type: func()`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := New("bp")
			tt.build(b)
			bp, err := b.Build()
			require.Error(t, err)
			assert.Nil(t, bp)
			require.ErrorIs(t, err, sqsadapter.ErrInvalidBlueprint)
			joined, ok := err.(interface{ Unwrap() []error })
			require.True(t, ok, "Build joins the problems: %v", err)
			var got []string
			for _, e := range joined.Unwrap() {
				assert.ErrorIs(t, e, sqsadapter.ErrInvalidBlueprint)
				var be *sqsadapter.BlueprintError
				require.ErrorAs(t, e, &be)
				assert.Equal(t, "bp", be.BlueprintID)
				got = append(got, be.Problems...)
			}
			assert.Equal(t, tt.want, got)
		})
	}
}

// Problems the Builder does not check are Validate's.
func TestBuildValidates(t *testing.T) {
	t.Parallel()
	_, err := New("").Node("a", "a").Edge("a", "nowhere").Build()
	require.ErrorIs(t, err, sqsadapter.ErrInvalidBlueprint)
	var be *sqsadapter.BlueprintError
	require.ErrorAs(t, err, &be)
	assert.Len(t, be.Problems, 2, "an empty blueprint id and an edge to no node: %v", be.Problems)
}

func TestBuildAgainSharesNothing(t *testing.T) {
	t.Parallel()
	params := map[string]any{"list": []any{"x"}, "n": 1}
	b := New("x").
		Node("a", "a", WithParams(params), WithInputs(map[string]any{"k": "v"})).
		Node("b", "b").
		Edge("a", "b")
	first, err := b.Build()
	require.NoError(t, err)
	params["n"] = 2 // after Node: not seen
	first.Nodes[0].Params["list"].([]any)[0] = "changed"
	first.Nodes[0].Inputs.(map[string]any)["k"] = "changed"
	first.Nodes[1].ID = "changed"
	first.Edges[0].Target = "changed"

	second, err := b.Build()
	require.NoError(t, err)
	assert.Equal(t, []sqsadapter.NodeDefinition{
		{ID: "a", Uses: "a", Params: map[string]any{"list": []any{"x"}, "n": int64(1)}, Inputs: map[string]any{"k": "v"}},
		{ID: "b", Uses: "b"},
	}, second.Nodes)
	assert.Equal(t, []sqsadapter.EdgeDefinition{edge("a", "b")}, second.Edges)

	// Problems do not accumulate across builds either.
	b.Node("", "c")
	_, err1 := b.Build()
	_, err2 := b.Build()
	require.Error(t, err1)
	assert.Equal(t, err1.Error(), err2.Error())
	assert.False(t, errors.Is(err1, errors.ErrUnsupported))
}
