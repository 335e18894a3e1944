package sqsadapter_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowcraft/sqsadapter"
	"github.com/flowcraft/sqsadapter/sqsadaptertest"
)

// chainWorld is a queue and stores shared by adapters with different
// settings, driven by hand: each message is received, handled with
// HandleJob and deleted when done, as a poller would.
type chainWorld struct {
	t        *testing.T
	sqs      *sqsadaptertest.SQS
	queue    string
	contexts *sqsadaptertest.ContextStore
	coord    *sqsadaptertest.CoordinationStore
	bps      []*sqsadapter.Blueprint

	mu    sync.Mutex
	calls map[string][]any // node id -> the input of each call
	delay time.Duration    // how long each node function takes
}

const chainVisibility = 5 * unit

func newChainWorld(t *testing.T, bps ...string) *chainWorld {
	w := &chainWorld{t: t, sqs: sqsadaptertest.NewSQS(), contexts: sqsadaptertest.NewContextStore(),
		coord: sqsadaptertest.NewCoordinationStore(), calls: map[string][]any{}}
	w.queue = w.sqs.CreateQueue("chain", sqsadaptertest.QueueOptions{VisibilityTimeout: chainVisibility, VisibilityUnit: unit})
	for _, s := range bps {
		w.bps = append(w.bps, mustParse(t, s))
	}
	return w
}

// adapter is a worker of the world with opts.
func (w *chainWorld) adapter(opts ...sqsadapter.Option) *sqsadapter.SqsAdapter {
	node := func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
		w.mu.Lock()
		w.calls[nc.NodeID] = append(w.calls[nc.NodeID], nc.Input)
		d := w.delay
		w.mu.Unlock()
		time.Sleep(d)
		return sqsadapter.NodeResult{Output: map[string]any{"by": nc.NodeID, "in": nc.Input}}, nil
	}
	a, err := sqsadapter.NewSqsAdapter(append([]sqsadapter.Option{
		sqsadapter.WithSQSClient(w.sqs), sqsadapter.WithQueueURL(w.queue),
		sqsadapter.WithContextStore(w.contexts), sqsadapter.WithCoordinationStore(w.coord),
		sqsadapter.WithRegistry(sqsadapter.NodeRegistry{"n": node}), sqsadapter.WithBlueprints(w.bps...),
		sqsadapter.WithLogger(testLogger()), sqsadapter.WithSQSTimeUnit(unit), sqsadapter.WithVisibilityTimeout(chainVisibility),
	}, opts...)...)
	require.NoError(w.t, err)
	return a
}

// drain handles messages with a until the queue is empty (at most max
// receives) and returns how many messages were done.
func (w *chainWorld) drain(a *sqsadapter.SqsAdapter, max int) (done int) {
	w.t.Helper()
	for range max {
		out, err := w.sqs.ReceiveMessage(w.t.Context(), &sqs.ReceiveMessageInput{QueueUrl: aws.String(w.queue), MaxNumberOfMessages: 1})
		require.NoError(w.t, err)
		if len(out.Messages) == 0 {
			if v, f, d := w.sqs.Len(w.queue); v+f+d == 0 {
				return done
			}
			time.Sleep(unit)
			continue
		}
		m := out.Messages[0]
		job, err := sqsadapter.DecodeJob([]byte(aws.ToString(m.Body)))
		require.NoError(w.t, err)
		if err := a.HandleJob(w.t.Context(), job); err != nil {
			continue // left to reappear, as a poller would
		}
		_, err = w.sqs.DeleteMessage(w.t.Context(), &sqs.DeleteMessageInput{QueueUrl: aws.String(w.queue), ReceiptHandle: m.ReceiptHandle})
		require.NoError(w.t, err)
		done++
	}
	w.t.Fatalf("the queue was not drained after %d receives", max)
	return done
}

// receive receives the one message the queue holds and decodes its job.
func (w *chainWorld) receive() (sqsadapter.Job, types.Message) {
	w.t.Helper()
	out, err := w.sqs.ReceiveMessage(w.t.Context(), &sqs.ReceiveMessageInput{QueueUrl: aws.String(w.queue)})
	require.NoError(w.t, err)
	require.Len(w.t, out.Messages, 1)
	job, err := sqsadapter.DecodeJob([]byte(aws.ToString(out.Messages[0].Body)))
	require.NoError(w.t, err)
	return job, out.Messages[0]
}

func (w *chainWorld) count(id string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.calls[id])
}

// chainOf is a chain of n nodes c0 -> c1 -> ... using "n", with spare
// attempts for the attempts that crashes abandon.
func chainOf(id string, n int) string {
	return strings.ReplaceAll(chainBlueprint(id, n), `"uses":"step"`, `"uses":"n","config":{"maxRetries":3}`)
}

// A chain runs under its first job's message: one message per run, each
// node once, each node's input its predecessor's output; the same run
// with every job sent ends with the same context.
func TestChainRunsUnderOneMessage(t *testing.T) {
	t.Parallel()
	w := newChainWorld(t, chainOf("ch", 10))
	final := map[string]map[string]any{}
	for _, mode := range []struct {
		name string
		opts []sqsadapter.Option
		msgs int
	}{{"inline", []sqsadapter.Option{untimedChains}, 1}, {"sent", noChains, 10}} {
		a := w.adapter(mode.opts...)
		sentBefore := w.sqs.Stats().Sent
		id, err := a.StartRun(t.Context(), "ch", map[string]any{"_inputs.c0": "go"})
		require.NoError(t, err)
		assert.Equal(t, mode.msgs, w.drain(a, 100), "%s: messages handled", mode.name)
		assert.Equal(t, mode.msgs, w.sqs.Stats().Sent-sentBefore, "%s: messages sent", mode.name)
		st, err := a.GetRun(t.Context(), id)
		require.NoError(t, err)
		requireStatus(t, sqsadapter.StatusCompleted, st)
		for i := range 10 {
			assert.Equal(t, 1, st.Nodes[fmt.Sprintf("c%d", i)].Attempts, "%s: c%d", mode.name, i)
		}
		final[mode.name] = st.Context
	}
	for i := range 10 {
		assert.Equal(t, 2, w.count(fmt.Sprintf("c%d", i)), "c%d: once per run", i)
	}
	w.mu.Lock()
	for i := 1; i < 10; i++ {
		in := w.calls[fmt.Sprintf("c%d", i)]
		assert.Equal(t, in[1], in[0], "c%d: the same input inline and sent", i)
		assert.Equal(t, fmt.Sprintf("c%d", i-1), in[0].(map[string]any)["by"], "c%d's input: its predecessor's output", i)
	}
	w.mu.Unlock()
	assert.Equal(t, final["sent"], final["inline"], "the final context")
}

// A chain stops at its bounds and sends its next job: ChainNodes nodes
// after the message's own, or once it has run ChainTime.
func TestChainBounds(t *testing.T) {
	t.Parallel()
	t.Run("nodes", func(t *testing.T) {
		t.Parallel()
		w := newChainWorld(t, chainOf("ch", 10))
		a := w.adapter(sqsadapter.WithTuning(sqsadapter.Tuning{ChainNodes: 3, ChainTime: time.Hour}))
		_, err := a.StartRun(t.Context(), "ch", nil)
		require.NoError(t, err)
		assert.Equal(t, 3, w.drain(a, 100), "c0-c3, c4-c7, c8-c9")
	})
	t.Run("time", func(t *testing.T) {
		t.Parallel()
		w := newChainWorld(t, chainOf("ch", 6))
		w.delay = 10 * unit
		// Each node takes 10 units: the chain goes on after the first
		// (unless handling it took 5 units more) and stops after the
		// second (20 units > 15).
		a := w.adapter(sqsadapter.WithTuning(sqsadapter.Tuning{ChainTime: 15 * unit}))
		_, err := a.StartRun(t.Context(), "ch", nil)
		require.NoError(t, err)
		msgs := w.drain(a, 100)
		assert.GreaterOrEqual(t, msgs, 3, "at most two nodes a message")
		assert.Less(t, msgs, 6, "more than one node in some message (a machine this slow is not expected)")
	})
	t.Run("off", func(t *testing.T) {
		t.Parallel()
		w := newChainWorld(t, chainOf("ch", 4))
		a := w.adapter(noChains...)
		_, err := a.StartRun(t.Context(), "ch", nil)
		require.NoError(t, err)
		assert.Equal(t, 4, w.drain(a, 100))
	})
}

// A worker that dies anywhere in a chain leaves its message, whose
// redelivery replays the committed steps and goes on: every node commits
// once, and runs again only if it died between running and committing.
func TestChainCrashes(t *testing.T) {
	t.Parallel()
	for _, step := range []string{"receive", "acquired", "commit", "committed", "advanced"} {
		t.Run(step, func(t *testing.T) {
			t.Parallel()
			w := newChainWorld(t, chainOf("ch", 8))
			crashed := false
			a := w.adapter(untimedChains, sqsadapter.WithCrashHook(func(s string, j sqsadapter.Job) bool {
				if s == step && j.NodeID == "c4" && !crashed {
					crashed = true
					return true
				}
				return false
			}))
			id, err := a.StartRun(t.Context(), "ch", nil)
			require.NoError(t, err)
			assert.Equal(t, 1, w.drain(a, 200), "the message is done on its redelivery")
			require.True(t, crashed)
			st, err := a.GetRun(t.Context(), id)
			require.NoError(t, err)
			requireStatus(t, sqsadapter.StatusCompleted, st)
			for i := range 8 {
				n := fmt.Sprintf("c%d", i)
				want := 1
				if n == "c4" && step == "commit" {
					want = 2 // ran, died before its commit: run again
				}
				assert.Equal(t, want, w.count(n), "%s runs", n)
			}
			assert.Equal(t, 1, w.sqs.Stats().Sent, "no job sent: the redelivery carries the rest of the chain")
		})
	}
}

// A chain one worker ran inline is replayed by a worker that runs none:
// it follows the committed steps, whatever its settings, and sends the
// first job that did not run.
func TestChainReplayedByWorkerWithoutChains(t *testing.T) {
	t.Parallel()
	w := newChainWorld(t, chainOf("ch", 8))
	crashed := false
	first := w.adapter(untimedChains, sqsadapter.WithCrashHook(func(s string, j sqsadapter.Job) bool {
		if s == "committed" && j.NodeID == "c5" {
			crashed = true
			return true // every time: this worker never gets past it
		}
		return false
	}))
	id, err := first.StartRun(t.Context(), "ch", nil)
	require.NoError(t, err)
	job, _ := w.receive()
	require.Error(t, first.HandleJob(t.Context(), job))
	require.True(t, crashed)
	for i := range 6 {
		require.Equal(t, 1, w.count(fmt.Sprintf("c%d", i)))
	}
	second := w.adapter(noChains...)
	assert.Equal(t, 3, w.drain(second, 200), "the redelivered message, then c6's and c7's")
	st, err := second.GetRun(t.Context(), id)
	require.NoError(t, err)
	requireStatus(t, sqsadapter.StatusCompleted, st)
	for i := range 8 {
		assert.Equal(t, 1, w.count(fmt.Sprintf("c%d", i)), "c%d runs", i)
	}
}

// A duplicate of a chain's message after the run finished runs nothing
// and sends nothing.
func TestChainDuplicateAfterFinish(t *testing.T) {
	t.Parallel()
	w := newChainWorld(t, chainOf("ch", 6))
	a := w.adapter(untimedChains)
	id, err := a.StartRun(t.Context(), "ch", nil)
	require.NoError(t, err)
	job, _ := w.receive()
	require.NoError(t, a.HandleJob(t.Context(), job))
	require.NoError(t, a.HandleJob(t.Context(), job), "the duplicate")
	st, err := a.GetRun(t.Context(), id)
	require.NoError(t, err)
	requireStatus(t, sqsadapter.StatusCompleted, st)
	for i := range 6 {
		assert.Equal(t, 1, w.count(fmt.Sprintf("c%d", i)), "c%d runs", i)
	}
	assert.Equal(t, 1, w.sqs.Stats().Sent)
}

// Under a caller's deadline (HandleJob in a Lambda function), a chain goes
// on only with a job whose node's timeout fits in what is left: here none
// does (no node timeout is set: the default is 5 minutes), so each node
// gets a delivery of its own and fits in it. Chained, the second would be
// cut by the deadline, its attempt counted, and the run failed.
func TestChainRespectsDeadline(t *testing.T) {
	t.Parallel()
	w := newChainWorld(t, `{"id":"dl","nodes":[{"id":"c0","uses":"slow"},{"id":"c1","uses":"slow"}],"edges":[{"source":"c0","target":"c1"}]}`)
	slow := func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
		select {
		case <-time.After(map[string]time.Duration{"c0": 150 * time.Millisecond, "c1": 300 * time.Millisecond}[nc.NodeID]):
			return sqsadapter.NodeResult{Output: nc.NodeID}, nil
		case <-ctx.Done():
			return sqsadapter.NodeResult{}, ctx.Err()
		}
	}
	a := w.adapter(sqsadapter.WithRegistry(sqsadapter.NodeRegistry{"slow": slow}))
	id, err := a.StartRun(t.Context(), "dl", nil)
	require.NoError(t, err)
	for range 10 {
		out, err := w.sqs.ReceiveMessage(t.Context(), &sqs.ReceiveMessageInput{QueueUrl: aws.String(w.queue)})
		require.NoError(t, err)
		if len(out.Messages) == 0 {
			break
		}
		job, err := sqsadapter.DecodeJob([]byte(aws.ToString(out.Messages[0].Body)))
		require.NoError(t, err)
		ctx, cancel := context.WithTimeout(t.Context(), 400*time.Millisecond) // the invocation's time
		err = a.HandleJob(ctx, job)
		cancel()
		require.NoError(t, err)
		_, err = w.sqs.DeleteMessage(t.Context(), &sqs.DeleteMessageInput{QueueUrl: aws.String(w.queue), ReceiptHandle: out.Messages[0].ReceiptHandle})
		require.NoError(t, err)
	}
	st, err := a.GetRun(t.Context(), id)
	require.NoError(t, err)
	requireStatus(t, sqsadapter.StatusCompleted, st)
	assert.Equal(t, 2, w.sqs.Stats().Sent, "c1 was sent, not chained")
}

// A copy of a message whose chain ran and was cut (its next job sent)
// follows the chain into that job, which another message carries and a
// worker is running: it is done there, instead of being retried for as
// long as that job runs (each time one more receive toward the dead-letter
// queue).
func TestChainCopyEndsAtAnotherMessagesJob(t *testing.T) {
	t.Parallel()
	w := newChainWorld(t, chainOf("ch", 3))
	release := make(chan struct{})
	var once sync.Once
	openRelease := func() { once.Do(func() { close(release) }) }
	defer openRelease()
	long := func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
		w.mu.Lock()
		w.calls[nc.NodeID] = append(w.calls[nc.NodeID], nc.Input)
		w.mu.Unlock()
		if nc.NodeID == "c2" {
			<-release
		}
		return sqsadapter.NodeResult{Output: nc.NodeID}, nil
	}
	reg := sqsadapter.WithRegistry(sqsadapter.NodeRegistry{"n": long})
	cut := w.adapter(reg, sqsadapter.WithTuning(sqsadapter.Tuning{ChainNodes: 1})) // as a ChainTime cut would
	id, err := cut.StartRun(t.Context(), "ch", nil)
	require.NoError(t, err)
	job, m := w.receive()
	body := aws.ToString(m.Body)
	require.NoError(t, cut.HandleJob(t.Context(), job), "c0, then c1 inline; c2 sent")
	_, err = w.sqs.DeleteMessage(t.Context(), &sqs.DeleteMessageInput{QueueUrl: aws.String(w.queue), ReceiptHandle: m.ReceiptHandle})
	require.NoError(t, err)

	// A worker takes c2's message and runs c2, long; then a copy of c0's
	// message arrives (a new message with the same body).
	worker := w.adapter(reg, sqsadapter.WithWaitTime(unit), sqsadapter.WithTuning(sqsadapter.Tuning{DeleteLinger: -1}))
	done := make(chan error, 1)
	go func() { done <- worker.Run(context.Background()) }()
	defer func() {
		openRelease()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		assert.NoError(t, worker.Shutdown(ctx))
		<-done
	}()
	require.Eventually(t, func() bool { return w.count("c2") == 1 }, 10*time.Second, unit, "c2 runs")
	copied, err := w.sqs.SendMessage(t.Context(), &sqs.SendMessageInput{QueueUrl: aws.String(w.queue), MessageBody: aws.String(body)})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		for _, m := range w.sqs.Messages(w.queue) {
			if m.MessageID == aws.ToString(copied.MessageId) {
				return false
			}
		}
		return true
	}, 10*time.Second, unit, "the copy is done and deleted while c2 still runs: %v", w.sqs.Messages(w.queue))
	assert.Equal(t, 1, w.count("c2"))
	openRelease()
	require.Eventually(t, func() bool {
		st, err := worker.GetRun(t.Context(), id)
		return err == nil && st.Status == sqsadapter.StatusCompleted
	}, 10*time.Second, unit)
	for i := range 3 {
		assert.Equal(t, 1, w.count(fmt.Sprintf("c%d", i)), "c%d runs", i)
	}
}
