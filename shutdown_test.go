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

// A job waiting out a retry delay is not a running node: Shutdown does not
// wait for it. Its attempt stays counted, its lease is released, and its
// message comes back when the delay is over, for any worker; the next
// attempt is the second.
func TestShutdownReleasesJobWaitingToRetry(t *testing.T) {
	t.Parallel()
	var attempts []int
	var calls atomic.Int32
	flaky := func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
		calls.Add(1)
		attempts = append(attempts, nc.Attempt)
		if nc.Attempt == 1 {
			return sqsadapter.NodeResult{}, assert.AnError
		}
		return sqsadapter.NodeResult{Output: "second time"}, nil
	}
	bp := mustParse(t, `{"id":"retry","nodes":[{"id":"f","uses":"flaky","config":{"maxRetries":2,"retryDelay":1500}}],"edges":[]}`)
	e := newEnv(t, envConfig{workers: 1, registry: sqsadapter.NodeRegistry{"flaky": flaky}, blueprints: []*sqsadapter.Blueprint{bp}})
	ctx := t.Context()
	id, err := e.client.StartRun(ctx, "retry", nil)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return calls.Load() == 1 }, 5*time.Second, unit)
	time.Sleep(2 * unit) // the job is now waiting out its retry delay

	began := time.Now()
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	require.NoError(t, e.workers[0].Shutdown(sctx))
	assert.Less(t, time.Since(began), time.Second, "Shutdown waited for a retry delay")
	msgs := e.sqs.Messages(e.queue)
	require.Len(t, msgs, 1, "the waiting job's message was deleted")

	// Another worker takes the job once the delay is over: attempt 2.
	a, err := sqsadapter.NewSqsAdapter(
		sqsadapter.WithSQSClient(e.sqs), sqsadapter.WithQueueURL(e.queue),
		sqsadapter.WithContextStore(e.contexts), sqsadapter.WithCoordinationStore(e.coord),
		sqsadapter.WithRegistry(sqsadapter.NodeRegistry{"flaky": flaky}), sqsadapter.WithBlueprints(bp),
		sqsadapter.WithLogger(testLogger()), sqsadapter.WithSQSTimeUnit(unit),
		sqsadapter.WithVisibilityTimeout(10*unit), sqsadapter.WithWaitTime(5*unit))
	require.NoError(t, err)
	errc := make(chan error, 1)
	go func() { errc <- a.Run(context.Background()) }()
	defer func() { require.NoError(t, a.Shutdown(context.Background())); require.NoError(t, <-errc) }()
	st, err := e.client.WaitForRun(sctx, id)
	require.NoError(t, err)
	require.Equal(t, sqsadapter.StatusCompleted, st.Status, st.Error)
	assert.Equal(t, []int{1, 2}, attempts)
}
