package sqsadapter_test

import (
	"cmp"
	"context"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/flowcraft/sqsadapter"
	"github.com/flowcraft/sqsadapter/sqsadaptertest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// unit is the in-memory SQS's "second" in tests: visibility timeouts and
// waits given to the adapter in seconds count in these units.
const unit = 20 * time.Millisecond

// env is a set of workers sharing one in-memory queue and two stores.
type env struct {
	t        *testing.T
	sqs      *sqsadaptertest.SQS
	queue    string
	dlq      string
	contexts *sqsadaptertest.ContextStore
	coord    *sqsadaptertest.CoordinationStore
	workers  []*sqsadapter.SqsAdapter
	client   *sqsadapter.SqsAdapter
}

type envConfig struct {
	workers    int
	registry   sqsadapter.NodeRegistry
	blueprints []*sqsadapter.Blueprint
	opts       []sqsadapter.Option
	// visibility is the adapter's visibility timeout (default 10 units).
	visibility time.Duration
	setup      func(*env) // before workers start (fault hooks)
	// maxReceiveCount is the queue's redrive threshold (default 50).
	maxReceiveCount int
}

func testLogger() *slog.Logger {
	if os.Getenv("SQSADAPTER_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func newEnv(t *testing.T, c envConfig) *env {
	t.Helper()
	if c.visibility == 0 {
		c.visibility = 10 * unit
	}
	e := &env{t: t}
	workers := c.workers
	if workers == 0 {
		workers = -1 // none: the test drives jobs itself
	}
	sqsadaptertest.New(t, sqsadaptertest.Config{
		Registry:   c.registry,
		Blueprints: c.blueprints,
		Workers:    workers,
		Queue: sqsadaptertest.QueueOptions{
			VisibilityTimeout: c.visibility, VisibilityUnit: unit, MaxReceiveCount: cmp.Or(c.maxReceiveCount, 50),
		},
		Options: append([]sqsadapter.Option{
			sqsadapter.WithLogger(testLogger()),
			sqsadapter.WithSQSTimeUnit(unit),
			sqsadapter.WithVisibilityTimeout(c.visibility),
			sqsadapter.WithWaitTime(5 * unit),
			sqsadapter.WithTuning(sqsadapter.Tuning{PollBackoffMin: unit, PollBackoffMax: 5 * unit}),
			sqsadapter.WithTuning(sqsadapter.Tuning{ReceiveWindow: 50 * time.Millisecond, DeleteLinger: 50 * time.Millisecond}),
		}, c.opts...),
		Setup: func(h *sqsadaptertest.Harness) {
			e.sqs, e.queue, e.dlq = h.SQS, h.QueueURL, h.DLQURL
			e.contexts, e.coord = h.ContextStore, h.CoordinationStore
			e.workers, e.client = h.Workers, h.Adapter
			if c.setup != nil {
				c.setup(e)
			}
		},
	})
	return e
}

// run starts a run and waits for it to finish.
func (e *env) run(blueprintID string, initial map[string]any, opts ...sqsadapter.RunOption) *sqsadapter.RunStatus {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(e.t.Context(), 20*time.Second)
	defer cancel()
	id, err := e.client.StartRun(ctx, blueprintID, initial, opts...)
	require.NoError(e.t, err)
	st, err := e.client.WaitForRun(ctx, id)
	require.NoError(e.t, err, "run %s did not finish", id)
	return st
}

func mustParse(t *testing.T, s string) *sqsadapter.Blueprint {
	t.Helper()
	bp, err := sqsadapter.ParseBlueprint([]byte(s))
	require.NoError(t, err)
	return bp
}

// startRun starts a run through client and fails the test on error.
func startRun(t *testing.T, client *sqsadapter.SqsAdapter, bp string, initial map[string]any, opts ...sqsadapter.RunOption) string {
	t.Helper()
	id, err := client.StartRun(t.Context(), bp, initial, opts...)
	require.NoError(t, err)
	return id
}

// waitRun waits up to timeout for a run to finish and fails the test if it does not.
func waitRun(t *testing.T, client *sqsadapter.SqsAdapter, id string, timeout time.Duration) *sqsadapter.RunStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	st, err := client.WaitForRun(ctx, id)
	require.NoError(t, err, "run %s did not finish", id)
	return st
}

// getRun reads a run's status and fails the test on error.
func getRun(t *testing.T, client *sqsadapter.SqsAdapter, id string) *sqsadapter.RunStatus {
	t.Helper()
	st, err := client.GetRun(t.Context(), id)
	require.NoError(t, err)
	return st
}

// noChains makes workers send every successor's job: the protocol without
// inline chains.
var noChains = []sqsadapter.Option{sqsadapter.WithTuning(sqsadapter.Tuning{ChainNodes: -1})}

// untimedChains runs chains inline up to their node bound however long they
// take, for tests that count messages on a machine of any speed.
var untimedChains = sqsadapter.WithTuning(sqsadapter.Tuning{ChainTime: time.Hour})
