package sqsadapter_test

import (
	"context"
	"fmt"
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

// Minimal reproductions of what the randomized classes found beyond the
// defects they were written for, driven job by job with HandleJob.

// protoRepro is one adapter over in-memory parts, driven by hand: HandleJob
// for the jobs the test chooses, drain for those in the queue.
type protoRepro struct {
	t     *testing.T
	a     *sqsadapter.SqsAdapter
	sqs   *sqsadaptertest.SQS
	queue string
	store *sqsadaptertest.ContextStore
	mu    sync.Mutex
	calls map[string]int // node function calls, by node id
}

func newProtoRepro(t *testing.T, wrap func(sqsadapter.ContextStore) sqsadapter.ContextStore, bps []*sqsadapter.Blueprint, opts ...sqsadapter.Option) *protoRepro {
	t.Helper()
	p := &protoRepro{t: t, sqs: sqsadaptertest.NewSQS(), store: sqsadaptertest.NewContextStore(), calls: map[string]int{}}
	p.queue = p.sqs.CreateQueue("repro", sqsadaptertest.QueueOptions{VisibilityUnit: unit})
	var store sqsadapter.ContextStore = p.store
	if wrap != nil {
		store = wrap(store)
	}
	fn := func(_ context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
		p.mu.Lock()
		p.calls[nc.NodeID]++
		p.mu.Unlock()
		if nc.Params["fail"] == true {
			return sqsadapter.NodeResult{}, fmt.Errorf("%s fails", nc.NodeID)
		}
		return sqsadapter.NodeResult{Output: nc.NodeID}, nil
	}
	var err error
	p.a, err = sqsadapter.NewSqsAdapter(append([]sqsadapter.Option{
		sqsadapter.WithSQSClient(p.sqs), sqsadapter.WithQueueURL(p.queue),
		sqsadapter.WithContextStore(store), sqsadapter.WithCoordinationStore(sqsadaptertest.NewCoordinationStore()),
		sqsadapter.WithRegistry(sqsadapter.NodeRegistry{"n": fn}), sqsadapter.WithBlueprints(bps...),
		sqsadapter.WithLogger(testLogger()), sqsadapter.WithSQSTimeUnit(unit), sqsadapter.WithVisibilityTimeout(5 * unit),
	}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, p.a.Shutdown(context.Background())) })
	return p
}

func (p *protoRepro) count(id string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.calls[id]
}

// handle runs one job of run runID and returns HandleJob's error.
func (p *protoRepro) handle(runID, bpID, nodeID string) error {
	return p.a.HandleJob(p.t.Context(), sqsadapter.Job{RunID: runID, BlueprintID: bpID, NodeID: nodeID})
}

// drain handles the jobs in the queue until it is empty (at most 50).
func (p *protoRepro) drain() {
	p.t.Helper()
	for range 50 {
		out, err := p.sqs.ReceiveMessage(p.t.Context(), &sqs.ReceiveMessageInput{QueueUrl: aws.String(p.queue), MaxNumberOfMessages: 10})
		require.NoError(p.t, err)
		if len(out.Messages) == 0 {
			return
		}
		for _, m := range out.Messages {
			job, err := sqsadapter.DecodeJob([]byte(aws.ToString(m.Body)))
			require.NoError(p.t, err)
			if err := p.a.HandleJob(p.t.Context(), job); err == nil {
				_, err := p.sqs.DeleteMessage(p.t.Context(), &sqs.DeleteMessageInput{QueueUrl: aws.String(p.queue), ReceiptHandle: m.ReceiptHandle})
				require.NoError(p.t, err)
			}
		}
	}
	p.t.Fatal("the queue did not drain")
}

func (p *protoRepro) status(runID string) *sqsadapter.RunStatus {
	p.t.Helper()
	st, err := p.a.GetRun(p.t.Context(), runID)
	require.NoError(p.t, err)
	return st
}

// An "any" join hears from its late predecessors after it has run: a run
// completes only when it has heard from all. Here b commits and its worker
// dies before b arrives at the join j, and b's message is lost (purged).
// The reconciler re-enqueues only committed nodes that are leaves or have
// a target without a record — b's only target, j, has run — so nobody
// records b's arrival, and the run stays running for ever.
//
// Found by TestProtocolRandomReconcile.
func TestProtocolReconcilerFindsLateAnyJoinArrival(t *testing.T) {
	bp := mustParse(t, `{"id":"late","nodes":[{"id":"a","uses":"n"},{"id":"b","uses":"n"},
	  {"id":"j","uses":"n","config":{"joinStrategy":"any"}}],
	  "edges":[{"source":"a","target":"j"},{"source":"b","target":"j"}]}`)
	var dead atomic.Bool
	p := newProtoRepro(t, nil, []*sqsadapter.Blueprint{bp}, sqsadapter.WithCrashHook(func(step string, job sqsadapter.Job) bool {
		return job.NodeID == "b" && step == "committed" && dead.CompareAndSwap(false, true)
	}))
	id, err := p.a.StartRun(t.Context(), "late", nil)
	require.NoError(t, err)
	p.sqs.Purge(p.queue) // the jobs are handled by hand
	require.NoError(t, p.handle(id, "late", "a"))
	require.NoError(t, p.handle(id, "late", "j"))
	require.Error(t, p.handle(id, "late", "b"), "b's worker dies after the commit")
	require.Equal(t, sqsadapter.StatusRunning, p.status(id).Status)

	threshold := 2 * unit
	time.Sleep(2 * threshold) // no record changes any more
	st, err := p.a.Reconcile(t.Context(), threshold)
	require.NoError(t, err)
	p.drain()
	assert.Equal(t, sqsadapter.StatusCompleted, p.status(id).Status, "after a reconcile pass %+v", st)
}

// A lost response is not a crash: when AcquireNode takes effect but its
// response is lost, the worker knows that the attempt never started. Here
// node a (one attempt, the default) is acquired, the response is lost, and
// the job is delivered again once the lease expired: the run fails with
// "attempt abandoned" although a never ran.
//
// Found by TestProtocolRandomDefaults (a sibling of a transient fault on
// the input read or on CommitNode).
func TestProtocolLostAcquireResponseCostsNoAttempt(t *testing.T) {
	bp := mustParse(t, `{"id":"one","nodes":[{"id":"a","uses":"n"}]}`)
	var lost atomic.Bool
	p := newProtoRepro(t, func(s sqsadapter.ContextStore) sqsadapter.ContextStore {
		return &protoLoseAcquire{ContextStore: s, lost: &lost}
	}, []*sqsadapter.Blueprint{bp})
	id, err := p.a.StartRun(t.Context(), "one", nil)
	require.NoError(t, err)
	p.sqs.Purge(p.queue)
	// The job sees the acquisition fail; it checks the record before
	// trying again, finds its own lease and runs the node. (Before, it gave
	// up, and the redelivery counted a second attempt.)
	if err := p.handle(id, "one", "a"); err != nil {
		require.Eventually(t, func() bool { return p.handle(id, "one", "a") == nil }, 5*time.Second, unit, "the redelivery")
	}
	require.True(t, lost.Load(), "an acquisition's response was lost")
	st := p.status(id)
	assert.Equal(t, sqsadapter.StatusCompleted, st.Status, "%s", st.Error)
	assert.Equal(t, 1, p.count("a"))
}

// protoLoseAcquire loses the response of the first AcquireNode that
// succeeds.
type protoLoseAcquire struct {
	sqsadapter.ContextStore
	lost *atomic.Bool
}

func (s *protoLoseAcquire) AcquireNode(ctx context.Context, runID, nodeID, owner string, until, now time.Time) (*store.NodeRecord, error) {
	rec, err := s.ContextStore.AcquireNode(ctx, runID, nodeID, owner, until, now)
	if err == nil && s.lost.CompareAndSwap(false, true) {
		return nil, fmt.Errorf("AcquireNode: %w after the call took effect", errProtoInjected)
	}
	return rec, err
}

// A job naming another registered blueprint than its run's is trusted by
// default (docs/semantics.md, bad input: the library's own jobs never do), and
// refused with WithRunCheck. Here run R of blueprint "p" completed; a job
// {R, "q", "x"} names q's node x. With WithRunCheck it is refused and runs
// nothing. Trusted, it runs x on R; a job {R, "p", "x"} then names a node p
// lacks whose record is committed: it is dropped (it panicked before).
//
// Found by TestProtocolRandomStrays.
func TestProtocolForeignBlueprintJobOfFinishedRun(t *testing.T) {
	p1 := mustParse(t, `{"id":"p","nodes":[{"id":"a","uses":"n"}]}`)
	q := mustParse(t, `{"id":"q","nodes":[{"id":"x","uses":"n"}]}`)
	t.Run("checked", func(t *testing.T) {
		p := newProtoRepro(t, nil, []*sqsadapter.Blueprint{p1, q}, sqsadapter.WithRunCheck())
		id, err := p.a.StartRun(t.Context(), "p", nil)
		require.NoError(t, err)
		p.drain()
		before := p.status(id)
		require.Equal(t, sqsadapter.StatusCompleted, before.Status)
		assert.ErrorIs(t, p.handle(id, "q", "x"), sqsadapter.ErrUnknownBlueprint, "refused by the run check")
		assert.Zero(t, p.count("x"), "q's node x ran on p's completed run")
		assert.Empty(t, protoSameStatus(before, p.status(id)), "the run changed")
	})
	t.Run("trusted", func(t *testing.T) {
		p := newProtoRepro(t, nil, []*sqsadapter.Blueprint{p1, q})
		id, err := p.a.StartRun(t.Context(), "p", nil)
		require.NoError(t, err)
		p.drain()
		require.Equal(t, sqsadapter.StatusCompleted, p.status(id).Status)
		require.NoError(t, p.handle(id, "q", "x"))
		var panicked any
		func() {
			defer func() { panicked = recover() }()
			assert.NoError(t, p.handle(id, "p", "x"), "a job naming a node p lacks, committed in the run, is dropped")
		}()
		assert.Nil(t, panicked, "a job naming a node p lacks, committed in the run")
		assert.Equal(t, 1, p.count("x"))
		st := p.status(id)
		assert.Equal(t, sqsadapter.StatusCompleted, st.Status)
		assert.Empty(t, st.FailedNode)
	})
}
