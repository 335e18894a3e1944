package sqsadaptertest

import (
	"cmp"
	"context"
	"fmt"

	"github.com/flowcraft/sqsadapter"
	"github.com/flowcraft/sqsadapter/internal/jsonvalue"
	"github.com/flowcraft/sqsadapter/internal/testhook"
)

// NodeSeed is what a node function sees in a NodeTest. Input, Params and
// Context are converted to the JSON-like form a real run gives a node
// (map[string]any, []any, string, bool, nil, int64 or float64), so a node
// that type-asserts its input behaves as it will in a run.
type NodeSeed struct {
	// RunID, BlueprintID and NodeID default to "test-run", "test-blueprint"
	// and "test-node".
	RunID, BlueprintID, NodeID string
	Input                      any
	Params                     map[string]any
	// Attempt defaults to 1, the first attempt.
	Attempt int
	// Context is the run context the node reads with NodeContext.Get; node
	// outputs are its keys "_outputs.<nodeId>".
	Context map[string]any
}

// NodeTest runs a node function outside a run, for unit tests: it holds a
// NodeContext built from a NodeSeed and reports what the node wrote. Like
// one attempt in a run, Get sees the seeded context and the node's own
// writes, and nothing is committed. Use one NodeTest per call.
type NodeTest struct {
	// Context is the NodeContext passed to the node function.
	Context *sqsadapter.NodeContext

	buffered func() (map[string]any, []string)
	withNode func(context.Context) context.Context
}

// NewNodeTest builds a NodeTest from seed. It panics if a seeded value is
// not JSON-marshalable, naming the value, since no run could hold it.
func NewNodeTest(seed NodeSeed) *NodeTest {
	input, err := jsonvalue.Normalize(seed.Input)
	if err != nil {
		panic(fmt.Sprintf("sqsadaptertest: NodeSeed.Input: %v", err))
	}
	params, err := normalizeMap(seed.Params)
	if err != nil {
		panic(fmt.Sprintf("sqsadaptertest: NodeSeed.Params: %v", err))
	}
	stored, err := normalizeMap(seed.Context)
	if err != nil {
		panic(fmt.Sprintf("sqsadaptertest: NodeSeed.Context: %v", err))
	}
	read := func(ctx context.Context, key string) (any, bool, error) {
		if err := ctx.Err(); err != nil {
			return nil, false, err
		}
		v, ok := stored[key]
		if !ok {
			return nil, false, nil
		}
		// A copy, as a store read decodes one: a node that changes what
		// it read does not change the run context.
		c, err := jsonvalue.Normalize(v)
		return c, err == nil, err
	}
	raw, buffered, withNode := testhook.NewNodeContext(read)
	nc := raw.(*sqsadapter.NodeContext)
	nc.RunID = cmp.Or(seed.RunID, "test-run")
	nc.BlueprintID = cmp.Or(seed.BlueprintID, "test-blueprint")
	nc.NodeID = cmp.Or(seed.NodeID, "test-node")
	nc.Input, nc.Params = input, params
	nc.Attempt = max(seed.Attempt, 1)
	return &NodeTest{Context: nc, buffered: buffered, withNode: withNode}
}

// Call runs fn with the test's NodeContext and returns what fn returned. It
// does not recover panics, so a panicking node fails the test where it
// panicked.
func (n *NodeTest) Call(ctx context.Context, fn sqsadapter.NodeFunc) (sqsadapter.NodeResult, error) {
	return fn(ctx, n.Context)
}

// Ctx returns parent carrying the test's NodeContext, so that a function
// written for sqsadapter.Typed can be called directly and still reach the
// NodeContext through sqsadapter.NodeContextFrom.
func (n *NodeTest) Ctx(parent context.Context) context.Context {
	return n.withNode(parent)
}

// Writes returns the context keys the node set (not deleted), with their
// values in the JSON-like form that would be committed; nil if none.
func (n *NodeTest) Writes() map[string]any {
	sets, _ := n.buffered()
	return sets
}

// Deletes returns the context keys the node deleted, sorted; nil if none.
func (n *NodeTest) Deletes() []string {
	_, deletes := n.buffered()
	return deletes
}

// normalizeMap converts m's values to the JSON-like form; nil stays nil.
func normalizeMap(m map[string]any) (map[string]any, error) {
	if m == nil {
		return nil, nil
	}
	out := make(map[string]any, len(m))
	for k, v := range m {
		nv, err := jsonvalue.Normalize(v)
		if err != nil {
			return nil, fmt.Errorf("key %q: %w", k, err)
		}
		out[k] = nv
	}
	return out, nil
}
