package sqsadapter_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowcraft/sqsadapter"
)

// A client that starts and waits for each run pays one or two reads of the
// run record per run once it has seen a run of the blueprint complete,
// instead of one per doubling of the run's duration.
func TestWaitForRunReadsWhenExpected(t *testing.T) {
	t.Parallel()
	slow := func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
		time.Sleep(10 * unit)
		return sqsadapter.NodeResult{Output: nc.NodeID}, nil
	}
	bp := flow(t, "slow", ids("a", "b", "c"), "a>b", "b>c")
	r := newRig(t, rigConfig{workers: 1, nodes: map[string]sqsadapter.NodeFunc{"a": slow, "b": slow, "c": slow}}, bp)
	reads := func() int { return r.contexts.Calls()["GetRun"] }
	var perRun []int
	for range 6 {
		before := reads()
		id := r.start("slow", nil)
		st, err := r.client.WaitForRun(t.Context(), id)
		require.NoError(t, err)
		requireStatus(t, sqsadapter.StatusCompleted, st)
		perRun = append(perRun, reads()-before)
	}
	t.Logf("run record reads per WaitForRun: %v", perRun)
	// The first run (about 600ms) is read at 0, 10, 30, 70, 150, 310,
	// 630ms: 7 reads, more if the machine is slow.
	assert.GreaterOrEqual(t, perRun[0], 6, "the first run: nothing known")
	later := 0
	for _, n := range perRun[1:] {
		later += n
	}
	// At 0.9 of the typical duration, then every 60ms, 120ms...: 2 reads,
	// 3 or 4 when a run is late by a loaded machine's hundred milliseconds.
	assert.LessOrEqual(t, float64(later)/5, 3.5, "later runs: read when expected")
}
