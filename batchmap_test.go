package sqsadapter_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowcraft/sqsadapter"
	"github.com/flowcraft/sqsadapter/sqsadaptertest"
	"github.com/flowcraft/sqsadapter/store"
)

// Batches: batch-scatter / batch-gather (as Flowcraft's builder writes
// them) and the map node, on the in-memory parts (batchmap.go).

// batchBP is the blueprint Flowcraft's builder writes for
// .batch("b", double, {inputKey: "items", outputKey: "out", ...}): scatter
// params and config are merged with extra.
func batchBP(t *testing.T, id string, params, config map[string]any) *sqsadapter.Blueprint {
	t.Helper()
	p := map[string]any{"workerUsesKey": "double", "outputKey": "out", "gatherNodeId": "b_gather"}
	maps.Copy(p, params)
	scatter := map[string]any{"id": "b_scatter", "uses": "batch-scatter", "inputs": "items", "params": p}
	if config != nil {
		scatter["config"] = config
	}
	gather := map[string]any{"id": "b_gather", "uses": "batch-gather", "params": map[string]any{"outputKey": "out", "gatherNodeId": "b_gather"},
		"config": map[string]any{"joinStrategy": "all"}}
	b, err := json.Marshal(map[string]any{"id": id, "nodes": []any{scatter, gather},
		"edges": []any{map[string]any{"source": "b_scatter", "target": "b_gather"}}})
	require.NoError(t, err)
	return mustParse(t, string(b))
}

// itemCalls counts the worker's calls by idempotency key, with their
// attempts, and can make an item fail or wait.
type itemCalls struct {
	mu    sync.Mutex
	calls map[string][]int // key -> attempts
	at    map[string]time.Time
	// behave, if set, runs before the worker doubles its input; an error
	// fails the attempt.
	behave func(ctx context.Context, nc *sqsadapter.NodeContext) error
}

func (c *itemCalls) worker(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
	c.mu.Lock()
	if c.calls == nil {
		c.calls, c.at = map[string][]int{}, map[string]time.Time{}
	}
	c.calls[nc.IdempotencyKey()] = append(c.calls[nc.IdempotencyKey()], nc.Attempt)
	c.at[nc.IdempotencyKey()] = time.Now()
	c.mu.Unlock()
	if c.behave != nil {
		if err := c.behave(ctx, nc); err != nil {
			return sqsadapter.NodeResult{}, err
		}
	}
	if n, ok := nc.Input.(int64); ok {
		return sqsadapter.NodeResult{Output: 2 * n}, nil
	}
	return sqsadapter.NodeResult{Output: nc.Input}, nil
}

func (c *itemCalls) count(key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.calls[key])
}

func (c *itemCalls) attempts(key string) []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.calls[key])
}

// keys lists the keys called, sorted.
func (c *itemCalls) keys() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Sorted(maps.Keys(c.calls))
}

// commitCounter counts the commits that took effect, by record id.
type commitCounter struct {
	*sqsadaptertest.ContextStore
	mu      sync.Mutex
	commits map[string]int // "runID/nodeID"
}

func (c *commitCounter) CommitNode(ctx context.Context, runID string, nc store.NodeCommit) (*store.NodeRecord, error) {
	rec, err := c.ContextStore.CommitNode(ctx, runID, nc)
	if err == nil {
		c.mu.Lock()
		if c.commits == nil {
			c.commits = map[string]int{}
		}
		c.commits[runID+"/"+nc.NodeID]++
		c.mu.Unlock()
	}
	return rec, err
}

func (c *commitCounter) count(runID, nodeID string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.commits[runID+"/"+nodeID]
}

// batchRig is an env whose registry runs batch items with itemCalls
// ("double") and counts commits.
type batchRig struct {
	*env
	items   *itemCalls
	commits *commitCounter
	faulty  bool // jobs crash or are duplicated
}

type batchRigConfig struct {
	workers    int
	opts       []sqsadapter.Option
	registry   sqsadapter.NodeRegistry
	visibility time.Duration
	setup      func(*env)
	behave     func(ctx context.Context, nc *sqsadapter.NodeContext) error
	faulty     bool // jobs crash or are duplicated: the gather may run twice
}

func newBatchRig(t *testing.T, c batchRigConfig, bps ...*sqsadapter.Blueprint) *batchRig {
	t.Helper()
	r := &batchRig{items: &itemCalls{behave: c.behave}, commits: &commitCounter{}, faulty: c.faulty}
	reg := sqsadapter.NodeRegistry{"double": r.items.worker, "n": func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
		return sqsadapter.NodeResult{Output: nc.Input}, nil
	}}
	maps.Copy(reg, c.registry)
	if c.workers == 0 {
		c.workers = 2
	}
	r.env = newEnv(t, envConfig{workers: c.workers, registry: reg, blueprints: bps, visibility: c.visibility,
		opts: append([]sqsadapter.Option{sqsadapter.WithContextStore(r.commits)}, c.opts...),
		setup: func(e *env) {
			r.commits.ContextStore = e.contexts
			if c.setup != nil {
				c.setup(e)
			}
		}})
	return r
}

// ints returns [0, n) as context values, and their doubles.
func ints(n int) (items, doubled []any) {
	items, doubled = []any{}, []any{}
	for i := range n {
		items = append(items, int64(i))
		doubled = append(doubled, int64(2*i))
	}
	return items, doubled
}

// itemRecord is the record id of item i of scatter s.
func itemRecord(s string, i int) string { return fmt.Sprintf("%s\x1f%d", s, i) }

// itemKey is item i's idempotency key.
func itemKey(runID, s string, i int) string { return fmt.Sprintf("%s/%s[%d]", runID, s, i) }

// requireBatchDone checks a completed batch run: results in input order,
// no item visible as a node or an output, and each item executed and
// committed exactly once (or executions times each, when given). Unless
// the rig is faulty (crashes, duplicates), it also checks that the gather
// ran once: the
// tree fired it only when every item was resolved (a gather fired early
// would find an item unresolved, let its lease go and run again later).
func (r *batchRig) requireBatchDone(st *sqsadapter.RunStatus, s, g string, want []any, executions int) {
	t := r.t
	t.Helper()
	requireStatus(t, sqsadapter.StatusCompleted, st)
	assert.Equal(t, want, st.Context["_outputs."+g], "the gather's output: the results in input order")
	assert.Equal(t, map[string]any{"gatherNodeId": g, "count": int64(len(want))}, st.Context["_outputs."+s])
	assert.NotContains(t, st.Context, "_batch."+s, "the gather deletes the frozen items")
	for k := range st.Context {
		assert.NotContains(t, k, "\x1f", "an item's record leaked into the context")
	}
	for id := range st.Nodes {
		assert.NotContains(t, id, "\x1f", "an item's record leaked into the nodes")
	}
	assert.Equal(t, len(want), st.Nodes[s].BatchItems)
	assert.Equal(t, len(want), st.Nodes[s].BatchCompleted)
	for i := range want {
		assert.Equal(t, 1, r.commits.count(st.RunID, itemRecord(s, i)), "item %d committed once", i)
		if executions > 0 {
			assert.Equal(t, executions, r.items.count(itemKey(st.RunID, s, i)), "item %d executed %d time(s)", i, executions)
		}
	}
	assert.Equal(t, 1, r.commits.count(st.RunID, s))
	assert.Equal(t, 1, r.commits.count(st.RunID, g))
	if !r.faulty {
		assert.Equal(t, 1, st.Nodes[g].Attempts, "the gather was acquired more than once")
	}
}

func TestBatchResultsInInputOrder(t *testing.T) {
	t.Parallel()
	chunks := map[string]map[string]any{"chunk1": {"chunkSize": 1}, "chunk3": {"chunkSize": 3}, "default": nil}
	var bps []*sqsadapter.Blueprint
	for _, name := range slices.Sorted(maps.Keys(chunks)) {
		bps = append(bps, batchBP(t, name, chunks[name], nil))
	}
	r := newBatchRig(t, batchRigConfig{}, bps...)
	for _, name := range slices.Sorted(maps.Keys(chunks)) {
		for _, n := range []int{0, 1, 7, 250} {
			t.Run(fmt.Sprintf("%s/%d", name, n), func(t *testing.T) {
				t.Parallel()
				items, doubled := ints(n)
				id := startRun(t, r.client, name, map[string]any{"items": items})
				st := waitRun(t, r.client, id, 30*time.Second)
				r.requireBatchDone(st, "b_scatter", "b_gather", doubled, 1)
				assert.Equal(t, doubled, st.Context["out"], "outputKey")
				assert.ElementsMatch(t, []string{"b_scatter", "b_gather"}, slices.Collect(maps.Keys(st.Nodes)))
			})
		}
	}
}

// The map node: edges into it reach its scatter, edges out of it leave its
// gather, whose id it keeps; its output is the results.
func TestBatchMapNode(t *testing.T) {
	t.Parallel()
	bp := mustParse(t, `{"id": "mapped", "nodes": [
	  {"id": "a", "uses": "n"},
	  {"id": "m", "uses": "map", "params": {"worker": "double", "chunkSize": 2}, "config": {"maxRetries": 2}},
	  {"id": "m2", "uses": "map", "inputs": "m", "params": {"worker": "double", "outputKey": "quadrupled", "toleratedFailures": 1}},
	  {"id": "c", "uses": "n"}],
	  "edges": [{"source": "a", "target": "m"}, {"source": "m", "target": "m2"}, {"source": "m2", "target": "c"}]}`)
	r := newBatchRig(t, batchRigConfig{}, bp)
	st := r.run("mapped", map[string]any{"_inputs.a": []any{int64(1), int64(2), int64(3)}})
	requireStatus(t, sqsadapter.StatusCompleted, st)
	assert.Equal(t, []any{int64(2), int64(4), int64(6)}, st.Context["_outputs.m"])
	assert.Equal(t, []any{int64(2), int64(4), int64(6)}, st.Context["m"], "the default outputKey is the map node's id")
	assert.Equal(t, []any{int64(4), int64(8), int64(12)}, st.Context["quadrupled"])
	assert.Equal(t, []any{int64(4), int64(8), int64(12)}, st.Context["_outputs.c"], "the node after the map gets its results")
	assert.Equal(t, map[string]any{"gatherNodeId": "m", "count": int64(3)}, st.Context["_outputs.m_scatter"])
	assert.ElementsMatch(t, []string{"a", "m_scatter", "m", "m2_scatter", "m2", "c"}, slices.Collect(maps.Keys(st.Nodes)))
	assert.Equal(t, 3, st.Nodes["m_scatter"].BatchItems)
	assert.Equal(t, []int{1}, r.items.attempts(itemKey(st.RunID, "m_scatter", 2)))
}

// An expression that reads the whole context sees no item records.
func TestBatchItemsHiddenFromExpressions(t *testing.T) {
	t.Parallel()
	bp := mustParse(t, `{"id": "whole", "nodes": [{"id": "m", "uses": "map", "inputs": "items", "params": {"worker": "double"}}, {"id": "c", "uses": "n"}],
	  "edges": [{"source": "m", "target": "c", "transform": "keys(context)"}]}`)
	r := newBatchRig(t, batchRigConfig{}, bp)
	items, _ := ints(3)
	st := r.run("whole", map[string]any{"items": items})
	requireStatus(t, sqsadapter.StatusCompleted, st)
	seen, _ := st.Context["_outputs.c"].([]any)
	assert.Contains(t, seen, "_outputs.m_scatter")
	for _, k := range seen {
		assert.NotContains(t, k, "\x1f", "an item's record is visible to expressions")
	}
}

// A start map node reads "_inputs.<its id>", like any start node.
func TestBatchMapStartNode(t *testing.T) {
	t.Parallel()
	bp := mustParse(t, `{"id": "start", "nodes": [{"id": "m", "uses": "map", "params": {"worker": "double"}}], "edges": []}`)
	r := newBatchRig(t, batchRigConfig{}, bp)
	st := r.run("start", map[string]any{"_inputs.m": []any{int64(5), int64(6)}})
	requireStatus(t, sqsadapter.StatusCompleted, st)
	assert.Equal(t, []any{int64(10), int64(12)}, st.Context["_outputs.m"])
}

// Results too large for one item fail the gather with the store's error:
// they are user data (the items' outputs); no record of the engine grows
// with the item count.
func TestBatchResultsTooLarge(t *testing.T) {
	t.Parallel()
	r := newBatchRig(t, batchRigConfig{registry: sqsadapter.NodeRegistry{"big": func(context.Context, *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
		return sqsadapter.NodeResult{Output: strings.Repeat("x", 5000)}, nil
	}}}, batchBP(t, "big", map[string]any{"workerUsesKey": "big"}, nil))
	items, _ := ints(100)
	st := r.run("big", map[string]any{"items": items})
	requireStatus(t, sqsadapter.StatusFailed, st)
	assert.Equal(t, "b_gather", st.FailedNode)
	assert.Contains(t, st.Error, "exceeds the 409600-byte item limit")
	assert.Equal(t, 100, st.Nodes["b_scatter"].BatchCompleted, "each item's output fits its own record")
}

// newBatchAdapter builds an adapter over in-memory fakes with reg and bp.
func newBatchAdapter(t *testing.T, reg sqsadapter.NodeRegistry, bp *sqsadapter.Blueprint) (*sqsadapter.SqsAdapter, error) {
	t.Helper()
	fake := sqsadaptertest.NewSQS()
	a, err := sqsadapter.NewSqsAdapter(sqsadapter.WithSQSClient(fake), sqsadapter.WithQueueURL(fake.CreateQueue("q", sqsadaptertest.QueueOptions{})),
		sqsadapter.WithContextStore(sqsadaptertest.NewContextStore()), sqsadapter.WithCoordinationStore(sqsadaptertest.NewCoordinationStore()),
		sqsadapter.WithRegistry(reg), sqsadapter.WithBlueprints(bp), sqsadapter.WithLogger(testLogger()))
	if err == nil {
		t.Cleanup(func() { require.NoError(t, a.Shutdown(context.Background())) })
	}
	return a, err
}

func TestBatchValidation(t *testing.T) {
	t.Parallel()
	pair := func(scatterParams, extraNodes, extraEdges string) string {
		return `{"id": "v", "nodes": [
		  {"id": "b_scatter", "uses": "batch-scatter", "inputs": "items", "params": {"workerUsesKey": "double", "gatherNodeId": "b_gather"` + scatterParams + `}},
		  {"id": "b_gather", "uses": "batch-gather", "params": {"gatherNodeId": "b_gather"}}` + extraNodes + `],
		  "edges": [{"source": "b_scatter", "target": "b_gather"}` + extraEdges + `]}`
	}
	mapped := func(params, extraNodes string) string {
		return `{"id": "v", "nodes": [{"id": "m", "uses": "map", "params": {` + params + `}}` + extraNodes + `], "edges": []}`
	}
	cases := []struct {
		name, bp string
		want     string // "" when valid
	}{
		{"valid pair", pair(``, ``, ``), ""},
		{"valid map", mapped(`"worker": "double", "chunkSize": 1000, "toleratedFailures": 0, "outputKey": "k"`, ``), ""},
		{"worker not registered", pair(`, "workerUsesKey": "nope"`, ``, ``), `batch-scatter node "b_scatter": the worker "nope" is not in the registry`},
		{"worker missing", `{"id": "v", "nodes": [{"id": "b_scatter", "uses": "batch-scatter", "params": {"gatherNodeId": "b_gather"}}, {"id": "b_gather", "uses": "batch-gather"}], "edges": [{"source": "b_scatter", "target": "b_gather"}]}`,
			`params.workerUsesKey must name the registered function`},
		{"worker is a built-in", pair(`, "workerUsesKey": "sleep"`, ``, ``), `the worker "sleep" is a built-in node`},
		{"gatherNodeId not a gather", pair(`, "gatherNodeId": "x"`, `, {"id": "x", "uses": "n"}`, `, {"source": "b_scatter", "target": "x"}`), `params.gatherNodeId "x" must name a batch-gather node`},
		{"scatter has another edge", pair(``, `, {"id": "x", "uses": "n"}`, `, {"source": "b_scatter", "target": "x"}`), `batch-scatter node "b_scatter": its only outgoing edge must be the one to its gather "b_gather"`},
		{"gather has another predecessor", pair(``, `, {"id": "x", "uses": "n"}`, `, {"source": "x", "target": "b_gather"}`), `batch-gather node "b_gather": its only predecessor must be its scatter "b_scatter"`},
		{"edge with a condition", strings.Replace(pair(``, ``, ``), `"target": "b_gather"}`, `"target": "b_gather", "condition": "true"}`, 1), `cannot have an action, a condition or a transform`},
		{"chunkSize 0", pair(`, "chunkSize": 0`, ``, ``), `chunkSize must be an integer from 1 to 1000, not 0`},
		{"chunkSize 1001", pair(`, "chunkSize": 1001`, ``, ``), `chunkSize must be an integer from 1 to 1000, not 1001`},
		{"chunkSize 2.5", pair(`, "chunkSize": 2.5`, ``, ``), `chunkSize must be an integer`},
		{"chunkSize a string", pair(`, "chunkSize": "3"`, ``, ``), `chunkSize must be an integer`},
		{"toleratedFailures negative", pair(`, "toleratedFailures": -1`, ``, ``), `toleratedFailures must be a non-negative integer, not -1`},
		{"outputKey reserved", pair(`, "outputKey": "_outputs.x"`, ``, ``), `outputKey _outputs.x is not a context key a node can write`},
		{"outputKey the frozen items", pair(`, "outputKey": "_batch.b_scatter"`, ``, ``), `outputKey _batch.b_scatter is not a context key a node can write`},
		{"gather without scatter", `{"id": "v", "nodes": [{"id": "g", "uses": "batch-gather"}], "edges": []}`, `batch-gather node "g": no batch-scatter node names it`},
		{"gather's gatherNodeId", strings.Replace(pair(``, ``, ``), `"params": {"gatherNodeId": "b_gather"}}`, `"params": {"gatherNodeId": "other"}}`, 1), `params.gatherNodeId other must be its own id`},
		{"fallback on a batch node", strings.Replace(pair(``, `, {"id": "x", "uses": "n"}`, ``), `"inputs": "items",`, `"inputs": "items", "config": {"fallback": "x"},`, 1), `batch-scatter node "b_scatter": a batch node cannot have a fallback`},
		{"batch node as a fallback", pair(``, `, {"id": "x", "uses": "n", "config": {"fallback": "b_gather"}}`, ``), `node "x": its fallback "b_gather" is a batch node`},
		{"node named like an item", pair(``, `, {"id": "b_scatter[3]", "uses": "n"}`, ``), `node "b_scatter[3]" has the id of one of its items`},
		{"map clash", mapped(`"worker": "double"`, `, {"id": "m_scatter", "uses": "n"}`), `map node "m": its scatter's id "m_scatter" is taken by another node`},
		{"map unknown param", mapped(`"worker": "double", "chunksize": 3`, ``), `map node "m": unknown param "chunksize"`},
		{"map without worker", mapped(`"chunkSize": 3`, ``), `map node "m": params.worker must name the registered function`},
		{"map worker not registered", mapped(`"worker": "nope"`, ``), `map node "m": the worker "nope" is not in the registry`},
		{"map chunkSize", mapped(`"worker": "double", "chunkSize": -2`, ``), `map node "m": chunkSize must be an integer from 1 to 1000, not -2`},
		{"map fallback", `{"id": "v", "nodes": [{"id": "m", "uses": "map", "params": {"worker": "double"}, "config": {"fallback": "x"}}, {"id": "x", "uses": "n"}], "edges": []}`,
			`map node "m": a batch node cannot have a fallback`},
	}
	reg := sqsadapter.NodeRegistry{"double": (&itemCalls{}).worker, "n": (&itemCalls{}).worker}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			_, err := newBatchAdapter(t, reg, mustParse(t, c.bp))
			if c.want == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, sqsadapter.ErrInvalidBlueprint)
			assert.Contains(t, err.Error(), c.want)
		})
	}
	t.Run("a registered function overrides the built-ins", func(t *testing.T) {
		t.Parallel()
		own := func(context.Context, *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
			return sqsadapter.NodeResult{Output: "own"}, nil
		}
		bp := mustParse(t, `{"id": "own", "nodes": [{"id": "s", "uses": "batch-scatter"}, {"id": "g", "uses": "batch-gather"}, {"id": "m", "uses": "map"}],
		  "edges": [{"source": "s", "target": "g"}, {"source": "g", "target": "m"}]}`)
		r := newBatchRig(t, batchRigConfig{registry: sqsadapter.NodeRegistry{"batch-scatter": own, "batch-gather": own, "map": own}}, bp)
		st := r.run("own", nil)
		requireStatus(t, sqsadapter.StatusCompleted, st)
		assert.Equal(t, "own", st.Context["_outputs.m"])
		assert.NotContains(t, st.Context, "_outputs.m_scatter")
	})
}

func TestBatchJobFields(t *testing.T) {
	t.Parallel()
	for body, want := range map[string]string{
		`{"runId": "r", "blueprintId": "b", "nodeId": "s", "item": -1}`:           "cannot be negative",
		`{"runId": "r", "blueprintId": "b", "nodeId": "s", "page": -2}`:           "cannot be negative",
		`{"runId": "r", "blueprintId": "b", "nodeId": "s", "item": 1, "page": 1}`: "not both",
		`{"runId": "r", "blueprintId": "b", "nodeId": "s", "item": 3}`:            "",
	} {
		j, err := sqsadapter.DecodeJob([]byte(body))
		if want == "" {
			require.NoError(t, err)
			assert.Equal(t, 3, j.Item)
			assert.Equal(t, "r/s[2]", j.String())
			continue
		}
		require.ErrorIs(t, err, sqsadapter.ErrInvalidJob, body)
		assert.Contains(t, err.Error(), want)
	}
}

func TestBatchItemFailures(t *testing.T) {
	t.Parallel()
	failItems := func(items ...int) func(context.Context, *sqsadapter.NodeContext) error {
		return func(_ context.Context, nc *sqsadapter.NodeContext) error {
			for _, i := range items {
				if strings.HasSuffix(nc.NodeID, fmt.Sprintf("[%d]", i)) {
					return fmt.Errorf("item %d refuses", i)
				}
			}
			return nil
		}
	}
	t.Run("tolerated", func(t *testing.T) {
		t.Parallel()
		r := newBatchRig(t, batchRigConfig{behave: failItems(2, 5)}, batchBP(t, "tol", map[string]any{"toleratedFailures": 2, "chunkSize": 3}, nil))
		items, doubled := ints(10)
		st := r.run("tol", map[string]any{"items": items})
		requireStatus(t, sqsadapter.StatusCompleted, st)
		want := slices.Delete(slices.Delete(slices.Clone(doubled), 5, 6), 2, 3)
		assert.Equal(t, want, st.Context["out"], "failed items are skipped, the others in input order")
		assert.Equal(t, 2, st.Nodes["b_scatter"].BatchFailed)
		assert.Equal(t, 8, st.Nodes["b_scatter"].BatchCompleted)
	})
	t.Run("more than tolerated fails the gather", func(t *testing.T) {
		t.Parallel()
		r := newBatchRig(t, batchRigConfig{behave: failItems(2, 5)}, batchBP(t, "over", map[string]any{"toleratedFailures": 1}, nil))
		items, _ := ints(10)
		st := r.run("over", map[string]any{"items": items})
		requireStatus(t, sqsadapter.StatusFailed, st)
		assert.Equal(t, "b_gather", st.FailedNode)
		assert.Contains(t, st.Error, "2 of 10 batch items failed, more than toleratedFailures (1); first: item 2: ")
		assert.Contains(t, st.Error, "item 2 refuses")
	})
	t.Run("retried", func(t *testing.T) {
		t.Parallel()
		r := newBatchRig(t, batchRigConfig{behave: func(_ context.Context, nc *sqsadapter.NodeContext) error {
			if strings.HasSuffix(nc.NodeID, "[4]") && nc.Attempt == 1 {
				return errors.New("once")
			}
			return nil
		}}, batchBP(t, "retried", nil, map[string]any{"maxRetries": 2}))
		items, doubled := ints(6)
		st := r.run("retried", map[string]any{"items": items})
		r.requireBatchDone(st, "b_scatter", "b_gather", doubled, 0)
		assert.Equal(t, []int{1, 2}, r.items.attempts(itemKey(st.RunID, "b_scatter", 4)), "the scatter's maxRetries applies to each item")
	})
	t.Run("untolerated fails the run and stops the batch", func(t *testing.T) {
		t.Parallel()
		r := newBatchRig(t, batchRigConfig{behave: func(ctx context.Context, nc *sqsadapter.NodeContext) error {
			if strings.HasSuffix(nc.NodeID, "[3]") {
				return sqsadapter.Permanent(errors.New("item 3 is bad"))
			}
			time.Sleep(20 * time.Millisecond) // the others take a while: most have not started when 3 fails
			return nil
		}}, batchBP(t, "stop", map[string]any{"chunkSize": 10}, nil))
		items, _ := ints(200)
		st := r.run("stop", map[string]any{"items": items})
		requireStatus(t, sqsadapter.StatusFailed, st)
		assert.Equal(t, "b_scatter", st.FailedNode)
		assert.Contains(t, st.Error, `node "b_scatter" failed after 1 attempt(s): batch item 3: item 3 is bad`)
		eventually(t, r.queueEmpty, "the failed run's jobs are settled")
		r.requireItemsStopped(st, "b_scatter", 200)
	})
}

// requireItemsStopped checks a finished run's batch: every item record is
// resolved or closed, none committed after the run finished, and no item
// closed before it started ran.
func (r *batchRig) requireItemsStopped(st *sqsadapter.RunStatus, s string, n int) {
	t := r.t
	t.Helper()
	ids := make([]string, n)
	for i := range ids {
		ids[i] = itemRecord(s, i)
	}
	recs, err := r.contexts.GetNodes(t.Context(), st.RunID, ids)
	require.NoError(t, err)
	closed := 0
	for i, id := range ids {
		rec := recs[id]
		require.NotNil(t, rec, "item %d has no record: nothing stops its job from running", i)
		switch rec.State {
		case store.NodeClosed:
			closed++
			if rec.Attempts == 0 {
				assert.Zero(t, r.items.count(itemKey(st.RunID, s, i)), "item %d ran although closed before it started", i)
			}
		case store.NodeCommitted:
			assert.False(t, rec.UpdatedAt.After(st.FinishedAt), "item %d committed after the run finished", i)
		case store.NodeFailed:
		default:
			t.Errorf("item %d is %s after the run finished", i, rec.State)
		}
	}
	assert.Positive(t, closed, "no item was left to close: the test stops nothing")
	assert.NotEqual(t, store.NodeCommitted, r.nodeState(st.RunID, "b_gather"))
}

func (r *batchRig) start(bp string, initial map[string]any) string {
	r.t.Helper()
	return startRun(r.t, r.client, bp, initial)
}

func (r *batchRig) status(id string) *sqsadapter.RunStatus {
	r.t.Helper()
	return getRun(r.t, r.client, id)
}

func (r *batchRig) nodeState(runID, nodeID string) string {
	r.t.Helper()
	recs, err := r.contexts.GetNodes(r.t.Context(), runID, []string{nodeID})
	require.NoError(r.t, err)
	if rec := recs[nodeID]; rec != nil {
		return rec.State
	}
	return ""
}

func (r *batchRig) queueEmpty() bool {
	v, f, d := r.sqs.Len(r.queue)
	return v+f+d == 0
}

func TestBatchInputs(t *testing.T) {
	t.Parallel()
	bp := batchBP(t, "in", map[string]any{"chunkSize": 2}, nil)
	r := newBatchRig(t, batchRigConfig{opts: []sqsadapter.Option{sqsadapter.WithTuning(sqsadapter.Tuning{MaxInlineInput: 16})}}, bp)
	t.Run("not an array", func(t *testing.T) {
		t.Parallel()
		st := r.run("in", map[string]any{"items": "abc"})
		requireStatus(t, sqsadapter.StatusFailed, st)
		assert.Equal(t, "b_scatter", st.FailedNode)
		assert.Contains(t, st.Error, `node "b_scatter": the input of a batch must be an array, not a string`)
	})
	t.Run("absent is empty", func(t *testing.T) {
		t.Parallel()
		st := r.run("in", nil)
		r.requireBatchDone(st, "b_scatter", "b_gather", []any{}, 0)
	})
	t.Run("items too large for the message are read from the store", func(t *testing.T) {
		t.Parallel()
		items := []any{"short", strings.Repeat("long ", 10), map[string]any{"k": strings.Repeat("v", 40)}, nil, int64(7)}
		st := r.run("in", map[string]any{"items": items})
		r.requireBatchDone(st, "b_scatter", "b_gather", []any{"short", strings.Repeat("long ", 10), map[string]any{"k": strings.Repeat("v", 40)}, nil, int64(14)}, 1)
	})
	t.Run("the frozen items survive a change of the input key", func(t *testing.T) {
		t.Parallel()
		// Items too large for their messages are read from
		// "_batch.b_scatter" by their jobs and the page jobs: an overwrite
		// of the input key once the scatter committed changes nothing.
		d := newBatchDriver(t, bp, sqsadapter.WithTuning(sqsadapter.Tuning{MaxInlineInput: 16}))
		items := []any{}
		for i := range 9 {
			items = append(items, fmt.Sprintf("item-%d-%s", i, strings.Repeat("x", 20)))
		}
		id, err := d.a.StartRun(t.Context(), "in", map[string]any{"items": items})
		require.NoError(t, err)
		d.drain(func(j sqsadapter.Job, failed bool) bool {
			if j.NodeID == "b_scatter" && j.Item == 0 && j.Page == 0 && !failed {
				require.NoError(t, d.a.HandleJob(t.Context(), j))
				require.NoError(t, d.store.Set(t.Context(), id, "items", []any{"other"}))
				return true // handled here
			}
			return false
		})
		st := d.status(id)
		requireStatus(t, sqsadapter.StatusCompleted, st)
		assert.Equal(t, items, st.Context["out"])
	})
}

// A scatter behind an untaken edge is skipped, and so is its gather.
func TestBatchSkipped(t *testing.T) {
	t.Parallel()
	bp := mustParse(t, `{"id": "skip", "nodes": [{"id": "a", "uses": "n"}, {"id": "m", "uses": "map", "params": {"worker": "double"}}, {"id": "c", "uses": "n"}],
	  "edges": [{"source": "a", "target": "m", "condition": "false"}, {"source": "a", "target": "c"}]}`)
	r := newBatchRig(t, batchRigConfig{}, bp)
	st := r.run("skip", map[string]any{"_inputs.a": []any{int64(1)}})
	requireStatus(t, sqsadapter.StatusCompleted, st)
	assert.Equal(t, "skipped", st.Nodes["m_scatter"].State)
	assert.Equal(t, "skipped", st.Nodes["m"].State)
	assert.Empty(t, r.items.keys())
}

// Items write the context; their writes are committed with their outputs.
func TestBatchContextWrites(t *testing.T) {
	t.Parallel()
	r := newBatchRig(t, batchRigConfig{behave: func(_ context.Context, nc *sqsadapter.NodeContext) error {
		return nc.Set(fmt.Sprintf("seen.%v", nc.Input), nc.NodeID)
	}}, batchBP(t, "writes", map[string]any{"chunkSize": 4}, nil))
	items, doubled := ints(9)
	st := r.run("writes", map[string]any{"items": items})
	r.requireBatchDone(st, "b_scatter", "b_gather", doubled, 1)
	for i := range 9 {
		assert.Equal(t, fmt.Sprintf("b_scatter[%d]", i), st.Context[fmt.Sprintf("seen.%d", i)])
	}
}

// A run cancelled mid-batch starts no more items: those not started are
// closed, the running ones commit nothing.
func TestBatchCancel(t *testing.T) {
	t.Parallel()
	started, release := newGate(), newGate()
	openAtEnd(t, release)
	var running atomic.Int32
	r := newBatchRig(t, batchRigConfig{behave: func(ctx context.Context, nc *sqsadapter.NodeContext) error {
		running.Add(1)
		started.open()
		<-release.done() // ignores ctx: finishes after the cancel
		return nil
	}}, batchBP(t, "cancel", map[string]any{"chunkSize": 5}, nil))
	items, _ := ints(120)
	id := r.start("cancel", map[string]any{"items": items})
	started.await(t, "an item to start")
	eventually(t, func() bool { return running.Load() >= 10 }, "items to run")
	require.NoError(t, r.client.CancelRun(t.Context(), id, "enough"))
	release.open()
	eventually(t, r.queueEmpty, "the cancelled run's jobs are settled")
	st := r.status(id)
	requireStatus(t, sqsadapter.StatusCancelled, st)
	r.requireItemsStopped(st, "b_scatter", 120)
	assert.Less(t, len(r.items.keys()), 40, "items went on starting after the cancel")
}

// ---------------------------------------------------------------------------
// Crashes and duplicates.

// batchJobKind names a batch job for the crash matrix.
func batchJobKind(j sqsadapter.Job) string {
	switch {
	case j.Item > 0:
		return "item"
	case j.Page > 0:
		return "page"
	case j.NodeID == "b_scatter":
		return "scatter"
	case j.NodeID == "b_gather":
		return "gather"
	}
	return j.NodeID
}

// Every job of a batch of 250 items (three pages, a tree of two levels)
// crashes once at a step; the redeliveries finish the run with each item
// committed once and executed once (twice when the crash came between the
// execution and the commit).
func TestBatchCrashes(t *testing.T) {
	t.Parallel()
	type crashCase struct {
		step string
		nth  int // crash at the nth time a job reaches step in its first handling (default 1)
	}
	cases := []crashCase{{step: "receive"}, {step: "acquired"}, {step: "commit"}, {step: "committed"},
		{step: "arrived"}, {step: "arrived", nth: 2}, {step: "advanced"}, {step: "complete"}}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%s#%d", c.step, max(c.nth, 1)), func(t *testing.T) {
			t.Parallel()
			var mu sync.Mutex
			seen := map[string]int{}     // job -> times the step was reached
			crashed := map[string]bool{} // job -> crashed already
			kinds := map[string]bool{}   // kinds of jobs that crashed
			hook := func(step string, j sqsadapter.Job) bool {
				mu.Lock()
				defer mu.Unlock()
				k := fmt.Sprintf("%s/%s/%d/%d", j.RunID, j.NodeID, j.Item, j.Page)
				if step != c.step || crashed[k] {
					return false
				}
				if seen[k]++; seen[k] < max(c.nth, 1) {
					return false
				}
				crashed[k], kinds[batchJobKind(j)] = true, true
				return true
			}
			r := newBatchRig(t, batchRigConfig{faulty: true, opts: []sqsadapter.Option{sqsadapter.WithCrashHook(hook)}},
				batchBP(t, "crash", map[string]any{"chunkSize": 100}, map[string]any{"maxRetries": 3}))
			items, doubled := ints(250)
			id := r.start("crash", map[string]any{"items": items})
			st := waitRun(t, r.client, id, 60*time.Second)
			executions := 1
			if c.step == "commit" {
				executions = 2
			}
			r.requireBatchDone(st, "b_scatter", "b_gather", doubled, executions)
			mu.Lock()
			defer mu.Unlock()
			t.Logf("crashed %d jobs, kinds %v", len(crashed), slices.Sorted(maps.Keys(kinds)))
			want := map[string][]string{
				"receive": {"gather", "item", "page", "scatter"}, "advanced": {"gather", "item", "page", "scatter"},
				"acquired": {"gather", "item", "scatter"}, "commit": {"gather", "item", "scatter"}, "committed": {"gather", "item", "scatter"},
				"arrived": {"item"}, "complete": {"gather"},
			}[c.step]
			assert.Equal(t, want, slices.Sorted(maps.Keys(kinds)), "the kinds of jobs that crashed")
		})
	}
	// The failure paths: an item failing for good, tolerated or not.
	for _, tolerated := range []int{0, 1} {
		for _, step := range []string{"failing", "closed", "failed"} {
			if tolerated > 0 && step != "failing" {
				continue // a tolerated failure arrives right after FailNode
			}
			t.Run(fmt.Sprintf("tolerated%d/%s", tolerated, step), func(t *testing.T) {
				t.Parallel()
				var crashed atomic.Bool
				r := newBatchRig(t, batchRigConfig{
					behave: func(_ context.Context, nc *sqsadapter.NodeContext) error {
						if strings.HasSuffix(nc.NodeID, "[7]") {
							return sqsadapter.Permanent(errors.New("seven"))
						}
						return nil
					},
					opts: []sqsadapter.Option{sqsadapter.WithCrashHook(func(s string, j sqsadapter.Job) bool {
						return s == step && j.Item == 8 && crashed.CompareAndSwap(false, true)
					})},
				}, batchBP(t, "fail", map[string]any{"chunkSize": 4, "toleratedFailures": tolerated}, nil))
				items, doubled := ints(30)
				st := r.run("fail", map[string]any{"items": items})
				require.True(t, crashed.Load())
				if tolerated == 0 {
					requireStatus(t, sqsadapter.StatusFailed, st)
					assert.Contains(t, st.Error, "batch item 7: seven")
					eventually(t, r.queueEmpty, "the failed run's jobs are settled")
					return
				}
				requireStatus(t, sqsadapter.StatusCompleted, st)
				assert.Equal(t, slices.Delete(doubled, 7, 8), st.Context["out"])
			})
		}
	}
}

// Every message is delivered twice: each item still commits once and
// runs once.
func TestBatchDuplicates(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	dup := map[string]bool{}
	r := newBatchRig(t, batchRigConfig{faulty: true, setup: func(e *env) {
		e.sqs.DuplicateDelivery = func(body string) bool {
			mu.Lock()
			defer mu.Unlock()
			if dup[body] {
				return false
			}
			dup[body] = true
			return true
		}
	}}, batchBP(t, "dup", map[string]any{"chunkSize": 7}, nil))
	items, doubled := ints(120)
	st := r.run("dup", map[string]any{"items": items})
	r.requireBatchDone(st, "b_scatter", "b_gather", doubled, 1)
	assert.GreaterOrEqual(t, r.sqs.Stats().Duplicated, 120)
}

// ---------------------------------------------------------------------------
// Reconciler.

// batchDriver runs jobs by hand with HandleJob, losing those lose picks.
type batchDriver struct {
	t     *testing.T
	a     *sqsadapter.SqsAdapter
	sqs   *sqsadaptertest.SQS
	queue string
	store *commitCounter
	items *itemCalls
}

func newBatchDriver(t *testing.T, bp *sqsadapter.Blueprint, opts ...sqsadapter.Option) *batchDriver {
	t.Helper()
	d := &batchDriver{t: t, sqs: sqsadaptertest.NewSQS(), store: &commitCounter{ContextStore: sqsadaptertest.NewContextStore()}, items: &itemCalls{}}
	d.queue = d.sqs.CreateQueue("batch", sqsadaptertest.QueueOptions{VisibilityUnit: unit})
	var err error
	d.a, err = sqsadapter.NewSqsAdapter(append([]sqsadapter.Option{
		sqsadapter.WithSQSClient(d.sqs), sqsadapter.WithQueueURL(d.queue),
		sqsadapter.WithContextStore(d.store), sqsadapter.WithCoordinationStore(sqsadaptertest.NewCoordinationStore()),
		sqsadapter.WithRegistry(sqsadapter.NodeRegistry{"double": d.items.worker}), sqsadapter.WithBlueprints(bp),
		sqsadapter.WithLogger(testLogger()), sqsadapter.WithSQSTimeUnit(unit), sqsadapter.WithVisibilityTimeout(5 * unit),
	}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, d.a.Shutdown(context.Background())) })
	return d
}

// drain handles the queue's jobs until none is left, visible or not. A job
// that lose picks is deleted unhandled; one whose handling fails is
// deleted when lose picks its failure.
func (d *batchDriver) drain(lose func(j sqsadapter.Job, failed bool) bool) {
	d.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if v, f, dl := d.sqs.Len(d.queue); v+f+dl == 0 {
			return
		}
		out, err := d.sqs.ReceiveMessage(d.t.Context(), &sqs.ReceiveMessageInput{QueueUrl: aws.String(d.queue), MaxNumberOfMessages: 10, WaitTimeSeconds: 1})
		require.NoError(d.t, err)
		for _, m := range out.Messages {
			job, err := sqsadapter.DecodeJob([]byte(aws.ToString(m.Body)))
			require.NoError(d.t, err)
			del := lose != nil && lose(job, false)
			if !del {
				herr := d.a.HandleJob(d.t.Context(), job)
				del = herr == nil || (lose != nil && lose(job, true))
			}
			if del {
				_, err := d.sqs.DeleteMessage(d.t.Context(), &sqs.DeleteMessageInput{QueueUrl: aws.String(d.queue), ReceiptHandle: m.ReceiptHandle})
				require.NoError(d.t, err)
			}
		}
	}
	d.t.Fatal("the queue did not drain")
}

func (d *batchDriver) status(id string) *sqsadapter.RunStatus {
	d.t.Helper()
	st, err := d.a.GetRun(d.t.Context(), id)
	require.NoError(d.t, err)
	return st
}

// A lost message of a batch stalls its run; the reconciler repairs it,
// re-enqueueing the committed scatter whose gather is unresolved: its
// replay sends what is missing along the page chain.
func TestBatchReconcileRepairsLostMessages(t *testing.T) {
	t.Parallel()
	type lossCase struct {
		name string
		lose func(j sqsadapter.Job, failed bool) bool
		opts []sqsadapter.Option
	}
	once := func(match func(j sqsadapter.Job, failed bool) bool) func(sqsadapter.Job, bool) bool {
		var done atomic.Bool
		return func(j sqsadapter.Job, failed bool) bool {
			return match(j, failed) && done.CompareAndSwap(false, true)
		}
	}
	cases := []lossCase{
		{name: "an item's job", lose: once(func(j sqsadapter.Job, failed bool) bool { return j.Item == 5 && !failed })},
		{name: "a page's job", lose: once(func(j sqsadapter.Job, failed bool) bool { return j.Page == 1 && !failed })},
		{name: "the gather's job", lose: once(func(j sqsadapter.Job, failed bool) bool { return j.NodeID == "b_gather" && !failed })},
		{
			name: "an item's arrival", // committed, then its worker dies and its message is lost
			lose: once(func(j sqsadapter.Job, failed bool) bool { return j.Item == 2 && failed }),
			opts: []sqsadapter.Option{sqsadapter.WithCrashHook(func(step string, j sqsadapter.Job) bool { return step == "committed" && j.Item == 2 })},
		},
		{
			// Item 104 (Job.Item 105), handled last, completes its group of
			// the tree (items 100-104), then dies before the next level.
			name: "an arrival between two levels",
			lose: once(func(j sqsadapter.Job, failed bool) bool { return j.Item == 105 && failed }),
			opts: []sqsadapter.Option{sqsadapter.WithCrashHook(func() func(string, sqsadapter.Job) bool {
				var n atomic.Int32
				return func(step string, j sqsadapter.Job) bool {
					return step == "arrived" && j.Item == 105 && n.Add(1) == 2
				}
			}())},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			d := newBatchDriver(t, batchBP(t, "lost", map[string]any{"chunkSize": 3}, nil), c.opts...)
			n := 7
			if strings.Contains(c.name, "levels") {
				n = 105
			}
			items, doubled := ints(n)
			id, err := d.a.StartRun(t.Context(), "lost", map[string]any{"items": items})
			require.NoError(t, err)
			d.drain(c.lose)
			st := d.status(id)
			require.Equal(t, sqsadapter.StatusRunning, st.Status, "the loss did not stall the run")

			threshold := 2 * unit
			time.Sleep(2 * threshold)
			stats, err := d.a.Reconcile(t.Context(), threshold)
			require.NoError(t, err)
			require.Equal(t, 1, stats.Stalled)
			d.drain(nil)
			st = d.status(id)
			requireStatus(t, sqsadapter.StatusCompleted, st)
			assert.Equal(t, doubled, st.Context["out"])
			for i := range n {
				assert.Equal(t, 1, d.store.count(id, itemRecord("b_scatter", i)), "item %d committed once", i)
				assert.Equal(t, 1, d.items.count(itemKey(id, "b_scatter", i)), "item %d executed once", i)
			}
		})
	}
}

// ---------------------------------------------------------------------------
// Cost.

// What a batch costs per item, in store calls and messages, on one
// worker: the difference between a batch of 1,100 items and one of 100,
// divided by 1,000 (BENCHMARKS.md; batchmap.go states the figures).
func TestBatchCost(t *testing.T) {
	t.Parallel()
	cost := func(n int) (map[string]int, int) {
		r := newBatchRig(t, batchRigConfig{workers: 1}, batchBP(t, "cost", nil, nil))
		items, doubled := ints(n)
		st := r.run("cost", map[string]any{"items": items})
		r.requireBatchDone(st, "b_scatter", "b_gather", doubled, 1)
		calls := maps.Clone(r.contexts.Calls())
		maps.Copy(calls, r.coord.Calls())
		return calls, r.sqs.Stats().Sent
	}
	small, smallSent := cost(100)
	large, largeSent := cost(1100)
	per := map[string]float64{}
	for op, n := range large {
		per[op] = float64(n-small[op]) / 1000
	}
	sent := float64(largeSent-smallSent) / 1000
	t.Logf("store calls per item: %v; messages sent per item: %.3f", per, sent)
	assert.InDelta(t, 1, per["AcquireNode"], 0.001, "one acquire per item")
	assert.InDelta(t, 1, per["CommitNode"], 0.001, "one commit per item")
	assert.InDelta(t, 1.01, per["Arrive"], 0.005, "one arrival per item, and one per group of 100")
	assert.LessOrEqual(t, per["GetNodes"], 0.05, "item records read per page and by the gather, not per item")
	assert.LessOrEqual(t, per["GetMany"], 0.02, "the frozen items read per page, not per item")
	assert.LessOrEqual(t, per["GetJoins"], 0.02)
	assert.InDelta(t, 1.01, sent, 0.005, "one message per item, and one per page")
	for _, op := range []string{"Snapshot", "ListNodes", "CloseNodes", "FailNode", "SkipNodes"} {
		assert.Zero(t, per[op], op)
	}
}
