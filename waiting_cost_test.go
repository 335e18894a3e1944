package sqsadapter_test

import (
	"maps"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowcraft/sqsadapter"
)

// waitCost counts the store and queue calls of one run of bp, resumed by
// resume (if set) once it is awaiting, on one worker.
func waitCost(t *testing.T, bp string, resume func(r *rig, id string)) (calls map[string]int, sent int) {
	t.Helper()
	r := newRig(t, rigConfig{workers: 1}, mustParse(t, bp))
	id := r.start(mustParse(t, bp).ID, nil)
	if resume != nil {
		require.Equal(t, sqsadapter.StatusAwaiting, awaitRun(t, r.client, id).Status)
		resume(r, id)
	}
	requireStatus(t, sqsadapter.StatusCompleted, r.wait(id))
	calls = maps.Clone(r.contexts.Calls())
	maps.Copy(calls, r.coord.Calls())
	return calls, r.sqs.Stats().Sent
}

// What a wait and a sleep cost beyond a plain node, in store calls and
// messages (BENCHMARKS.md): a wait is one suspend and one resume
// transaction and one message, its successor's job, which a chain would
// have run inline; a sleep adds one delayed message per 15 minutes of
// sleep (here: one, a short sleep).
func TestWaitingCost(t *testing.T) {
	t.Parallel()
	plain, plainSent := waitCost(t, `{"id": "plain", "nodes": [{"id": "a", "uses": "n"}, {"id": "b", "uses": "n"}, {"id": "c", "uses": "n"}],
		"edges": [{"source": "a", "target": "b"}, {"source": "b", "target": "c"}]}`, nil)
	waited, waitSent := waitCost(t, `{"id": "waited", "nodes": [{"id": "a", "uses": "n"}, {"id": "b", "uses": "wait"}, {"id": "c", "uses": "n"}],
		"edges": [{"source": "a", "target": "b"}, {"source": "b", "target": "c"}]}`, func(r *rig, id string) {
		require.NoError(t, r.client.ResumeRun(t.Context(), id, "b", "ok", ""))
	})
	slept, sleepSent := waitCost(t, `{"id": "slept", "nodes": [{"id": "a", "uses": "n"}, {"id": "b", "uses": "sleep", "params": {"duration": 50}}, {"id": "c", "uses": "n"}],
		"edges": [{"source": "a", "target": "b"}, {"source": "b", "target": "c"}]}`, nil)
	t.Logf("plain: %v sent %d", plain, plainSent)
	t.Logf("wait: %v sent %d", waited, waitSent)
	t.Logf("sleep: %v sent %d", slept, sleepSent)
	// The plain run's chain runs under the start node's message; the resume
	// (no message) sends the successor's job, and nothing else.
	assert.Equal(t, 1, plainSent, "a chain sends no job")
	assert.Equal(t, plainSent+1, waitSent, "a resume sends only the successor's job")
	assert.Equal(t, plainSent+1, sleepSent, "a short sleep sends one delayed message")
	assert.Equal(t, 1, waited["SuspendNode"])
	assert.Equal(t, 1, waited["ResumeNode"])
	assert.Equal(t, 1, slept["SuspendNode"])
	assert.Equal(t, 1, slept["ResumeNode"])
}
