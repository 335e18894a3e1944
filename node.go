package sqsadapter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/flowcraft/sqsadapter/internal/jsonvalue"
	"github.com/flowcraft/sqsadapter/internal/limits"
	"sort"
	"strconv"
	"sync"
)

// NodeFunc implements a node. It receives the node's resolved input and
// parameters in nc and returns the node's output and, optionally, an action
// used for routing. A returned error fails the attempt; wrap it with Permanent
// to stop further attempts. A panic is recovered and fails the attempt.
//
// A node function runs at least once per committed output: a worker crash
// after its side effects and before the commit runs it again. Use
// nc.IdempotencyKey() to make external side effects idempotent.
type NodeFunc func(ctx context.Context, nc *NodeContext) (NodeResult, error)

// NodeRegistry maps a NodeDefinition.Uses key to its implementation.
type NodeRegistry map[string]NodeFunc

// NodeResult is what a node returns.
type NodeResult struct {
	// Output is stored as the node's output ("_outputs.<nodeId>"). It must be
	// JSON-marshalable; nil is a valid output.
	Output any
	// Action selects the outgoing edges whose action matches (see routing).
	Action string
}

// NodeContext is what a node function receives. Its fields are read-only.
// Its methods are safe for concurrent use by the node's own goroutines.
type NodeContext struct {
	RunID, BlueprintID, NodeID string
	// Input is the node's resolved input (JSON-like: map[string]any, []any,
	// string, bool, nil, int64 or float64).
	Input any
	// Params is the node definition's params, as given.
	Params map[string]any
	// Attempt is 1 on the first attempt; it counts attempts durably, so an
	// attempt cut short by a worker crash counts too.
	Attempt int
	// Iteration is, in a loop's body, the pass of the loop the node runs
	// in (0 for the first); outputs of the body's nodes read through Get
	// are those of this pass.
	Iteration int

	job  *jobRun                                                  // reads the run's context (a job's node)
	read func(ctx context.Context, key string) (any, bool, error) // or this (a unit test's)

	mu     sync.Mutex
	writes map[string]contextWrite
}

type contextWrite struct {
	value   any
	deleted bool
}

// IdempotencyKey returns "runId/nodeId" ("runId/nodeId#k" in pass k > 0 of a
// loop): a stable key for the external side effects of this node in this
// run, the same on every attempt and redelivery.
func (nc *NodeContext) IdempotencyKey() string {
	if nc.Iteration > 0 {
		return nc.RunID + "/" + nc.NodeID + "#" + strconv.Itoa(nc.Iteration)
	}
	return nc.RunID + "/" + nc.NodeID
}

// Get reads a key of the run context with a consistent read. The node's own
// buffered writes are visible to it. Node outputs are readable as
// "_outputs.<nodeId>". Values are JSON-like: a float64 without a fraction
// written with Set comes back as an int64 once committed, so a
// .(float64) assertion can fail; use ContextValue for typed reads.
func (nc *NodeContext) Get(ctx context.Context, key string) (any, bool, error) {
	nc.mu.Lock()
	w, ok := nc.writes[key]
	nc.mu.Unlock()
	if ok {
		if w.deleted {
			return nil, false, nil
		}
		return w.value, true, nil
	}
	switch {
	case nc.job != nil:
		return nc.job.readKey(ctx, key)
	case nc.read != nil:
		return nc.read(ctx, key)
	}
	return nil, false, nil
}

// Set buffers a write of key to the run context. Buffered writes are
// committed atomically with the node's output, and discarded if the attempt
// fails. The value must be JSON-marshalable. Keys starting with "_outputs."
// are reserved.
func (nc *NodeContext) Set(key string, value any) error {
	if err := checkContextKey(key); err != nil {
		return err
	}
	v, err := jsonvalue.Normalize(value)
	if err != nil {
		return fmt.Errorf("sqsadapter: context key %q: %w", key, err)
	}
	nc.mu.Lock()
	defer nc.mu.Unlock()
	if nc.writes == nil {
		nc.writes = make(map[string]contextWrite)
	}
	nc.writes[key] = contextWrite{value: v}
	return nil
}

// Delete buffers the removal of key from the run context.
func (nc *NodeContext) Delete(key string) error {
	if err := checkContextKey(key); err != nil {
		return err
	}
	nc.mu.Lock()
	defer nc.mu.Unlock()
	if nc.writes == nil {
		nc.writes = make(map[string]contextWrite)
	}
	nc.writes[key] = contextWrite{deleted: true}
	return nil
}

// Decode converts the node's input into v (a pointer), through JSON.
func (nc *NodeContext) Decode(v any) error {
	b, err := json.Marshal(nc.Input)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// buffered returns the node's buffered writes: sets and deletes, sorted by key.
func (nc *NodeContext) buffered() (sets map[string]any, deletes []string) {
	nc.mu.Lock()
	defer nc.mu.Unlock()
	for k, w := range nc.writes {
		if w.deleted {
			deletes = append(deletes, k)
			continue
		}
		if sets == nil {
			sets = make(map[string]any)
		}
		sets[k] = w.value
	}
	sort.Strings(deletes)
	return sets, deletes
}

// checkContextKey checks a context key that a caller writes (see
// limits.CheckContextKey); the error matches ErrInvalidKey.
func checkContextKey(key string) error {
	if err := limits.CheckContextKey(key); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidKey, err)
	}
	return nil
}

// outputsPrefix begins the context key of a node record, "_outputs.<nodeId>".
const outputsPrefix = limits.OutputsPrefix

// permanentError marks an error that stops further attempts.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// Permanent wraps err so that the node is not attempted again: the node fails
// for good at once and its fallback, if any, is not run (Flowcraft's fatal
// errors). Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err: err}
}

// IsPermanent reports whether err was wrapped with Permanent.
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

type nodeContextKey struct{}

// NodeContextFrom returns the NodeContext of the node running with ctx, for
// nodes written with Typed.
func NodeContextFrom(ctx context.Context) (*NodeContext, bool) {
	nc, ok := ctx.Value(nodeContextKey{}).(*NodeContext)
	return nc, ok
}

// Typed adapts a function over typed input and output to a NodeFunc. The
// node's input is converted to In through JSON; a conversion failure is a
// permanent error. The returned Out is the node's output and the action is
// empty; use NodeContextFrom(ctx) to reach the NodeContext.
func Typed[In, Out any](fn func(ctx context.Context, in In) (Out, error)) NodeFunc {
	return func(ctx context.Context, nc *NodeContext) (NodeResult, error) {
		var in In
		if nc.Input != nil {
			if err := nc.Decode(&in); err != nil {
				return NodeResult{}, Permanent(fmt.Errorf("decode input of node %q as %T: %w", nc.NodeID, in, err))
			}
		}
		out, err := fn(context.WithValue(ctx, nodeContextKey{}, nc), in)
		if err != nil {
			return NodeResult{}, err
		}
		return NodeResult{Output: out}, nil
	}
}
