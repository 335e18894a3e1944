package sqsadapter_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowcraft/sqsadapter"
)

// countingRegistry counts the invocations of each node of a blueprint.
type countingRegistry struct {
	mu    sync.Mutex
	calls map[string]int
}

func (c *countingRegistry) node(out func(nc *sqsadapter.NodeContext) any) sqsadapter.NodeFunc {
	return func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
		c.mu.Lock()
		c.calls[nc.NodeID]++
		c.mu.Unlock()
		return sqsadapter.NodeResult{Output: out(nc)}, nil
	}
}

func (c *countingRegistry) count(id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls[id]
}

// Lost work: the worker that committed a node dies before scheduling its
// successors, and its message is lost too. Nothing would ever move the run
// again; the reconciler re-enqueues its frontier, and the run completes
// along the branch its committed routing chose, each node run once.
func TestReconcilerRepairsLostWork(t *testing.T) {
	t.Parallel()
	reg := &countingRegistry{calls: map[string]int{}}
	bp := mustParse(t, `{"id":"lost","nodes":[
	  {"id":"a","uses":"a"},{"id":"b","uses":"n"},{"id":"c","uses":"n"},{"id":"d","uses":"n"}],
	 "edges":[{"source":"a","target":"b","condition":"result.output.path == 'b'"},
	          {"source":"a","target":"c","condition":"result.output.path == 'c'"},
	          {"source":"b","target":"d"},{"source":"c","target":"d"}]}`)
	var crashed atomic.Bool
	crash := sqsadapter.WithCrashHook(func(step string, job sqsadapter.Job) bool {
		return step == "committed" && job.NodeID == "a" && crashed.CompareAndSwap(false, true)
	})
	e := newEnv(t, envConfig{workers: 1, visibility: 50 * unit, opts: []sqsadapter.Option{crash},
		registry: sqsadapter.NodeRegistry{
			"a": reg.node(func(*sqsadapter.NodeContext) any { return map[string]any{"path": "b"} }),
			"n": reg.node(func(nc *sqsadapter.NodeContext) any { return nc.NodeID }),
		}, blueprints: []*sqsadapter.Blueprint{bp}})
	ctx := t.Context()
	id, err := e.client.StartRun(ctx, "lost", nil)
	require.NoError(t, err)
	require.Eventually(t, crashed.Load, 5*time.Second, unit)
	e.sqs.Purge(e.queue) // the crashed job's message is lost
	time.Sleep(20 * unit)
	st, err := e.client.GetRun(ctx, id)
	require.NoError(t, err)
	require.Equal(t, sqsadapter.StatusRunning, st.Status, "the run moved without its message")

	stats, err := e.client.Reconcile(ctx, 10*unit)
	require.NoError(t, err)
	assert.GreaterOrEqual(t, stats.Stalled, 1)
	assert.GreaterOrEqual(t, stats.Jobs, 1)

	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err = e.client.WaitForRun(wctx, id)
	require.NoError(t, err)
	require.Equal(t, sqsadapter.StatusCompleted, st.Status, st.Error)
	assert.Equal(t, 1, reg.count("a"), "a ran again")
	assert.Equal(t, 1, reg.count("b"))
	assert.Equal(t, 0, reg.count("c"), "the reconciler ran an untaken branch")
	assert.Equal(t, 1, reg.count("d"))
	assert.Equal(t, "d", st.Context["_outputs.d"])
}

// A run that is making progress — a node running under a live lease — is
// left alone, and so is a finished run.
func TestReconcilerLeavesLiveRunsAlone(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	slow := func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
		started <- struct{}{}
		select {
		case <-release:
		case <-ctx.Done():
			return sqsadapter.NodeResult{}, ctx.Err()
		}
		return sqsadapter.NodeResult{Output: "ok"}, nil
	}
	bp := mustParse(t, `{"id":"live","nodes":[{"id":"s","uses":"slow"}],"edges":[]}`)
	e := newEnv(t, envConfig{workers: 1, registry: sqsadapter.NodeRegistry{"slow": slow}, blueprints: []*sqsadapter.Blueprint{bp}})
	ctx := t.Context()
	id, err := e.client.StartRun(ctx, "live", nil)
	require.NoError(t, err)
	<-started
	time.Sleep(15 * unit) // older than the threshold, but running
	stats, err := e.client.Reconcile(ctx, 5*unit)
	require.NoError(t, err)
	assert.Equal(t, 0, stats.Stalled)
	assert.Equal(t, 0, stats.Jobs)
	close(release)
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := e.client.WaitForRun(wctx, id)
	require.NoError(t, err)
	require.Equal(t, sqsadapter.StatusCompleted, st.Status)
	stats, err = e.client.Reconcile(ctx, time.Nanosecond)
	require.NoError(t, err)
	assert.Zero(t, stats.Jobs, "a finished run was reconciled")
}
