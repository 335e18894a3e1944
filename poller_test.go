package sqsadapter_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowcraft/sqsadapter"
	"github.com/flowcraft/sqsadapter/sqsadaptertest"
)

// pollCounter counts one worker's ReceiveMessage calls: how many were
// outstanding at once, and how many came back empty, and of those how many
// before their wait time had passed.
type pollCounter struct {
	*sqsadaptertest.SQS

	mu                                 sync.Mutex
	outstanding, maxOutstanding        int
	receives, empty, emptyBeforeTheEnd int
	deletedAt                          []time.Time   // one per DeleteMessageBatch call
	waits                              map[int32]int // WaitTimeSeconds asked → receives
}

func (c *pollCounter) DeleteMessageBatch(ctx context.Context, in *sqs.DeleteMessageBatchInput, opts ...func(*sqs.Options)) (*sqs.DeleteMessageBatchOutput, error) {
	c.mu.Lock()
	c.deletedAt = append(c.deletedAt, time.Now())
	c.mu.Unlock()
	return c.SQS.DeleteMessageBatch(ctx, in, opts...)
}

func (c *pollCounter) ReceiveMessage(ctx context.Context, in *sqs.ReceiveMessageInput, opts ...func(*sqs.Options)) (*sqs.ReceiveMessageOutput, error) {
	c.mu.Lock()
	if c.waits == nil {
		c.waits = map[int32]int{}
	}
	c.waits[in.WaitTimeSeconds]++
	c.outstanding++
	c.maxOutstanding = max(c.maxOutstanding, c.outstanding)
	c.mu.Unlock()
	begin := time.Now()
	out, err := c.SQS.ReceiveMessage(ctx, in, opts...)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.outstanding--
	if err == nil {
		c.receives++
		if len(out.Messages) == 0 {
			c.empty++
			if time.Since(begin) < time.Duration(in.WaitTimeSeconds)*time.Second {
				c.emptyBeforeTheEnd++
			}
		}
	}
	return out, err
}

// pollWorld is an in-memory queue and stores with workers counted by
// pollCounter, at the default wait time (20s) and SQS's time unit, for use
// inside a synctest bubble.
type pollWorld struct {
	sqs      *sqsadaptertest.SQS
	queue    string
	client   *sqsadapter.SqsAdapter
	workers  []*sqsadapter.SqsAdapter
	counters []*pollCounter
	errs     chan error

	mu       sync.Mutex
	returned []time.Time // when node functions returned
}

func newPollWorld(t *testing.T, workers int, bps ...*sqsadapter.Blueprint) *pollWorld {
	t.Helper()
	return newPollWorldWith(t, workers, nil, bps...)
}

// newPollWorldWith is newPollWorld with more options for the workers, and
// a node function that records when each node returned.
func newPollWorldWith(t *testing.T, workers int, opts []sqsadapter.Option, bps ...*sqsadapter.Blueprint) *pollWorld {
	t.Helper()
	return newPollWorldOn(t, sqsadaptertest.QueueOptions{VisibilityTimeout: 30 * time.Second}, workers, opts, bps...)
}

// newPollWorldOn is newPollWorldWith on a queue with the given options.
func newPollWorldOn(t *testing.T, q sqsadaptertest.QueueOptions, workers int, opts []sqsadapter.Option, bps ...*sqsadapter.Blueprint) *pollWorld {
	t.Helper()
	w := &pollWorld{sqs: sqsadaptertest.NewSQS(), errs: make(chan error, workers)}
	w.queue = w.sqs.CreateQueue("jobs", q)
	contexts, coord := sqsadaptertest.NewContextStore(), sqsadaptertest.NewCoordinationStore()
	step := func(_ context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
		w.mu.Lock()
		w.returned = append(w.returned, time.Now())
		w.mu.Unlock()
		return sqsadapter.NodeResult{Output: nc.NodeID}, nil
	}
	adapter := func(c sqsadapter.SQSClient, more ...sqsadapter.Option) *sqsadapter.SqsAdapter {
		a, err := sqsadapter.NewSqsAdapter(append([]sqsadapter.Option{
			sqsadapter.WithSQSClient(c), sqsadapter.WithQueueURL(w.queue),
			sqsadapter.WithContextStore(contexts), sqsadapter.WithCoordinationStore(coord),
			sqsadapter.WithRegistry(sqsadapter.NodeRegistry{"step": step}), sqsadapter.WithBlueprints(bps...),
			sqsadapter.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))}, more...)...)
		require.NoError(t, err)
		return a
	}
	w.client = adapter(w.sqs)
	for range workers {
		c := &pollCounter{SQS: w.sqs}
		a := adapter(c, opts...)
		w.counters = append(w.counters, c)
		w.workers = append(w.workers, a)
		go func() { w.errs <- a.Run(context.Background()) }()
	}
	return w
}

func (w *pollWorld) shutdown(t *testing.T) {
	t.Helper()
	for _, a := range w.workers {
		require.NoError(t, a.Shutdown(context.Background()))
	}
	for range w.workers {
		require.NoError(t, <-w.errs)
	}
}

// An idle worker keeps one long poll waiting: one ReceiveMessage per wait
// time (20s), 180 an hour, each empty only at the end of its wait.
func TestPollIdleWorkerCost(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		w := newPollWorld(t, 3, mustParse(t, `{"id":"one","nodes":[{"id":"a","uses":"step"}],"edges":[]}`))
		time.Sleep(time.Hour - time.Second) // polls begin at 0s, 20s, … 3580s
		synctest.Wait()
		w.shutdown(t)
		for i, c := range w.counters {
			assert.Equal(t, 1, c.maxOutstanding, "worker %d: long polls outstanding at once", i)
			assert.Equal(t, 179, c.empty, "worker %d: empty receives (the 180th was cancelled by Shutdown)", i)
			assert.Zero(t, c.emptyBeforeTheEnd, "worker %d: empty receives before the wait time passed", i)
		}
		assert.Equal(t, 3*180, w.sqs.Calls()[sqsadaptertest.OpReceiveMessage], "ReceiveMessage calls of 3 idle workers in an hour")
	})
}

// Under load, each worker has at most one ReceiveMessage outstanding, and a
// receive comes back empty only when nothing arrived for its whole wait.
func TestPollOneReceiverPerWorker(t *testing.T) {
	t.Parallel()
	chain := pollChain(10)
	fan := mustParse(t, `{"id":"fanout10","nodes":[{"id":"start","uses":"step"},`+pollFanNodes(10)+
		`{"id":"join","uses":"step","config":{"joinStrategy":"all"}}],"edges":[`+pollFanEdges(10)+`]}`)
	synctest.Test(t, func(t *testing.T) {
		w := newPollWorld(t, 3, mustParse(t, chain), fan)
		ctx := context.Background()
		var ids []string
		for i := range 20 {
			bp := []string{"chain10", "fanout10"}[i%2]
			id, err := w.client.StartRun(ctx, bp, nil)
			require.NoError(t, err)
			ids = append(ids, id)
		}
		for _, id := range ids {
			st, err := w.client.WaitForRun(ctx, id)
			require.NoError(t, err)
			require.Equal(t, sqsadapter.StatusCompleted, st.Status, st.Error)
		}
		time.Sleep(time.Minute) // idle again: one empty receive per worker per 20s
		synctest.Wait()
		w.shutdown(t)
		received := 0
		for i, c := range w.counters {
			assert.Equal(t, 1, c.maxOutstanding, "worker %d: long polls outstanding at once", i)
			assert.Zero(t, c.emptyBeforeTheEnd, "worker %d: empty receives before the wait time passed", i)
			assert.LessOrEqual(t, c.empty, 3, "worker %d: empty receives (a minute idle: 3)", i)
			received += c.receives - c.empty
		}
		// A chain10 run is one message (its nodes run inline under its
		// first job's); a fanout10 run is one per node.
		assert.Equal(t, 10*1+10*12, w.sqs.Stats().Received, "deliveries: one per message")
		assert.LessOrEqual(t, received, 10*1+10*12, "non-empty receives")
	})
}

func pollChain(n int) string {
	var nodes, edges []string
	for i := range n {
		nodes = append(nodes, fmt.Sprintf(`{"id":"c%d","uses":"step"}`, i))
		if i > 0 {
			edges = append(edges, fmt.Sprintf(`{"source":"c%d","target":"c%d"}`, i-1, i))
		}
	}
	return fmt.Sprintf(`{"id":"chain%d","nodes":[%s],"edges":[%s]}`, n, strings.Join(nodes, ","), strings.Join(edges, ","))
}

func pollFanNodes(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, `{"id":"f%d","uses":"step"},`, i)
	}
	return b.String()
}

func pollFanEdges(n int) string {
	var edges []string
	for i := range n {
		edges = append(edges, fmt.Sprintf(`{"source":"start","target":"f%d"},{"source":"f%d","target":"join"}`, i, i))
	}
	return strings.Join(edges, ",")
}

// A finished job's delete waits up to the delete linger (1s by default)
// for company, but never more than a sixth of the visibility timeout: the
// job's heartbeat has stopped, and its message must not come back.
func TestPollDeleteLingerWithinVisibility(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		vis, want time.Duration
	}{{30 * time.Second, time.Second}, {time.Second, time.Second / 6}, {3 * time.Second, time.Second / 2}} {
		t.Run(c.vis.String(), func(t *testing.T) {
			t.Parallel()
			synctest.Test(t, func(t *testing.T) {
				w := newPollWorldWith(t, 1, []sqsadapter.Option{sqsadapter.WithVisibilityTimeout(c.vis)},
					mustParse(t, `{"id":"one","nodes":[{"id":"a","uses":"step"}],"edges":[]}`))
				id, err := w.client.StartRun(context.Background(), "one", nil)
				require.NoError(t, err)
				_, err = w.client.WaitForRun(context.Background(), id)
				require.NoError(t, err)
				time.Sleep(2 * time.Second)
				synctest.Wait()
				w.shutdown(t)
				require.Len(t, w.returned, 1)
				require.Len(t, w.counters[0].deletedAt, 1)
				assert.Equal(t, c.want, w.counters[0].deletedAt[0].Sub(w.returned[0]), "from the node's return to its delete")
				assert.Equal(t, 1, w.sqs.Stats().Received, "deliveries")
			})
		})
	}
}

// Shutdown does not wait out the delete linger: a job that finished just
// before is deleted at once.
func TestShutdownDeletesWithoutLinger(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		w := newPollWorld(t, 1, mustParse(t, `{"id":"one","nodes":[{"id":"a","uses":"step"}],"edges":[]}`))
		id, err := w.client.StartRun(context.Background(), "one", nil)
		require.NoError(t, err)
		_, err = w.client.WaitForRun(context.Background(), id)
		require.NoError(t, err)
		require.Empty(t, w.counters[0].deletedAt, "the delete is still lingering")
		began := time.Now()
		w.shutdown(t)
		assert.Zero(t, time.Since(began), "Shutdown waited")
		require.Len(t, w.counters[0].deletedAt, 1)
		visible, inFlight, _ := w.sqs.Len(w.queue)
		assert.Zero(t, visible+inFlight, "messages left")
	})
}

// SQS counts the wait in whole seconds: a fraction is rounded up, not down
// to 0 (which would leave the wait to the queue, maybe short polling). With
// no wait of its own on a short-polling queue, an idle worker pauses
// PollBackoffMin (100ms) after each empty receive instead of spinning.
func TestPollWaitTime(t *testing.T) {
	t.Parallel()
	one := `{"id":"one","nodes":[{"id":"a","uses":"step"}],"edges":[]}`
	t.Run("a fraction of a second is rounded up", func(t *testing.T) {
		t.Parallel()
		synctest.Test(t, func(t *testing.T) {
			w := newPollWorldWith(t, 1, []sqsadapter.Option{sqsadapter.WithWaitTime(1500 * time.Millisecond)}, mustParse(t, one))
			time.Sleep(10*time.Second - time.Millisecond)
			synctest.Wait()
			w.shutdown(t)
			assert.Equal(t, map[int32]int{2: 5}, w.counters[0].waits, "WaitTimeSeconds → receives in 10s")
		})
	})
	t.Run("no wait on a short-polling queue", func(t *testing.T) {
		t.Parallel()
		synctest.Test(t, func(t *testing.T) {
			w := newPollWorldOn(t, sqsadaptertest.QueueOptions{}, 1, []sqsadapter.Option{sqsadapter.WithWaitTime(0)}, mustParse(t, one))
			time.Sleep(10*time.Second - time.Millisecond)
			synctest.Wait()
			w.shutdown(t)
			assert.Equal(t, map[int32]int{0: 100}, w.counters[0].waits, "WaitTimeSeconds → receives in 10s")
			assert.Equal(t, 100, w.counters[0].empty)
		})
	})
}
