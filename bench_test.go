package sqsadapter_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/flowcraft/sqsadapter"
	"github.com/flowcraft/sqsadapter/otelsqsadapter"
	"github.com/flowcraft/sqsadapter/sqsadaptertest"
)

// chainBlueprint is a chain of n nodes c0 -> c1 -> ... using "step".
func chainBlueprint(id string, n int) string {
	var nodes, edges []string
	for i := range n {
		nodes = append(nodes, fmt.Sprintf(`{"id":"c%d","uses":"step"}`, i))
		if i > 0 {
			edges = append(edges, fmt.Sprintf(`{"source":"c%d","target":"c%d"}`, i-1, i))
		}
	}
	return fmt.Sprintf(`{"id":%q,"nodes":[%s],"edges":[%s]}`, id, strings.Join(nodes, ","), strings.Join(edges, ","))
}

// fanBlueprint is a start node, a fan-out to n nodes and an "all" join.
func fanBlueprint(id string, n int) string {
	nodes := []string{`{"id":"start","uses":"step"}`, `{"id":"join","uses":"step","inputs":{"first":"f0"}}`}
	var edges []string
	for i := range n {
		nodes = append(nodes, fmt.Sprintf(`{"id":"f%d","uses":"step"}`, i))
		edges = append(edges, fmt.Sprintf(`{"source":"start","target":"f%d"},{"source":"f%d","target":"join"}`, i, i))
	}
	return fmt.Sprintf(`{"id":%q,"nodes":[%s],"edges":[%s]}`, id, strings.Join(nodes, ","), strings.Join(edges, ","))
}

func step(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
	return sqsadapter.NodeResult{Output: map[string]any{"n": nc.NodeID}}, nil
}

// benchEnv is one adapter on in-memory parts, driven by hand: the benchmark
// receives each message and calls HandleJob, so the figures are the engine's
// own cost per node, without poller scheduling.
type benchEnv struct {
	sqs      *sqsadaptertest.SQS
	queue    string
	a        *sqsadapter.SqsAdapter
	executed atomic.Int64 // node function calls
}

func newBenchEnv(b testing.TB, bps ...string) *benchEnv {
	b.Helper()
	return newBenchEnvWith(b, nil, bps...)
}

// newBenchEnvWith is newBenchEnv with more options for the adapter.
func newBenchEnvWith(b testing.TB, opts []sqsadapter.Option, bps ...string) *benchEnv {
	b.Helper()
	e := &benchEnv{sqs: sqsadaptertest.NewSQS()}
	counted := func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
		e.executed.Add(1)
		return step(ctx, nc)
	}
	e.queue = e.sqs.CreateQueue("bench", sqsadaptertest.QueueOptions{})
	var parsed []*sqsadapter.Blueprint
	for _, s := range bps {
		bp, err := sqsadapter.ParseBlueprint([]byte(s))
		if err != nil {
			b.Fatal(err)
		}
		parsed = append(parsed, bp)
	}
	a, err := sqsadapter.NewSqsAdapter(append([]sqsadapter.Option{
		sqsadapter.WithSQSClient(e.sqs), sqsadapter.WithQueueURL(e.queue),
		sqsadapter.WithContextStore(sqsadaptertest.NewContextStore()),
		sqsadapter.WithCoordinationStore(sqsadaptertest.NewCoordinationStore()),
		sqsadapter.WithRegistry(sqsadapter.NodeRegistry{"step": counted}),
		sqsadapter.WithBlueprints(parsed...), sqsadapter.WithLogger(testLogger()),
	}, opts...)...)
	if err != nil {
		b.Fatal(err)
	}
	e.a = a
	return e
}

// drain handles queued jobs until the queue is empty and returns how many
// nodes ran meanwhile.
func (e *benchEnv) drain(b testing.TB) int {
	ctx := context.Background()
	before := e.executed.Load()
	for {
		out, err := e.sqs.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: &e.queue, MaxNumberOfMessages: 10})
		if err != nil {
			b.Fatal(err)
		}
		if len(out.Messages) == 0 {
			return int(e.executed.Load() - before)
		}
		for _, m := range out.Messages {
			job, err := sqsadapter.DecodeJob([]byte(aws.ToString(m.Body)))
			if err != nil {
				b.Fatal(err)
			}
			if err := e.a.HandleJob(ctx, job); err != nil {
				b.Fatal(err)
			}
			if _, err := e.sqs.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: &e.queue, ReceiptHandle: m.ReceiptHandle}); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkNode measures the per-node overhead of the engine on the
// in-memory implementations: one op is one executed node.
func BenchmarkNode(b *testing.B) {
	for _, bc := range []struct {
		name  string
		bp    string
		nodes int
		opts  []sqsadapter.Option
	}{
		{"chain10", chainBlueprint("chain", 10), 10, nil},
		{"chain10-sent", chainBlueprint("chain", 10), 10, noChains},
		{"fanout10-all-join", fanBlueprint("fan", 10), 12, nil},
		// With OpenTelemetry recording every span and metric (and exporting
		// none): the instrumentation's own cost.
		{"chain10-sent-otel", chainBlueprint("chain", 10), 10, append(slices.Clone(noChains), benchTelemetry(b))},
	} {
		b.Run(bc.name, func(b *testing.B) {
			e := newBenchEnvWith(b, bc.opts, bc.bp)
			id := strings.SplitN(strings.TrimPrefix(bc.bp, `{"id":"`), `"`, 2)[0]
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			nodes := 0
			for nodes < b.N {
				if _, err := e.a.StartRun(ctx, id, nil); err != nil {
					b.Fatal(err)
				}
				nodes += e.drain(b)
			}
			b.StopTimer()
			if nodes%bc.nodes != 0 {
				b.Fatalf("executed %d nodes, not a multiple of %d", nodes, bc.nodes)
			}
		})
	}
}

// benchTelemetry is otelsqsadapter with the SDK's providers, spans
// sampled and metrics aggregated in memory, nothing exported.
func benchTelemetry(b *testing.B) sqsadapter.Option {
	tel, err := otelsqsadapter.New(
		otelsqsadapter.WithTracerProvider(sdktrace.NewTracerProvider()),
		otelsqsadapter.WithMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))))
	if err != nil {
		b.Fatal(err)
	}
	return tel.Option()
}

// TestNodeAllocs bounds the allocations per executed node of
// BenchmarkNode's chain, run inline under one message and sent job by job,
// the in-memory implementations' included (about 40 of them; see
// BENCHMARKS.md), so that a round trip or a per-job allocation creeping
// back into the hot path is noticed. Allocation counts, unlike times, do
// not depend on the machine's load.
func TestNodeAllocs(t *testing.T) {
	for _, c := range []struct {
		name        string
		opts        []sqsadapter.Option
		limit, race float64
	}{
		{"inline", []sqsadapter.Option{untimedChains}, 50, 55},
		{"sent", noChains, 115, 125},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newBenchEnvWith(t, c.opts, chainBlueprint("chain", 10))
			ctx := context.Background()
			perRun := testing.AllocsPerRun(50, func() {
				if _, err := e.a.StartRun(ctx, "chain", nil); err != nil {
					t.Fatal(err)
				}
				if n := e.drain(t); n != 10 {
					t.Fatalf("executed %d nodes, not 10", n)
				}
			})
			limit := c.limit
			if raceEnabled {
				limit = c.race
			}
			t.Logf("%.1f allocations per node", perRun/10)
			if perRun/10 > limit {
				t.Errorf("%.1f allocations per node, more than %v", perRun/10, limit)
			}
		})
	}
}

// BenchmarkWorkers measures throughput through the poller: 4 workers with
// 10 jobs each on one in-memory queue; one op is one executed node.
func BenchmarkWorkers(b *testing.B) {
	bp, err := sqsadapter.ParseBlueprint([]byte(chainBlueprint("chain", 10)))
	if err != nil {
		b.Fatal(err)
	}
	fake := sqsadaptertest.NewSQS()
	queue := fake.CreateQueue("bench", sqsadaptertest.QueueOptions{})
	contexts, coord := sqsadaptertest.NewContextStore(), sqsadaptertest.NewCoordinationStore()
	mk := func() *sqsadapter.SqsAdapter {
		a, err := sqsadapter.NewSqsAdapter(
			sqsadapter.WithSQSClient(fake), sqsadapter.WithQueueURL(queue),
			sqsadapter.WithContextStore(contexts), sqsadapter.WithCoordinationStore(coord),
			sqsadapter.WithRegistry(sqsadapter.NodeRegistry{"step": step}),
			sqsadapter.WithBlueprints(bp), sqsadapter.WithLogger(testLogger()),
			sqsadapter.WithWaitTime(time.Second),
		)
		if err != nil {
			b.Fatal(err)
		}
		return a
	}
	var workers []*sqsadapter.SqsAdapter
	errc := make(chan error, 4)
	for range 4 {
		w := mk()
		workers = append(workers, w)
		go func() { errc <- w.Run(context.Background()) }()
	}
	client := mk()
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	runs := (b.N + 9) / 10
	ids := make([]string, runs)
	for i := range ids {
		if ids[i], err = client.StartRun(ctx, "chain", nil); err != nil {
			b.Fatal(err)
		}
	}
	for _, id := range ids {
		st, err := client.WaitForRun(ctx, id)
		if err != nil || st.Status != sqsadapter.StatusCompleted {
			b.Fatalf("run %s: %v %v", id, st, err)
		}
	}
	b.StopTimer()
	for _, w := range workers {
		if err := w.Shutdown(ctx); err != nil {
			b.Fatal(err)
		}
		if err := <-errc; err != nil {
			b.Fatal(err)
		}
	}
}
