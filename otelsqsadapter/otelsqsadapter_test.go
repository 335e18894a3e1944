package otelsqsadapter_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/flowcraft/sqsadapter"
	"github.com/flowcraft/sqsadapter/lambdahandler"
	"github.com/flowcraft/sqsadapter/otelsqsadapter"
	"github.com/flowcraft/sqsadapter/sqsadaptertest"
)

// process is what one process of a deployment has of its own: a tracer
// provider recording its spans and a meter provider read by hand. Nothing
// is shared between processes but the queue and the stores.
type process struct {
	spans  *tracetest.SpanRecorder
	reader *sdkmetric.ManualReader
	tel    *otelsqsadapter.Telemetry
}

func newProcess(t *testing.T) *process {
	p := &process{spans: tracetest.NewSpanRecorder(), reader: sdkmetric.NewManualReader()}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(p.spans))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(p.reader))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()); _ = mp.Shutdown(context.Background()) })
	var err error
	p.tel, err = otelsqsadapter.New(otelsqsadapter.WithTracerProvider(tp), otelsqsadapter.WithMeterProvider(mp))
	require.NoError(t, err)
	return p
}

// metric is the data of metric name, nil if it has none.
func (p *process) metric(t *testing.T, name string) metricdata.Aggregation {
	var rm metricdata.ResourceMetrics
	require.NoError(t, p.reader.Collect(context.Background(), &rm))
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name == name {
				return m.Data
			}
		}
	}
	return nil
}

// sum is the total of counter name over the points whose attributes hold
// every pair of want.
func (p *process) sum(t *testing.T, name string, want ...attribute.KeyValue) int64 {
	var rm metricdata.ResourceMetrics
	require.NoError(t, p.reader.Collect(context.Background(), &rm))
	var n int64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != name {
				continue
			}
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, dp := range d.DataPoints {
					if hasAll(dp.Attributes, want) {
						n += dp.Value
					}
				}
			case metricdata.Histogram[float64]:
				for _, dp := range d.DataPoints {
					if hasAll(dp.Attributes, want) {
						n += int64(dp.Count)
					}
				}
			}
		}
	}
	return n
}

func hasAll(set attribute.Set, want []attribute.KeyValue) bool {
	for _, kv := range want {
		if v, ok := set.Value(kv.Key); !ok || v != kv.Value {
			return false
		}
	}
	return true
}

// world is a queue and stores in memory, shared by the processes.
type world struct {
	t      *testing.T
	sqs    *sqsadaptertest.SQS // nil on the emulators
	client sqsadapter.SQSClient
	queue  string
	cs     sqsadapter.ContextStore
	coord  sqsadapter.CoordinationStore
	bps    []*sqsadapter.Blueprint
	reg    sqsadapter.NodeRegistry
}

func (w *world) adapter(name string, extra ...sqsadapter.Option) *sqsadapter.SqsAdapter {
	opts := append([]sqsadapter.Option{
		sqsadapter.WithSQSClient(w.client), sqsadapter.WithQueueURL(w.queue),
		sqsadapter.WithContextStore(w.cs), sqsadapter.WithCoordinationStore(w.coord),
		sqsadapter.WithRegistry(w.reg), sqsadapter.WithBlueprints(w.bps...),
		sqsadapter.WithWorkerID(name), sqsadapter.WithConcurrency(1),
		sqsadapter.WithWaitTime(200 * time.Millisecond),
		sqsadapter.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))),
		// Every job goes through the queue, so that any worker may take it.
		sqsadapter.WithTuning(sqsadapter.Tuning{ChainNodes: -1, DeleteLinger: -1, ReceiveWindow: -1}),
	}, extra...)
	a, err := sqsadapter.NewSqsAdapter(opts...)
	require.NoError(w.t, err)
	return a
}

// run starts a worker and returns how to stop it, waiting for its end.
func (w *world) run(a *sqsadapter.SqsAdapter) (stop func()) {
	errc := make(chan error, 1)
	go func() { errc <- a.Run(context.Background()) }()
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		require.NoError(w.t, a.Shutdown(ctx))
		select {
		case err := <-errc:
			if !errors.Is(err, sqsadapter.ErrAdapterClosed) {
				require.NoError(w.t, err)
			}
		case <-ctx.Done():
			w.t.Fatal("worker did not stop")
		}
	}
}

// runOnce runs a worker a until one run of blueprint bp has finished,
// then stops it (its spans all ended) and returns the run's status.
func (w *world) runOnce(a *sqsadapter.SqsAdapter, bp string, initial map[string]any) *sqsadapter.RunStatus {
	stop := w.run(a)
	ctx, cancel := context.WithTimeout(w.t.Context(), 20*time.Second)
	defer cancel()
	runID, err := a.StartRun(ctx, bp, initial)
	require.NoError(w.t, err)
	st, err := a.WaitForRun(ctx, runID)
	require.NoError(w.t, err)
	stop()
	return st
}

// fanBlueprint: a fans out to four branches that take a while, so that
// two workers of one slot each both take some; b2 fails its first attempt;
// the four join in d.
const fanBlueprint = `{"id": "fan", "nodes": [
	{"id": "a", "uses": "step"},
	{"id": "b1", "uses": "slow"}, {"id": "b2", "uses": "flaky", "config": {"maxRetries": 2}},
	{"id": "b3", "uses": "slow"}, {"id": "b4", "uses": "slow"},
	{"id": "d", "uses": "step"}],
	"edges": [
	{"source": "a", "target": "b1"}, {"source": "a", "target": "b2"}, {"source": "a", "target": "b3"}, {"source": "a", "target": "b4"},
	{"source": "b1", "target": "d"}, {"source": "b2", "target": "d"}, {"source": "b3", "target": "d"}, {"source": "b4", "target": "d"}]}`

func newWorld(t *testing.T, nodeSpans *sync.Map) *world {
	sq := sqsadaptertest.NewSQS()
	w := &world{t: t, sqs: sq, client: sq, cs: sqsadaptertest.NewContextStore(), coord: sqsadaptertest.NewCoordinationStore()}
	w.queue = sq.CreateQueue("jobs", sqsadaptertest.QueueOptions{VisibilityTimeout: 5 * time.Second})
	bp, err := sqsadapter.ParseBlueprint([]byte(fanBlueprint))
	require.NoError(t, err)
	w.bps = []*sqsadapter.Blueprint{bp}
	// Each node function notes the span its ctx is in.
	note := func(ctx context.Context, nc *sqsadapter.NodeContext) {
		if nodeSpans != nil {
			nodeSpans.Store(nc.NodeID+"#"+string(rune('0'+nc.Attempt)), trace.SpanContextFromContext(ctx))
		}
	}
	var flaky atomic.Int32
	w.reg = sqsadapter.NodeRegistry{
		"step": func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
			note(ctx, nc)
			return sqsadapter.NodeResult{Output: nc.NodeID}, nil
		},
		"slow": func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
			note(ctx, nc)
			time.Sleep(150 * time.Millisecond)
			return sqsadapter.NodeResult{Output: nc.NodeID}, nil
		},
		"flaky": func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
			note(ctx, nc)
			time.Sleep(150 * time.Millisecond)
			if flaky.Add(1) == 1 {
				return sqsadapter.NodeResult{}, errors.New("first attempt fails")
			}
			return sqsadapter.NodeResult{Output: nc.NodeID}, nil
		},
	}
	return w
}

func attr(s sdktrace.ReadOnlySpan, key attribute.Key) string {
	for _, kv := range s.Attributes() {
		if kv.Key == key {
			return kv.Value.Emit()
		}
	}
	return ""
}

// TestOneTraceAcrossWorkers: a run started by a client process and handled
// by two worker processes, each with its own providers, is one trace: every
// span of every process has the StartRun span's trace id, and each job span
// hangs under the span that sent its job, whichever process made it.
func TestOneTraceAcrossWorkers(t *testing.T) {
	var nodeSpans sync.Map
	oneTrace(t, newWorld(t, &nodeSpans), &nodeSpans)
}

// TestOneTraceOnEmulators is TestOneTraceAcrossWorkers on the SQS and
// DynamoDB emulators: the trace context goes through real message
// attributes.
func TestOneTraceOnEmulators(t *testing.T) {
	sqsEndpoint, ddbEndpoint := os.Getenv("SQSADAPTER_SQS_ENDPOINT"), os.Getenv("SQSADAPTER_DYNAMODB_ENDPOINT")
	if sqsEndpoint == "" || ddbEndpoint == "" {
		t.Skip("SQSADAPTER_SQS_ENDPOINT and SQSADAPTER_DYNAMODB_ENDPOINT are not set (make test sets them)")
	}
	var nodeSpans sync.Map
	w := newWorld(t, &nodeSpans)
	w.sqs = nil
	creds := credentials.NewStaticCredentialsProvider("test", "test", "")
	sq := sqs.New(sqs.Options{Region: "us-east-1", BaseEndpoint: aws.String(sqsEndpoint), Credentials: creds})
	db := dynamodb.New(dynamodb.Options{Region: "us-east-1", BaseEndpoint: aws.String(ddbEndpoint), Credentials: creds})
	base := fmt.Sprintf("otel-%d", time.Now().UnixNano())
	out, err := sq.CreateQueue(t.Context(), &sqs.CreateQueueInput{QueueName: aws.String(base)})
	require.NoError(t, err)
	t.Cleanup(func() { _, _ = sq.DeleteQueue(context.Background(), &sqs.DeleteQueueInput{QueueUrl: out.QueueUrl}) })
	names := sqsadapter.TableNames{Context: base + "-context", Status: base + "-status", Coordination: base + "-coordination"}
	require.NoError(t, sqsadapter.CreateTables(t.Context(), db, names))
	t.Cleanup(func() {
		for _, n := range []string{names.Context, names.Status, names.Coordination} {
			_, _ = db.DeleteTable(context.Background(), &dynamodb.DeleteTableInput{TableName: aws.String(n)})
		}
	})
	w.client, w.queue = sq, aws.ToString(out.QueueUrl)
	w.cs = sqsadapter.NewDynamoDbContext(db, names.Context, names.Status)
	w.coord = sqsadapter.NewDynamoDbCoordinationStore(db, names.Coordination)
	oneTrace(t, w, &nodeSpans)
}

func oneTrace(t *testing.T, w *world, nodeSpans *sync.Map) {
	client, w1, w2 := newProcess(t), newProcess(t), newProcess(t)
	c := w.adapter("client", client.tel.Option())
	stop1 := w.run(w.adapter("w1", w1.tel.Option()))
	stop2 := w.run(w.adapter("w2", w2.tel.Option()))

	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	runID, err := c.StartRun(ctx, "fan", map[string]any{"k": 1})
	require.NoError(t, err)
	st, err := c.WaitForRun(ctx, runID)
	require.NoError(t, err)
	require.Equal(t, sqsadapter.StatusCompleted, st.Status, st.Error)
	stop1()
	stop2()

	starts := client.spans.Ended()
	require.Len(t, starts, 1, "the client made one span: StartRun")
	root := starts[0]
	assert.Equal(t, "sqsadapter.StartRun", root.Name())
	assert.Equal(t, runID, attr(root, "sqsadapter.run.id"))
	traceID := root.SpanContext().TraceID()

	byID := map[trace.SpanID]sdktrace.ReadOnlySpan{root.SpanContext().SpanID(): root}
	var jobs, attempts []sdktrace.ReadOnlySpan
	perWorker := map[string]int{}
	for name, p := range map[string]*process{"w1": w1, "w2": w2} {
		for _, s := range p.spans.Ended() {
			byID[s.SpanContext().SpanID()] = s
			assert.Equal(t, traceID, s.SpanContext().TraceID(), "span %q of %s is in another trace", s.Name(), name)
			switch {
			case strings.HasPrefix(s.Name(), "job "):
				jobs = append(jobs, s)
				perWorker[name]++
				assert.Equal(t, trace.SpanKindConsumer, s.SpanKind())
				assert.True(t, s.Parent().IsRemote(), "a job's parent is in the message, not in the process")
			case strings.HasPrefix(s.Name(), "attempt "):
				attempts = append(attempts, s)
			default:
				t.Errorf("unexpected span %q", s.Name())
			}
		}
	}
	assert.Positive(t, perWorker["w1"], "worker 1 handled jobs")
	assert.Positive(t, perWorker["w2"], "worker 2 handled jobs")

	// Six nodes, each handled once (the retry waits inside its handling),
	// each job span under the StartRun span (the start node's) or under
	// the job span that sent it.
	nodes := map[string]sdktrace.ReadOnlySpan{}
	for _, s := range jobs {
		node := attr(s, "sqsadapter.node.id")
		assert.Equal(t, runID, attr(s, "sqsadapter.run.id"))
		assert.Equal(t, "fan", attr(s, "sqsadapter.blueprint.id"))
		assert.Equal(t, "done", attr(s, "sqsadapter.outcome"))
		assert.NotEmpty(t, attr(s, "messaging.message.id"))
		require.NotContains(t, nodes, node, "node %s handled twice", node)
		nodes[node] = s
	}
	require.Len(t, nodes, 6)
	parentNode := func(s sdktrace.ReadOnlySpan) string {
		p, ok := byID[s.Parent().SpanID()]
		require.True(t, ok, "the parent of %q is no recorded span", s.Name())
		if p == root {
			return "StartRun"
		}
		return attr(p, "sqsadapter.node.id")
	}
	assert.Equal(t, "StartRun", parentNode(nodes["a"]))
	for _, b := range []string{"b1", "b2", "b3", "b4"} {
		assert.Equal(t, "a", parentNode(nodes[b]), "b sent by a")
	}
	assert.Contains(t, []string{"b1", "b2", "b3", "b4"}, parentNode(nodes["d"]), "the join's job sent by the branch that fired it")

	// Attempts: one per node and two for b2, each under its node's job
	// span, each the span the node function's ctx is in.
	count := map[string]int{}
	for _, s := range attempts {
		node := attr(s, "sqsadapter.node.id")
		count[node]++
		assert.Equal(t, nodes[node].SpanContext().SpanID(), s.Parent().SpanID(), "attempt of %s under its job", node)
		sc, ok := nodeSpans.Load(node + "#" + attr(s, "sqsadapter.attempt"))
		require.True(t, ok, "attempt %s of %s ran", attr(s, "sqsadapter.attempt"), node)
		assert.Equal(t, s.SpanContext().SpanID(), sc.(trace.SpanContext).SpanID(), "the node function runs in its attempt's span")
		if node == "b2" && attr(s, "sqsadapter.attempt") == "1" {
			assert.Equal(t, "Error", s.Status().Code.String())
		}
	}
	assert.Equal(t, map[string]int{"a": 1, "b1": 1, "b2": 2, "b3": 1, "b4": 1, "d": 1}, count)

	// Metrics, added over both workers.
	total := func(name string, kv ...attribute.KeyValue) int64 {
		return w1.sum(t, name, kv...) + w2.sum(t, name, kv...)
	}
	bp := attribute.String("sqsadapter.blueprint.id", "fan")
	assert.EqualValues(t, 6, total("sqsadapter.nodes.executed", bp))
	assert.EqualValues(t, 1, total("sqsadapter.nodes.executed", bp, attribute.String("sqsadapter.node.id", "b2")))
	assert.EqualValues(t, 7, total("sqsadapter.attempt.duration", bp))
	assert.EqualValues(t, 1, total("sqsadapter.attempt.duration", bp, attribute.String("sqsadapter.attempt.outcome", "error")))
	assert.EqualValues(t, 0, total("sqsadapter.nodes.failed"))
	assert.EqualValues(t, 6, total("sqsadapter.queue.lag", bp), "each job came in a message")
	assert.EqualValues(t, 6, total("sqsadapter.jobs", attribute.String("sqsadapter.outcome", "done")))
}

// TestFailedNodeCounted: a node that fails for good is counted once, and
// its job span records the failure.
func TestFailedNodeCounted(t *testing.T) {
	w := newWorld(t, nil)
	bp, err := sqsadapter.ParseBlueprint([]byte(`{"id": "doomed", "nodes": [{"id": "x", "uses": "bad"}]}`))
	require.NoError(t, err)
	w.bps = append(w.bps, bp)
	w.reg["bad"] = func(context.Context, *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
		return sqsadapter.NodeResult{}, sqsadapter.Permanent(errors.New("no"))
	}
	p := newProcess(t)
	a := w.adapter("w", p.tel.Option())
	st := w.runOnce(a, "doomed", nil)
	require.Equal(t, sqsadapter.StatusFailed, st.Status)
	x := attribute.String("sqsadapter.node.id", "x")
	assert.EqualValues(t, 1, p.sum(t, "sqsadapter.nodes.failed", x))
	assert.EqualValues(t, 0, p.sum(t, "sqsadapter.nodes.executed", x))
	var events []string
	for _, s := range p.spans.Ended() {
		if s.Name() == "job x" {
			for _, e := range s.Events() {
				events = append(events, e.Name)
			}
		}
	}
	assert.Contains(t, events, "node failed")
}

// TestOffByDefault: an adapter without the option sends no message
// attribute; with it, its job messages carry the W3C trace context.
func TestOffByDefault(t *testing.T) {
	for _, on := range []bool{false, true} {
		w := newWorld(t, nil)
		var opts []sqsadapter.Option
		if on {
			opts = append(opts, newProcess(t).tel.Option())
		}
		a := w.adapter("client", opts...)
		_, err := a.StartRun(t.Context(), "fan", nil)
		require.NoError(t, err)
		out, err := w.sqs.ReceiveMessage(t.Context(), &sqs.ReceiveMessageInput{
			QueueUrl: aws.String(w.queue), MessageAttributeNames: []string{"All"}})
		require.NoError(t, err)
		require.Len(t, out.Messages, 1)
		attrs := out.Messages[0].MessageAttributes
		if !on {
			assert.Empty(t, attrs)
			continue
		}
		require.Contains(t, attrs, "traceparent")
		tp := aws.ToString(attrs["traceparent"].StringValue)
		assert.Regexp(t, `^00-[0-9a-f]{32}-[0-9a-f]{16}-01$`, tp)
	}
}

// TestLambdaJobContinuesTrace: a job handed over by the Lambda handler
// continues the trace of its message's attributes.
func TestLambdaJobContinuesTrace(t *testing.T) {
	w := newWorld(t, nil)
	client, fn := newProcess(t), newProcess(t)
	c := w.adapter("client", client.tel.Option())
	a := w.adapter("lambda", fn.tel.Option())
	runID, err := c.StartRun(t.Context(), "fan", nil)
	require.NoError(t, err)
	out, err := w.sqs.ReceiveMessage(t.Context(), &sqs.ReceiveMessageInput{
		QueueUrl: aws.String(w.queue), MessageAttributeNames: []string{"All"}, MessageSystemAttributeNames: nil})
	require.NoError(t, err)
	require.Len(t, out.Messages, 1)
	m := out.Messages[0]
	rec := events.SQSMessage{MessageId: aws.ToString(m.MessageId), Body: aws.ToString(m.Body),
		Attributes:        map[string]string{"SentTimestamp": "1", "ApproximateReceiveCount": "1"},
		MessageAttributes: map[string]events.SQSMessageAttribute{}}
	for k, v := range m.MessageAttributes {
		rec.MessageAttributes[k] = events.SQSMessageAttribute{DataType: "String", StringValue: v.StringValue}
	}
	resp, err := lambdahandler.New(a)(t.Context(), events.SQSEvent{Records: []events.SQSMessage{rec}})
	require.NoError(t, err)
	require.Empty(t, resp.BatchItemFailures)

	root := client.spans.Ended()[0]
	var job sdktrace.ReadOnlySpan
	for _, s := range fn.spans.Ended() {
		if s.Name() == "job a" {
			job = s
		}
	}
	require.NotNil(t, job)
	assert.Equal(t, root.SpanContext().TraceID(), job.SpanContext().TraceID())
	assert.Equal(t, root.SpanContext().SpanID(), job.Parent().SpanID())
	assert.Equal(t, runID, attr(job, "sqsadapter.run.id"))
	assert.EqualValues(t, 1, fn.sum(t, "sqsadapter.queue.lag"), "the event's SentTimestamp gives the lag")
}

// TestAWSMiddlewareCountsRequests: the middleware counts each request of a
// real SDK client by service and operation, failures apart.
func TestAWSMiddlewareCountsRequests(t *testing.T) {
	p := newProcess(t)
	var fail atomic.Bool
	client := sqs.New(sqs.Options{
		Region: "us-east-1", BaseEndpoint: aws.String("http://127.0.0.1:9"),
		Credentials:      aws.AnonymousCredentials{},
		RetryMaxAttempts: 1,
		APIOptions:       []func(*middleware.Stack) error{p.tel.AWSMiddleware},
		HTTPClient: smithyhttp.ClientDoFunc(func(r *http.Request) (*http.Response, error) {
			if fail.Load() {
				return nil, errors.New("connection refused")
			}
			return &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"application/x-amz-json-1.0"}},
				Body: io.NopCloser(strings.NewReader(`{"QueueUrl": "http://127.0.0.1:9/q"}`)), Request: r}, nil
		}),
	})
	for range 2 {
		_, err := client.GetQueueUrl(t.Context(), &sqs.GetQueueUrlInput{QueueName: aws.String("q")})
		require.NoError(t, err)
	}
	fail.Store(true)
	_, err := client.GetQueueUrl(t.Context(), &sqs.GetQueueUrlInput{QueueName: aws.String("q")})
	require.Error(t, err)
	op := []attribute.KeyValue{attribute.String("rpc.service", "SQS"), attribute.String("rpc.method", "GetQueueUrl")}
	assert.EqualValues(t, 2, p.sum(t, "sqsadapter.aws.requests", append(op, attribute.Bool("error", false))...))
	assert.EqualValues(t, 1, p.sum(t, "sqsadapter.aws.requests", append(op, attribute.Bool("error", true))...))
}

// TestChainedJobsContinueTrace: jobs a worker runs inline, under one
// message, are each a job span under the one before.
func TestChainedJobsContinueTrace(t *testing.T) {
	w := newWorld(t, nil)
	bp, err := sqsadapter.ParseBlueprint([]byte(`{"id": "line", "nodes": [
		{"id": "a", "uses": "step"}, {"id": "b", "uses": "step"}, {"id": "c", "uses": "step"}],
		"edges": [{"source": "a", "target": "b"}, {"source": "b", "target": "c"}]}`))
	require.NoError(t, err)
	w.bps = append(w.bps, bp)
	p := newProcess(t)
	a := w.adapter("w", p.tel.Option(), sqsadapter.WithTuning(sqsadapter.Tuning{ChainNodes: 16}))
	st := w.runOnce(a, "line", nil)
	require.Equal(t, sqsadapter.StatusCompleted, st.Status)
	spans := map[string]sdktrace.ReadOnlySpan{}
	for _, s := range p.spans.Ended() {
		spans[s.Name()] = s
	}
	start := spans["sqsadapter.StartRun"]
	require.NotNil(t, start)
	for child, parent := range map[string]string{"job a": "sqsadapter.StartRun", "job b": "job a", "job c": "job b"} {
		require.Contains(t, spans, child)
		assert.Equal(t, start.SpanContext().TraceID(), spans[child].SpanContext().TraceID(), child)
		assert.Equal(t, spans[parent].SpanContext().SpanID(), spans[child].Parent().SpanID(), "%s under %s", child, parent)
	}
	assert.NotEmpty(t, attr(spans["job a"], "messaging.message.id"))
	assert.Empty(t, attr(spans["job b"], "messaging.message.id"), "a chained job came in no message of its own")
	assert.EqualValues(t, 1, p.sum(t, "sqsadapter.queue.lag"), "one message, one lag")
}
