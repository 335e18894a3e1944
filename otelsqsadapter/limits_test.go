package otelsqsadapter_test

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/stretchr/testify/require"

	"github.com/flowcraft/sqsadapter"
	"github.com/flowcraft/sqsadapter/internal/limits"
)

// bigInput is a start input whose job body, once SQS-escaped, is
// MessageBytes-slack bytes: U+FFFF doubles when escaped, so the raw JSON is
// well within MaxInlineInput (200 KiB) while the body is near 256 KiB.
func bigInput(pad int) string {
	return strings.Repeat("\uffff", 40000) + strings.Repeat("x", pad)
}

func bigWorld(t *testing.T) *world {
	w := newWorld(t, nil)
	bp, err := sqsadapter.ParseBlueprint([]byte(`{"id": "big", "nodes": [{"id": "a", "uses": "step"}]}`))
	require.NoError(t, err)
	w.bps = append(w.bps, bp)
	return w
}

// TestTraceContextNeverOverflowsStartJob: a start job whose body fits
// SQS's 256 KiB limit without telemetry is sent with it too: the trace
// context's message attributes count toward the same limit, and are left
// out when they do not fit.
func TestTraceContextNeverOverflowsStartJob(t *testing.T) {
	tuning := sqsadapter.WithTuning(sqsadapter.Tuning{MaxInlineInput: 200 << 10, ChainNodes: -1, DeleteLinger: -1, ReceiveWindow: -1})
	// Find the padding that makes the body MessageBytes-20 bytes, without telemetry.
	w := bigWorld(t)
	a := w.adapter("plain", tuning)
	_, err := a.StartRun(t.Context(), "big", map[string]any{"_inputs.a": bigInput(0)}, sqsadapter.WithRunID("r1"))
	require.NoError(t, err)
	out, err := w.sqs.ReceiveMessage(t.Context(), &sqs.ReceiveMessageInput{QueueUrl: aws.String(w.queue)})
	require.NoError(t, err)
	require.Len(t, out.Messages, 1)
	base := len(aws.ToString(out.Messages[0].Body))
	pad := limits.MessageBytes - 20 - base
	require.Positive(t, pad)

	for _, on := range []bool{false, true} {
		w := bigWorld(t)
		opts := []sqsadapter.Option{tuning}
		if on {
			opts = append(opts, newProcess(t).tel.Option())
		}
		a := w.adapter("client", opts...)
		_, err := a.StartRun(context.Background(), "big", map[string]any{"_inputs.a": bigInput(pad)}, sqsadapter.WithRunID("r1"))
		if err == nil {
			out, rerr := w.sqs.ReceiveMessage(t.Context(), &sqs.ReceiveMessageInput{QueueUrl: aws.String(w.queue), MessageAttributeNames: []string{"All"}})
			require.NoError(t, rerr)
			require.Len(t, out.Messages, 1)
			require.Greater(t, len(aws.ToString(out.Messages[0].Body)), 200000, "input carried")
		}
		require.NoError(t, err, "telemetry=%v: a run whose start job fits without telemetry must start with it", on)
	}
}

// TestBatchItemsCountUnderTheirNode: the metrics' node attribute follows
// the blueprint's nodes: a batch's items, attempted as "b_scatter[i]",
// count under b_scatter, so a batch of N items makes no N metric series.
func TestBatchItemsCountUnderTheirNode(t *testing.T) {
	w := newWorld(t, nil)
	bp, err := sqsadapter.ParseBlueprint([]byte(`{"id": "bat", "nodes": [
	  {"id": "b_scatter", "uses": "batch-scatter", "inputs": "items", "params": {"workerUsesKey": "step", "outputKey": "out", "gatherNodeId": "b_gather"}},
	  {"id": "b_gather", "uses": "batch-gather", "params": {"outputKey": "out", "gatherNodeId": "b_gather"}, "config": {"joinStrategy": "all"}}],
	  "edges": [{"source": "b_scatter", "target": "b_gather"}]}`))
	require.NoError(t, err)
	w.bps = append(w.bps, bp)
	p := newProcess(t)
	a := w.adapter("w", p.tel.Option(), sqsadapter.WithConcurrency(8))
	items := make([]any, 40)
	for i := range items {
		items[i] = i
	}
	st := w.runOnce(a, "bat", map[string]any{"items": items})
	require.Equal(t, sqsadapter.StatusCompleted, st.Status, st.Error)
	nodes := map[string]bool{}
	for _, dp := range p.metric(t, "sqsadapter.nodes.executed").(metricdata.Sum[int64]).DataPoints {
		v, _ := dp.Attributes.Value("sqsadapter.node.id")
		nodes[v.AsString()] = true
	}
	t.Logf("%d distinct sqsadapter.node.id values on sqsadapter.nodes.executed", len(nodes))
	assert.LessOrEqual(t, len(nodes), 2, "node ids on metrics must be the blueprint's (b_scatter, b_gather), got %v", nodes)
}

// TestQueueLagLeavesOutSleepDelays: a sleep node's timer job is sent with
// DelaySeconds; its lag is measured from the end of that delay, so a
// blueprint with timers does not look backlogged.
func TestQueueLagLeavesOutSleepDelays(t *testing.T) {
	w := newWorld(t, nil)
	bp, err := sqsadapter.ParseBlueprint([]byte(`{"id": "nap", "nodes": [
	  {"id": "a", "uses": "step"}, {"id": "z", "uses": "sleep", "params": {"duration": "2s"}}, {"id": "b", "uses": "step"}],
	  "edges": [{"source": "a", "target": "z"}, {"source": "z", "target": "b"}]}`))
	require.NoError(t, err)
	w.bps = append(w.bps, bp)
	p := newProcess(t)
	a := w.adapter("w", p.tel.Option())
	st := w.runOnce(a, "nap", nil)
	require.Equal(t, sqsadapter.StatusCompleted, st.Status, st.Error)
	var maxLag float64
	for _, dp := range p.metric(t, "sqsadapter.queue.lag").(metricdata.Histogram[float64]).DataPoints {
		if v, ok := dp.Max.Value(); ok {
			maxLag = max(maxLag, v)
		}
	}
	t.Logf("max queue lag %.2fs on an idle queue", maxLag)
	assert.Less(t, maxLag, 1.0, "an idle queue has no lag; the sleep is not lag")
}

// TestTraceContextNeverOverflowsSuccessorJob: the same on a worker: node
// a's output is carried by b's job, within about 20 bytes of SQS's limit;
// with telemetry too the send succeeds (without the trace context), where
// a refused send would come back on every delivery and stall the run.
func TestTraceContextNeverOverflowsSuccessorJob(t *testing.T) {
	tuning := sqsadapter.WithTuning(sqsadapter.Tuning{MaxInlineInput: 200 << 10, ChainNodes: -1, DeleteLinger: -1, ReceiveWindow: -1})
	var pad int
	setup := func(on bool) (*world, *sqsadapter.SqsAdapter) {
		w := newWorld(t, nil)
		bp, err := sqsadapter.ParseBlueprint([]byte(`{"id": "big", "nodes": [{"id": "a", "uses": "big"}, {"id": "b", "uses": "step"}],
		  "edges": [{"source": "a", "target": "b"}]}`))
		require.NoError(t, err)
		w.bps = append(w.bps, bp)
		w.reg["big"] = func(context.Context, *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
			return sqsadapter.NodeResult{Output: bigInput(pad)}, nil
		}
		opts := []sqsadapter.Option{tuning}
		if on {
			opts = append(opts, newProcess(t).tel.Option())
		}
		return w, w.adapter("w", opts...)
	}
	receive := func(w *world) string {
		out, err := w.sqs.ReceiveMessage(t.Context(), &sqs.ReceiveMessageInput{QueueUrl: aws.String(w.queue)})
		require.NoError(t, err)
		require.Len(t, out.Messages, 1)
		return aws.ToString(out.Messages[0].Body)
	}
	handleA := func(w *world, a *sqsadapter.SqsAdapter) error {
		_, err := a.StartRun(t.Context(), "big", nil, sqsadapter.WithRunID("r1"))
		require.NoError(t, err)
		var job sqsadapter.Job
		require.NoError(t, job.UnmarshalJSON([]byte(receive(w))))
		return a.HandleJob(t.Context(), job)
	}
	// Measure b's body without telemetry, then aim at MessageBytes-20.
	w, a := setup(false)
	require.NoError(t, handleA(w, a))
	pad = limits.MessageBytes - 20 - len(receive(w))

	for _, on := range []bool{false, true} {
		w, a := setup(on)
		err := handleA(w, a)
		require.NoError(t, err, "telemetry=%v: a's job must be done", on)
		require.Greater(t, len(receive(w)), 200000, "b's job carries a's output")
	}
}

// TestBatchSplitCountsAttributes: ten start jobs of about 26 KiB each
// with their trace context exceed one SendMessageBatch's 256 KiB only with
// the attributes counted: sendBatch splits them.
func TestBatchSplitCountsAttributes(t *testing.T) {
	w := newWorld(t, nil)
	nodes, initial := "", map[string]any{}
	for i := range 10 {
		if i > 0 {
			nodes += ","
		}
		id := string(rune('a' + i))
		nodes += `{"id": "` + id + `", "uses": "step"}`
		initial["_inputs."+id] = strings.Repeat("x", 26150)
	}
	bp, err := sqsadapter.ParseBlueprint([]byte(`{"id": "wide", "nodes": [` + nodes + `]}`))
	require.NoError(t, err)
	w.bps = append(w.bps, bp)
	a := w.adapter("client", newProcess(t).tel.Option())
	_, err = a.StartRun(t.Context(), "wide", initial, sqsadapter.WithRunID("r1"))
	require.NoError(t, err)
}
