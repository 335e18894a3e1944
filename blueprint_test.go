package sqsadapter

import (
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseBlueprintExample(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile("testdata/order-fulfilment.json")
	require.NoError(t, err)
	b, err := ParseBlueprint(data)
	require.NoError(t, err)

	assert.Equal(t, "order-fulfilment", b.ID)
	assert.Equal(t, "2.1.0", b.Version())
	assert.Equal(t, "payments-team", b.Metadata["owner"])
	require.Len(t, b.Nodes, 11)
	require.Len(t, b.Edges, 13)

	fetch := b.Nodes[0]
	assert.Equal(t, "fetch-order", fetch.ID)
	assert.Equal(t, "orders.fetch", fetch.Uses)
	assert.Equal(t, map[string]any{"source": "orders-db"}, fetch.Params)
	assert.Equal(t, NodeConfig{MaxRetries: 3, RetryDelay: 500, Timeout: 10000}, fetch.Config)
	assert.Equal(t, "list-price", b.Nodes[3].Config.Fallback)
	assert.Equal(t, map[string]any{"stock": "check-inventory", "fraudScore": "check-fraud.score", "quote": "price-quote"}, b.Nodes[5].Inputs)
	assert.Equal(t, "any", b.Nodes[10].Config.JoinStrategy)
	assert.Equal(t, EdgeDefinition{Source: "fetch-order", Target: "price-quote", Transform: "input.lineItems"}, b.Edges[2])
	assert.Equal(t, EdgeDefinition{Source: "decide", Target: "charge-card", Action: "approve"}, b.Edges[6])
	assert.Equal(t, "result.output.customer.isVip", b.Edges[9].Condition)

	assert.Equal(t, map[string]bool{"list-price": true}, b.fallbackOnly())

	t.Run("round trip", func(t *testing.T) {
		t.Parallel()
		out, err := json.Marshal(b)
		require.NoError(t, err)
		again, err := ParseBlueprint(out)
		require.NoError(t, err)
		assert.Equal(t, b, again)
	})
}

func TestParseBlueprintObjectForm(t *testing.T) {
	t.Parallel()
	b, err := ParseBlueprint([]byte(`{
		"id": "objects",
		"nodes": {
			"2-second": {"id": "second", "uses": "work"},
			"1-first":  {"id": "first", "uses": "work"},
			"3-third":  {"id": "third", "uses": "work"}
		},
		"edges": {
			"z": {"source": "second", "target": "third"},
			"a": {"source": "first", "target": "second"}
		}
	}`))
	require.NoError(t, err)
	ids := make([]string, len(b.Nodes))
	for i, n := range b.Nodes {
		ids[i] = n.ID
	}
	assert.Equal(t, []string{"first", "second", "third"}, ids, "nodes in key order")
	assert.Equal(t, []EdgeDefinition{
		{Source: "first", Target: "second"},
		{Source: "second", Target: "third"},
	}, b.Edges, "edges in key order")
}

func TestParseBlueprintFields(t *testing.T) {
	t.Parallel()
	b, err := ParseBlueprint([]byte(`{
		"id": "fields",
		"unknown": {"ignored": true},
		"metadata": {"version": 3, "cycleEntryPoints": ["a"], "tags": {"team": "x"}},
		"nodes": [
			{"id": "a", "uses": "work", "extra": 1,
			 "params": {"n": 10, "f": 1.5, "big": 9007199254740993, "list": [1, "x", null]},
			 "_sourceLocation": {"file": "flow.ts", "line": 12, "column": 3}},
			{"id": "b", "uses": "work", "inputs": {"x": ["a.out", "_raw"], "y": "a"}}
		],
		"edges": [
			{"source": "a", "target": "b", "_sourceLocation": {"file": "flow.ts", "line": 20, "column": 1}}
		]
	}`))
	require.NoError(t, err)
	assert.Equal(t, "3", b.Version())
	assert.Equal(t, []any{"a"}, b.Metadata["cycleEntryPoints"])
	assert.Equal(t, map[string]any{
		"n": int64(10), "f": 1.5, "big": int64(9007199254740993), "list": []any{int64(1), "x", nil},
	}, b.Nodes[0].Params, "integers are exact int64")
	assert.Equal(t, map[string]any{"file": "flow.ts", "line": int64(12), "column": int64(3)}, b.Nodes[0].SourceLocation)
	assert.Equal(t, map[string]any{"file": "flow.ts", "line": int64(20), "column": int64(1)}, b.Edges[0].SourceLocation)
	assert.Equal(t, map[string]any{"x": []any{"a.out", "_raw"}, "y": "a"}, b.Nodes[1].Inputs)
}

func TestParseBlueprintMinimal(t *testing.T) {
	t.Parallel()
	for name, src := range map[string]string{
		"no edges":    `{"id": "one", "nodes": [{"id": "a", "uses": "work"}]}`,
		"null edges":  `{"id": "one", "nodes": [{"id": "a", "uses": "work"}], "edges": null, "metadata": null}`,
		"empty edges": `{"id": "one", "nodes": {"k": {"id": "a", "uses": "work"}}, "edges": {}}`,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b, err := ParseBlueprint([]byte(src))
			require.NoError(t, err)
			assert.Equal(t, "one", b.ID)
			assert.Equal(t, []NodeDefinition{{ID: "a", Uses: "work"}}, b.Nodes)
			assert.Empty(t, b.Edges)
			assert.Equal(t, "", b.Version())
		})
	}
}

func TestParseBlueprintMalformed(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, src, msg string
	}{
		{"empty", ``, "unexpected end of JSON input"},
		{"syntax", `{"id": "x",`, "unexpected end of JSON input"},
		{"array", `[]`, "a blueprint must be a JSON object"},
		{"string", `"x"`, "a blueprint must be a JSON object"},
		{"trailing data", `{"id": "x"} {}`, "invalid character"},
		{"id type", `{"id": 5}`, "cannot unmarshal number"},
		{"nodes type", `{"id": "x", "nodes": 5}`, "nodes must be an array or an object"},
		{"node type", `{"id": "x", "nodes": [5]}`, "nodes[0]:"},
		{"node in object", `{"id": "x", "nodes": {"k": "v"}}`, `nodes["k"]:`},
		{"node field type", `{"id": "x", "nodes": [{"id": 1}]}`, "cannot unmarshal number"},
		{"params type", `{"id": "x", "nodes": [{"id": "a", "params": []}]}`, "cannot unmarshal array"},
		{"config type", `{"id": "x", "nodes": [{"id": "a", "config": {"maxRetries": 1.5}}]}`, "cannot unmarshal number 1.5"},
		{"edge type", `{"id": "x", "edges": ["a"]}`, "edges[0]:"},
		{"metadata type", `{"id": "x", "metadata": []}`, "metadata:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b, err := ParseBlueprint([]byte(tt.src))
			require.Error(t, err)
			assert.Nil(t, b)
			assert.ErrorIs(t, err, ErrInvalidBlueprint)
			var be *BlueprintError
			assert.False(t, errors.As(err, &be), "a decoding error is not a list of problems")
			assert.ErrorContains(t, err, tt.msg)
		})
	}
	t.Run("syntax error stays in the chain", func(t *testing.T) {
		t.Parallel()
		_, err := ParseBlueprint([]byte(`{"id": }`))
		var se *json.SyntaxError
		assert.ErrorAs(t, err, &se)
	})
}

// validBlueprint returns a valid blueprint a -> b -> c for tests to break.
func validBlueprint() *Blueprint {
	return &Blueprint{
		ID: "valid",
		Nodes: []NodeDefinition{
			{ID: "a", Uses: "work"},
			{ID: "b", Uses: "work"},
			{ID: "c", Uses: "work"},
		},
		Edges: []EdgeDefinition{
			{Source: "a", Target: "b"},
			{Source: "b", Target: "c"},
		},
	}
}

func TestValidateProblems(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		change func(b *Blueprint)
		want   string // the only problem, or its beginning
	}{
		{"empty id", func(b *Blueprint) { b.ID = "" }, "blueprint id is empty"},
		{"no nodes", func(b *Blueprint) { b.Nodes, b.Edges = nil, nil }, "blueprint has no nodes"},
		{"empty node id", func(b *Blueprint) {
			b.Nodes = append(b.Nodes, NodeDefinition{Uses: "work"})
		}, "node #3 has an empty id"},
		{"duplicate node id", func(b *Blueprint) {
			b.Nodes = append(b.Nodes, NodeDefinition{ID: "b", Uses: "other"}, NodeDefinition{ID: "b", Uses: "third"})
		}, `node "b" is defined more than once`},
		{"empty uses", func(b *Blueprint) { b.Nodes[1].Uses = "" }, `node "b" has an empty "uses"`},
		{"unknown edge source", func(b *Blueprint) { b.Edges[0].Source = "x" }, `edge #0 (x -> b): source "x" is not a node`},
		{"unknown edge target", func(b *Blueprint) { b.Edges[1].Target = "y" }, `edge #1 (b -> y): target "y" is not a node`},
		{"missing fallback", func(b *Blueprint) { b.Nodes[0].Config.Fallback = "zzz" }, `node "a": fallback "zzz" is not a node`},
		{"self fallback", func(b *Blueprint) { b.Nodes[0].Config.Fallback = "a" }, `node "a": fallback names the node itself`},
		{"join strategy", func(b *Blueprint) { b.Nodes[2].Config.JoinStrategy = "first" }, `node "c": joinStrategy "first" is not "all" or "any"`},
		{"negative maxRetries", func(b *Blueprint) { b.Nodes[0].Config.MaxRetries = -1 }, `node "a": maxRetries is negative (-1)`},
		{"negative retryDelay", func(b *Blueprint) { b.Nodes[0].Config.RetryDelay = -5 }, `node "a": retryDelay is negative (-5)`},
		{"negative timeout", func(b *Blueprint) { b.Nodes[0].Config.Timeout = -1 }, `node "a": timeout is negative (-1)`},
		{"bad condition", func(b *Blueprint) { b.Edges[0].Condition = "x >" }, `edge #0 (a -> b): condition: compile expression "x >": unexpected token EOF`},
		{"bad transform", func(b *Blueprint) { b.Edges[1].Transform = "foo(input)" }, `edge #1 (b -> c): transform: compile expression "foo(input)": unknown function foo`},
		{"inputs type", func(b *Blueprint) { b.Nodes[1].Inputs = 5 }, `node "b": inputs must be a string or an object, not int`},
		{"inputs empty string", func(b *Blueprint) { b.Nodes[1].Inputs = "" }, `node "b": inputs is an empty string`},
		{"inputs value type", func(b *Blueprint) { b.Nodes[1].Inputs = map[string]any{"ok": "a", "k": int64(1)} }, `node "b": inputs["k"] must be a non-empty string or a non-empty array of them`},
		{"inputs empty array", func(b *Blueprint) { b.Nodes[1].Inputs = map[string]any{"k": []any{}} }, `node "b": inputs["k"] must be`},
		{"inputs array element", func(b *Blueprint) { b.Nodes[1].Inputs = map[string]any{"k": []any{"a", true}} }, `node "b": inputs["k"] must be`},
		{"inputs typed map", func(b *Blueprint) { b.Nodes[1].Inputs = map[string]string{"k": "a"} }, `node "b": inputs must be a string or an object, not map[string]string`},
		{"cycle", func(b *Blueprint) {
			b.Edges = append(b.Edges, EdgeDefinition{Source: "c", Target: "b"})
		}, "cycle: b -> c -> b"},
		{"whole graph cycle", func(b *Blueprint) {
			b.Edges = append(b.Edges, EdgeDefinition{Source: "c", Target: "a"})
		}, "cycle: a -> b -> c -> a"},
		{"self loop", func(b *Blueprint) {
			b.Edges = append(b.Edges, EdgeDefinition{Source: "b", Target: "b"})
		}, "cycle: b -> b"},
		{"fallback-only node with outgoing edges", func(b *Blueprint) {
			b.Nodes = append(b.Nodes, NodeDefinition{ID: "fb", Uses: "work"})
			b.Nodes[1].Config.Fallback = "fb"
			b.Edges = append(b.Edges, EdgeDefinition{Source: "fb", Target: "c"}, EdgeDefinition{Source: "fb", Target: "b"})
		}, `node "fb" is only a fallback (no edge leads to it), so its outgoing edges could never be taken: routing continues from the node that failed`},
		{"no start node", func(b *Blueprint) {
			b.Nodes = b.Nodes[:2]
			b.Edges = nil
			b.Nodes[0].Config.Fallback = "b"
			b.Nodes[1].Config.Fallback = "a"
		}, "blueprint has no start node"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := validBlueprint()
			tt.change(b)
			err := b.Validate()
			require.Error(t, err)
			assert.ErrorIs(t, err, ErrInvalidBlueprint)
			var be *BlueprintError
			require.ErrorAs(t, err, &be)
			assert.Equal(t, b.ID, be.BlueprintID)
			require.Len(t, be.Problems, 1, "problems: %q", be.Problems)
			assert.True(t, strings.HasPrefix(be.Problems[0], tt.want), "got %q, want %q", be.Problems[0], tt.want)
			assert.NotContains(t, be.Problems[0], "\n")
		})
	}
	t.Run("nil blueprint", func(t *testing.T) {
		t.Parallel()
		var b *Blueprint
		assert.ErrorIs(t, b.Validate(), ErrInvalidBlueprint)
	})
}

func TestValidateListsEveryProblem(t *testing.T) {
	t.Parallel()
	_, err := ParseBlueprint([]byte(`{
		"nodes": [
			{"id": "a", "uses": "work", "config": {"joinStrategy": "some", "maxRetries": -2}},
			{"id": "a", "uses": ""},
			{"id": "b", "uses": "work", "config": {"fallback": "ghost"}},
			{"id": "c", "uses": "work", "inputs": 7}
		],
		"edges": [
			{"source": "a", "target": "nowhere"},
			{"source": "a", "target": "b", "condition": "==="},
			{"source": "b", "target": "c"},
			{"source": "c", "target": "b"}
		]
	}`))
	var be *BlueprintError
	require.ErrorAs(t, err, &be)
	assert.Equal(t, []string{
		"blueprint id is empty",
		`node "a" is defined more than once`,
		`node "a": joinStrategy "some" is not "all" or "any"`,
		`node "a": maxRetries is negative (-2)`,
		`node "a" has an empty "uses"`,
		`node "b": fallback "ghost" is not a node`,
		`node "c": inputs must be a string or an object, not int64`,
		`edge #0 (a -> nowhere): target "nowhere" is not a node`,
		be.Problems[8], // the condition's compile error, checked below
		`cycle: b -> c -> b (a cycle must go through a loop controller's "continue" edge)`,
	}, be.Problems)
	assert.True(t, strings.HasPrefix(be.Problems[8], `edge #1 (a -> b): condition: compile expression "===": `), be.Problems[8])
	assert.Contains(t, err.Error(), `invalid blueprint "(no id)"`)
}

func TestValidateValid(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		b    *Blueprint
	}{
		{"chain", validBlueprint()},
		{"single node", &Blueprint{ID: "x", Nodes: []NodeDefinition{{ID: "a", Uses: "w"}}}},
		{"diamond with parallel edges and joins", &Blueprint{
			ID: "x",
			Nodes: []NodeDefinition{
				{ID: "a", Uses: "w"}, {ID: "b", Uses: "w"}, {ID: "c", Uses: "w"},
				{ID: "d", Uses: "w", Config: NodeConfig{JoinStrategy: "any"}},
				{ID: "e", Uses: "w", Config: NodeConfig{JoinStrategy: "all"}},
			},
			Edges: []EdgeDefinition{
				{Source: "a", Target: "b", Action: "left"}, {Source: "a", Target: "c"},
				{Source: "b", Target: "d"}, {Source: "c", Target: "d"}, {Source: "c", Target: "d", Condition: "ok"},
				{Source: "d", Target: "e", Transform: `{"v": input, "k": context["order-id"]}`}, {Source: "a", Target: "e"},
			},
		}},
		{"fallback that is also a step", &Blueprint{
			ID: "x",
			Nodes: []NodeDefinition{
				{ID: "a", Uses: "w", Config: NodeConfig{Fallback: "b", MaxRetries: 3, RetryDelay: 10, Timeout: 100}},
				{ID: "b", Uses: "w"}, {ID: "c", Uses: "w"},
			},
			Edges: []EdgeDefinition{{Source: "a", Target: "b"}, {Source: "b", Target: "c"}},
		}},
		{"fallback-only node without edges", &Blueprint{
			ID: "x",
			Nodes: []NodeDefinition{
				{ID: "a", Uses: "w", Config: NodeConfig{Fallback: "fb"}},
				{ID: "fb", Uses: "w"},
			},
		}},
		{"inputs forms", &Blueprint{
			ID: "x",
			Nodes: []NodeDefinition{
				{ID: "a", Uses: "w", Inputs: "_initial"},
				{ID: "b", Uses: "w", Inputs: map[string]any{"x": "a.out", "y": []any{"a.alt", "_initial"}}},
				{ID: "c", Uses: "w", Inputs: map[string]any{}},
			},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			assert.NoError(t, tt.b.Validate())
		})
	}
}

func TestFallbackOnly(t *testing.T) {
	t.Parallel()
	b := &Blueprint{
		ID: "x",
		Nodes: []NodeDefinition{
			{ID: "a", Uses: "w", Config: NodeConfig{Fallback: "fb"}},
			{ID: "b", Uses: "w", Config: NodeConfig{Fallback: "c"}}, // c has an incoming edge
			{ID: "c", Uses: "w", Config: NodeConfig{Fallback: "c"}}, // itself: not a fallback
			{ID: "d", Uses: "w", Config: NodeConfig{Fallback: "ghost"}},
			{ID: "fb", Uses: "w"},
			{ID: "fb2", Uses: "w"},
		},
		Edges: []EdgeDefinition{{Source: "a", Target: "b"}, {Source: "b", Target: "c"}},
	}
	b.Nodes[3].Config.Fallback = "fb2"
	assert.Equal(t, map[string]bool{"fb": true, "fb2": true}, b.fallbackOnly())
	assert.Empty(t, validBlueprint().fallbackOnly())
}

func FuzzParseBlueprint(f *testing.F) {
	example, err := os.ReadFile("testdata/order-fulfilment.json")
	require.NoError(f, err)
	for _, seed := range []string{
		string(example),
		`{"id": "x", "nodes": [{"id": "a", "uses": "w"}]}`,
		`{"id": "x", "nodes": {"k": {"id": "a", "uses": "w", "params": {"n": 1.5e3}}}, "edges": {}}`,
		`{"id": "x", "nodes": [{"id": "a", "uses": "w"}, {"id": "b", "uses": "w", "inputs": {"v": ["a.x", "_y"]}}], "edges": [{"source": "a", "target": "b", "condition": "x > 1"}]}`,
		`{"id": "x", "nodes": [{"id": "a", "uses": "w", "config": {"fallback": "b"}}, {"id": "b", "uses": "w"}], "edges": [{"source": "b", "target": "a"}]}`,
		`{"id": "x", "nodes": [{"id": "a", "uses": "w"}], "edges": [{"source": "a", "target": "a"}], "metadata": {"version": 2}}`,
		`[]`,
		`{`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := ParseBlueprint(data)
		if err != nil {
			require.ErrorIs(t, err, ErrInvalidBlueprint)
			return
		}
		out, err := json.Marshal(b)
		require.NoError(t, err)
		again, err := ParseBlueprint(out)
		require.NoError(t, err, "re-parsing %s", out)
		out2, err := json.Marshal(again)
		require.NoError(t, err)
		require.JSONEq(t, string(out), string(out2))
	})
}
