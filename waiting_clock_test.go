package sqsadapter_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowcraft/sqsadapter"
	"github.com/flowcraft/sqsadapter/sqsadaptertest"
)

// A 3-day sleep, on a virtual clock that runs 50,000 times as fast as real
// time (one SQS second is 20 µs): it wakes on time, after about 288 delayed
// messages of at most 15 minutes, and costs no DynamoDB request while it
// sleeps.
func TestSleepThreeDaysOnVirtualClock(t *testing.T) {
	t.Parallel()
	const u = 20 * time.Microsecond // one SQS second
	const speed = float64(time.Second / u)
	base, realStart := time.Date(2026, 1, 5, 9, 0, 0, 0, time.UTC), time.Now()
	clock := func() time.Time { return base.Add(time.Duration(float64(time.Since(realStart)) * speed)) }

	bp := mustParse(t, `{"id": "reminder", "nodes": [{"id": "a", "uses": "n"},
		{"id": "nap", "uses": "sleep", "params": {"duration": "3d"}}, {"id": "remind", "uses": "n"}],
	  "edges": [{"source": "a", "target": "nap"}, {"source": "nap", "target": "remind"}]}`)
	var mu sync.Mutex
	var remindedAt time.Time
	node := func(_ context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
		if nc.NodeID == "remind" {
			mu.Lock()
			remindedAt = clock()
			mu.Unlock()
		}
		return sqsadapter.NodeResult{Output: nc.NodeID}, nil
	}
	h := sqsadaptertest.New(t, sqsadaptertest.Config{
		Registry: sqsadapter.NodeRegistry{"n": node}, Blueprints: []*sqsadapter.Blueprint{bp}, Workers: 1,
		Queue:   sqsadaptertest.QueueOptions{VisibilityTimeout: 100000 * u, VisibilityUnit: u, MaxReceiveCount: 50},
		Timeout: time.Minute,
		Options: []sqsadapter.Option{
			sqsadapter.WithLogger(testLogger()),
			sqsadapter.WithSQSTimeUnit(u),
			sqsadapter.WithVisibilityTimeout(100000 * u), // 2 s: a job slowed by a busy machine is not delivered twice, forking the chain
			sqsadapter.WithWaitTime(20 * u),
			sqsadapter.WithTuning(sqsadapter.Tuning{PollBackoffMin: u, PollBackoffMax: 50 * u}),
			sqsadapter.WithClock(clock, speed),
		},
	})
	id := h.Start("reminder", nil)
	sent := func() int { return h.SQS.Stats().Sent }
	var wake time.Time
	require.Eventually(t, func() bool {
		st, err := h.Adapter.GetRun(t.Context(), id)
		if err != nil || st.Nodes["nap"].Wait == nil {
			return false
		}
		wake = st.Nodes["nap"].Wait.WakeAt
		return true
	}, 10*time.Second, time.Millisecond, "nap never slept")
	storeCalls := func() int { // the workers': not the test's status reads
		n := 0
		for op, c := range h.ContextStore.Calls() {
			if op != "GetRun" && op != "ListNodes" && op != "Snapshot" && op != "SnapshotNodes" {
				n += c
			}
		}
		return n
	}
	asleep := storeCalls()
	st := h.Wait(id)
	require.Equal(t, sqsadapter.StatusCompleted, st.Status, st.Error)
	assert.Equal(t, 72*time.Hour, wake.Sub(base).Round(time.Hour), "3 days after the start")

	mu.Lock()
	late := remindedAt.Sub(wake)
	mu.Unlock()
	assert.GreaterOrEqual(t, late, time.Duration(0), "woke before its time")
	// A virtual hour is 72 ms of real time: a loaded machine may be that late.
	assert.Less(t, late, 6*time.Hour, "woke late")
	hops := sent() - 3 // a's, nap's and remind's jobs
	t.Logf("3-day sleep: %d delayed messages; woke %v after its time; %d store calls while asleep and after", hops, late.Round(time.Second), storeCalls()-asleep)
	// At most one delayed message per 15 minutes; fewer when handling them
	// takes (virtual) time.
	assert.LessOrEqual(t, hops, 289)
	assert.GreaterOrEqual(t, hops, 24) // the chain goes on: one message every 3 hours at least
	// While asleep and on waking: the wake's refused acquire and the
	// resume, then remind's acquire and commit and the run's completion —
	// not one per delayed message.
	assert.Less(t, storeCalls()-asleep, 15)
}
