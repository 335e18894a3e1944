package sqsadapter_test

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"slices"
	"strings"
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

// ---------------------------------------------------------------------------
// NewSqsAdapter validation.

func TestNewSqsAdapterValidation(t *testing.T) {
	t.Parallel()
	noop := func(context.Context, *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
		return sqsadapter.NodeResult{}, nil
	}
	fake := sqsadaptertest.NewSQS()
	queue := fake.CreateQueue("validation", sqsadaptertest.QueueOptions{})
	contexts, coord := sqsadaptertest.NewContextStore(), sqsadaptertest.NewCoordinationStore()
	bp := mustParse(t, `{"id":"v","nodes":[{"id":"a","uses":"n"}],"metadata":{"version":"1"}}`)
	bp2 := mustParse(t, `{"id":"v","nodes":[{"id":"a","uses":"n"}],"metadata":{"version":"2"}}`)
	unregistered := mustParse(t, `{"id":"u","nodes":[{"id":"a","uses":"n"},{"id":"b","uses":"nope"}],"edges":[{"source":"a","target":"b"}]}`)
	reg := sqsadapter.NodeRegistry{"n": noop}

	type opt = sqsadapter.Option
	base := map[string]opt{
		"sqs":      sqsadapter.WithSQSClient(fake),
		"queue":    sqsadapter.WithQueueURL(queue),
		"contexts": sqsadapter.WithContextStore(contexts),
		"coord":    sqsadapter.WithCoordinationStore(coord),
		"registry": sqsadapter.WithRegistry(reg),
		"bps":      sqsadapter.WithBlueprints(bp),
	}
	// build returns the base options without those named in drop, plus extra.
	build := func(drop []string, extra ...opt) []opt {
		var out []opt
		for _, k := range []string{"sqs", "queue", "contexts", "coord", "registry", "bps"} {
			if !slices.Contains(drop, k) {
				out = append(out, base[k])
			}
		}
		return append(out, extra...)
	}
	cases := []struct {
		name string
		drop []string
		opts []opt
		want error // nil: valid
		msgs []string
	}{
		{name: "valid", want: nil},
		{name: "valid with every tunable", opts: []opt{
			sqsadapter.WithConcurrency(1), sqsadapter.WithLogger(slog.Default()), sqsadapter.WithWorkerID("w-1"),
			sqsadapter.WithWaitTime(0), sqsadapter.WithVisibilityTimeout(12 * time.Hour), sqsadapter.WithRetryBackoff(1, time.Second, 1),
			sqsadapter.WithTuning(sqsadapter.Tuning{PollBackoffMin: time.Millisecond, PollBackoffMax: time.Millisecond,
				ReceiveWindow: -1, DeleteLinger: time.Second, MaxInlineInput: 200 << 10, CoordinationTTL: time.Minute, DrainTimeout: -1}), nil,
		}},
		{name: "two versions of one blueprint", opts: []opt{sqsadapter.WithBlueprints(bp2)}},
		{name: "no blueprints", drop: []string{"bps"}},
		{name: "missing SQS client", drop: []string{"sqs"}, want: sqsadapter.ErrInvalidOption, msgs: []string{"WithSQSClient"}},
		{name: "nil SQS client", drop: []string{"sqs"}, opts: []opt{sqsadapter.WithSQSClient(nil)}, want: sqsadapter.ErrInvalidOption},
		{name: "missing queue URL", drop: []string{"queue"}, want: sqsadapter.ErrInvalidOption, msgs: []string{"WithQueueURL"}},
		{name: "empty queue URL", drop: []string{"queue"}, opts: []opt{sqsadapter.WithQueueURL("")}, want: sqsadapter.ErrInvalidOption},
		{name: "missing context store", drop: []string{"contexts"}, want: sqsadapter.ErrInvalidOption, msgs: []string{"WithContextStore"}},
		{name: "nil context store", drop: []string{"contexts"}, opts: []opt{sqsadapter.WithContextStore(nil)}, want: sqsadapter.ErrInvalidOption},
		{name: "missing coordination store", drop: []string{"coord"}, want: sqsadapter.ErrInvalidOption, msgs: []string{"WithCoordinationStore"}},
		{name: "nil coordination store", drop: []string{"coord"}, opts: []opt{sqsadapter.WithCoordinationStore(nil)}, want: sqsadapter.ErrInvalidOption},
		{name: "missing registry", drop: []string{"registry"}, want: sqsadapter.ErrInvalidOption, msgs: []string{"WithRegistry"}},
		{name: "nil registry", drop: []string{"registry"}, opts: []opt{sqsadapter.WithRegistry(nil)}, want: sqsadapter.ErrInvalidOption},
		{name: "every required option missing", drop: []string{"sqs", "queue", "contexts", "coord", "registry"}, want: sqsadapter.ErrInvalidOption,
			msgs: []string{"WithSQSClient", "WithQueueURL", "WithContextStore", "WithCoordinationStore", "WithRegistry"}},
		{name: "unregistered uses", opts: []opt{sqsadapter.WithBlueprints(unregistered)}, want: sqsadapter.ErrInvalidBlueprint, msgs: []string{`"nope"`}},
		{name: "registry entry is nil", drop: []string{"registry"}, opts: []opt{sqsadapter.WithRegistry(sqsadapter.NodeRegistry{"n": nil})}, want: sqsadapter.ErrInvalidBlueprint},
		{name: "invalid blueprint", opts: []opt{sqsadapter.WithBlueprints(&sqsadapter.Blueprint{ID: "empty"})}, want: sqsadapter.ErrInvalidBlueprint},
		{name: "cyclic blueprint", opts: []opt{sqsadapter.WithBlueprints(&sqsadapter.Blueprint{ID: "cyc",
			Nodes: []sqsadapter.NodeDefinition{{ID: "a", Uses: "n"}, {ID: "b", Uses: "n"}, {ID: "c", Uses: "n"}},
			Edges: []sqsadapter.EdgeDefinition{{Source: "a", Target: "b"}, {Source: "b", Target: "c"}, {Source: "c", Target: "b"}}})},
			want: sqsadapter.ErrInvalidBlueprint, msgs: []string{"cycle"}},
		{name: "nil blueprint", opts: []opt{sqsadapter.WithBlueprints(nil)}, want: sqsadapter.ErrInvalidOption},
		{name: "duplicate blueprint version", opts: []opt{sqsadapter.WithBlueprints(bp)}, want: sqsadapter.ErrInvalidOption, msgs: []string{`"v"`}},
		{name: "concurrency 0", opts: []opt{sqsadapter.WithConcurrency(0)}, want: sqsadapter.ErrInvalidOption},
		{name: "negative concurrency", opts: []opt{sqsadapter.WithConcurrency(-3)}, want: sqsadapter.ErrInvalidOption},
		{name: "nil logger", opts: []opt{sqsadapter.WithLogger(nil)}, want: sqsadapter.ErrInvalidOption},
		{name: "empty worker id", opts: []opt{sqsadapter.WithWorkerID("")}, want: sqsadapter.ErrInvalidOption},
		{name: "wait time over 20s", opts: []opt{sqsadapter.WithWaitTime(21 * time.Second)}, want: sqsadapter.ErrInvalidOption},
		{name: "negative wait time", opts: []opt{sqsadapter.WithWaitTime(-time.Second)}, want: sqsadapter.ErrInvalidOption},
		{name: "visibility timeout far too short", opts: []opt{sqsadapter.WithVisibilityTimeout(10 * time.Millisecond)}, want: sqsadapter.ErrInvalidOption},
		{name: "visibility timeout under SQS's 1s", opts: []opt{sqsadapter.WithVisibilityTimeout(500 * time.Millisecond)}, want: sqsadapter.ErrInvalidOption},
		{name: "visibility timeout over 12h", opts: []opt{sqsadapter.WithVisibilityTimeout(13 * time.Hour)}, want: sqsadapter.ErrInvalidOption},
		{name: "negative poll backoff", opts: []opt{sqsadapter.WithTuning(sqsadapter.Tuning{PollBackoffMin: -1, PollBackoffMax: time.Second})}, want: sqsadapter.ErrInvalidOption},
		{name: "poll backoff max below the default min", opts: []opt{sqsadapter.WithTuning(sqsadapter.Tuning{PollBackoffMax: time.Millisecond})}, want: sqsadapter.ErrInvalidOption},
		{name: "batching window over 1s", opts: []opt{sqsadapter.WithTuning(sqsadapter.Tuning{DeleteLinger: 2 * time.Second})}, want: sqsadapter.ErrInvalidOption},
		{name: "poll backoff max below min", opts: []opt{sqsadapter.WithTuning(sqsadapter.Tuning{PollBackoffMin: time.Second, PollBackoffMax: time.Millisecond})}, want: sqsadapter.ErrInvalidOption},
		{name: "retry backoff multiplier below 1", opts: []opt{sqsadapter.WithRetryBackoff(0.5, time.Second, 0)}, want: sqsadapter.ErrInvalidOption},
		{name: "retry backoff max 0", opts: []opt{sqsadapter.WithRetryBackoff(2, 0, 0)}, want: sqsadapter.ErrInvalidOption},
		{name: "retry backoff jitter over 1", opts: []opt{sqsadapter.WithRetryBackoff(2, time.Second, 1.5)}, want: sqsadapter.ErrInvalidOption},
		{name: "negative retry backoff jitter", opts: []opt{sqsadapter.WithRetryBackoff(2, time.Second, -0.1)}, want: sqsadapter.ErrInvalidOption},
		{name: "coordination TTL under a minute", opts: []opt{sqsadapter.WithTuning(sqsadapter.Tuning{CoordinationTTL: time.Second})}, want: sqsadapter.ErrInvalidOption},
		{name: "retention under an hour", opts: []opt{sqsadapter.WithTuning(sqsadapter.Tuning{Retention: time.Hour - time.Second})}, want: sqsadapter.ErrInvalidOption, msgs: []string{"retention"}},
		{name: "negative retention", opts: []opt{sqsadapter.WithTuning(sqsadapter.Tuning{Retention: -time.Hour})}, want: sqsadapter.ErrInvalidOption},
		{name: "retention of an hour", opts: []opt{sqsadapter.WithTuning(sqsadapter.Tuning{Retention: time.Hour})}},
		{name: "max inline input over 200 KiB", opts: []opt{sqsadapter.WithTuning(sqsadapter.Tuning{MaxInlineInput: 201 << 10})}, want: sqsadapter.ErrInvalidOption},
		{name: "option and blueprint problems together", drop: []string{"queue"}, opts: []opt{sqsadapter.WithConcurrency(0)}, want: sqsadapter.ErrInvalidOption,
			msgs: []string{"WithQueueURL", "concurrency"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			var a *sqsadapter.SqsAdapter
			var err error
			require.NotPanics(t, func() { a, err = sqsadapter.NewSqsAdapter(build(c.drop, c.opts...)...) })
			if c.want == nil {
				require.NoError(t, err)
				require.NotNil(t, a)
				return
			}
			require.ErrorIs(t, err, c.want)
			assert.Nil(t, a)
			for _, m := range c.msgs {
				assert.Contains(t, err.Error(), m)
			}
		})
	}
	t.Run("no options at all", func(t *testing.T) {
		t.Parallel()
		var err error
		require.NotPanics(t, func() { _, err = sqsadapter.NewSqsAdapter() })
		assert.ErrorIs(t, err, sqsadapter.ErrInvalidOption)
	})
	t.Run("typed nil client does not panic", func(t *testing.T) {
		t.Parallel()
		assert.NotPanics(t, func() {
			_, _ = sqsadapter.NewSqsAdapter(build([]string{"sqs"}, sqsadapter.WithSQSClient((*sqsadaptertest.SQS)(nil)))...)
		})
	})
}

// ---------------------------------------------------------------------------
// Run and Shutdown.

// newWorker builds one more adapter on r's queue and stores.
func newWorker(t *testing.T, r *rig, reg sqsadapter.NodeRegistry, bps []*sqsadapter.Blueprint, extra ...sqsadapter.Option) *sqsadapter.SqsAdapter {
	t.Helper()
	opts := []sqsadapter.Option{
		sqsadapter.WithSQSClient(r.sqs),
		sqsadapter.WithQueueURL(r.queue),
		sqsadapter.WithContextStore(r.contexts),
		sqsadapter.WithCoordinationStore(r.coord),
		sqsadapter.WithRegistry(reg),
		sqsadapter.WithBlueprints(bps...),
		sqsadapter.WithLogger(testLogger()),
		sqsadapter.WithSQSTimeUnit(unit),
		sqsadapter.WithVisibilityTimeout(rigVisibility),
		sqsadapter.WithWaitTime(5 * unit),
		sqsadapter.WithTuning(sqsadapter.Tuning{PollBackoffMin: unit, PollBackoffMax: 5 * unit}),
	}
	a, err := sqsadapter.NewSqsAdapter(append(opts, extra...)...)
	require.NoError(t, err)
	return a
}

// runWorker runs a in the background; the returned channel yields Run's error.
func runWorker(a *sqsadapter.SqsAdapter) <-chan error {
	errc := make(chan error, 1)
	go func() { errc <- a.Run(context.Background()) }()
	return errc
}

func recv(t *testing.T, c <-chan error, what string) error {
	t.Helper()
	select {
	case err := <-c:
		return err
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		return nil
	}
}

func TestRunTwiceAndAfterShutdown(t *testing.T) {
	t.Parallel()
	bp := flow(t, "solo", ids("a"))
	r := newRig(t, rigConfig{noWorkers: true}, bp)
	reg := sqsadapter.NodeRegistry{"n": output("ok", "")}

	a := newWorker(t, r, reg, []*sqsadapter.Blueprint{bp})
	errc := runWorker(a)
	// The first Run works: it completes a run.
	requireStatus(t, sqsadapter.StatusCompleted, r.wait(r.start("solo", nil)))
	assert.ErrorIs(t, a.Run(t.Context()), sqsadapter.ErrAdapterClosed)
	require.NoError(t, a.Shutdown(t.Context()))
	require.NoError(t, recv(t, errc, "Run to return"))
	assert.ErrorIs(t, a.Run(t.Context()), sqsadapter.ErrAdapterClosed)
	assert.NoError(t, a.Shutdown(t.Context()), "Shutdown twice")

	b := newWorker(t, r, reg, []*sqsadapter.Blueprint{bp})
	require.NoError(t, b.Shutdown(t.Context()), "Shutdown before Run")
	assert.ErrorIs(t, b.Run(t.Context()), sqsadapter.ErrAdapterClosed)
}

func TestRunStopsWhenCtxDone(t *testing.T) {
	t.Parallel()
	bp := flow(t, "solo", ids("a"))
	r := newRig(t, rigConfig{noWorkers: true}, bp)
	a := newWorker(t, r, sqsadapter.NodeRegistry{"n": output("ok", "")}, []*sqsadapter.Blueprint{bp})
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() { errc <- a.Run(ctx) }()
	requireStatus(t, sqsadapter.StatusCompleted, r.wait(r.start("solo", nil)))
	cancel()
	assert.NoError(t, recv(t, errc, "Run to return"))
}

func TestShutdownLetsInFlightNodeFinish(t *testing.T) {
	t.Parallel()
	bp := flow(t, "solo", ids("a"))
	r := newRig(t, rigConfig{noWorkers: true}, bp)
	release, started := newGate(), newGate()
	reg := sqsadapter.NodeRegistry{"n": func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
		started.open()
		if err := release.wait(ctx); err != nil {
			return sqsadapter.NodeResult{}, err
		}
		return sqsadapter.NodeResult{Output: "finished during shutdown"}, nil
	}}
	openAtEnd(t, release)
	a := newWorker(t, r, reg, []*sqsadapter.Blueprint{bp})
	errc := runWorker(a)
	id := r.start("solo", nil)
	started.await(t, "the node to start")

	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		shut <- a.Shutdown(ctx)
	}()
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v while a node was running", err)
	case <-time.After(5 * unit):
	}
	// Receiving has stopped: a run started now is not picked up.
	other := r.start("solo", nil)
	time.Sleep(2 * unit)

	release.open()
	require.NoError(t, recv(t, shut, "Shutdown to return"))
	require.NoError(t, recv(t, errc, "Run to return"))

	st := r.status(id)
	requireStatus(t, sqsadapter.StatusCompleted, st)
	assert.Equal(t, "finished during shutdown", st.Context["_outputs.a"])
	assert.Equal(t, sqsadapter.StatusRunning, r.status(other).Status)
	msgs := r.sqs.Messages(r.queue)
	require.Len(t, msgs, 1, "the finished node's message is deleted; the new run's is left")
	assert.Contains(t, msgs[0].Body, other)
	assert.Zero(t, msgs[0].ReceiveCount, "nothing is received after Shutdown")
	assert.Equal(t, 1, r.sqs.Stats().Deleted)
}

func TestShutdownCtxExpiryCancelsNode(t *testing.T) {
	t.Parallel()
	bp := flow(t, "solo", ids(fnode("a", `"config":{"maxRetries":2}`)))
	r := newRig(t, rigConfig{noWorkers: true}, bp)
	started, cancelled := newGate(), newGate()
	reg := sqsadapter.NodeRegistry{"n": func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
		if nc.Attempt > 1 {
			return sqsadapter.NodeResult{Output: "second worker"}, nil
		}
		started.open()
		<-ctx.Done()
		cancelled.open()
		return sqsadapter.NodeResult{}, ctx.Err()
	}}
	a := newWorker(t, r, reg, []*sqsadapter.Blueprint{bp})
	errc := runWorker(a)
	id := r.start("solo", nil)
	started.await(t, "the node to start")

	ctx, cancel := context.WithTimeout(t.Context(), 5*unit)
	defer cancel()
	err := a.Shutdown(ctx)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	cancelled.await(t, "the node's ctx to be cancelled")
	require.NoError(t, recv(t, errc, "Run to return"))
	assert.Equal(t, sqsadapter.StatusRunning, r.status(id).Status)
	assert.NotEqual(t, store.NodeCommitted, r.nodeState(id, "a"))
	assert.Zero(t, r.sqs.Stats().Deleted, "the cancelled job's message is not deleted")
	assert.Len(t, r.sqs.Messages(r.queue), 1)

	// The message comes back, and another worker finishes the run.
	b := newWorker(t, r, reg, []*sqsadapter.Blueprint{bp})
	errb := runWorker(b)
	st := r.wait(id)
	require.NoError(t, b.Shutdown(t.Context()))
	require.NoError(t, recv(t, errb, "Run to return"))
	requireStatus(t, sqsadapter.StatusCompleted, st)
	assert.Equal(t, "second worker", st.Context["_outputs.a"])
}

// HandleJob drives a run without a poller, as an AWS Lambda handler would.
func TestHandleJobDrivesRunWithoutPolling(t *testing.T) {
	t.Parallel()
	bp := flow(t, "lambda", ids("s", "a", "b", "j"), "s>a", "s>b", "a>j", "b>j")
	r := newRig(t, rigConfig{noWorkers: true}, bp)
	id := r.start("lambda", map[string]any{"_inputs.s": "go"})
	for i := 0; !r.status(id).Finished(); i++ {
		require.Less(t, i, 100, "the run does not finish")
		out, err := r.sqs.ReceiveMessage(t.Context(), &sqs.ReceiveMessageInput{QueueUrl: aws.String(r.queue), MaxNumberOfMessages: 10})
		require.NoError(t, err)
		for _, m := range out.Messages {
			job, err := sqsadapter.DecodeJob([]byte(aws.ToString(m.Body)))
			require.NoError(t, err)
			require.NoError(t, r.client.HandleJob(t.Context(), job))
			_, err = r.sqs.DeleteMessage(t.Context(), &sqs.DeleteMessageInput{QueueUrl: aws.String(r.queue), ReceiptHandle: m.ReceiptHandle})
			require.NoError(t, err)
		}
	}
	st := r.status(id)
	requireStatus(t, sqsadapter.StatusCompleted, st)
	assert.Equal(t, "go", r.log.input(t, "s"))
	assert.Equal(t, 1, r.log.count("j"))
	assert.True(t, r.queueEmpty())
}

// ---------------------------------------------------------------------------
// Bad input.

func TestUndecodableMessageLeftInQueue(t *testing.T) {
	t.Parallel()
	bp := flow(t, "chain", ids("a", "b"), "a>b")
	r := newRig(t, rigConfig{workers: 1}, bp)
	poison := []string{"not json at all", `{"runId":"","blueprintId":"chain"}`, `["runId"]`}
	for _, body := range poison {
		r.send(body)
	}
	eventually(t, func() bool {
		for _, m := range r.sqs.Messages(r.queue) {
			if m.ReceiveCount == 0 {
				return false
			}
		}
		return true
	}, "the poison messages are received")
	// The worker is alive and still runs workflows.
	requireStatus(t, sqsadapter.StatusCompleted, r.wait(r.start("chain", nil)))
	eventually(t, func() bool { return r.sqs.Stats().Deleted == 1 }, "the run's message is deleted (its chain of two jobs ran under it)")
	var left []string
	for _, m := range r.sqs.Messages(r.queue) {
		assert.GreaterOrEqual(t, m.ReceiveCount, 1)
		left = append(left, m.Body)
	}
	assert.ElementsMatch(t, poison, left, "poison messages are left for the redrive policy, not deleted")
	assert.Zero(t, r.sqs.Stats().Redriven)
}

func TestJobForUnknownNodeFailsRun(t *testing.T) {
	t.Parallel()
	for _, node := range []string{"ghost", "fb"} {
		t.Run(node, func(t *testing.T) {
			t.Parallel()
			bp := flow(t, "unknown", ids("s", fnode("a", `"config":{"fallback":"fb"}`), "fb"), "s>a")
			release := newGate()
			r := newRig(t, rigConfig{nodes: map[string]sqsadapter.NodeFunc{"s": blockUntil(release, nil)}}, bp)
			openAtEnd(t, release)
			id := r.start("unknown", nil)
			r.send(jobBody(t, sqsadapter.Job{RunID: id, BlueprintID: "unknown", NodeID: node}))
			st := r.wait(id)
			requireStatus(t, sqsadapter.StatusFailed, st)
			assert.Equal(t, node, st.FailedNode)
			assert.Contains(t, st.Error, "unknown node")
			assert.Contains(t, st.Error, `"`+node+`"`)
			release.open()
			eventually(t, r.queueEmpty, "the run's messages are dropped")
			assert.Zero(t, r.log.count("a"))
			assert.Zero(t, r.log.count("fb"))
		})
	}
}

func TestHandleJobInvalid(t *testing.T) {
	t.Parallel()
	bp := flow(t, "known", ids("a"))
	r := newRig(t, rigConfig{noWorkers: true}, bp, flow(t, "other", ids("a")))
	id := r.start("known", nil)
	cases := []struct {
		name string
		job  sqsadapter.Job
		want error
	}{
		{"missing runId", sqsadapter.Job{BlueprintID: "known", NodeID: "a"}, sqsadapter.ErrInvalidJob},
		{"blank runId", sqsadapter.Job{RunID: "  ", BlueprintID: "known", NodeID: "a"}, sqsadapter.ErrInvalidJob},
		{"missing blueprintId", sqsadapter.Job{RunID: id, NodeID: "a"}, sqsadapter.ErrInvalidJob},
		{"missing nodeId", sqsadapter.Job{RunID: id, BlueprintID: "known"}, sqsadapter.ErrInvalidJob},
		{"input is not JSON", sqsadapter.Job{RunID: id, BlueprintID: "known", NodeID: "a", Input: []byte("{oops")}, sqsadapter.ErrInvalidJob},
		{"unregistered blueprint version", sqsadapter.Job{RunID: id, BlueprintID: "known", NodeID: "a", BlueprintVersion: "v9"}, sqsadapter.ErrUnknownBlueprint},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var err error
			require.NotPanics(t, func() { err = r.client.HandleJob(t.Context(), c.job) })
			assert.ErrorIs(t, err, c.want)
		})
	}
	assert.Zero(t, r.log.count("a"), "no invalid job ran a node")
	assert.Equal(t, sqsadapter.StatusRunning, r.status(id).Status)
}

// With WithRunCheck, a job for a run that does not exist (never created,
// or expired) runs no node code and writes nothing.
func TestJobForUnknownRunRunsNothing(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigConfig{noWorkers: true, opts: []sqsadapter.Option{sqsadapter.WithRunCheck()}}, flow(t, "known", ids("a", "b"), "a>b"))
	err := r.client.HandleJob(t.Context(), sqsadapter.Job{RunID: "no-such-run", BlueprintID: "known", NodeID: "a"})
	assert.ErrorIs(t, err, sqsadapter.ErrRunNotFound)
	assert.Zero(t, r.log.count("a"), "a node ran for a run that does not exist")
	assert.Empty(t, r.nodeState("no-such-run", "a"), "a node record was written for a run that does not exist")
	assert.Zero(t, r.sqs.Stats().Sent, "successors were scheduled for a run that does not exist")
}

// With WithRunCheck, a job naming a registered blueprint other than its run's is refused, like
// one naming an unregistered blueprint: the run's nodes are its blueprint's.
func TestJobForAnotherBlueprintRefused(t *testing.T) {
	t.Parallel()
	known := flow(t, "known", ids("a", "b"), "a>b")
	r := newRig(t, rigConfig{noWorkers: true, opts: []sqsadapter.Option{sqsadapter.WithRunCheck()}}, known, flow(t, "other", ids("a")))
	id := r.start("known", nil)
	err := r.client.HandleJob(t.Context(), sqsadapter.Job{RunID: id, BlueprintID: "other", NodeID: "a"})
	assert.ErrorIs(t, err, sqsadapter.ErrUnknownBlueprint)
	assert.Zero(t, r.log.count("a"), "the other blueprint's node ran in the run")
	assert.Equal(t, sqsadapter.StatusRunning, r.status(id).Status)
}

func TestBadOutputFailsRun(t *testing.T) {
	t.Parallel()
	big := strings.Repeat("x", 500<<10)
	cases := []struct {
		name   string
		fn     sqsadapter.NodeFunc
		reason string
	}{
		{"channel output", output(make(chan int), ""), "JSON"},
		{"function inside the output", output(map[string]any{"f": func() {}}, ""), "JSON"},
		{"NaN inside the output", output(map[string]any{"x": math.NaN()}, ""), "JSON"},
		{"NaN output", output(math.NaN(), ""), "JSON"},
		{"infinite output", output(math.Inf(1), ""), "JSON"},
		{"output over 400 KB", output(big, ""), "exceeds"},
		{"context write over 400 KB", func(_ context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
			return sqsadapter.NodeResult{Output: "small"}, nc.Set("huge", big)
		}, "exceeds"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			bp := flow(t, "bad", ids("s", "bad", "after"), "s>bad", "bad>after")
			r := newRig(t, rigConfig{workers: 1, nodes: map[string]sqsadapter.NodeFunc{"bad": c.fn}}, bp)
			id := r.start("bad", nil)
			st := r.wait(id)
			requireStatus(t, sqsadapter.StatusFailed, st)
			assert.Equal(t, "bad", st.FailedNode)
			assert.Contains(t, st.Error, `"bad"`)
			assert.Contains(t, st.Error, c.reason)
			assert.NotContains(t, st.Error, "abandoned")
			assert.Equal(t, 1, r.log.count("bad"))
			assert.Zero(t, r.log.count("after"))
			assert.NotContains(t, st.Context, "huge")
			eventually(t, r.queueEmpty, "the failed run's messages are deleted")
		})
	}
}

// A node ctx error other than its own timeout is an ordinary failure.
func TestNodeErrorIsReportedWithAttempt(t *testing.T) {
	t.Parallel()
	bp := flow(t, "err", ids(fnode("x", `"config":{"maxRetries":2}`)))
	sentinel := errors.New("downstream unavailable")
	r := newRig(t, rigConfig{nodes: map[string]sqsadapter.NodeFunc{"x": func(context.Context, *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
		return sqsadapter.NodeResult{}, sentinel
	}}}, bp)
	st := r.wait(r.start("err", nil))
	requireStatus(t, sqsadapter.StatusFailed, st)
	assert.Contains(t, st.Error, "2 attempt")
	assert.Contains(t, st.Error, sentinel.Error())
}
