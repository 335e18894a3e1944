package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowcraft/sqsadapter"
	"github.com/flowcraft/sqsadapter/sqsadaptertest"
)

const orderBlueprint = `{"id": "order", "nodes": [
  {"id": "charge", "uses": "step"}, {"id": "approve", "uses": "wait"}, {"id": "ship", "uses": "step"}],
 "edges": [{"source": "charge", "target": "approve"}, {"source": "approve", "target": "ship", "action": "ok"}]}`

const quickBlueprint = `{"id": "quick", "nodes": [{"id": "a", "uses": "step"}, {"id": "b", "uses": "step"}],
 "edges": [{"source": "a", "target": "b"}]}`

// cliWorld is the in-memory parts, a worker running jobs on them, and the
// tool's command line.
type cliWorld struct {
	t     *testing.T
	parts *parts
	mem   *sqsadaptertest.SQS
	dlq   string
}

func newCLIWorld(t *testing.T) *cliWorld {
	w := &cliWorld{t: t, mem: sqsadaptertest.NewSQS()}
	var bps []*sqsadapter.Blueprint
	for _, s := range []string{orderBlueprint, quickBlueprint} {
		bp, err := sqsadapter.ParseBlueprint([]byte(s))
		require.NoError(t, err)
		bps = append(bps, bp)
	}
	w.dlq = w.mem.CreateQueue("jobs-dlq", sqsadaptertest.QueueOptions{})
	queue := w.mem.CreateQueue("jobs", sqsadaptertest.QueueOptions{VisibilityTimeout: time.Second, MaxReceiveCount: 5, DeadLetterQueueURL: w.dlq})
	w.parts = &parts{
		sqs: w.mem, contexts: sqsadaptertest.NewContextStore(), coord: sqsadaptertest.NewCoordinationStore(),
		queueURL: queue, dlqURL: func(context.Context) (string, error) { return w.dlq, nil }, blueprints: bps,
	}
	step := func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
		return sqsadapter.NodeResult{Output: nc.NodeID + " done"}, nil
	}
	worker, err := sqsadapter.NewSqsAdapter(
		sqsadapter.WithSQSClient(w.mem), sqsadapter.WithQueueURL(queue),
		sqsadapter.WithContextStore(w.parts.contexts), sqsadapter.WithCoordinationStore(w.parts.coord),
		sqsadapter.WithRegistry(sqsadapter.NodeRegistry{"step": step}), sqsadapter.WithBlueprints(bps...),
		sqsadapter.WithWaitTime(time.Second), sqsadapter.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))),
	)
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- worker.Run(context.Background()) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		assert.NoError(t, worker.Shutdown(ctx))
		<-done
	})
	return w
}

// cli runs the tool and returns its exit status and output.
func (w *cliWorld) cli(args ...string) (int, string, string) {
	var out, errOut bytes.Buffer
	code := run(w.t.Context(), args, &out, &errOut, func(context.Context) (*parts, error) { return w.parts, nil })
	return code, out.String(), errOut.String()
}

func (w *cliWorld) status(runID string) *sqsadapter.RunStatus {
	code, out, errOut := w.cli("-json", "status", runID)
	require.Equal(w.t, 0, code, errOut)
	var st sqsadapter.RunStatus
	require.NoError(w.t, json.Unmarshal([]byte(out), &st), out)
	return &st
}

func TestStartWaitStatus(t *testing.T) {
	t.Parallel()
	w := newCLIWorld(t)
	code, out, errOut := w.cli("start", "-blueprint", "quick", "-run-id", "q-1", "-input", `{"x": 1}`, "-wait", "30s")
	require.Equal(t, 0, code, errOut)
	assert.Regexp(t, `(?m)^status\s+completed$`, out)
	assert.Regexp(t, `(?m)^a\s+completed\s+1\s*$`, out)
	assert.Regexp(t, `(?m)^b\s+completed\s+1\s*$`, out)

	st := w.status("q-1")
	assert.Equal(t, sqsadapter.StatusCompleted, st.Status)
	assert.Equal(t, "b done", st.Context["_outputs.b"])
	assert.EqualValues(t, 1, st.Context["x"])

	code, out, _ = w.cli("start", "-blueprint", "quick", "-json")
	require.Equal(t, 0, code)
	var started map[string]string
	require.NoError(t, json.Unmarshal([]byte(out), &started))
	code, out, _ = w.cli("wait", started["runId"], "-timeout", "30s")
	assert.Equal(t, 0, code, out)
	assert.Contains(t, out, "completed")
}

// A waiting run is listed, resumed, and completes; another is cancelled,
// and waiting for it exits 1.
func TestListResumeCancel(t *testing.T) {
	t.Parallel()
	w := newCLIWorld(t)
	for _, id := range []string{"o-1", "o-2"} {
		code, _, errOut := w.cli("start", "-blueprint", "order", "-run-id", id)
		require.Equal(t, 0, code, errOut)
	}
	require.Eventually(t, func() bool {
		return w.status("o-1").Nodes["approve"].State == "waiting" && w.status("o-2").Nodes["approve"].State == "waiting"
	}, 20*time.Second, 20*time.Millisecond)

	code, out, _ := w.cli("status", "o-1")
	require.Equal(t, 0, code)
	assert.Regexp(t, `(?m)^status\s+awaiting$`, out)
	assert.Regexp(t, `(?m)^approve\s+waiting\s+1\s+external_event$`, out)
	code, out, _ = w.cli("list", "-blueprint", "order")
	require.Equal(t, 0, code)
	assert.Regexp(t, `(?m)^o-1\s+order\s+running`, out)
	assert.Regexp(t, `(?m)^o-2\s+order\s+running`, out)
	code, out, _ = w.cli("-json", "list")
	require.Equal(t, 0, code)
	var listed []sqsadapter.RunStatus
	require.NoError(t, json.Unmarshal([]byte(out), &listed))
	assert.Len(t, listed, 2)

	code, out, errOut := w.cli("resume", "o-1", "approve", "-output", `{"by": "ops"}`, "-action", "ok")
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, "resumed")
	code, out, _ = w.cli("wait", "o-1", "-timeout", "30s")
	assert.Equal(t, 0, code, out)
	assert.Equal(t, map[string]any{"by": "ops"}, w.status("o-1").Context["_outputs.approve"])

	code, _, errOut = w.cli("cancel", "o-2", "-reason", "customer left")
	require.Equal(t, 0, code, errOut)
	code, out, _ = w.cli("wait", "o-2", "-timeout", "30s")
	assert.Equal(t, 1, code, "waiting for a cancelled run")
	assert.Regexp(t, `(?m)^status\s+cancelled$`, out)
	assert.Regexp(t, `(?m)^error\s+customer left$`, out)

	code, out, _ = w.cli("list")
	require.Equal(t, 0, code)
	assert.NotContains(t, out, "o-1")
	assert.NotContains(t, out, "o-2")
}

func TestReconcileAndRedrive(t *testing.T) {
	t.Parallel()
	w := newCLIWorld(t)
	code, out, errOut := w.cli("-json", "reconcile", "-threshold", "1h")
	require.Equal(t, 0, code, errOut)
	var stats map[string]int
	require.NoError(t, json.Unmarshal([]byte(out), &stats))
	assert.Equal(t, map[string]int{"scanned": 0, "stalled": 0, "jobs": 0, "errors": 0}, stats)

	// A run whose job was dead-lettered: the job is moved back, and the
	// worker runs it.
	code, _, errOut = w.cli("start", "-blueprint", "quick", "-run-id", "d-1", "-wait", "30s")
	require.Equal(t, 0, code, errOut)
	body := `{"runId":"d-1","blueprintId":"quick","nodeId":"a"}`
	for range 3 {
		_, err := w.mem.SendMessage(t.Context(), &sqs.SendMessageInput{QueueUrl: aws.String(w.dlq), MessageBody: aws.String(body)})
		require.NoError(t, err)
	}
	code, out, errOut = w.cli("redrive", "-max", "2")
	require.Equal(t, 0, code, errOut)
	assert.Regexp(t, `(?m)^moved\s+2$`, out)
	code, out, _ = w.cli("redrive")
	require.Equal(t, 0, code)
	assert.Regexp(t, `(?m)^moved\s+1$`, out)
	v, f, d := w.mem.Len(w.dlq)
	assert.Zero(t, v+f+d, "the dead-letter queue is empty")
	require.Eventually(t, func() bool { v, f, d := w.mem.Len(w.parts.queueURL); return v+f+d == 0 }, 20*time.Second, 20*time.Millisecond,
		"the worker handles the redriven jobs (a finished run's: dropped)")
	st := w.status("d-1")
	assert.Equal(t, 1, st.Nodes["a"].Attempts, "nothing ran again")
}

// delete deletes finished runs, refuses a running one and reports an
// unknown one, run by run; cancel sets the expiry of SQSADAPTER_RETENTION.
func TestDelete(t *testing.T) {
	t.Parallel()
	w := newCLIWorld(t)
	w.parts.retention = 2 * time.Hour
	code, _, errOut := w.cli("start", "-blueprint", "quick", "-run-id", "q-1", "-wait", "30s")
	require.Equal(t, 0, code, errOut)
	code, _, errOut = w.cli("start", "-blueprint", "order", "-run-id", "o-1")
	require.Equal(t, 0, code, errOut)
	require.Eventually(t, func() bool { return w.status("o-1").Nodes["approve"].State == "waiting" }, 20*time.Second, 20*time.Millisecond)

	code, out, _ := w.cli("delete", "q-1", "o-1", "nope")
	assert.Equal(t, 1, code, "a run was not deleted")
	assert.Regexp(t, `(?m)^RUN\s+RESULT$`, out)
	assert.Regexp(t, `(?m)^q-1\s+deleted$`, out)
	assert.Regexp(t, `(?m)^o-1\s+.*run is not finished`, out)
	assert.Regexp(t, `(?m)^nope\s+.*run not found`, out)
	code, _, errOut = w.cli("status", "q-1")
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "run not found")
	assert.Equal(t, "waiting", w.status("o-1").Nodes["approve"].State, "the running run is kept")

	code, _, errOut = w.cli("cancel", "o-1")
	require.Equal(t, 0, code, errOut)
	cs := w.parts.contexts.(*sqsadaptertest.ContextStore)
	expiry, items := cs.Expiries("o-1")
	assert.False(t, expiry.IsZero(), "the cancelled run expires (SQSADAPTER_RETENTION)")
	for key, exp := range items {
		assert.True(t, exp.Equal(expiry), "item %q expires at %v, the run at %v", key, exp, expiry)
	}
	code, out, errOut = w.cli("-json", "delete", "o-1")
	require.Equal(t, 0, code, errOut)
	var results []map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &results), out)
	assert.Equal(t, []map[string]any{{"runId": "o-1", "deleted": true}}, results)
	snap, err := cs.Snapshot(t.Context(), "o-1")
	require.NoError(t, err)
	assert.Empty(t, snap, "every value of the run is deleted")
	_, items = cs.Expiries("o-1")
	for key := range items {
		assert.True(t, strings.HasPrefix(key, "_outputs."), "only node tombstones are left, not %q", key)
	}
	code, out, _ = w.cli("delete", "o-1", "-json")
	assert.Equal(t, 1, code, "deleted already")
	require.NoError(t, json.Unmarshal([]byte(out), &results), out)
	require.Len(t, results, 1)
	assert.Equal(t, false, results[0]["deleted"])
	assert.Contains(t, results[0]["error"], "run not found")
}

func TestUsageErrors(t *testing.T) {
	t.Parallel()
	w := &cliWorld{t: t, parts: &parts{}}
	for _, args := range [][]string{{}, {"frobnicate"}, {"status"}, {"status", "a", "b"}, {"start"}, {"start", "-blueprint", "x", "-input", "[1]"},
		{"tables", "drop"}, {"resume", "r"}, {"wait", "r", "-timeout", "soon"}, {"delete"}} {
		code, _, errOut := w.cli(args...)
		assert.Equal(t, 2, code, "%q", args)
		assert.Contains(t, errOut, "usage: sqsadapter", "%q", args)
	}
	code, _, errOut := w.cli("tables", "create")
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "no DynamoDB client")
}

// The tool against the emulators: tables created, a run started and
// waited for while a worker on the same tables and queue runs it.
func TestEmulators(t *testing.T) {
	sqsEndpoint, ddbEndpoint := os.Getenv("SQSADAPTER_SQS_ENDPOINT"), os.Getenv("SQSADAPTER_DYNAMODB_ENDPOINT")
	if sqsEndpoint == "" || ddbEndpoint == "" {
		t.Skip("SQSADAPTER_SQS_ENDPOINT and SQSADAPTER_DYNAMODB_ENDPOINT are not set (make test sets them)")
	}
	for k, v := range map[string]string{"AWS_ENDPOINT_URL_SQS": sqsEndpoint, "AWS_ENDPOINT_URL_DYNAMODB": ddbEndpoint,
		"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"} {
		t.Setenv(k, v)
	}
	base := "sqsadapter-cli-" + strings.ToLower(time.Now().Format("150405.000000"))
	base = strings.ReplaceAll(base, ".", "")
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(dir+"/quick.json", []byte(quickBlueprint), 0o600))
	env := map[string]string{
		"SQSADAPTER_QUEUE_NAME": base + "-jobs", "SQSADAPTER_CONTEXT_TABLE": base + "-context",
		"SQSADAPTER_STATUS_TABLE": base + "-status", "SQSADAPTER_COORDINATION_TABLE": base + "-coordination",
		"SQSADAPTER_BLUEPRINTS": dir,
	}
	connect := envConnector(func(k string) string {
		if v, ok := env[k]; ok {
			return v
		}
		return os.Getenv(k)
	})
	cli := func(args ...string) (int, string, string) {
		var out, errOut bytes.Buffer
		code := run(t.Context(), args, &out, &errOut, connect)
		return code, out.String(), errOut.String()
	}
	// The queue, as the worker's -setup makes it.
	cleanup := emulatorResources(t, base)
	code, out, errOut := cli("tables", "create")
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, base+"-context")

	p, err := connect(t.Context())
	require.NoError(t, err)
	step := func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
		return sqsadapter.NodeResult{Output: nc.NodeID}, nil
	}
	worker, err := sqsadapter.NewSqsAdapter(sqsadapter.WithSQSClient(p.sqs), sqsadapter.WithQueueURL(p.queueURL),
		sqsadapter.WithContextStore(p.contexts), sqsadapter.WithCoordinationStore(p.coord),
		sqsadapter.WithRegistry(sqsadapter.NodeRegistry{"step": step}), sqsadapter.WithBlueprints(p.blueprints...),
		sqsadapter.WithWaitTime(time.Second), sqsadapter.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- worker.Run(context.Background()) }()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		assert.NoError(t, worker.Shutdown(ctx))
		<-done
		cleanup()
	}()
	code, out, errOut = cli("start", "-blueprint", "quick", "-wait", "1m")
	require.Equal(t, 0, code, errOut)
	assert.Regexp(t, `(?m)^status\s+completed$`, out)
}

// emulatorResources creates the job queue base-jobs on the emulator and
// returns what deletes it and the tables base-*.
func emulatorResources(t *testing.T, base string) func() {
	cfg, err := config.LoadDefaultConfig(t.Context())
	require.NoError(t, err)
	sq := sqs.NewFromConfig(cfg)
	out, err := sq.CreateQueue(t.Context(), &sqs.CreateQueueInput{QueueName: aws.String(base + "-jobs")})
	require.NoError(t, err)
	db := dynamodb.NewFromConfig(cfg, func(o *dynamodb.Options) { o.DisableValidateResponseChecksum = true })
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, _ = sq.DeleteQueue(ctx, &sqs.DeleteQueueInput{QueueUrl: out.QueueUrl})
		for _, suffix := range []string{"-context", "-status", "-coordination"} {
			_, _ = db.DeleteTable(ctx, &dynamodb.DeleteTableInput{TableName: aws.String(base + suffix)})
		}
	}
}
