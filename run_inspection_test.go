package sqsadapter_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowcraft/sqsadapter"
)

// GetRun names the state of every node of a run: completed, skipped,
// failed, running (with its lease), or waiting to retry.
func TestGetRunNodeStates(t *testing.T) {
	t.Parallel()
	bp := flow(t, "states", ids("s", "a", "b", "c", "f", "fb"),
		fedge("s", "a", "action", "left"), fedge("s", "b", "action", "right"), "a>c")
	bp.Nodes[4].Config.Fallback = "fb" // f fails and falls back
	release, started := newGate(), newGate()
	r := newRig(t, rigConfig{nodes: map[string]sqsadapter.NodeFunc{
		"s": output("x", "left"),
		"a": blockUntil(release, started),
		"f": func(context.Context, *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
			return sqsadapter.NodeResult{}, errors.New("no")
		},
	}}, bp)
	id := r.start("states", nil)
	started.await(t, "a started")
	st, err := r.client.GetRun(t.Context(), id)
	require.NoError(t, err)
	assert.Equal(t, sqsadapter.StatusRunning, st.Status)
	a := st.Nodes["a"]
	assert.Equal(t, "running", a.State)
	assert.Equal(t, 1, a.Attempts)
	assert.NotEmpty(t, a.LeaseOwner)
	assert.True(t, a.LeaseUntil.After(time.Now()), "a's lease is live")
	assert.NotContains(t, st.Nodes, "c", "a node not yet reached has no state")

	// WaitForRun's deadline names what the run waits for.
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	_, err = r.client.WaitForRun(ctx, id)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Contains(t, err.Error(), `node "a" running attempt 1`)

	release.open()
	st = r.wait(id)
	requireStatus(t, sqsadapter.StatusCompleted, st)
	want := map[string]string{"s": "completed", "a": "completed", "b": "skipped", "c": "completed", "f": "completed"}
	got := map[string]string{}
	for n, ns := range st.Nodes {
		got[n] = ns.State
	}
	assert.Equal(t, want, got, "every node's state; the fallback's own record is not a node")
	assert.Equal(t, "fb", st.Nodes["f"].Fallback)
	assert.Equal(t, 1, st.Nodes["f"].Attempts)

	// RunStatus marshals with its JSON names.
	b, err := json.Marshal(st)
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(b, &m))
	assert.Equal(t, "completed", m["status"])
	assert.Equal(t, id, m["runId"])
	assert.Equal(t, "skipped", m["nodes"].(map[string]any)["b"].(map[string]any)["state"])
	assert.NotContains(t, m, "error", "empty fields are omitted")
}

// A failed node says why and how many attempts it had.
func TestGetRunFailedNode(t *testing.T) {
	t.Parallel()
	bp := flow(t, "retry", ids("s", "a"), "s>a")
	bp.Nodes[1].Config.MaxRetries = 2
	r := newRig(t, rigConfig{nodes: map[string]sqsadapter.NodeFunc{
		"a": func(_ context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
			return sqsadapter.NodeResult{}, fmt.Errorf("attempt %d fails", nc.Attempt)
		},
	}}, bp)
	st := r.wait(r.start("retry", nil))
	requireStatus(t, sqsadapter.StatusFailed, st)
	a := st.Nodes["a"]
	assert.Equal(t, "failed", a.State)
	assert.Equal(t, 2, a.Attempts)
	assert.Contains(t, a.Error, "attempt 2 fails")
	assert.Equal(t, "completed", st.Nodes["s"].State)
}

// ListRuns pages through running runs, of one blueprint or all.
func TestListRuns(t *testing.T) {
	t.Parallel()
	one := flow(t, "one", ids("a"))
	two := flow(t, "two", ids("a"))
	r := newRig(t, rigConfig{noWorkers: true}, one, two) // nothing runs: every run stays running
	var ones, all []string
	for i := range 7 {
		bp := "one"
		if i%3 == 2 {
			bp = "two"
		}
		id := r.start(bp, nil)
		all = append(all, id)
		if bp == "one" {
			ones = append(ones, id)
		}
		time.Sleep(2 * time.Millisecond) // distinct creation times: listing is oldest first
	}
	list := func(blueprintID string, limit int) []string {
		var ids []string
		cursor := ""
		for pages := 0; ; pages++ {
			require.Less(t, pages, 20, "pagination does not end")
			runs, next, err := r.client.ListRuns(t.Context(), blueprintID, cursor, limit)
			require.NoError(t, err)
			require.LessOrEqual(t, len(runs), limit)
			for _, st := range runs {
				assert.Equal(t, sqsadapter.StatusRunning, st.Status)
				assert.Nil(t, st.Nodes)
				ids = append(ids, st.RunID)
			}
			if next == "" {
				return ids
			}
			cursor = next
		}
	}
	assert.Equal(t, all, list("", 3))
	assert.Equal(t, ones, list("one", 2))
	assert.Empty(t, list("none", 2))
}
