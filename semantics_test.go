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

func echo(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
	return sqsadapter.NodeResult{Output: map[string]any{"node": nc.NodeID, "input": nc.Input}}, nil
}

func TestChainRuns(t *testing.T) {
	t.Parallel()
	bp := mustParse(t, `{"id":"chain","nodes":[{"id":"a","uses":"echo"},{"id":"b","uses":"echo"},{"id":"c","uses":"echo"}],
	 "edges":[{"source":"a","target":"b"},{"source":"b","target":"c"}]}`)
	e := newEnv(t, envConfig{workers: 2, registry: sqsadapter.NodeRegistry{"echo": echo}, blueprints: []*sqsadapter.Blueprint{bp}})
	st := e.run("chain", map[string]any{"_inputs.a": "hello"})
	require.Equal(t, sqsadapter.StatusCompleted, st.Status, st.Error)
	assert.Equal(t, map[string]any{"node": "a", "input": "hello"}, st.Context["_outputs.a"])
	assert.Equal(t, map[string]any{"node": "c", "input": map[string]any{"node": "b", "input": map[string]any{"node": "a", "input": "hello"}}}, st.Context["_outputs.c"])
}

// ---------------------------------------------------------------------------
// Test rig: blueprints whose nodes all use "n", a recorder of every
// invocation, per-node behaviours, gates to hold nodes.

// nodeCall is one invocation of a node function.
type nodeCall struct {
	Attempt int
	Input   any
	Key     string // NodeContext.IdempotencyKey()
	At      time.Time
}

// callLog records node invocations by node id.
type callLog struct {
	mu    sync.Mutex
	calls map[string][]nodeCall
}

func (l *callLog) add(nc *sqsadapter.NodeContext) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.calls == nil {
		l.calls = make(map[string][]nodeCall)
	}
	l.calls[nc.NodeID] = append(l.calls[nc.NodeID], nodeCall{Attempt: nc.Attempt, Input: nc.Input, Key: nc.IdempotencyKey(), At: time.Now()})
}

func (l *callLog) get(id string) []nodeCall {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.calls[id])
}

func (l *callLog) count(id string) int { return len(l.get(id)) }

func (l *callLog) attempts(id string) []int {
	var out []int
	for _, c := range l.get(id) {
		out = append(out, c.Attempt)
	}
	return out
}

// input is the input of the node's last invocation.
func (l *callLog) input(t *testing.T, id string) any {
	t.Helper()
	calls := l.get(id)
	require.NotEmpty(t, calls, "node %q never ran", id)
	return calls[len(calls)-1].Input
}

// ran returns the ids among ids that ran at least once, sorted.
func (l *callLog) ran(ids ...string) []string {
	out := []string{}
	for _, id := range ids {
		if l.count(id) > 0 {
			out = append(out, id)
		}
	}
	return out
}

// gate holds nodes until it is opened; it is also used as a one-shot signal.
type gate struct {
	ch   chan struct{}
	once sync.Once
}

func newGate() *gate { return &gate{ch: make(chan struct{})} }

func (g *gate) open()                 { g.once.Do(func() { close(g.ch) }) }
func (g *gate) done() <-chan struct{} { return g.ch }

// wait blocks until the gate opens or ctx ends.
func (g *gate) wait(ctx context.Context) error {
	select {
	case <-g.ch:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// await fails the test if the gate does not open within 10s.
func (g *gate) await(t *testing.T, what string) {
	t.Helper()
	select {
	case <-g.ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

// openAtEnd opens gates when the test ends, before the workers shut down
// (cleanups run last-registered first), so that no node stays blocked.
func openAtEnd(t *testing.T, gates ...*gate) {
	t.Cleanup(func() {
		for _, g := range gates {
			g.open()
		}
	})
}

// fnode builds a node definition (as JSON) using "n", with extra JSON fields.
func fnode(id, extra string) string {
	if extra == "" {
		return fmt.Sprintf(`{"id":%q,"uses":"n"}`, id)
	}
	return fmt.Sprintf(`{"id":%q,"uses":"n",%s}`, id, extra)
}

// fedge builds an edge definition (as JSON) with extra string fields given
// as name, value pairs ("action", "x", "condition", "a > 1", ...).
func fedge(src, dst string, kv ...string) string {
	m := map[string]string{"source": src, "target": dst}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	b, _ := json.Marshal(m)
	return string(b)
}

// flow parses a blueprint. nodes lists node ids (plain nodes using "n") or
// node JSON (starting with '{'); nil means the plain nodes the edges name.
// edges lists "src>dst" or edge JSON.
func flow(t *testing.T, id string, nodes []string, edges ...string) *sqsadapter.Blueprint {
	t.Helper()
	var ns, es, named []string
	for _, e := range edges {
		if !strings.HasPrefix(e, "{") {
			src, dst, ok := strings.Cut(e, ">")
			require.True(t, ok, "edge %q", e)
			e = fedge(src, dst)
		}
		var def sqsadapter.EdgeDefinition
		require.NoError(t, json.Unmarshal([]byte(e), &def))
		for _, n := range []string{def.Source, def.Target} {
			if !slices.Contains(named, n) {
				named = append(named, n)
			}
		}
		es = append(es, e)
	}
	if nodes == nil {
		nodes = named
	}
	for _, n := range nodes {
		if !strings.HasPrefix(n, "{") {
			n = fnode(n, "")
		}
		ns = append(ns, n)
	}
	return mustParse(t, fmt.Sprintf(`{"id":%q,"nodes":[%s],"edges":[%s]}`, id, strings.Join(ns, ","), strings.Join(es, ",")))
}

func ids(s ...string) []string { return s }

// rig is an env whose blueprints use the node function "n", which records
// every invocation and then runs the node's behaviour (default: output
// {"from": nodeId}).
type rig struct {
	*env
	log *callLog
}

type rigConfig struct {
	workers   int  // default 2
	noWorkers bool // no polling worker: drive jobs by hand
	nodes     map[string]sqsadapter.NodeFunc
	registry  sqsadapter.NodeRegistry // more registry entries
	opts      []sqsadapter.Option
	setup     func(*env)
	// visibility is the visibility timeout and lease duration (default
	// rigVisibility).
	visibility time.Duration
}

// rigVisibility leaves the heartbeat (every third of it) ample slack on a
// loaded machine under -race: a node whose lease expires while it runs
// counts an abandoned attempt, which would fail runs spuriously.
const rigVisibility = 50 * unit

func newRig(t *testing.T, c rigConfig, bps ...*sqsadapter.Blueprint) *rig {
	t.Helper()
	log := &callLog{}
	reg := sqsadapter.NodeRegistry{"n": func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
		log.add(nc)
		if f := c.nodes[nc.NodeID]; f != nil {
			return f(ctx, nc)
		}
		return sqsadapter.NodeResult{Output: map[string]any{"from": nc.NodeID}}, nil
	}}
	maps.Copy(reg, c.registry)
	workers := c.workers
	if workers == 0 {
		workers = 2
	}
	if c.noWorkers {
		workers = 0
	}
	if c.visibility == 0 {
		c.visibility = rigVisibility
	}
	e := newEnv(t, envConfig{workers: workers, registry: reg, blueprints: bps, opts: c.opts, setup: c.setup, visibility: c.visibility})
	return &rig{env: e, log: log}
}

func (r *rig) start(bp string, initial map[string]any, opts ...sqsadapter.RunOption) string {
	r.t.Helper()
	return startRun(r.t, r.client, bp, initial, opts...)
}

func (r *rig) wait(id string) *sqsadapter.RunStatus {
	r.t.Helper()
	return waitRun(r.t, r.client, id, 15*time.Second)
}

func (r *rig) status(id string) *sqsadapter.RunStatus {
	r.t.Helper()
	return getRun(r.t, r.client, id)
}

// nodeState is the state of a node's record ("" when it has none).
func (r *rig) nodeState(runID, nodeID string) string {
	r.t.Helper()
	recs, err := r.contexts.GetNodes(r.t.Context(), runID, []string{nodeID})
	require.NoError(r.t, err)
	if rec := recs[nodeID]; rec != nil {
		return rec.State
	}
	return ""
}

// queueEmpty reports whether the job queue holds no message at all.
func (r *rig) queueEmpty() bool {
	v, f, d := r.sqs.Len(r.queue)
	return v+f+d == 0
}

// send puts a job message in the queue directly.
func (r *rig) send(body string) {
	r.t.Helper()
	_, err := r.sqs.SendMessage(r.t.Context(), &sqs.SendMessageInput{QueueUrl: aws.String(r.queue), MessageBody: aws.String(body)})
	require.NoError(r.t, err)
}

func jobBody(t *testing.T, j sqsadapter.Job) string {
	t.Helper()
	b, err := json.Marshal(j)
	require.NoError(t, err)
	return string(b)
}

// never asserts that cond stays false for a while (n units).
func never(t *testing.T, n int, cond func() bool, msg string) {
	t.Helper()
	assert.Never(t, cond, time.Duration(n)*unit, unit/4, msg)
}

func eventually(t *testing.T, cond func() bool, msg string) {
	t.Helper()
	require.Eventually(t, cond, 10*time.Second, unit/4, msg)
}

func failWith(msg string) sqsadapter.NodeFunc {
	return func(context.Context, *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
		return sqsadapter.NodeResult{}, errors.New(msg)
	}
}

func output(v any, action string) sqsadapter.NodeFunc {
	return func(context.Context, *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
		return sqsadapter.NodeResult{Output: v, Action: action}, nil
	}
}

// blockUntil holds the node until g opens (honouring ctx), then outputs {"from": id}.
func blockUntil(g *gate, started *gate) sqsadapter.NodeFunc {
	return func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
		if started != nil {
			started.open()
		}
		if err := g.wait(ctx); err != nil {
			return sqsadapter.NodeResult{}, err
		}
		return sqsadapter.NodeResult{Output: map[string]any{"from": nc.NodeID}}, nil
	}
}

// finishCounter counts the run status transitions that took effect.
type finishCounter struct {
	*sqsadaptertest.ContextStore
	mu       sync.Mutex
	finished map[string][]string // run id -> statuses written
}

func (f *finishCounter) FinishRun(ctx context.Context, runID string, status sqsadapter.RunState, reason, failedNode string, at time.Time) error {
	err := f.ContextStore.FinishRun(ctx, runID, status, reason, failedNode, at)
	if err == nil {
		f.mu.Lock()
		if f.finished == nil {
			f.finished = make(map[string][]string)
		}
		f.finished[runID] = append(f.finished[runID], string(status))
		f.mu.Unlock()
	}
	return err
}

func (f *finishCounter) statuses(runID string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.finished[runID])
}

func requireStatus(t *testing.T, want sqsadapter.RunState, st *sqsadapter.RunStatus) {
	t.Helper()
	require.Equal(t, want, st.Status, "run error: %s", st.Error)
}

// ---------------------------------------------------------------------------
// §4.2 Input resolution.

func TestInputResolution(t *testing.T) {
	t.Parallel()
	sOut := map[string]any{"user": map[string]any{"name": "ann", "tags": []any{"x", "y"}}, "n": int64(5)}
	cases := []struct {
		name    string
		nodes   []string
		edges   []string
		initial map[string]any
		want    any // input of node "t"
	}{
		{
			name:  "string inputs name a node's output",
			nodes: ids("s", fnode("t", `"inputs":"s"`)), edges: ids("s>t"),
			want: sOut,
		},
		{
			name:  "string inputs fall back to a context key",
			nodes: ids("s", fnode("t", `"inputs":"cfg"`)), edges: ids("s>t"),
			initial: map[string]any{"cfg": map[string]any{"k": 1}},
			want:    map[string]any{"k": int64(1)},
		},
		{
			name:  "string inputs with a dotted path",
			nodes: ids("s", fnode("t", `"inputs":"s.user.name"`)), edges: ids("s>t"),
			want: "ann",
		},
		{
			name: "map inputs with dotted paths",
			nodes: ids("s", fnode("t", `"inputs":{"name":"s.user.name","tag":"s.user.tags.1","missing":"s.user.nope",`+
				`"tooDeep":"s.user.name.first","outOfRange":"s.user.tags.7","noNode":"zz.a"}`)),
			edges: ids("s>t"),
			want:  map[string]any{"name": "ann", "tag": "y", "missing": nil, "tooDeep": nil, "outOfRange": nil, "noNode": nil},
		},
		{
			name:  "a dotted path does not fall back to a context key",
			nodes: ids("s", fnode("t", `"inputs":{"v":"cfg.k"}`)), edges: ids("s>t"),
			initial: map[string]any{"cfg": map[string]any{"k": 1}, "cfg.k": 2},
			want:    map[string]any{"v": nil},
		},
		{
			name:  "array inputs take the first present",
			nodes: ids("s", fnode("t", `"inputs":{"v":["nope","s.user.nope","cfg","s"],"w":["nope","s.user.name"],"none":["nope","s.nope"]}`)),
			edges: ids("s>t"), initial: map[string]any{"cfg": "c"},
			want: map[string]any{"v": "c", "w": "ann", "none": nil},
		},
		{
			name:  "underscore keys are raw context reads",
			nodes: ids("s", fnode("t", `"inputs":{"seed":"_seed","out":"_outputs.s","staged":"_inputs.s","absent":"_nope"}`)),
			edges: ids("s>t"), initial: map[string]any{"_seed": 7, "_inputs.s": "hi"},
			want: map[string]any{"seed": int64(7), "out": sOut, "staged": "hi", "absent": nil},
		},
		{
			name:  "a node output shadows the context key of the same name",
			nodes: ids("s", fnode("t", `"inputs":{"x":"s","y":"plain"}`)), edges: ids("s>t"),
			initial: map[string]any{"s": "context-s", "plain": "p"},
			want:    map[string]any{"x": sOut, "y": "p"},
		},
		{
			name:  "no inputs: the single predecessor's output",
			nodes: ids("s", "t"), edges: ids("s>t"),
			want: sOut,
		},
		{
			name:  "no inputs: the value the edge's transform staged",
			nodes: ids("s", "t"), edges: ids(fedge("s", "t", "transform", "input.user.tags")),
			want: []any{"x", "y"},
		},
		{
			name:  "join without inputs: the taken predecessors' outputs by id",
			nodes: ids("s", "a", "t"), edges: ids("s>a", "s>t", "a>t"),
			want: map[string]any{"s": sOut, "a": map[string]any{"from": "a"}},
		},
		{
			name:  "join without inputs: each edge's transform",
			nodes: ids("s", "a", "t"), edges: ids("s>a", fedge("s", "t", "transform", "input.n"), "a>t"),
			want: map[string]any{"s": int64(5), "a": map[string]any{"from": "a"}},
		},
		{
			name:  "join with inputs reads them",
			nodes: ids("s", "a", fnode("t", `"inputs":{"name":"s.user.name","a":"a"}`)), edges: ids("s>a", "s>t", "a>t"),
			want: map[string]any{"name": "ann", "a": map[string]any{"from": "a"}},
		},
		{
			name:  "start node without inputs: _inputs.<id>",
			nodes: ids("t"), initial: map[string]any{"_inputs.t": map[string]any{"q": 1}},
			want: map[string]any{"q": int64(1)},
		},
		{
			name:  "start node without inputs or seed: nil",
			nodes: ids("t"), initial: map[string]any{"_inputs.other": 1},
			want: nil,
		},
		{
			name:  "start node with inputs",
			nodes: ids(fnode("t", `"inputs":{"c":"cfg","seed":"_inputs.t"}`)), initial: map[string]any{"cfg": true, "_inputs.t": "x"},
			want: map[string]any{"c": true, "seed": "x"},
		},
	}
	modes := []struct {
		name string
		opts []sqsadapter.Option
	}{
		{"inline", nil},
		{"from store", []sqsadapter.Option{sqsadapter.WithTuning(sqsadapter.Tuning{MaxInlineInput: -1})}},
	}
	for _, c := range cases {
		for _, m := range modes {
			t.Run(c.name+"/"+m.name, func(t *testing.T) {
				t.Parallel()
				bp := flow(t, "inputs", c.nodes, c.edges...)
				r := newRig(t, rigConfig{workers: 1, opts: m.opts, nodes: map[string]sqsadapter.NodeFunc{"s": output(sOut, "")}}, bp)
				st := r.wait(r.start("inputs", c.initial))
				requireStatus(t, sqsadapter.StatusCompleted, st)
				assert.Equal(t, c.want, r.log.input(t, "t"))
				assert.Equal(t, 1, r.log.count("t"))
			})
		}
	}
}

// Params are passed to the node as given.
func TestParamsPassedAsGiven(t *testing.T) {
	t.Parallel()
	bp := flow(t, "params", ids(fnode("p", `"params":{"n":3,"f":1.5,"s":"x","l":[1,"a"],"m":{"k":null}}`)))
	var got atomic.Value
	r := newRig(t, rigConfig{workers: 1, nodes: map[string]sqsadapter.NodeFunc{"p": func(_ context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
		got.Store(nc.Params)
		return sqsadapter.NodeResult{}, nil
	}}}, bp)
	requireStatus(t, sqsadapter.StatusCompleted, r.wait(r.start("params", nil)))
	assert.Equal(t, map[string]any{"n": int64(3), "f": 1.5, "s": "x", "l": []any{int64(1), "a"}, "m": map[string]any{"k": nil}}, got.Load())
}

// ---------------------------------------------------------------------------
// §4.3 Retries, timeouts, panics, permanent errors.

func TestRetriesCountAttempts(t *testing.T) {
	t.Parallel()
	bp := flow(t, "retry", ids(fnode("r", `"config":{"maxRetries":3}`), "after"), "r>after")
	r := newRig(t, rigConfig{nodes: map[string]sqsadapter.NodeFunc{"r": func(_ context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
		if nc.Attempt < 3 {
			return sqsadapter.NodeResult{}, fmt.Errorf("transient failure %d", nc.Attempt)
		}
		return sqsadapter.NodeResult{Output: "third time lucky"}, nil
	}}}, bp)
	st := r.wait(r.start("retry", nil))
	requireStatus(t, sqsadapter.StatusCompleted, st)
	assert.Equal(t, []int{1, 2, 3}, r.log.attempts("r"))
	assert.Equal(t, "third time lucky", st.Context["_outputs.r"])
	assert.Equal(t, "third time lucky", r.log.input(t, "after"))
}

func TestRetriesExhaustedFailRun(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name       string
		maxRetries string
		want       []int
	}{
		{"maxRetries 2 makes two attempts", `"config":{"maxRetries":2}`, []int{1, 2}},
		{"maxRetries 0 means one attempt", `"config":{"maxRetries":0}`, []int{1}},
		{"no maxRetries means one attempt", `"params":{}`, []int{1}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			bp := flow(t, "exhaust", ids(fnode("r", c.maxRetries), "after"), "r>after")
			r := newRig(t, rigConfig{nodes: map[string]sqsadapter.NodeFunc{"r": failWith("always-broken")}}, bp)
			st := r.wait(r.start("exhaust", nil))
			requireStatus(t, sqsadapter.StatusFailed, st)
			assert.Equal(t, c.want, r.log.attempts("r"))
			assert.Equal(t, "r", st.FailedNode)
			assert.Contains(t, st.Error, `"r"`)
			assert.Contains(t, st.Error, "always-broken")
			assert.Zero(t, r.log.count("after"))
		})
	}
}

func TestRetryDelayHonoured(t *testing.T) {
	t.Parallel()
	const delay = 100 * time.Millisecond
	bp := flow(t, "delay", ids(fnode("r", `"config":{"maxRetries":2,"retryDelay":100}`)))
	r := newRig(t, rigConfig{nodes: map[string]sqsadapter.NodeFunc{"r": func(_ context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
		if nc.Attempt == 1 {
			return sqsadapter.NodeResult{}, errors.New("first attempt fails")
		}
		return sqsadapter.NodeResult{}, nil
	}}}, bp)
	requireStatus(t, sqsadapter.StatusCompleted, r.wait(r.start("delay", nil)))
	calls := r.log.get("r")
	require.Len(t, calls, 2)
	assert.GreaterOrEqual(t, calls[1].At.Sub(calls[0].At), delay)
}

func TestRetryBackoffGrowsDelay(t *testing.T) {
	t.Parallel()
	bp := flow(t, "backoff", ids(fnode("r", `"config":{"maxRetries":3,"retryDelay":60}`)))
	r := newRig(t, rigConfig{
		opts: []sqsadapter.Option{sqsadapter.WithRetryBackoff(3, 10*time.Second, 0)},
		nodes: map[string]sqsadapter.NodeFunc{"r": func(_ context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
			if nc.Attempt < 3 {
				return sqsadapter.NodeResult{}, errors.New("not yet")
			}
			return sqsadapter.NodeResult{}, nil
		}},
	}, bp)
	requireStatus(t, sqsadapter.StatusCompleted, r.wait(r.start("backoff", nil)))
	calls := r.log.get("r")
	require.Len(t, calls, 3)
	assert.GreaterOrEqual(t, calls[1].At.Sub(calls[0].At), 60*time.Millisecond, "delay before attempt 2")
	assert.GreaterOrEqual(t, calls[2].At.Sub(calls[1].At), 180*time.Millisecond, "delay before attempt 3: 60ms × 3")
}

func TestTimedOutAttemptIsRetried(t *testing.T) {
	t.Parallel()
	t.Run("node honours ctx", func(t *testing.T) {
		t.Parallel()
		bp := flow(t, "timeout", ids(fnode("slow", `"config":{"maxRetries":2,"timeout":50}`)))
		var firstErr atomic.Value
		r := newRig(t, rigConfig{nodes: map[string]sqsadapter.NodeFunc{"slow": func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
			if nc.Attempt == 1 {
				<-ctx.Done()
				firstErr.Store(ctx.Err())
				return sqsadapter.NodeResult{}, ctx.Err()
			}
			return sqsadapter.NodeResult{Output: "in time"}, nil
		}}}, bp)
		st := r.wait(r.start("timeout", nil))
		requireStatus(t, sqsadapter.StatusCompleted, st)
		assert.Equal(t, []int{1, 2}, r.log.attempts("slow"))
		assert.ErrorIs(t, firstErr.Load().(error), context.DeadlineExceeded)
		assert.Equal(t, "in time", st.Context["_outputs.slow"])
	})
	t.Run("node ignores ctx", func(t *testing.T) {
		t.Parallel()
		bp := flow(t, "timeout", ids(fnode("slow", `"config":{"maxRetries":2,"timeout":50}`)))
		stuck := newGate()
		r := newRig(t, rigConfig{nodes: map[string]sqsadapter.NodeFunc{"slow": func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
			if nc.Attempt == 1 {
				<-stuck.done() // ignores ctx
				return sqsadapter.NodeResult{Output: "too late"}, nil
			}
			return sqsadapter.NodeResult{Output: "in time"}, nil
		}}}, bp)
		openAtEnd(t, stuck)
		st := r.wait(r.start("timeout", nil))
		requireStatus(t, sqsadapter.StatusCompleted, st)
		assert.Equal(t, "in time", st.Context["_outputs.slow"])
	})
	t.Run("every attempt times out", func(t *testing.T) {
		t.Parallel()
		bp := flow(t, "timeout", ids(fnode("slow", `"config":{"maxRetries":2,"timeout":30}`)))
		r := newRig(t, rigConfig{nodes: map[string]sqsadapter.NodeFunc{"slow": func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
			<-ctx.Done()
			return sqsadapter.NodeResult{}, ctx.Err()
		}}}, bp)
		st := r.wait(r.start("timeout", nil))
		requireStatus(t, sqsadapter.StatusFailed, st)
		assert.Equal(t, []int{1, 2}, r.log.attempts("slow"))
		assert.Equal(t, "slow", st.FailedNode)
		assert.Contains(t, st.Error, "timed out")
	})
}

func TestPanicIsFailedAttempt(t *testing.T) {
	t.Parallel()
	panicky := func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
		if nc.Attempt == 1 {
			panic("kaboom-on-first-attempt")
		}
		return sqsadapter.NodeResult{Output: "recovered"}, nil
	}
	t.Run("retried", func(t *testing.T) {
		t.Parallel()
		bp := flow(t, "panic", ids(fnode("p", `"config":{"maxRetries":2}`)))
		r := newRig(t, rigConfig{nodes: map[string]sqsadapter.NodeFunc{"p": panicky}}, bp)
		st := r.wait(r.start("panic", nil))
		requireStatus(t, sqsadapter.StatusCompleted, st)
		assert.Equal(t, []int{1, 2}, r.log.attempts("p"))
		assert.Equal(t, "recovered", st.Context["_outputs.p"])
	})
	t.Run("fails the run", func(t *testing.T) {
		t.Parallel()
		bp := flow(t, "panic", ids(fnode("p", `"config":{"maxRetries":1}`), "after"), "p>after")
		r := newRig(t, rigConfig{nodes: map[string]sqsadapter.NodeFunc{"p": panicky}}, bp)
		st := r.wait(r.start("panic", nil))
		requireStatus(t, sqsadapter.StatusFailed, st)
		assert.Equal(t, []int{1}, r.log.attempts("p"))
		assert.Equal(t, "p", st.FailedNode)
		assert.Contains(t, st.Error, `"p"`)
		assert.Contains(t, st.Error, "kaboom-on-first-attempt")
		assert.Zero(t, r.log.count("after"))
	})
}

func TestPermanentErrorStopsRetries(t *testing.T) {
	t.Parallel()
	fatal := func(context.Context, *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
		return sqsadapter.NodeResult{}, sqsadapter.Permanent(errors.New("card declined"))
	}
	t.Run("no more attempts", func(t *testing.T) {
		t.Parallel()
		bp := flow(t, "perm", ids(fnode("p", `"config":{"maxRetries":5,"retryDelay":10}`)))
		r := newRig(t, rigConfig{nodes: map[string]sqsadapter.NodeFunc{"p": fatal}}, bp)
		st := r.wait(r.start("perm", nil))
		requireStatus(t, sqsadapter.StatusFailed, st)
		assert.Equal(t, []int{1}, r.log.attempts("p"))
		assert.Equal(t, "p", st.FailedNode)
		assert.Contains(t, st.Error, "card declined")
	})
	t.Run("wrapped, and the fallback is skipped", func(t *testing.T) {
		t.Parallel()
		bp := flow(t, "perm", ids(fnode("p", `"config":{"maxRetries":5,"fallback":"fb"}`), "fb"))
		r := newRig(t, rigConfig{nodes: map[string]sqsadapter.NodeFunc{"p": func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
			_, err := fatal(ctx, nc)
			return sqsadapter.NodeResult{}, fmt.Errorf("charging: %w", err)
		}}}, bp)
		st := r.wait(r.start("perm", nil))
		requireStatus(t, sqsadapter.StatusFailed, st)
		assert.Equal(t, []int{1}, r.log.attempts("p"))
		assert.Zero(t, r.log.count("fb"))
		assert.Equal(t, "p", st.FailedNode)
	})
}

// ---------------------------------------------------------------------------
// §4.4 Fallback.

func TestFallbackReplacesOutput(t *testing.T) {
	t.Parallel()
	bp := flow(t, "fallback",
		ids("s", fnode("p", `"config":{"maxRetries":2,"fallback":"fb"}`), "fb", "d", "e"),
		"s>p", fedge("p", "d", "action", "recovered"), "p>e")
	fbOut := map[string]any{"recovered": true}
	r := newRig(t, rigConfig{nodes: map[string]sqsadapter.NodeFunc{
		"p":  failWith("primary-broke"),
		"fb": output(fbOut, "recovered"),
	}}, bp)
	id := r.start("fallback", nil)
	st := r.wait(id)
	requireStatus(t, sqsadapter.StatusCompleted, st)
	assert.Equal(t, []int{1, 2}, r.log.attempts("p"))
	assert.Equal(t, 1, r.log.count("fb"))
	assert.Equal(t, fbOut, st.Context["_outputs.p"], "the fallback's output is the node's output")
	// Routing continues from p, with the fallback's result.
	assert.Equal(t, fbOut, r.log.input(t, "d"))
	assert.Zero(t, r.log.count("e"), "p's default edge is not taken: the fallback's action matched")
	catch, ok := st.Context["_catch_error"].(map[string]any)
	require.True(t, ok, "_catch_error in the context: %v", st.Context["_catch_error"])
	assert.Equal(t, "p", catch["nodeId"])
	assert.Equal(t, "fallback", catch["blueprintId"])
	assert.Contains(t, catch["message"], "primary-broke")
}

func TestFallbackFailureFailsRun(t *testing.T) {
	t.Parallel()
	bp := flow(t, "fallback", ids(fnode("p", `"config":{"fallback":"fb"}`), fnode("fb", `"config":{"maxRetries":2}`), "d"), "p>d")
	r := newRig(t, rigConfig{nodes: map[string]sqsadapter.NodeFunc{
		"p":  failWith("primary-broke"),
		"fb": failWith("fallback-broke"),
	}}, bp)
	st := r.wait(r.start("fallback", nil))
	requireStatus(t, sqsadapter.StatusFailed, st)
	assert.Equal(t, []int{1, 2}, r.log.attempts("fb"))
	assert.Equal(t, "p", st.FailedNode)
	assert.Contains(t, st.Error, "fallback-broke")
	assert.Zero(t, r.log.count("d"))
}

// ---------------------------------------------------------------------------
// §4.5 Routing.

func TestRouting(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		out     any
		action  string
		writes  map[string]any
		initial map[string]any
		edges   []string
		want    []string // which of a, b, c run
	}{
		{
			name: "the action's edges are taken", action: "x",
			edges: ids(fedge("s", "a", "action", "x"), fedge("s", "b", "action", "y"), "s>c"),
			want:  ids("a"),
		},
		{
			name: "several edges with the action all run", action: "x",
			edges: ids(fedge("s", "a", "action", "x"), fedge("s", "b", "action", "x"), "s>c"),
			want:  ids("a", "b"),
		},
		{
			name: "default edges when no action edge matches", action: "z",
			edges: ids(fedge("s", "a", "action", "x"), fedge("s", "b", "action", "y"), "s>c"),
			want:  ids("c"),
		},
		{
			name:  "no action: only default edges",
			edges: ids(fedge("s", "a", "action", "x"), "s>b", "s>c"),
			want:  ids("b", "c"),
		},
		{
			name:  "several default edges fan out",
			edges: ids("s>a", "s>b", "s>c"),
			want:  ids("a", "b", "c"),
		},
		{
			name: "an edge with an action and a condition needs both", action: "x",
			edges: ids(fedge("s", "a", "action", "x", "condition", "1 > 2"), fedge("s", "b", "action", "x", "condition", "1 < 2"), "s>c"),
			want:  ids("b"),
		},
		{
			name: "action edges whose conditions are false fall back to default edges", action: "x",
			edges: ids(fedge("s", "a", "action", "x", "condition", "1 > 2"), "s>c"),
			want:  ids("c"),
		},
		{
			name:    "bare path condition over context keys",
			initial: map[string]any{"approved": true, "rejected": false},
			edges:   ids(fedge("s", "a", "condition", "approved"), fedge("s", "b", "condition", "rejected"), fedge("s", "c", "condition", "absent")),
			want:    ids("a"),
		},
		{
			name:    "bare path condition into a context value",
			initial: map[string]any{"order": map[string]any{"vip": true, "items": []any{}}},
			edges:   ids(fedge("s", "a", "condition", "order.vip"), fedge("s", "b", "condition", "order.items.0"), fedge("s", "c", "condition", "order.items")),
			want:    ids("a", "c"),
		},
		{
			name: "bare path condition over the result",
			out:  map[string]any{"ok": true, "zero": 0, "empty": ""},
			edges: ids(fedge("s", "a", "condition", "result.output.ok"), fedge("s", "b", "condition", "result.output.zero"),
				fedge("s", "c", "condition", "result.output.empty")),
			want: ids("a"),
		},
		{
			name:    "expression condition over context keys",
			initial: map[string]any{"amount": 150, "order-id": "o-1"},
			edges: ids(fedge("s", "a", "condition", "amount > 100"), fedge("s", "b", "condition", "amount <= 100"),
				fedge("s", "c", "condition", `context["order-id"] == "o-1" && context.amount == 150`)),
			want: ids("a", "c"),
		},
		{
			name: "expression condition over the result", out: map[string]any{"total": 42}, action: "go",
			edges: ids(fedge("s", "a", "condition", `result.output.total > 40 && result.action == "go"`), fedge("s", "b", "condition", "result.output.total > 50"), "s>c"),
			want:  ids("a", "c"),
		},
		{
			name:    "condition over the node's input",
			initial: map[string]any{"_inputs.s": map[string]any{"go": true}},
			edges:   ids(fedge("s", "a", "condition", "input.go"), fedge("s", "b", "condition", "input.stop")),
			want:    ids("a"),
		},
		{
			name:   "condition over a key the node wrote",
			writes: map[string]any{"flag": true, "count": 3},
			edges:  ids(fedge("s", "a", "condition", "flag"), fedge("s", "b", "condition", "count > 5"), fedge("s", "c", "condition", "count == 3")),
			want:   ids("a", "c"),
		},
		{
			name:    "JavaScript truthiness",
			initial: map[string]any{"emptyList": []any{}, "emptyMap": map[string]any{}, "falseString": "false", "zero": 0},
			edges:   ids(fedge("s", "a", "condition", "emptyList"), fedge("s", "b", "condition", "zero"), fedge("s", "c", "condition", "falseString")),
			want:    ids("a", "c"),
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			bp := flow(t, "routing", nil, c.edges...)
			r := newRig(t, rigConfig{workers: 1, nodes: map[string]sqsadapter.NodeFunc{"s": func(_ context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
				for k, v := range c.writes {
					if err := nc.Set(k, v); err != nil {
						return sqsadapter.NodeResult{}, err
					}
				}
				return sqsadapter.NodeResult{Output: c.out, Action: c.action}, nil
			}}}, bp)
			st := r.wait(r.start("routing", c.initial))
			requireStatus(t, sqsadapter.StatusCompleted, st)
			assert.Equal(t, c.want, r.log.ran("a", "b", "c"))
			for _, id := range ids("a", "b", "c") {
				_, committed := st.Context["_outputs."+id]
				assert.Equal(t, slices.Contains(c.want, id), committed, "_outputs.%s in the final context", id)
			}
		})
	}
}

func TestTransform(t *testing.T) {
	t.Parallel()
	bp := flow(t, "transform", ids("s", "a", "b", "c"),
		fedge("s", "a", "transform", "input.user.name"),
		fedge("s", "b", "transform", "input.n * 2 + bonus"),
		fedge("s", "c", "transform", `{"name": input.user.name, "ctx": context.bonus}`))
	r := newRig(t, rigConfig{nodes: map[string]sqsadapter.NodeFunc{"s": output(map[string]any{"user": map[string]any{"name": "ann"}, "n": 5}, "")}}, bp)
	st := r.wait(r.start("transform", map[string]any{"bonus": 1}))
	requireStatus(t, sqsadapter.StatusCompleted, st)
	assert.Equal(t, "ann", r.log.input(t, "a"))
	assert.EqualValues(t, 11, r.log.input(t, "b"))
	assert.Equal(t, map[string]any{"name": "ann", "ctx": int64(1)}, r.log.input(t, "c"))
	assert.Equal(t, map[string]any{"user": map[string]any{"name": "ann"}, "n": int64(5)}, st.Context["_outputs.s"], "a transform does not change the source's output")
}

// A condition that fails to evaluate is false, as in Flowcraft, whose
// evaluators return undefined on any error: the edge is not taken, the run
// completes, and the failure is counted. A transform that fails stages nil.
func TestExpressionEvaluationErrorIsNotTaken(t *testing.T) {
	t.Parallel()
	bp := flow(t, "badexpr", ids("s", "a", "b", "c"),
		fedge("s", "a", "condition", "result.output * 2 > 1"),
		fedge("s", "b", "condition", "result.output.n > 1"),
		fedge("s", "c", "transform", "input * 2"))
	r := newRig(t, rigConfig{nodes: map[string]sqsadapter.NodeFunc{"s": output(map[string]any{"n": 2}, "")}}, bp)
	st := r.wait(r.start("badexpr", nil))
	requireStatus(t, sqsadapter.StatusCompleted, st)
	assert.Zero(t, r.log.count("a"), "a's condition failed, yet a ran")
	assert.Equal(t, 1, r.log.count("b"))
	assert.Nil(t, r.log.input(t, "c"), "c's failed transform must give nil")
	var counted int64
	for _, w := range r.workers {
		counted += w.ExpressionErrors()
	}
	assert.EqualValues(t, 2, counted, "a failed condition and a failed transform")
}

// A comparison with a missing value is false, not an error (JavaScript:
// undefined < 5 is false): the edge is not taken and nothing is counted.
func TestComparisonWithMissingValueIsFalse(t *testing.T) {
	t.Parallel()
	bp := flow(t, "missing", ids("s", "a", "b"),
		fedge("s", "a", "condition", "count < 5"),
		fedge("s", "b", "condition", "!(count >= 5)"))
	r := newRig(t, rigConfig{}, bp)
	st := r.wait(r.start("missing", nil))
	requireStatus(t, sqsadapter.StatusCompleted, st)
	assert.Zero(t, r.log.count("a"))
	assert.Equal(t, 1, r.log.count("b"))
	for _, w := range r.workers {
		assert.Zero(t, w.ExpressionErrors())
	}
}

// ---------------------------------------------------------------------------
// §4.6 Joins.

// A predecessor delivered twice, or replayed after its commit, counts once:
// the "all" join waits for the other predecessor and runs once.
func TestAllJoinIgnoresRedeliveredPredecessor(t *testing.T) {
	t.Parallel()
	bp := flow(t, "join", ids("s", "a", "b", "j"), "s>a", "s>b", "a>j", "b>j")
	release, bStarted := newGate(), newGate()
	var dupA, dupB atomic.Int32
	r := newRig(t, rigConfig{
		nodes: map[string]sqsadapter.NodeFunc{"b": blockUntil(release, bStarted)},
		setup: func(e *env) {
			e.sqs.DuplicateDelivery = func(body string) bool {
				switch {
				case strings.Contains(body, `"nodeId":"a"`):
					return dupA.Add(1) == 1
				case strings.Contains(body, `"nodeId":"b"`):
					return dupB.Add(1) == 1
				}
				return false
			}
		},
	}, bp)
	openAtEnd(t, release)
	id := r.start("join", nil)
	bStarted.await(t, "b to start")
	eventually(t, func() bool { return r.nodeState(id, "a") == store.NodeCommitted }, "a commits")
	// Replay a's job by hand as well, after its commit.
	job := sqsadapter.Job{RunID: id, BlueprintID: "join", NodeID: "a"}
	require.NoError(t, r.client.HandleJob(t.Context(), job))
	require.NoError(t, r.client.HandleJob(t.Context(), job))
	// Both deliveries of a are handled (deleted) while b is still blocked.
	eventually(t, func() bool {
		for _, m := range r.sqs.Messages(r.queue) {
			if strings.Contains(m.Body, `"nodeId":"a"`) {
				return false
			}
		}
		return true
	}, "a's messages are handled")
	assert.GreaterOrEqual(t, r.sqs.Stats().Duplicated, 1, "a's delivery was duplicated")
	never(t, 5, func() bool { return r.log.count("j") > 0 }, "the join ran before b finished")
	assert.Equal(t, 1, r.log.count("a"), "a committed node never re-executes")
	require.False(t, r.status(id).Finished())

	release.open()
	st := r.wait(id)
	requireStatus(t, sqsadapter.StatusCompleted, st)
	assert.Equal(t, 1, r.log.count("j"))
	assert.Equal(t, 1, r.log.count("b"))
	assert.Equal(t, map[string]any{"a": map[string]any{"from": "a"}, "b": map[string]any{"from": "b"}}, r.log.input(t, "j"))
}

func TestAllJoinBehindDeadBranchRuns(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		action  string
		initial map[string]any
		edges   []string
	}{
		{
			name: "untaken action branch", action: "left",
			edges: ids(fedge("s", "a", "action", "left"), fedge("s", "b", "action", "right"), "a>j", "b>j"),
		},
		{
			name: "false condition", initial: map[string]any{"goRight": false},
			edges: ids("s>a", fedge("s", "b", "condition", "goRight"), "a>j", "b>j"),
		},
		{
			name: "dead chain several nodes deep", action: "left",
			edges: ids(fedge("s", "a", "action", "left"), fedge("s", "b0", "action", "right"), "b0>b", "a>j", "b>j"),
		},
		{
			name: "untaken branch whose node also feeds a leaf", action: "left",
			edges: ids(fedge("s", "a", "action", "left"), fedge("s", "b", "action", "right"), "a>j", "b>j", "b>leaf"),
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			bp := flow(t, "deadjoin", nil, append(c.edges, "j>k")...)
			r := newRig(t, rigConfig{workers: 1, nodes: map[string]sqsadapter.NodeFunc{"s": output("s-out", c.action)}}, bp)
			st := r.wait(r.start("deadjoin", c.initial))
			requireStatus(t, sqsadapter.StatusCompleted, st)
			assert.Equal(t, 1, r.log.count("j"))
			assert.Equal(t, 1, r.log.count("k"))
			assert.Zero(t, r.log.count("b"))
			assert.Equal(t, map[string]any{"a": map[string]any{"from": "a"}}, r.log.input(t, "j"), "only the taken predecessor is in the join's input")
		})
	}
}

func TestJoinWithEveryEdgeDeadIsSkipped(t *testing.T) {
	t.Parallel()
	for _, strategy := range []string{"all", "any"} {
		t.Run(strategy, func(t *testing.T) {
			t.Parallel()
			bp := flow(t, "skipjoin",
				ids("s", "a", "b", "c", fnode("j", fmt.Sprintf(`"config":{"joinStrategy":%q}`, strategy)), "k"),
				fedge("s", "a", "action", "x"), fedge("s", "b", "action", "x"), "s>c", "a>j", "b>j", "j>k")
			r := newRig(t, rigConfig{workers: 1}, bp)
			st := r.wait(r.start("skipjoin", nil))
			requireStatus(t, sqsadapter.StatusCompleted, st)
			assert.Equal(t, ids("s", "c"), r.log.ran("s", "a", "b", "c", "j", "k"))
			assert.NotContains(t, st.Context, "_outputs.j")
			assert.NotContains(t, st.Context, "_outputs.k")
		})
	}
}

// A node reached from a skipped join and from a live branch still runs.
func TestNodeAfterSkippedJoinAndLiveBranchRuns(t *testing.T) {
	t.Parallel()
	bp := flow(t, "mixed", ids("s", "a", "b", "c", "j", "m"),
		fedge("s", "a", "action", "x"), fedge("s", "b", "action", "x"), "s>c", "a>j", "b>j", "j>m", "c>m")
	r := newRig(t, rigConfig{workers: 1}, bp)
	st := r.wait(r.start("mixed", nil))
	requireStatus(t, sqsadapter.StatusCompleted, st)
	assert.Equal(t, ids("s", "c", "m"), r.log.ran("s", "a", "b", "c", "j", "m"))
	assert.Equal(t, map[string]any{"c": map[string]any{"from": "c"}}, r.log.input(t, "m"))
}

func TestRunWithDifferentLeavesCompletes(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ action, want string }{{"left", "l2"}, {"right", "r1"}} {
		t.Run(c.action, func(t *testing.T) {
			t.Parallel()
			bp := flow(t, "leaves", ids("s", "l1", "l2", "r1", "p"),
				fedge("s", "l1", "action", "left"), "l1>l2", fedge("s", "r1", "action", "right"), "s>p")
			r := newRig(t, rigConfig{nodes: map[string]sqsadapter.NodeFunc{"s": output(nil, c.action)}}, bp)
			st := r.wait(r.start("leaves", nil))
			requireStatus(t, sqsadapter.StatusCompleted, st)
			assert.Equal(t, 1, r.log.count(c.want))
			assert.Contains(t, st.Context, "_outputs."+c.want)
		})
	}
	t.Run("parallel branches of different lengths", func(t *testing.T) {
		t.Parallel()
		bp := flow(t, "leaves", ids("s", "a1", "a2", "a3", "b1"), "s>a1", "a1>a2", "a2>a3", "s>b1")
		r := newRig(t, rigConfig{}, bp)
		st := r.wait(r.start("leaves", nil))
		requireStatus(t, sqsadapter.StatusCompleted, st)
		for _, id := range ids("s", "a1", "a2", "a3", "b1") {
			assert.Equal(t, 1, r.log.count(id), id)
			assert.Contains(t, st.Context, "_outputs."+id)
		}
	})
}

func TestAnyJoinRunsOnceOnFirstArrival(t *testing.T) {
	t.Parallel()
	bp := flow(t, "anyjoin", ids("s", "a", "b", fnode("j", `"config":{"joinStrategy":"any"}`), "k"), "s>a", "s>b", "a>j", "b>j", "j>k")
	release, kRan := newGate(), newGate()
	r := newRig(t, rigConfig{nodes: map[string]sqsadapter.NodeFunc{
		"b": blockUntil(release, nil),
		"k": func(context.Context, *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
			kRan.open()
			return sqsadapter.NodeResult{Output: "k"}, nil
		},
	}}, bp)
	openAtEnd(t, release)
	id := r.start("anyjoin", nil)
	kRan.await(t, "the any join and its successor to run while b is blocked")
	assert.Equal(t, map[string]any{"from": "a"}, r.log.input(t, "j"), "an \"any\" join's input is what its firing predecessor staged")
	assert.False(t, r.status(id).Finished(), "the run is not complete while b runs")

	release.open()
	st := r.wait(id)
	requireStatus(t, sqsadapter.StatusCompleted, st)
	assert.Equal(t, 1, r.log.count("j"), "later arrivals are absorbed")
	assert.Equal(t, 1, r.log.count("k"))
	assert.Contains(t, st.Context, "_outputs.b")
}

func TestAnyJoinBehindDeadBranch(t *testing.T) {
	t.Parallel()
	bp := flow(t, "anyjoin", ids("s", "a", "b", fnode("j", `"config":{"joinStrategy":"any"}`)),
		fedge("s", "a", "action", "x"), fedge("s", "b", "action", "y"), "a>j", "b>j")
	r := newRig(t, rigConfig{nodes: map[string]sqsadapter.NodeFunc{"s": output(nil, "y")}}, bp)
	st := r.wait(r.start("anyjoin", nil))
	requireStatus(t, sqsadapter.StatusCompleted, st)
	assert.Equal(t, 1, r.log.count("j"))
	assert.Equal(t, map[string]any{"from": "b"}, r.log.input(t, "j"), "an \"any\" join's input is what its firing predecessor staged")
}

// ---------------------------------------------------------------------------
// §4.7 Completion and failure.

func TestCompletedRunFinalContext(t *testing.T) {
	t.Parallel()
	bp := flow(t, "final", ids("a", "b"), "a>b")
	r := newRig(t, rigConfig{nodes: map[string]sqsadapter.NodeFunc{
		"a": func(_ context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
			return sqsadapter.NodeResult{Output: "A"}, nc.Set("written", map[string]any{"by": "a"})
		},
		"b": output([]any{"B", 2}, ""),
	}}, bp)
	initial := map[string]any{"initial": "v", "n": 12345678901234, "_inputs.a": "in"}
	id := r.start("final", initial)
	st := r.wait(id)
	requireStatus(t, sqsadapter.StatusCompleted, st)
	assert.Equal(t, map[string]any{
		"initial":    "v",
		"n":          int64(12345678901234),
		"_inputs.a":  "in",
		"written":    map[string]any{"by": "a"},
		"_outputs.a": "A",
		"_outputs.b": []any{"B", int64(2)},
	}, st.Context)
	assert.Equal(t, id, st.RunID)
	assert.Equal(t, "final", st.BlueprintID)
	assert.Empty(t, st.Error)
	assert.False(t, st.FinishedAt.IsZero())
	assert.False(t, st.FinishedAt.Before(st.CreatedAt))
	assert.Eventually(t, r.queueEmpty, 5*time.Second, unit/4, "every message is deleted")
}

// A failed run is marked failed once, names the node, and nothing more of it
// executes: not the failed node's successors, not a parallel branch that was
// running at the time, not a job of the run still in the queue.
func TestFailedRunStopsEverything(t *testing.T) {
	t.Parallel()
	bp := flow(t, "failing", ids("s", "f", "g", "p", "q", "d"), "s>f", "s>g", "s>p", "p>q", "f>d", "g>d")
	pRelease, pStarted := newGate(), newGate()
	failAfterP := func(msg string) sqsadapter.NodeFunc {
		return func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
			if err := pStarted.wait(ctx); err != nil {
				return sqsadapter.NodeResult{}, err
			}
			return sqsadapter.NodeResult{}, errors.New(msg)
		}
	}
	pReturned := make(chan error, 1)
	counter := &finishCounter{}
	r := newRig(t, rigConfig{
		workers: 2,
		nodes: map[string]sqsadapter.NodeFunc{
			"f": failAfterP("f-broke"),
			"g": failAfterP("g-broke"),
			"p": func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
				pStarted.open()
				<-pRelease.done() // ignores ctx: finishes after the failure
				select {
				case pReturned <- ctx.Err():
				default:
				}
				return sqsadapter.NodeResult{Output: "p-late"}, nil
			},
		},
		setup: func(e *env) { counter.ContextStore = e.contexts },
		opts:  []sqsadapter.Option{sqsadapter.WithContextStore(counter)},
	}, bp)
	openAtEnd(t, pRelease)
	id := r.start("failing", nil)
	st := r.wait(id)
	requireStatus(t, sqsadapter.StatusFailed, st)
	require.Contains(t, ids("f", "g"), st.FailedNode)
	assert.Contains(t, st.Error, fmt.Sprintf("%q", st.FailedNode))
	assert.Contains(t, st.Error, st.FailedNode+"-broke")
	first := st
	// The failing job closes the run's nodes just after marking it failed
	// (TestFailedRunStopsEverythingWhenFailingWorkerDies covers the gap).
	eventually(t, func() bool { return r.nodeState(id, "q") == store.NodeClosed }, "the failed run's nodes are closed")

	pRelease.open()
	select {
	case <-pReturned:
	case <-time.After(10 * time.Second):
		t.Fatal("p did not return")
	}
	// A job of the run that was still queued executes nothing.
	r.send(jobBody(t, sqsadapter.Job{RunID: id, BlueprintID: "failing", NodeID: "q"}))
	eventually(t, r.queueEmpty, "every message of the failed run is dropped")

	assert.Zero(t, r.log.count("q"), "p's successor never runs")
	assert.Zero(t, r.log.count("d"), "the failed node's successor never runs")
	assert.Equal(t, 1, r.log.count("p"))
	assert.NotEqual(t, store.NodeCommitted, r.nodeState(id, "p"), "p's late output is not committed")
	last := r.status(id)
	requireStatus(t, sqsadapter.StatusFailed, last)
	assert.Equal(t, first.Error, last.Error)
	assert.Equal(t, first.FailedNode, last.FailedNode)
	assert.Equal(t, first.FinishedAt, last.FinishedAt)
	assert.NotContains(t, last.Context, "_outputs.p")
	assert.NotContains(t, last.Context, "_outputs.q")
	assert.Equal(t, []string{string(sqsadapter.StatusFailed)}, counter.statuses(id), "the final status is written once")
}

// Once the run's status says failed, nothing more of it executes, even if
// the job that failed it dies before its last step: here it stops right
// after writing the failed status (the "failed" crash point), and a node
// that was running in a parallel branch finishes afterwards.
func TestFailedRunStopsEverythingWhenFailingWorkerDies(t *testing.T) {
	t.Parallel()
	bp := flow(t, "failing", ids("s", "f", "p", "q"), "s>f", "s>p", "p>q")
	pRelease, pStarted, pReturned := newGate(), newGate(), newGate()
	var crashed atomic.Bool
	r := newRig(t, rigConfig{
		visibility: 25 * unit,
		nodes: map[string]sqsadapter.NodeFunc{
			"f": func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
				if err := pStarted.wait(ctx); err != nil {
					return sqsadapter.NodeResult{}, err
				}
				return sqsadapter.NodeResult{}, errors.New("f-broke")
			},
			"p": func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
				pStarted.open()
				<-pRelease.done() // ignores ctx: finishes after the failure
				pReturned.open()
				return sqsadapter.NodeResult{Output: "p-late"}, nil
			},
		},
		opts: []sqsadapter.Option{sqsadapter.WithCrashHook(func(step string, job sqsadapter.Job) bool {
			return step == "failed" && job.NodeID == "f" && crashed.CompareAndSwap(false, true)
		})},
	}, bp)
	openAtEnd(t, pRelease)
	id := r.start("failing", nil)
	st := r.wait(id)
	requireStatus(t, sqsadapter.StatusFailed, st)
	require.True(t, crashed.Load())

	pRelease.open()
	pReturned.await(t, "p to return")
	// f's message comes back after its visibility timeout; its redelivery
	// finishes the failure. Then nothing is left.
	eventually(t, r.queueEmpty, "every message of the failed run is settled")
	assert.Zero(t, r.log.count("q"), "a successor ran after the run was marked failed")
	assert.NotEqual(t, store.NodeCommitted, r.nodeState(id, "p"), "an output was committed after the run was marked failed")
	last := r.status(id)
	requireStatus(t, sqsadapter.StatusFailed, last)
	assert.Equal(t, "f", last.FailedNode)
	assert.NotContains(t, last.Context, "_outputs.q")
}

// ---------------------------------------------------------------------------
// §4.8 Context.

func TestContextReadsAndWrites(t *testing.T) {
	t.Parallel()
	bp := flow(t, "ctx", ids("a", "b"), "a>b")
	type seen struct {
		own, deleted, initial, later, tmp, outA any
		ownOK, deletedOK, tmpOK, outAOK         bool
	}
	var sa, sb seen
	r := newRig(t, rigConfig{nodes: map[string]sqsadapter.NodeFunc{
		"a": func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
			var err error
			if sa.initial, _, err = nc.Get(ctx, "initial"); err != nil {
				return sqsadapter.NodeResult{}, err
			}
			assert.NoError(t, nc.Set("k1", "v1"))
			if sa.own, sa.ownOK, err = nc.Get(ctx, "k1"); err != nil {
				return sqsadapter.NodeResult{}, err
			}
			assert.NoError(t, nc.Delete("tmp"))
			if sa.deleted, sa.deletedOK, err = nc.Get(ctx, "tmp"); err != nil {
				return sqsadapter.NodeResult{}, err
			}
			return sqsadapter.NodeResult{Output: "A"}, nil
		},
		"b": func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
			var err error
			if sb.later, _, err = nc.Get(ctx, "k1"); err != nil {
				return sqsadapter.NodeResult{}, err
			}
			if sb.tmp, sb.tmpOK, err = nc.Get(ctx, "tmp"); err != nil {
				return sqsadapter.NodeResult{}, err
			}
			if sb.outA, sb.outAOK, err = nc.Get(ctx, "_outputs.a"); err != nil {
				return sqsadapter.NodeResult{}, err
			}
			return sqsadapter.NodeResult{}, nil
		},
	}}, bp)
	st := r.wait(r.start("ctx", map[string]any{"initial": "i", "tmp": "gone soon"}))
	requireStatus(t, sqsadapter.StatusCompleted, st)
	assert.Equal(t, "i", sa.initial)
	assert.True(t, sa.ownOK)
	assert.Equal(t, "v1", sa.own, "a node reads its own buffered writes")
	assert.False(t, sa.deletedOK, "a node does not see a key it deleted")
	assert.Nil(t, sa.deleted)
	assert.Equal(t, "v1", sb.later, "writes are visible to later nodes")
	assert.False(t, sb.tmpOK, "deletes are visible to later nodes")
	assert.True(t, sb.outAOK)
	assert.Equal(t, "A", sb.outA)
	assert.Equal(t, "v1", st.Context["k1"])
	assert.NotContains(t, st.Context, "tmp")
	assert.Equal(t, "i", st.Context["initial"])
}

func TestContextWritesOfFailedAttemptDiscarded(t *testing.T) {
	t.Parallel()
	bp := flow(t, "ctxfail", ids(fnode("a", `"config":{"maxRetries":2}`), "b"), "a>b")
	var secondSaw atomic.Value
	r := newRig(t, rigConfig{nodes: map[string]sqsadapter.NodeFunc{
		"a": func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
			if nc.Attempt == 1 {
				assert.NoError(t, nc.Set("bad", "from attempt 1"))
				assert.NoError(t, nc.Set("k", "first"))
				assert.NoError(t, nc.Delete("keep"))
				return sqsadapter.NodeResult{}, errors.New("attempt 1 fails")
			}
			v, ok, err := nc.Get(ctx, "bad")
			secondSaw.Store([]any{v, ok, err})
			return sqsadapter.NodeResult{}, nc.Set("k", "second")
		},
	}}, bp)
	st := r.wait(r.start("ctxfail", map[string]any{"keep": "kept"}))
	requireStatus(t, sqsadapter.StatusCompleted, st)
	assert.Equal(t, []any{nil, false, nil}, secondSaw.Load(), "the next attempt does not see the failed attempt's writes")
	assert.NotContains(t, st.Context, "bad")
	assert.Equal(t, "second", st.Context["k"])
	assert.Equal(t, "kept", st.Context["keep"])
}

// Concurrent branches writing one key: the last commit wins.
func TestContextLastCommitWins(t *testing.T) {
	t.Parallel()
	bp := flow(t, "lastwins", ids("s", "b", "c"), "s>b", "s>c")
	var r *rig
	r = newRig(t, rigConfig{nodes: map[string]sqsadapter.NodeFunc{
		"b": func(_ context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
			return sqsadapter.NodeResult{}, nc.Set("k", "from b")
		},
		"c": func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
			if err := nc.Set("k", "from c"); err != nil {
				return sqsadapter.NodeResult{}, err
			}
			// Commit after b.
			for r.nodeState(nc.RunID, "b") != store.NodeCommitted {
				select {
				case <-ctx.Done():
					return sqsadapter.NodeResult{}, ctx.Err()
				case <-time.After(unit / 4):
				}
			}
			return sqsadapter.NodeResult{}, nil
		},
	}}, bp)
	st := r.wait(r.start("lastwins", nil))
	requireStatus(t, sqsadapter.StatusCompleted, st)
	assert.Equal(t, "from c", st.Context["k"])
}

// ---------------------------------------------------------------------------
// StartRun, GetRun, WaitForRun, CancelRun.

func TestStartRunWithRunIDIsIdempotent(t *testing.T) {
	t.Parallel()
	t.Run("after the run completed", func(t *testing.T) {
		t.Parallel()
		bp := flow(t, "idem", ids("a", "b"), "a>b")
		r := newRig(t, rigConfig{}, bp)
		id := r.start("idem", map[string]any{"x": 1}, sqsadapter.WithRunID("order-42"))
		require.Equal(t, "order-42", id)
		requireStatus(t, sqsadapter.StatusCompleted, r.wait(id))
		sent := r.sqs.Stats().Sent

		again := r.start("idem", map[string]any{"x": 2}, sqsadapter.WithRunID("order-42"))
		assert.Equal(t, "order-42", again)
		never(t, 5, func() bool { return r.log.count("a") != 1 || r.log.count("b") != 1 }, "a second StartRun ran nodes again")
		assert.Equal(t, sent, r.sqs.Stats().Sent, "a second StartRun sends nothing")
		st := r.status(id)
		requireStatus(t, sqsadapter.StatusCompleted, st)
		assert.Equal(t, int64(1), st.Context["x"], "the initial context is not overwritten")
	})
	t.Run("while the run is running", func(t *testing.T) {
		t.Parallel()
		bp := flow(t, "idem", ids("a", "b"), "a>b")
		release, started := newGate(), newGate()
		r := newRig(t, rigConfig{nodes: map[string]sqsadapter.NodeFunc{"a": blockUntil(release, started)}}, bp)
		openAtEnd(t, release)
		id := r.start("idem", nil, sqsadapter.WithRunID("order-43"))
		started.await(t, "a to start")
		again := r.start("idem", nil, sqsadapter.WithRunID("order-43"))
		assert.Equal(t, id, again)
		release.open()
		requireStatus(t, sqsadapter.StatusCompleted, r.wait(id))
		assert.Equal(t, 1, r.log.count("a"))
		assert.Equal(t, 1, r.log.count("b"))
	})
	t.Run("an id used by another blueprint", func(t *testing.T) {
		t.Parallel()
		r := newRig(t, rigConfig{noWorkers: true}, flow(t, "one", ids("a")), flow(t, "two", ids("a")))
		r.start("one", nil, sqsadapter.WithRunID("shared"))
		_, err := r.client.StartRun(t.Context(), "two", nil, sqsadapter.WithRunID("shared"))
		assert.ErrorIs(t, err, store.ErrRunExists)
	})
}

func TestStartRunUnknownBlueprint(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigConfig{noWorkers: true}, flow(t, "known", ids("a")))
	id, err := r.client.StartRun(t.Context(), "unknown", nil)
	assert.ErrorIs(t, err, sqsadapter.ErrUnknownBlueprint)
	assert.Empty(t, id)
	_, err = r.client.StartRun(t.Context(), "known", nil, sqsadapter.WithBlueprintVersion("v9"))
	assert.ErrorIs(t, err, sqsadapter.ErrUnknownBlueprint)
	assert.Zero(t, r.sqs.Stats().Sent)
}

func TestGetRunUnknown(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigConfig{noWorkers: true}, flow(t, "known", ids("a")))
	st, err := r.client.GetRun(t.Context(), "no-such-run")
	assert.ErrorIs(t, err, sqsadapter.ErrRunNotFound)
	assert.Nil(t, st)
	_, err = r.client.WaitForRun(t.Context(), "no-such-run")
	assert.ErrorIs(t, err, sqsadapter.ErrRunNotFound)
}

func TestGetRunWhileRunning(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigConfig{noWorkers: true}, flow(t, "known", ids("a")))
	id := r.start("known", map[string]any{"k": "v"})
	st := r.status(id)
	assert.Equal(t, sqsadapter.StatusRunning, st.Status)
	assert.Equal(t, "known", st.BlueprintID)
	assert.False(t, st.Finished())
	assert.True(t, st.FinishedAt.IsZero())
	assert.False(t, st.CreatedAt.IsZero())
}

func TestWaitForRunHonoursCtx(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigConfig{noWorkers: true}, flow(t, "known", ids("a")))
	id := r.start("known", nil)
	ctx, cancel := context.WithTimeout(t.Context(), 5*unit)
	defer cancel()
	begin := time.Now()
	st, err := r.client.WaitForRun(ctx, id)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Less(t, time.Since(begin), time.Second, "WaitForRun returns soon after ctx ends")
	if st != nil {
		assert.Equal(t, sqsadapter.StatusRunning, st.Status)
	}

	cctx, ccancel := context.WithCancel(t.Context())
	ccancel()
	_, err = r.client.WaitForRun(cctx, id)
	assert.ErrorIs(t, err, context.Canceled)
}

func TestCancelRunStopsRun(t *testing.T) {
	t.Parallel()
	bp := flow(t, "cancel", ids("a", "b"), "a>b")
	release, started := newGate(), newGate()
	r := newRig(t, rigConfig{nodes: map[string]sqsadapter.NodeFunc{"a": blockUntil(release, started)}}, bp)
	openAtEnd(t, release)
	id := r.start("cancel", nil)
	started.await(t, "a to start")
	require.NoError(t, r.client.CancelRun(t.Context(), id, "operator said stop"))
	st := r.wait(id)
	requireStatus(t, sqsadapter.StatusCancelled, st)
	assert.Contains(t, st.Error, "operator said stop")
	release.open()
	eventually(t, r.queueEmpty, "the cancelled run's messages are dropped")
	assert.Zero(t, r.log.count("b"))
	assert.NotEqual(t, store.NodeCommitted, r.nodeState(id, "a"))
	requireStatus(t, sqsadapter.StatusCancelled, r.status(id))
	assert.ErrorIs(t, r.client.CancelRun(t.Context(), id, "again"), sqsadapter.ErrRunFinished)
	assert.ErrorIs(t, r.client.CancelRun(t.Context(), "no-such-run", ""), sqsadapter.ErrRunNotFound)
}
