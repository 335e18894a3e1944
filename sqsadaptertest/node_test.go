package sqsadaptertest_test

import (
	"context"
	"errors"
	"reflect"
	"testing"

	"github.com/flowcraft/sqsadapter"
	"github.com/flowcraft/sqsadapter/sqsadaptertest"
)

// A plain NodeFunc sees the seed, reads the seeded context and its own
// writes through Get, and its sets and deletes are reported.
func TestNodeTestPlainNodeFunc(t *testing.T) {
	type order struct {
		ID    string `json:"id"`
		Total int    `json:"total"`
	}
	n := sqsadaptertest.NewNodeTest(sqsadaptertest.NodeSeed{
		RunID:   "r-1",
		NodeID:  "price",
		Input:   order{ID: "o-1", Total: 40}, // a struct, seen as a map as in a run
		Params:  map[string]any{"rate": 2},
		Attempt: 3,
		Context: map[string]any{"currency": "EUR", "stale": true, "_outputs.fetch": map[string]any{"ok": true}},
	})
	var seen struct {
		idem, currency, mine any
		staleAfterDelete     bool
		fetch                any
		attempt              int
	}
	fn := func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
		in := nc.Input.(map[string]any) // panics unless the input is JSON-like
		total := in["total"].(int64) * nc.Params["rate"].(int64)
		seen.idem, seen.attempt = nc.IdempotencyKey(), nc.Attempt
		seen.currency, _, _ = nc.Get(ctx, "currency")
		seen.fetch, _, _ = nc.Get(ctx, "_outputs.fetch")
		if err := nc.Set("total", total); err != nil {
			return sqsadapter.NodeResult{}, err
		}
		seen.mine, _, _ = nc.Get(ctx, "total")
		if err := nc.Delete("stale"); err != nil {
			return sqsadapter.NodeResult{}, err
		}
		_, seen.staleAfterDelete, _ = nc.Get(ctx, "stale")
		return sqsadapter.NodeResult{Output: total, Action: "priced"}, nil
	}
	res, err := n.Call(t.Context(), fn)
	if err != nil {
		t.Fatalf("Call: %v", err)
	}
	if res.Output != int64(80) || res.Action != "priced" {
		t.Errorf("result = %+v, want output 80 and action priced", res)
	}
	if seen.idem != "r-1/price" || seen.attempt != 3 {
		t.Errorf("IdempotencyKey, Attempt = %v, %d; want r-1/price, 3", seen.idem, seen.attempt)
	}
	if seen.currency != "EUR" || !reflect.DeepEqual(seen.fetch, map[string]any{"ok": true}) {
		t.Errorf("Get of seeded keys = %v, %v; want EUR, map[ok:true]", seen.currency, seen.fetch)
	}
	if seen.mine != int64(80) {
		t.Errorf("Get of the node's own write = %v, want 80", seen.mine)
	}
	if seen.staleAfterDelete {
		t.Errorf("Get of a key the node deleted found it")
	}
	if got, want := n.Writes(), map[string]any{"total": int64(80)}; !reflect.DeepEqual(got, want) {
		t.Errorf("Writes() = %v, want %v", got, want)
	}
	if got, want := n.Deletes(), []string{"stale"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Deletes() = %v, want %v", got, want)
	}
}

// A node that changes a value it read does not change the seeded context,
// as a store read returns a copy.
func TestNodeTestReadsAreCopies(t *testing.T) {
	n := sqsadaptertest.NewNodeTest(sqsadaptertest.NodeSeed{Context: map[string]any{"m": map[string]any{"a": 1}}})
	ctx := t.Context()
	v, ok, err := n.Context.Get(ctx, "m")
	if err != nil || !ok {
		t.Fatalf("Get(m) = %v, %v, %v", v, ok, err)
	}
	v.(map[string]any)["a"] = 2
	again, _, _ := n.Context.Get(ctx, "m")
	if got := again.(map[string]any)["a"]; got != int64(1) {
		t.Errorf("second Get(m).a = %v, want 1: a read aliases the seeded context", got)
	}
	if _, ok, _ := n.Context.Get(ctx, "missing"); ok {
		t.Errorf("Get of an unseeded key found it")
	}
	if n.Writes() != nil || n.Deletes() != nil {
		t.Errorf("a node that wrote nothing reports writes %v, deletes %v", n.Writes(), n.Deletes())
	}
}

func TestNodeTestDefaults(t *testing.T) {
	nc := sqsadaptertest.NewNodeTest(sqsadaptertest.NodeSeed{}).Context
	if nc.RunID != "test-run" || nc.BlueprintID != "test-blueprint" || nc.NodeID != "test-node" || nc.Attempt != 1 {
		t.Errorf("defaults = %q %q %q attempt %d", nc.RunID, nc.BlueprintID, nc.NodeID, nc.Attempt)
	}
}

type greeting struct {
	Name string `json:"name"`
}

// greet is written for sqsadapter.Typed and reaches the NodeContext through
// its ctx.
func greet(ctx context.Context, in greeting) (string, error) {
	nc, ok := sqsadapter.NodeContextFrom(ctx)
	if !ok {
		return "", errors.New("greet: no NodeContext in ctx")
	}
	word, _, err := nc.Get(ctx, "word")
	if err != nil {
		return "", err
	}
	if err := nc.Set("greeted", in.Name); err != nil {
		return "", err
	}
	return word.(string) + ", " + in.Name, nil
}

// A Typed node runs through Call, and its inner function can be called
// directly with Ctx: both reach the NodeContext.
func TestNodeTestTyped(t *testing.T) {
	seed := sqsadaptertest.NodeSeed{Input: map[string]any{"name": "Ada"}, Context: map[string]any{"word": "hello"}}

	t.Run("Call", func(t *testing.T) {
		n := sqsadaptertest.NewNodeTest(seed)
		res, err := n.Call(t.Context(), sqsadapter.Typed(greet))
		if err != nil {
			t.Fatalf("Call: %v", err)
		}
		if res.Output != "hello, Ada" {
			t.Errorf("output = %v, want hello, Ada", res.Output)
		}
		if got := n.Writes()["greeted"]; got != "Ada" {
			t.Errorf("Writes()[greeted] = %v, want Ada", got)
		}
	})
	t.Run("Ctx", func(t *testing.T) {
		n := sqsadaptertest.NewNodeTest(seed)
		out, err := greet(n.Ctx(t.Context()), greeting{Name: "Grace"})
		if err != nil {
			t.Fatalf("greet: %v", err)
		}
		if out != "hello, Grace" {
			t.Errorf("output = %v, want hello, Grace", out)
		}
		if got := n.Writes()["greeted"]; got != "Grace" {
			t.Errorf("Writes()[greeted] = %v, want Grace", got)
		}
		if nc, _ := sqsadapter.NodeContextFrom(n.Ctx(t.Context())); nc != n.Context {
			t.Errorf("NodeContextFrom(Ctx) = %p, want the test's NodeContext %p", nc, n.Context)
		}
	})
	t.Run("bad input", func(t *testing.T) {
		n := sqsadaptertest.NewNodeTest(sqsadaptertest.NodeSeed{Input: []any{1}})
		_, err := n.Call(t.Context(), sqsadapter.Typed(greet))
		if !sqsadapter.IsPermanent(err) {
			t.Errorf("Call with an input that does not decode: err = %v, want a permanent error", err)
		}
	})
}

func TestNodeTestRejectsUnmarshalableSeed(t *testing.T) {
	defer func() {
		if r := recover(); r == nil {
			t.Errorf("NewNodeTest with a channel as input did not panic")
		}
	}()
	sqsadaptertest.NewNodeTest(sqsadaptertest.NodeSeed{Input: make(chan int)})
}
