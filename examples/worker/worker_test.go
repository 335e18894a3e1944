package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	dynamodbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestWorkerRestartMidRun runs the worker binary against the SQS and
// DynamoDB emulators: a run survives a graceful stop while a node is in
// flight, then a stop whose deadline cancels a running node, and completes
// on a third worker.
func TestWorkerRestartMidRun(t *testing.T) {
	sqsEndpoint, ddbEndpoint := os.Getenv("SQSADAPTER_SQS_ENDPOINT"), os.Getenv("SQSADAPTER_DYNAMODB_ENDPOINT")
	if sqsEndpoint == "" || ddbEndpoint == "" {
		t.Skip("worker integration test: SQSADAPTER_SQS_ENDPOINT and SQSADAPTER_DYNAMODB_ENDPOINT are not set. " +
			"To run it: state=$(scripts/emulators.sh start) && . $state/env && go test ./examples/worker; " +
			"or run `make test`, which does all of it")
	}
	env := testEnv(t, sqsEndpoint, ddbEndpoint)
	bin := buildWorker(t)

	setup := startProcess(t, bin, env, "setup", "-setup")
	require.Equal(t, 0, setup.wait(t, 3*time.Minute), "worker -setup")

	const latency = time.Second
	workerFlags := []string{"-simulate-latency", latency.String(), "-visibility-timeout", "4s", "-concurrency", "4"}

	// Worker A stops gracefully while "decide" runs: the node finishes and
	// the worker exits 0, long before its 25s shutdown deadline.
	a := startProcess(t, bin, env, "worker A", workerFlags...)
	client := startProcess(t, bin, env, "client", "-start", "-wait", "3m",
		"-input", `{"order": {"id": "o-7", "customer": "c-1", "items": [{"sku": "A1", "qty": 4, "price": 2.5}]}}`)
	a.waitForStep(t, "decide", 1, time.Minute)
	began := time.Now()
	a.signal(t, syscall.SIGTERM)
	assert.Equal(t, 0, a.wait(t, 30*time.Second), "worker A exit status after SIGTERM")
	assert.Less(t, time.Since(began), 10*time.Second, "worker A took too long to stop")
	require.False(t, client.exited(), "the run finished without the charge step")

	// Worker B's shutdown deadline (100ms) is shorter than "charge": the
	// node is cancelled, its lease released and its message made visible
	// again; the worker exits 1.
	b := startProcess(t, bin, env, "worker B", append(workerFlags, "-shutdown-timeout", "100ms")...)
	b.waitForStep(t, "charge", 1, time.Minute)
	began = time.Now()
	b.signal(t, syscall.SIGTERM)
	assert.Equal(t, 1, b.wait(t, 30*time.Second), "worker B exit status after a cancelling shutdown")
	assert.Less(t, time.Since(began), 5*time.Second, "worker B took too long to stop")

	// Worker C runs "charge" again (attempt 2) and the run completes.
	c := startProcess(t, bin, env, "worker C", workerFlags...)
	require.Equal(t, 0, client.wait(t, 2*time.Minute), "worker -start exit status")
	c.waitForStep(t, "charge", 2, 10*time.Second)

	lines := strings.SplitN(strings.TrimSpace(client.stdout.String()), "\n", 2)
	require.Len(t, lines, 2, "worker -start output: %s", client.stdout.String())
	var st struct {
		RunID   string         `json:"runId"`
		Status  string         `json:"status"`
		Context map[string]any `json:"context"`
	}
	require.NoError(t, json.Unmarshal([]byte(lines[1]), &st))
	assert.Equal(t, lines[0], st.RunID)
	assert.Equal(t, "completed", st.Status)
	assert.Equal(t, map[string]any{"decision": "approve", "total": 10.0}, st.Context["_outputs.decide"])
	charge, _ := st.Context["_outputs.charge"].(map[string]any)
	require.NotNil(t, charge, "context: %v", st.Context)
	assert.Equal(t, charge["paymentId"], st.Context["paymentId"])
	assert.Equal(t, 10.0, charge["amount"])

	c.signal(t, syscall.SIGTERM)
	assert.Equal(t, 0, c.wait(t, 30*time.Second), "worker C exit status after SIGTERM")
}

// testEnv returns the environment of the worker processes: the emulator
// endpoints, test credentials, and queue and table names of this test's
// own, which are deleted when the test ends.
func testEnv(t *testing.T, sqsEndpoint, ddbEndpoint string) []string {
	t.Helper()
	base := "sqsadapter-worker-" + strings.ToLower(rand.Text()[:8])
	names := map[string]string{
		"SQSADAPTER_QUEUE_NAME":         base + "-jobs",
		"SQSADAPTER_DLQ_NAME":           base + "-dlq",
		"SQSADAPTER_CONTEXT_TABLE":      base + "-context",
		"SQSADAPTER_STATUS_TABLE":       base + "-status",
		"SQSADAPTER_COORDINATION_TABLE": base + "-coordination",
	}
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AWS_") && !strings.HasPrefix(kv, "SQSADAPTER_") {
			env = append(env, kv)
		}
	}
	env = append(env,
		"AWS_ENDPOINT_URL_SQS="+sqsEndpoint, "AWS_ENDPOINT_URL_DYNAMODB="+ddbEndpoint,
		"AWS_ACCESS_KEY_ID=test", "AWS_SECRET_ACCESS_KEY=test", "AWS_REGION=us-east-1",
		"AWS_EC2_METADATA_DISABLED=true",
	)
	for k, v := range names {
		env = append(env, k+"="+v)
	}

	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		creds := credentials.NewStaticCredentialsProvider("test", "test", "")
		sq := sqs.New(sqs.Options{Region: "us-east-1", Credentials: creds, BaseEndpoint: aws.String(sqsEndpoint)})
		for _, k := range []string{"SQSADAPTER_QUEUE_NAME", "SQSADAPTER_DLQ_NAME"} {
			out, err := sq.GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: aws.String(names[k])})
			if err != nil {
				continue // never created
			}
			if _, err := sq.DeleteQueue(ctx, &sqs.DeleteQueueInput{QueueUrl: out.QueueUrl}); err != nil {
				t.Errorf("delete queue %s: %v", names[k], err)
			}
		}
		db := dynamodb.New(dynamodb.Options{
			Region: "us-east-1", Credentials: creds, BaseEndpoint: aws.String(ddbEndpoint),
			DisableValidateResponseChecksum: true,
		})
		for _, k := range []string{"SQSADAPTER_CONTEXT_TABLE", "SQSADAPTER_STATUS_TABLE", "SQSADAPTER_COORDINATION_TABLE"} {
			_, err := db.DeleteTable(ctx, &dynamodb.DeleteTableInput{TableName: aws.String(names[k])})
			var notFound *dynamodbtypes.ResourceNotFoundException
			if err != nil && !errors.As(err, &notFound) {
				t.Errorf("delete table %s: %v", names[k], err)
			}
		}
	})
	return env
}

// buildWorker builds this command into a temporary folder.
func buildWorker(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "worker")
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, ".").CombinedOutput()
	require.NoError(t, err, "go build: %s", out)
	return bin
}

// process is a worker process started by the test.
type process struct {
	name   string
	cmd    *exec.Cmd
	stdout bytes.Buffer
	log    *logLines
	done   chan struct{} // closed when it has exited
}

// startProcess starts the worker binary; the test kills it (by its PID) if
// it is still running when the test ends.
func startProcess(t *testing.T, bin string, env []string, name string, args ...string) *process {
	t.Helper()
	p := &process{name: name, log: newLogLines(), done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = env
	p.cmd.Stdout = &p.stdout
	p.cmd.Stderr = p.log
	require.NoError(t, p.cmd.Start(), "start %s", name)
	go func() {
		_ = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		if !p.exited() {
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("%s (%s) stderr:\n%s", name, strings.Join(args, " "), p.log.String())
		}
	})
	return p
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *process) signal(t *testing.T, sig os.Signal) {
	t.Helper()
	require.NoError(t, p.cmd.Process.Signal(sig), "signal %s", p.name)
}

// wait waits for the process to exit and returns its exit status.
func (p *process) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(timeout):
		t.Fatalf("%s did not exit within %v", p.name, timeout)
		return -1
	}
}

// waitForStep waits until the process logs that an attempt of a node started.
func (p *process) waitForStep(t *testing.T, node string, attempt int, timeout time.Duration) {
	t.Helper()
	ok := p.log.waitFor(timeout, func(rec map[string]any) bool {
		return rec["msg"] == "order: step started" && rec["node_id"] == node && rec["attempt"] == float64(attempt)
	})
	require.True(t, ok, "%s did not start attempt %d of %q within %v", p.name, attempt, node, timeout)
}

// logLines collects a process's JSON log lines as they are written.
type logLines struct {
	mu      sync.Mutex
	all     bytes.Buffer
	partial []byte
	recs    []map[string]any
	changed chan struct{} // closed and replaced on every new line
}

func newLogLines() *logLines { return &logLines{changed: make(chan struct{})} }

func (l *logLines) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.all.Write(b)
	l.partial = append(l.partial, b...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break // an incomplete line: wait for the rest
		}
		var rec map[string]any
		if json.Unmarshal(l.partial[:i], &rec) == nil {
			l.recs = append(l.recs, rec)
		}
		l.partial = l.partial[i+1:]
	}
	close(l.changed)
	l.changed = make(chan struct{})
	return len(b), nil
}

func (l *logLines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.all.String()
}

// waitFor waits until a logged record satisfies match.
func (l *logLines) waitFor(timeout time.Duration, match func(map[string]any) bool) bool {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		l.mu.Lock()
		for _, rec := range l.recs {
			if match(rec) {
				l.mu.Unlock()
				return true
			}
		}
		changed := l.changed
		l.mu.Unlock()
		select {
		case <-changed:
		case <-deadline.C:
			return false
		}
	}
}

// Without a region or credentials the worker says which is missing,
// before any request (nothing is contacted: the endpoints are a closed
// loopback port and the instance metadata service is off); a queue that
// does not exist is named as such.
func TestWorkerNamesWhatIsMissing(t *testing.T) {
	bin := buildWorker(t)
	var base []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AWS_") && !strings.HasPrefix(kv, "SQSADAPTER_") {
			base = append(base, kv)
		}
	}
	base = append(base, "AWS_EC2_METADATA_DISABLED=true",
		"AWS_CONFIG_FILE="+filepath.Join(t.TempDir(), "none"), "AWS_SHARED_CREDENTIALS_FILE="+filepath.Join(t.TempDir(), "none"),
		"AWS_ENDPOINT_URL_SQS=http://127.0.0.1:1", "AWS_ENDPOINT_URL_DYNAMODB=http://127.0.0.1:1")
	cases := []struct {
		name string
		env  []string
		want string
	}{
		{"no region", nil, "no AWS region: set AWS_REGION"},
		{"no credentials", []string{"AWS_REGION=us-east-1"}, "no AWS credentials found"},
	}
	if sqsEndpoint, ddbEndpoint := os.Getenv("SQSADAPTER_SQS_ENDPOINT"), os.Getenv("SQSADAPTER_DYNAMODB_ENDPOINT"); sqsEndpoint != "" && ddbEndpoint != "" {
		cases = append(cases, struct {
			name string
			env  []string
			want string
		}{"no queue", []string{"AWS_REGION=us-east-1", "AWS_ACCESS_KEY_ID=test", "AWS_SECRET_ACCESS_KEY=test",
			"AWS_ENDPOINT_URL_SQS=" + sqsEndpoint, "AWS_ENDPOINT_URL_DYNAMODB=" + ddbEndpoint,
			"SQSADAPTER_QUEUE_NAME=sqsadapter-worker-missing-" + strings.ToLower(rand.Text()[:8])}, "the queue does not exist"})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := startProcess(t, bin, append(slices.Clone(base), c.env...), c.name)
			assert.Equal(t, 1, p.wait(t, time.Minute))
			assert.Contains(t, p.log.String(), c.want)
		})
	}
}

// -health-addr serves /healthz: 200 while the worker runs; -probe checks
// it as a container's health check would, and fails once the worker is
// gone.
func TestWorkerHealth(t *testing.T) {
	sqsEndpoint, ddbEndpoint := os.Getenv("SQSADAPTER_SQS_ENDPOINT"), os.Getenv("SQSADAPTER_DYNAMODB_ENDPOINT")
	if sqsEndpoint == "" || ddbEndpoint == "" {
		t.Skip("worker integration test: SQSADAPTER_SQS_ENDPOINT and SQSADAPTER_DYNAMODB_ENDPOINT are not set (make test sets them)")
	}
	env := testEnv(t, sqsEndpoint, ddbEndpoint)
	bin := buildWorker(t)
	require.Equal(t, 0, startProcess(t, bin, env, "setup", "-setup").wait(t, 3*time.Minute), "worker -setup")

	w := startProcess(t, bin, env, "worker", "-health-addr", "127.0.0.1:0")
	var addr string
	require.True(t, w.log.waitFor(time.Minute, func(m map[string]any) bool {
		if m["msg"] == "worker: health endpoint" {
			addr, _ = m["addr"].(string)
		}
		return m["msg"] == "worker: started"
	}), "the worker starts")
	require.NotEmpty(t, addr)
	url := "http://" + addr + "/healthz"
	resp, err := http.Get(url)
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.JSONEq(t, `{"status":"running"}`, string(body))
	assert.Equal(t, 0, startProcess(t, bin, env, "probe", "-probe", url).wait(t, time.Minute), "-probe of a running worker")

	w.signal(t, syscall.SIGTERM)
	assert.Equal(t, 0, w.wait(t, 30*time.Second))
	assert.Equal(t, 1, startProcess(t, bin, env, "probe after", "-probe", url).wait(t, time.Minute), "-probe of a stopped worker")
}
