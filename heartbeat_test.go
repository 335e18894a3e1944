package sqsadapter_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowcraft/sqsadapter"
)

// A node that runs for three visibility timeouts keeps its message and its
// lease: no other worker runs it meanwhile, and it runs once.
func TestHeartbeatKeepsLongNodeExclusive(t *testing.T) {
	t.Parallel()
	const vis = 10 * unit
	var running, maxRunning, calls atomic.Int32
	slow := func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
		calls.Add(1)
		n := running.Add(1)
		defer running.Add(-1)
		for {
			m := maxRunning.Load()
			if n <= m || maxRunning.CompareAndSwap(m, n) {
				break
			}
		}
		select {
		case <-time.After(3 * vis):
			return sqsadapter.NodeResult{Output: "slow done"}, nil
		case <-ctx.Done():
			return sqsadapter.NodeResult{}, ctx.Err()
		}
	}
	bp := mustParse(t, `{"id":"long","nodes":[{"id":"slow","uses":"slow"},{"id":"after","uses":"echo"}],"edges":[{"source":"slow","target":"after"}]}`)
	e := newEnv(t, envConfig{workers: 3, visibility: vis,
		registry: sqsadapter.NodeRegistry{"slow": slow, "echo": echo}, blueprints: []*sqsadapter.Blueprint{bp}})
	st := e.run("long", nil)
	require.Equal(t, sqsadapter.StatusCompleted, st.Status, st.Error)
	assert.Equal(t, int32(1), calls.Load(), "the long node ran more than once")
	assert.Equal(t, int32(1), maxRunning.Load())
	assert.Equal(t, "slow done", st.Context["_outputs.slow"])
}

// A worker that loses its message (here: the queue is purged under it)
// cancels the running node's ctx.
func TestHeartbeatCancelsNodeWhenMessageLost(t *testing.T) {
	t.Parallel()
	const vis = 10 * unit
	started := make(chan struct{})
	cancelled := make(chan error, 1)
	node := func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
		close(started)
		select {
		case <-ctx.Done():
			cancelled <- ctx.Err()
			return sqsadapter.NodeResult{}, ctx.Err()
		case <-time.After(10 * time.Second):
			cancelled <- nil
			return sqsadapter.NodeResult{}, nil
		}
	}
	bp := mustParse(t, `{"id":"lost","nodes":[{"id":"n","uses":"n"}],"edges":[]}`)
	e := newEnv(t, envConfig{workers: 1, visibility: vis,
		registry: sqsadapter.NodeRegistry{"n": node}, blueprints: []*sqsadapter.Blueprint{bp}})
	_, err := e.client.StartRun(t.Context(), "lost", nil)
	require.NoError(t, err)
	select {
	case <-started:
	case <-time.After(5 * time.Second):
		t.Fatal("node did not start")
	}
	e.sqs.Purge(e.queue)
	select {
	case err := <-cancelled:
		require.ErrorIs(t, err, context.Canceled, "the node's ctx was not cancelled")
	case <-time.After(5 * time.Second):
		t.Fatal("node ctx not cancelled after its message was lost")
	}
}
