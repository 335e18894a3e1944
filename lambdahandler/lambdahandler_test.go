package lambdahandler_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowcraft/sqsadapter"
	"github.com/flowcraft/sqsadapter/lambdahandler"
	"github.com/flowcraft/sqsadapter/sqsadaptertest"
)

const unit = 20 * time.Millisecond

// lambdaWorld is what Lambda's SQS event source does, on the in-memory
// queue: receive a batch, call the handler with it as an SQS event, delete
// the messages the response does not report as failures.
type lambdaWorld struct {
	t     *testing.T
	sqs   *sqsadaptertest.SQS
	queue string
	a     *sqsadapter.SqsAdapter
	seen  map[string]int // message id -> times handed to the handler
}

func newLambdaWorld(t *testing.T, visibility time.Duration) *lambdaWorld {
	w := &lambdaWorld{t: t, sqs: sqsadaptertest.NewSQS(), seen: map[string]int{}}
	w.queue = w.sqs.CreateQueue("jobs", sqsadaptertest.QueueOptions{VisibilityTimeout: visibility, VisibilityUnit: unit})
	bp, err := sqsadapter.ParseBlueprint([]byte(`{"id": "order", "nodes": [
		{"id": "charge", "uses": "step"}, {"id": "ship", "uses": "step"}, {"id": "mail", "uses": "step"}],
		"edges": [{"source": "charge", "target": "ship"}, {"source": "charge", "target": "mail"}]}`))
	require.NoError(t, err)
	step := func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
		return sqsadapter.NodeResult{Output: nc.NodeID}, nil
	}
	w.a, err = sqsadapter.NewSqsAdapter(
		sqsadapter.WithSQSClient(w.sqs), sqsadapter.WithQueueURL(w.queue),
		sqsadapter.WithContextStore(sqsadaptertest.NewContextStore()),
		sqsadapter.WithCoordinationStore(sqsadaptertest.NewCoordinationStore()),
		sqsadapter.WithRegistry(sqsadapter.NodeRegistry{"step": step}), sqsadapter.WithBlueprints(bp),
		sqsadapter.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))),
	)
	require.NoError(t, err)
	return w
}

// invoke receives up to 10 messages and hands them to h as one event; it
// deletes those not reported and returns the reported ids (nil: nothing
// was received).
func (w *lambdaWorld) invoke(h lambdahandler.Handler) (received int, failed []string) {
	ctx := w.t.Context()
	out, err := w.sqs.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: aws.String(w.queue), MaxNumberOfMessages: 10})
	require.NoError(w.t, err)
	if len(out.Messages) == 0 {
		return 0, nil
	}
	var event events.SQSEvent
	for _, m := range out.Messages {
		w.seen[aws.ToString(m.MessageId)]++
		event.Records = append(event.Records, events.SQSMessage{
			MessageId: aws.ToString(m.MessageId), ReceiptHandle: aws.ToString(m.ReceiptHandle), Body: aws.ToString(m.Body),
			EventSource: "aws:sqs",
		})
	}
	resp, err := h(ctx, event)
	require.NoError(w.t, err)
	reported := map[string]bool{}
	for _, f := range resp.BatchItemFailures {
		reported[f.ItemIdentifier] = true
		failed = append(failed, f.ItemIdentifier)
	}
	for _, m := range event.Records {
		if !reported[m.MessageId] {
			_, err := w.sqs.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: aws.String(w.queue), ReceiptHandle: aws.String(m.ReceiptHandle)})
			require.NoError(w.t, err)
		}
	}
	return len(event.Records), failed
}

func (w *lambdaWorld) send(body string) string {
	out, err := w.sqs.SendMessage(w.t.Context(), &sqs.SendMessageInput{QueueUrl: aws.String(w.queue), MessageBody: aws.String(body)})
	require.NoError(w.t, err)
	return aws.ToString(out.MessageId)
}

// A batch with jobs that are done and two that are not (a body that is no
// job, a job of a blueprint the function lacks): the two are reported as
// batch item failures and come back; the others are deleted and never
// handed to the handler again, and every run completes.
func TestHandlerReportsBatchItemFailures(t *testing.T) {
	t.Parallel()
	w := newLambdaWorld(t, 5*unit)
	h := lambdahandler.New(w.a, lambdahandler.WithConcurrency(3))
	var runs []string
	for range 4 {
		id, err := w.a.StartRun(t.Context(), "order", nil)
		require.NoError(t, err)
		runs = append(runs, id)
	}
	poison := w.send("not a job")
	ghost := w.send(`{"runId":"r-1","blueprintId":"ghost","nodeId":"a","blueprintVersion":"v9"}`)
	bad := map[string]bool{poison: true, ghost: true}

	// The first batch holds the 4 start jobs and the 2 bad messages.
	n, failed := w.invoke(h)
	require.Equal(t, 6, n)
	assert.ElementsMatch(t, []string{poison, ghost}, failed, "exactly the two bad messages are reported")

	// Lambda goes on with the rest: the successors' jobs, and the bad
	// messages again once their visibility timeout passes.
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		done := true
		for _, id := range runs {
			st, err := w.a.GetRun(t.Context(), id)
			require.NoError(t, err)
			done = done && st.Status == sqsadapter.StatusCompleted
		}
		if done && w.seen[poison] >= 2 && w.seen[ghost] >= 2 {
			break
		}
		if n, failed := w.invoke(h); n > 0 {
			for _, id := range failed {
				assert.True(t, bad[id], "message %s reported, but its job is good", id)
			}
		} else {
			time.Sleep(unit)
		}
	}
	for _, id := range runs {
		st, err := w.a.GetRun(t.Context(), id)
		require.NoError(t, err)
		require.Equal(t, sqsadapter.StatusCompleted, st.Status, st.Error)
		for node, ns := range st.Nodes {
			assert.Equal(t, 1, ns.Attempts, "run %s node %s", id, node)
		}
	}
	good := 0
	for id, times := range w.seen {
		if bad[id] {
			assert.GreaterOrEqual(t, times, 2, "a reported message comes back")
			continue
		}
		good++
		assert.Equal(t, 1, times, "message %s: done, deleted, not delivered again", id)
	}
	assert.Equal(t, 4*3, good, "the messages of 4 runs of 3 nodes (charge takes two edges: no chain)")
	var left []string
	for _, m := range w.sqs.Messages(w.queue) {
		left = append(left, m.MessageID)
	}
	assert.ElementsMatch(t, []string{poison, ghost}, left, "only the reported messages stay in the queue")
}

// A job cut short by the function's deadline is reported, and done when
// Lambda delivers it again.
func TestHandlerDeadline(t *testing.T) {
	t.Parallel()
	w := newLambdaWorld(t, 5*unit)
	h := lambdahandler.New(w.a)
	id, err := w.a.StartRun(t.Context(), "order", nil)
	require.NoError(t, err)
	out, err := w.sqs.ReceiveMessage(t.Context(), &sqs.ReceiveMessageInput{QueueUrl: aws.String(w.queue)})
	require.NoError(t, err)
	require.Len(t, out.Messages, 1)
	m := out.Messages[0]
	ctx, cancel := context.WithCancel(t.Context())
	cancel() // the function's time is up before the job starts
	resp, err := h(ctx, events.SQSEvent{Records: []events.SQSMessage{{MessageId: aws.ToString(m.MessageId), Body: aws.ToString(m.Body)}}})
	require.NoError(t, err)
	require.Len(t, resp.BatchItemFailures, 1)
	assert.Equal(t, aws.ToString(m.MessageId), resp.BatchItemFailures[0].ItemIdentifier)

	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		st, err := w.a.GetRun(t.Context(), id)
		require.NoError(t, err)
		if st.Status == sqsadapter.StatusCompleted {
			return
		}
		if n, failed := w.invoke(h); n > 0 {
			assert.Empty(t, failed)
		} else {
			time.Sleep(unit)
		}
	}
	t.Fatal("the run did not complete after the job came back")
}
