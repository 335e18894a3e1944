package chaos

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/smithy-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowcraft/sqsadapter"
	"github.com/flowcraft/sqsadapter/store"
)

// upstream is a stand-in emulator: it answers every request with 200 and
// an empty JSON object, and records the operations it saw.
type upstream struct {
	*httptest.Server
	mu  sync.Mutex
	ops []string
}

func newUpstream(t *testing.T) *upstream {
	u := &upstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		u.mu.Lock()
		u.ops = append(u.ops, r.Header.Get("X-Amz-Target"))
		u.mu.Unlock()
		w.Header().Set("Content-Type", "application/x-amz-json-1.0")
		_, _ = w.Write([]byte(`{}`))
	}))
	t.Cleanup(u.Close)
	return u
}

func (u *upstream) count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.ops)
}

func clients(endpoint string, maxAttempts int) (*sqs.Client, *dynamodb.Client) {
	creds := credentials.NewStaticCredentialsProvider("test", "test", "")
	sq := sqs.New(sqs.Options{Region: "us-east-1", Credentials: creds, BaseEndpoint: aws.String(endpoint),
		Retryer: retry.NewStandard(func(o *retry.StandardOptions) { o.MaxAttempts = maxAttempts })})
	db := dynamodb.New(dynamodb.Options{Region: "us-east-1", Credentials: creds, BaseEndpoint: aws.String(endpoint),
		DisableValidateResponseChecksum: true,
		Retryer:                         retry.NewStandard(func(o *retry.StandardOptions) { o.MaxAttempts = maxAttempts })})
	return sq, db
}

// TestInjectedErrorsAreWhatTheSDKRetries checks that the SDK reads every
// injected error as the service's own error and classifies it as
// retryable: throttling errors by their code, 500s by their status, resets
// as connection errors.
func TestInjectedErrorsAreWhatTheSDKRetries(t *testing.T) {
	up := newUpstream(t)
	retryable := retry.IsErrorRetryables(retry.DefaultRetryables)
	throttle := retry.IsErrorThrottles(retry.DefaultThrottles)
	for _, tc := range []struct {
		service, kind string
		variant       int
		code          string
		throttle      bool
	}{
		{ServiceDynamoDB, FaultHTTP500, 0, "InternalServerError", false},
		{ServiceDynamoDB, FaultThrottle, 0, "ProvisionedThroughputExceededException", true},
		{ServiceDynamoDB, FaultThrottle, 1, "ThrottlingException", true},
		{ServiceDynamoDB, FaultReset, 0, "", false},
		{ServiceSQS, FaultHTTP500, 0, "InternalError", false},
		{ServiceSQS, FaultThrottle, 0, "ThrottlingException", true},
		{ServiceSQS, FaultThrottle, 1, "RequestThrottled", true},
		{ServiceSQS, FaultReset, 0, "", false},
	} {
		for _, after := range []bool{false, true} {
			name := tc.service + "/" + tc.kind
			if tc.code != "" {
				name += "/" + tc.code
			}
			if after {
				name += "/after"
			}
			t.Run(name, func(t *testing.T) {
				in := NewInjector(1, 0.5, 20*time.Millisecond)
				in.force = &fault{kind: tc.kind, after: after, variant: tc.variant}
				p, err := NewProxy(tc.service, up.URL, in, nil)
				require.NoError(t, err)
				defer p.Close()
				sq, db := clients(p.URL(), 1)
				before := up.count()
				if tc.service == ServiceSQS {
					_, err = sq.GetQueueUrl(t.Context(), &sqs.GetQueueUrlInput{QueueName: aws.String("q")})
				} else {
					_, err = db.DescribeTable(t.Context(), &dynamodb.DescribeTableInput{TableName: aws.String("t")})
				}
				require.Error(t, err)
				assert.True(t, retryable.IsErrorRetryable(err).Bool(), "not retryable: %v", err)
				if after {
					assert.Equal(t, before+1, up.count(), "forwarded")
				} else {
					assert.Equal(t, before, up.count(), "not forwarded")
				}
				if tc.code == "" {
					assert.ErrorContains(t, err, "connection reset")
					return
				}
				var apiErr smithy.APIError
				require.True(t, errors.As(err, &apiErr), "%T: %v", err, err)
				assert.Equal(t, tc.code, apiErr.ErrorCode())
				assert.Equal(t, tc.throttle, throttle.IsErrorThrottle(err).Bool())
			})
		}
	}
}

// TestLatencyFault checks that a latency fault delays the real answer.
func TestLatencyFault(t *testing.T) {
	up := newUpstream(t)
	in := NewInjector(1, 0.5, time.Second)
	in.force = &fault{kind: FaultLatency, after: true, latency: 300 * time.Millisecond}
	p, err := NewProxy(ServiceSQS, up.URL, in, nil)
	require.NoError(t, err)
	defer p.Close()
	sq, _ := clients(p.URL(), 1)
	began := time.Now()
	_, err = sq.GetQueueUrl(t.Context(), &sqs.GetQueueUrlInput{QueueName: aws.String("q")})
	require.NoError(t, err)
	assert.GreaterOrEqual(t, time.Since(began), 300*time.Millisecond)
	c := in.Counts()
	assert.Equal(t, int64(1), c.ByKind[FaultLatency])
	assert.Equal(t, int64(1), c.After)
}

// TestInjectorRate checks the share of faulted requests and that every
// kind and phase occurs.
func TestInjectorRate(t *testing.T) {
	in := NewInjector(42, 0.1, time.Second)
	for range 20000 {
		f := in.decide(ServiceSQS)
		if f.kind == FaultLatency {
			assert.True(t, f.latency >= 500*time.Millisecond && f.latency < time.Second, "%v", f.latency)
		}
	}
	c := in.Counts()
	assert.InDelta(t, 0.1, float64(c.Faulted())/float64(c.Requests), 0.01)
	for _, k := range FaultKinds {
		assert.InDelta(t, c.Faulted()/4, c.ByKind[k], float64(c.Faulted())/10, k)
	}
	assert.InDelta(t, c.Before, c.After, float64(c.Faulted())/10)
	in.SetEnabled(false)
	assert.Equal(t, fault{}, in.decide(ServiceSQS))
}

// TestLedgerCountsCommits drives the DynamoDB store through the proxy to
// a stand-in emulator that accepts every write, and checks that the ledger
// recognizes node commits (single update and transaction) and final status
// writes, and nothing else.
func TestLedgerCountsCommits(t *testing.T) {
	up := newUpstream(t)
	ledger := NewLedger("ctx", "status")
	in := NewInjector(1, 0, time.Second)
	p, err := NewProxy(ServiceDynamoDB, up.URL, in, ledger.Observe)
	require.NoError(t, err)
	defer p.Close()
	_, db := clients(p.URL(), 1)
	cs := sqsadapter.NewDynamoDbContext(db, "ctx", "status")
	ctx := t.Context()
	now := time.Now()

	// Not commits: acquire, extend, release, skip, close.
	_, _ = cs.AcquireNode(ctx, "r1", "a", "w1", now.Add(time.Minute), now)
	_ = cs.ExtendLease(ctx, "r1", "a", "w1", now.Add(time.Minute))
	_ = cs.ReleaseLease(ctx, "r1", "a", "w1")
	_ = cs.SkipNodes(ctx, "r1", []string{"b"})
	_ = cs.CloseNodes(ctx, "r1", []string{"c"})
	assert.Empty(t, ledger.Commits("r1"))

	// A commit without context writes (UpdateItem) and one with (a
	// transaction).
	_, _ = cs.CommitNode(ctx, "r1", store.NodeCommit{NodeID: "a", Output: map[string]any{"v": 1}, Action: "committed"})
	_, _ = cs.CommitNode(ctx, "r1", store.NodeCommit{NodeID: "d", Output: "committed", Sets: map[string]any{"k": "committed"}})
	_, _ = cs.CommitNode(ctx, "r2", store.NodeCommit{NodeID: "a", Output: 1})
	commits := ledger.Commits("r1")
	assert.Equal(t, 1, commits["a"].Commits)
	assert.Equal(t, 1, commits["d"].Commits)
	assert.Len(t, commits, 2)
	assert.Equal(t, 1, ledger.Commits("r2")["a"].Commits)

	// Final status writes.
	_ = cs.FinishRun(ctx, "r1", sqsadapter.StatusCompleted, "", "", now)
	_ = cs.FinishRun(ctx, "r1", sqsadapter.StatusFailed, "node x failed", "x", now)
	f := ledger.Finishes("r1")
	assert.Equal(t, 2, f.Writes)
	assert.Equal(t, []string{"completed", "failed"}, f.Statuses)
	assert.Zero(t, ledger.Finishes("r2").Writes)
	assert.Zero(t, ledger.Unparsable())
}

// TestLedgerTransactionReplay checks that a transaction retried with its
// token (after a fault that hid its success) counts once, and that the
// hidden success is counted as such.
func TestLedgerTransactionReplay(t *testing.T) {
	up := newUpstream(t)
	ledger := NewLedger("ctx", "status")
	in := NewInjector(1, 0.5, time.Second)
	in.force = &fault{kind: FaultHTTP500, after: true}
	p, err := NewProxy(ServiceDynamoDB, up.URL, in, ledger.Observe)
	require.NoError(t, err)
	defer p.Close()
	_, db := clients(p.URL(), 3)
	cs := sqsadapter.NewDynamoDbContext(db, "ctx", "status")
	_, err = cs.CommitNode(context.Background(), "r1", store.NodeCommit{NodeID: "a", Output: 1, Sets: map[string]any{"k": 1}})
	require.Error(t, err) // every attempt is answered 500
	c := ledger.Commits("r1")["a"]
	assert.Equal(t, 1, c.Commits)
	assert.Equal(t, 2, c.Replays)
	assert.Equal(t, 1, c.Hidden)
	assert.Equal(t, 3, up.count(), "the SDK tried three times, with one token")
}

func TestSetAssignments(t *testing.T) {
	assert.Equal(t, [][2]string{{"#0", ":2"}, {"#3", ":3"}},
		setAssignments("ADD #1 :1\nREMOVE #2\nSET #0 = :2, #3 = :3\n"))
	assert.Equal(t, [][2]string{{"#a", "if_not_exists(#a, :x)"}, {"#b", ":y"}},
		setAssignments("set #a = if_not_exists(#a, :x), #b = :y remove #c"))
	assert.Empty(t, setAssignments("REMOVE #settings"))
	assert.True(t, strings.HasPrefix(clauses("SET #0 = :0 DELETE #1 :1")[1], "DELETE"))
}
