package sqsadapter_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowcraft/sqsadapter"
	"github.com/flowcraft/sqsadapter/store"
)

// The integration tests run the engine on the emulators that `make test`
// starts: fauxqs for SQS and DynamoDB Local for the stores. Each test gets a
// job queue with a dead-letter queue and three tables of its own, three
// workers polling the queue, and a client adapter that starts runs and
// waits for them.

// sqsEndpointEnv names the SQS endpoint of the integration tests.
const sqsEndpointEnv = "SQSADAPTER_SQS_ENDPOINT"

// itVisibility is the queue's and the adapters' visibility timeout (and
// node lease) in the integration tests. SQS counts whole seconds. It is
// short so that abandoned jobs come back soon, and long enough for the
// heartbeat (every third of it) on a loaded machine.
const itVisibility = 3 * time.Second

// itMaxReceiveCount is the queue's redrive policy: deliveries before a
// message is dead-lettered.
const itMaxReceiveCount = 30

// integrationEndpoints returns the SQS and DynamoDB endpoints of the
// emulators, or skips the test when they are not set.
func integrationEndpoints(t *testing.T) (sqsEndpoint, ddbEndpoint string) {
	t.Helper()
	sqsEndpoint, ddbEndpoint = os.Getenv(sqsEndpointEnv), os.Getenv(dynamoDBEndpointEnv)
	if sqsEndpoint == "" || ddbEndpoint == "" {
		t.Skipf("integration test: %s and %s are not set. To run it: "+
			"state=$(scripts/emulators.sh start) && . $state/env && go test -race -run Integration .; "+
			"or run `make test`, which does all of it", sqsEndpointEnv, dynamoDBEndpointEnv)
	}
	return sqsEndpoint, ddbEndpoint
}

// sqsTestClient returns a client of the SQS server at endpoint, with an HTTP
// transport of the test's own whose idle connections are closed when the
// test ends.
func sqsTestClient(t *testing.T, endpoint string) *sqs.Client {
	t.Helper()
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.Proxy = nil
	t.Cleanup(transport.CloseIdleConnections)
	return sqs.New(sqs.Options{
		Region:       "us-east-1",
		Credentials:  credentials.NewStaticCredentialsProvider("test", "test", ""),
		BaseEndpoint: aws.String(endpoint),
		HTTPClient:   &http.Client{Transport: transport, Timeout: time.Minute},
	})
}

var queueNameUnsafe = regexp.MustCompile(`[^a-zA-Z0-9_-]+`)

// testQueues creates a job queue and its dead-letter queue under names of
// this test's own, with a redrive policy, and deletes both when the test
// ends. It returns the URLs that CreateQueue returned.
func testQueues(t *testing.T, client *sqs.Client, visibility time.Duration, maxReceiveCount int) (queue, dlq string) {
	t.Helper()
	base := queueNameUnsafe.ReplaceAllString(t.Name(), "-")
	if len(base) > 50 {
		base = base[len(base)-50:]
	}
	base = "it-" + strings.Trim(base, "-") + "-" + strings.ToLower(rand.Text()[:8])
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	create := func(name string, attrs map[string]string) string {
		out, err := client.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String(name), Attributes: attrs})
		require.NoError(t, err, "create queue %s", name)
		url := aws.ToString(out.QueueUrl)
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if _, err := client.DeleteQueue(ctx, &sqs.DeleteQueueInput{QueueUrl: aws.String(url)}); err != nil {
				t.Errorf("delete queue %s: %v", name, err)
			}
		})
		return url
	}
	vis := strconv.Itoa(int((visibility + time.Second - 1) / time.Second))
	dlq = create(base+"-dlq", map[string]string{string(sqstypes.QueueAttributeNameVisibilityTimeout): vis})
	attrs, err := client.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
		QueueUrl:       aws.String(dlq),
		AttributeNames: []sqstypes.QueueAttributeName{sqstypes.QueueAttributeNameQueueArn},
	})
	require.NoError(t, err)
	redrive, err := json.Marshal(map[string]any{
		"deadLetterTargetArn": attrs.Attributes[string(sqstypes.QueueAttributeNameQueueArn)],
		"maxReceiveCount":     maxReceiveCount,
	})
	require.NoError(t, err)
	queue = create(base+"-jobs", map[string]string{
		string(sqstypes.QueueAttributeNameVisibilityTimeout): vis,
		string(sqstypes.QueueAttributeNameRedrivePolicy):     string(redrive),
	})
	return queue, dlq
}

// queueDepth returns how many messages a queue holds: visible, in flight
// and delayed.
func queueDepth(ctx context.Context, client *sqs.Client, url string) (visible, inFlight, delayed int, err error) {
	out, err := client.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
		QueueUrl: aws.String(url),
		AttributeNames: []sqstypes.QueueAttributeName{
			sqstypes.QueueAttributeNameApproximateNumberOfMessages,
			sqstypes.QueueAttributeNameApproximateNumberOfMessagesNotVisible,
			sqstypes.QueueAttributeNameApproximateNumberOfMessagesDelayed,
		},
	})
	if err != nil {
		return 0, 0, 0, err
	}
	n := func(name sqstypes.QueueAttributeName) int {
		v, _ := strconv.Atoi(out.Attributes[string(name)])
		return v
	}
	return n(sqstypes.QueueAttributeNameApproximateNumberOfMessages),
		n(sqstypes.QueueAttributeNameApproximateNumberOfMessagesNotVisible),
		n(sqstypes.QueueAttributeNameApproximateNumberOfMessagesDelayed), nil
}

// ---------------------------------------------------------------------------
// A recording SQS client

// itSQS is the SQS client of every adapter of an integration test: the
// emulator's client, recording each message sent to the job queue and
// whether it was deleted, and duplicating received messages on demand
// (fauxqs has no duplicate delivery of its own: a copy of the body is sent
// as a new message).
type itSQS struct {
	*sqs.Client
	queue string
	// duplicate says whether to send a copy of a received job (nil: never).
	// Set it before the workers start.
	duplicate func(job sqsadapter.Job) bool

	mu         sync.Mutex
	msgs       map[string]*itMessage // by message id
	handles    map[string]string     // receipt handle → message id
	received   int
	duplicated int
}

type itMessage struct {
	body    string
	job     sqsadapter.Job // zero if the body is not a job
	deleted bool
}

var _ sqsadapter.SQSClient = (*itSQS)(nil)

func newItSQS(client *sqs.Client, queue string) *itSQS {
	return &itSQS{Client: client, queue: queue, msgs: map[string]*itMessage{}, handles: map[string]string{}}
}

func (s *itSQS) recordSent(id, body string) {
	job, _ := sqsadapter.DecodeJob([]byte(body))
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.msgs[id]; !ok {
		s.msgs[id] = &itMessage{body: body, job: job}
	}
}

func (s *itSQS) SendMessage(ctx context.Context, in *sqs.SendMessageInput, o ...func(*sqs.Options)) (*sqs.SendMessageOutput, error) {
	out, err := s.Client.SendMessage(ctx, in, o...)
	if err == nil && aws.ToString(in.QueueUrl) == s.queue {
		s.recordSent(aws.ToString(out.MessageId), aws.ToString(in.MessageBody))
	}
	return out, err
}

func (s *itSQS) SendMessageBatch(ctx context.Context, in *sqs.SendMessageBatchInput, o ...func(*sqs.Options)) (*sqs.SendMessageBatchOutput, error) {
	out, err := s.Client.SendMessageBatch(ctx, in, o...)
	if err == nil && aws.ToString(in.QueueUrl) == s.queue {
		bodies := map[string]string{}
		for _, e := range in.Entries {
			bodies[aws.ToString(e.Id)] = aws.ToString(e.MessageBody)
		}
		for _, ok := range out.Successful {
			s.recordSent(aws.ToString(ok.MessageId), bodies[aws.ToString(ok.Id)])
		}
	}
	return out, err
}

func (s *itSQS) ReceiveMessage(ctx context.Context, in *sqs.ReceiveMessageInput, o ...func(*sqs.Options)) (*sqs.ReceiveMessageOutput, error) {
	out, err := s.Client.ReceiveMessage(ctx, in, o...)
	if err != nil || aws.ToString(in.QueueUrl) != s.queue {
		return out, err
	}
	var copies []sqstypes.SendMessageBatchRequestEntry
	s.mu.Lock()
	for _, m := range out.Messages {
		s.received++
		id, body := aws.ToString(m.MessageId), aws.ToString(m.Body)
		s.handles[aws.ToString(m.ReceiptHandle)] = id
		if _, ok := s.msgs[id]; !ok {
			job, _ := sqsadapter.DecodeJob([]byte(body))
			s.msgs[id] = &itMessage{body: body, job: job}
		}
	}
	s.mu.Unlock()
	if s.duplicate != nil {
		for _, m := range out.Messages {
			job, err := sqsadapter.DecodeJob([]byte(aws.ToString(m.Body)))
			if err == nil && s.duplicate(job) {
				copies = append(copies, sqstypes.SendMessageBatchRequestEntry{Id: aws.String(strconv.Itoa(len(copies))), MessageBody: m.Body})
			}
		}
	}
	if len(copies) > 0 {
		// The copies are sent whatever becomes of the receive's ctx.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if sent, err := s.SendMessageBatch(sctx, &sqs.SendMessageBatchInput{QueueUrl: in.QueueUrl, Entries: copies}); err == nil {
			s.mu.Lock()
			s.duplicated += len(sent.Successful)
			s.mu.Unlock()
		}
	}
	return out, nil
}

func (s *itSQS) DeleteMessageBatch(ctx context.Context, in *sqs.DeleteMessageBatchInput, o ...func(*sqs.Options)) (*sqs.DeleteMessageBatchOutput, error) {
	out, err := s.Client.DeleteMessageBatch(ctx, in, o...)
	if err == nil && aws.ToString(in.QueueUrl) == s.queue {
		handles := map[string]string{}
		for _, e := range in.Entries {
			handles[aws.ToString(e.Id)] = aws.ToString(e.ReceiptHandle)
		}
		s.mu.Lock()
		for _, ok := range out.Successful {
			if m := s.msgs[s.handles[handles[aws.ToString(ok.Id)]]]; m != nil {
				m.deleted = true
			}
		}
		s.mu.Unlock()
	}
	return out, err
}

// sent counts the messages sent to the job queue whose job matches.
func (s *itSQS) sent(match func(sqsadapter.Job) bool) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, m := range s.msgs {
		if match(m.job) {
			n++
		}
	}
	return n
}

// undeleted returns the bodies of the messages sent to the job queue whose
// job matches and that no worker has deleted yet, sorted.
func (s *itSQS) undeleted(match func(sqsadapter.Job) bool) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, m := range s.msgs {
		if !m.deleted && match(m.job) {
			out = append(out, m.body)
		}
	}
	slices.Sort(out)
	return out
}

func (s *itSQS) counts() (received, duplicated int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.received, s.duplicated
}

// jobOf matches the jobs of a run's node ("" matches any node).
func jobOf(runID, nodeID string) func(sqsadapter.Job) bool {
	return func(j sqsadapter.Job) bool { return j.RunID == runID && (nodeID == "" || j.NodeID == nodeID) }
}

// ---------------------------------------------------------------------------
// Environment

// itEnv is three workers and a client adapter sharing one queue on fauxqs
// and three tables on DynamoDB Local.
type itEnv struct {
	t        *testing.T
	raw      *sqs.Client // the emulator's client, for the test's own calls
	sqs      *itSQS      // the adapters' client
	queue    string
	dlq      string
	contexts *sqsadapter.DynamoDbContext
	coord    *sqsadapter.DynamoDbCoordinationStore
	workers  []*sqsadapter.SqsAdapter
	client   *sqsadapter.SqsAdapter
	ddb      *dynamodb.Client // the tables' client, for the test's own reads
	tables   sqsadapter.TableNames
}

type itConfig struct {
	workers    int // default 3
	registry   sqsadapter.NodeRegistry
	blueprints []*sqsadapter.Blueprint
	opts       []sqsadapter.Option // for every adapter
	visibility time.Duration       // default itVisibility
	// workerOpts returns more options of worker i.
	workerOpts func(i int) []sqsadapter.Option
	// The workers' view of the queue and the stores (nil: as they are).
	wrapSQS      func(sqsadapter.SQSClient) sqsadapter.SQSClient
	wrapContexts func(sqsadapter.ContextStore) sqsadapter.ContextStore
	wrapCoord    func(sqsadapter.CoordinationStore) sqsadapter.CoordinationStore
	setup        func(*itEnv) // before the workers start
}

func newItEnv(t *testing.T, c itConfig) *itEnv {
	t.Helper()
	sqsEndpoint, _ := integrationEndpoints(t)
	if c.workers == 0 {
		c.workers = 3
	}
	if c.visibility == 0 {
		c.visibility = itVisibility
	}
	ddb := dynamoDBClient(t)
	e := &itEnv{t: t, raw: sqsTestClient(t, sqsEndpoint)}
	tables := testTables(t, ddb)
	e.ddb, e.tables = ddb, tables
	e.queue, e.dlq = testQueues(t, e.raw, c.visibility, itMaxReceiveCount)
	e.sqs = newItSQS(e.raw, e.queue)
	e.contexts = sqsadapter.NewDynamoDbContext(ddb, tables.Context, tables.Status)
	e.coord = sqsadapter.NewDynamoDbCoordinationStore(ddb, tables.Coordination)
	if c.setup != nil {
		c.setup(e)
	}
	common := []sqsadapter.Option{
		sqsadapter.WithQueueURL(e.queue),
		sqsadapter.WithRegistry(c.registry),
		sqsadapter.WithBlueprints(c.blueprints...),
		sqsadapter.WithLogger(testLogger()),
		sqsadapter.WithVisibilityTimeout(c.visibility),
		sqsadapter.WithWaitTime(time.Second),
		sqsadapter.WithTuning(sqsadapter.Tuning{PollBackoffMin: 100 * time.Millisecond, PollBackoffMax: time.Second}),
	}
	var err error
	e.client, err = sqsadapter.NewSqsAdapter(append(slices.Clone(common), append([]sqsadapter.Option{
		sqsadapter.WithSQSClient(e.sqs),
		sqsadapter.WithContextStore(e.contexts),
		sqsadapter.WithCoordinationStore(e.coord),
	}, c.opts...)...)...)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, e.client.Shutdown(context.Background())) })
	for i := range c.workers {
		var q sqsadapter.SQSClient = e.sqs
		var contexts sqsadapter.ContextStore = e.contexts
		var coord sqsadapter.CoordinationStore = e.coord
		if c.wrapSQS != nil {
			q = c.wrapSQS(q)
		}
		if c.wrapContexts != nil {
			contexts = c.wrapContexts(contexts)
		}
		if c.wrapCoord != nil {
			coord = c.wrapCoord(coord)
		}
		opts := append(slices.Clone(common),
			sqsadapter.WithWorkerID(fmt.Sprintf("w%d", i)),
			sqsadapter.WithSQSClient(q),
			sqsadapter.WithContextStore(contexts),
			sqsadapter.WithCoordinationStore(coord),
		)
		opts = append(opts, c.opts...)
		if c.workerOpts != nil {
			opts = append(opts, c.workerOpts(i)...)
		}
		w, err := sqsadapter.NewSqsAdapter(opts...)
		require.NoError(t, err)
		e.workers = append(e.workers, w)
		errc := make(chan error, 1)
		go func() { errc <- w.Run(context.Background()) }()
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			assert.NoError(t, w.Shutdown(ctx))
			// A worker whose goroutine had not called Run yet reports
			// ErrAdapterClosed: it never ran.
			if err := <-errc; !errors.Is(err, sqsadapter.ErrAdapterClosed) {
				assert.NoError(t, err)
			}
		})
	}
	return e
}

// depth returns how many messages the queue at url holds, in every state.
func (e *itEnv) depth(url string) int {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(e.t.Context(), 10*time.Second)
	defer cancel()
	v, f, d, err := queueDepth(ctx, e.raw, url)
	require.NoError(e.t, err)
	return v + f + d
}

// ---------------------------------------------------------------------------
// Rig: blueprints whose nodes use "n" (see rig in semantics_test.go).

type itRig struct {
	*itEnv
	log *callLog
}

type itRigConfig struct {
	nodes    map[string]sqsadapter.NodeFunc
	opts     []sqsadapter.Option
	setup    func(*itEnv)
	contexts func(sqsadapter.ContextStore) sqsadapter.ContextStore // the workers' context store
}

func newItRig(t *testing.T, c itRigConfig, bps ...*sqsadapter.Blueprint) *itRig {
	t.Helper()
	log := &callLog{}
	reg := sqsadapter.NodeRegistry{"n": func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
		log.add(nc)
		if f := c.nodes[nc.NodeID]; f != nil {
			return f(ctx, nc)
		}
		return sqsadapter.NodeResult{Output: map[string]any{"from": nc.NodeID}}, nil
	}}
	e := newItEnv(t, itConfig{registry: reg, blueprints: bps, opts: c.opts, setup: c.setup, wrapContexts: c.contexts})
	return &itRig{itEnv: e, log: log}
}

func (r *itRig) start(bp string, initial map[string]any, opts ...sqsadapter.RunOption) string {
	r.t.Helper()
	return startRun(r.t, r.client, bp, initial, opts...)
}

func (r *itRig) wait(id string) *sqsadapter.RunStatus {
	r.t.Helper()
	return waitRun(r.t, r.client, id, 45*time.Second)
}

func (r *itRig) status(id string) *sqsadapter.RunStatus {
	r.t.Helper()
	return getRun(r.t, r.client, id)
}

// node returns a node's record (nil when it has none).
func (r *itRig) node(runID, nodeID string) *store.NodeRecord {
	r.t.Helper()
	recs, err := r.contexts.GetNodes(r.t.Context(), runID, []string{nodeID})
	require.NoError(r.t, err)
	return recs[nodeID]
}

// nodeState is the state of a node's record ("" when it has none).
func (r *itRig) nodeState(runID, nodeID string) string {
	r.t.Helper()
	if rec := r.node(runID, nodeID); rec != nil {
		return rec.State
	}
	return ""
}

// send puts a job message in the queue directly.
func (r *itRig) send(j sqsadapter.Job) {
	r.t.Helper()
	_, err := r.sqs.SendMessage(r.t.Context(), &sqs.SendMessageInput{QueueUrl: aws.String(r.queue), MessageBody: aws.String(jobBody(r.t, j))})
	require.NoError(r.t, err)
}

// drained waits until every message of run id was deleted and the queue
// and its dead-letter queue are empty.
func (r *itRig) drained(id string) {
	r.t.Helper()
	itEventually(r.t, func() bool { return len(r.sqs.undeleted(jobOf(id, ""))) == 0 }, "every message of the run is deleted")
	itEventually(r.t, func() bool { return r.depth(r.queue) == 0 }, "the queue is empty")
	assert.Zero(r.t, r.depth(r.dlq), "messages were dead-lettered")
}

func itEventually(t *testing.T, cond func() bool, msg string) {
	t.Helper()
	require.Eventually(t, cond, 20*time.Second, 50*time.Millisecond, msg)
}

// itNever asserts that cond stays false for d.
func itNever(t *testing.T, d time.Duration, cond func() bool, msg string) {
	t.Helper()
	assert.Never(t, cond, d, 50*time.Millisecond, msg)
}

// itFinishCounter counts the run status transitions that took effect.
type itFinishCounter struct {
	sqsadapter.ContextStore
	mu       sync.Mutex
	finished map[string][]string // run id → statuses written
}

func (f *itFinishCounter) FinishRun(ctx context.Context, runID string, status sqsadapter.RunState, reason, failedNode string, at time.Time) error {
	err := f.ContextStore.FinishRun(ctx, runID, status, reason, failedNode, at)
	if err == nil {
		f.mu.Lock()
		if f.finished == nil {
			f.finished = map[string][]string{}
		}
		f.finished[runID] = append(f.finished[runID], string(status))
		f.mu.Unlock()
	}
	return err
}

func (f *itFinishCounter) statuses(runID string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.finished[runID])
}

// ---------------------------------------------------------------------------
// Distribution semantics on the emulators

// TestIntegrationSemantics runs the semantics that depend on distribution
// — joins, redelivery, failure, completion, idempotent start — on three
// workers sharing a queue on fauxqs and tables on DynamoDB Local. The
// subtests run in parallel with each other only: the parent is not
// parallel, so that the emulators' load does not overlap the in-memory
// tests' timing.
func TestIntegrationSemantics(t *testing.T) {
	integrationEndpoints(t)
	t.Run("all join counts a duplicated predecessor once", itAllJoinDuplicatedPredecessor)
	t.Run("all join behind a dead branch", itAllJoinBehindDeadBranch)
	t.Run("any join runs once", itAnyJoinRunsOnce)
	t.Run("different leaves complete", itDifferentLeaves)
	t.Run("failure stops the run", itFailureStopsRun)
	t.Run("retries count attempts", itRetriesCountAttempts)
	t.Run("fallback", itFallback)
	t.Run("StartRun with a run id is idempotent", itStartRunIdempotent)
	t.Run("context writes", itContextWrites)
	t.Run("value over the item limit fails the run", itValueTooLarge)
}

// A predecessor whose job is delivered twice, re-sent after its commit and
// replayed by hand counts once: the "all" join waits for the other
// predecessor, and runs once.
func itAllJoinDuplicatedPredecessor(t *testing.T) {
	t.Parallel()
	bp := flow(t, "join", ids("s", "a", "b", "j"), "s>a", "s>b", "a>j", "b>j")
	release, bStarted := newGate(), newGate()
	var dupA atomic.Int32
	r := newItRig(t, itRigConfig{
		nodes: map[string]sqsadapter.NodeFunc{"b": blockUntil(release, bStarted)},
		setup: func(e *itEnv) {
			e.sqs.duplicate = func(j sqsadapter.Job) bool { return j.NodeID == "a" && dupA.Add(1) == 1 }
		},
	}, bp)
	openAtEnd(t, release)
	id := r.start("join", nil)
	bStarted.await(t, "b to start")
	itEventually(t, func() bool { return r.nodeState(id, "a") == store.NodeCommitted }, "a commits")

	// Re-send a's job twice after its commit, and replay it by hand.
	job := sqsadapter.Job{RunID: id, BlueprintID: "join", NodeID: "a"}
	r.send(job)
	r.send(job)
	require.NoError(t, r.client.HandleJob(t.Context(), job))
	require.NoError(t, r.client.HandleJob(t.Context(), job))
	// Every message of a — the original, the queue-side copy and the two
	// re-sent — is handled (deleted) while b is still blocked.
	itEventually(t, func() bool { return len(r.sqs.undeleted(jobOf(id, "a"))) == 0 }, "a's messages are handled")
	_, duplicated := r.sqs.counts()
	assert.Equal(t, 1, duplicated, "a's delivery was duplicated")
	assert.Equal(t, 4, r.sqs.sent(jobOf(id, "a")), "a's messages: the original, a copy, two re-sent")
	itNever(t, 2*time.Second, func() bool { return r.log.count("j") > 0 }, "the join ran before b finished")
	assert.Equal(t, 1, r.log.count("a"), "a committed node never re-executes")
	require.False(t, r.status(id).Finished())

	release.open()
	st := r.wait(id)
	requireStatus(t, sqsadapter.StatusCompleted, st)
	assert.Equal(t, 1, r.log.count("j"))
	assert.Equal(t, 1, r.log.count("b"))
	assert.Equal(t, 1, r.log.count("a"))
	assert.Equal(t, map[string]any{"a": map[string]any{"from": "a"}, "b": map[string]any{"from": "b"}}, r.log.input(t, "j"))
	assert.Equal(t, 1, r.sqs.sent(jobOf(id, "j")), "the join's job is sent once")
	r.drained(id)
}

// An "all" join behind an untaken branch or a false condition completes.
func itAllJoinBehindDeadBranch(t *testing.T) {
	t.Parallel()
	cases := []struct {
		id, action string
		initial    map[string]any
		edges      []string
	}{
		{
			id: "untaken-action", action: "left",
			edges: ids(fedge("s", "a", "action", "left"), fedge("s", "b", "action", "right"), "a>j", "b>j", "j>k"),
		},
		{
			id: "false-condition", initial: map[string]any{"goRight": false},
			edges: ids("s>a", fedge("s", "b", "condition", "goRight"), "a>j", "b>j", "j>k"),
		},
		{
			id: "dead-chain", action: "left",
			edges: ids(fedge("s", "a", "action", "left"), fedge("s", "b0", "action", "right"), "b0>b", "a>j", "b>j", "j>k"),
		},
	}
	var bps []*sqsadapter.Blueprint
	for _, c := range cases {
		bps = append(bps, flow(t, c.id, nil, c.edges...))
	}
	r := newItRig(t, itRigConfig{nodes: map[string]sqsadapter.NodeFunc{
		"s": func(_ context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
			action := "left"
			if nc.BlueprintID == "false-condition" {
				action = ""
			}
			return sqsadapter.NodeResult{Output: "s-out", Action: action}, nil
		},
	}}, bps...)
	runs := make([]string, len(cases))
	for i, c := range cases {
		runs[i] = r.start(c.id, c.initial)
	}
	for i, c := range cases {
		st := r.wait(runs[i])
		requireStatus(t, sqsadapter.StatusCompleted, st)
		assert.Contains(t, st.Context, "_outputs.j", c.id)
		assert.Contains(t, st.Context, "_outputs.k", c.id)
		assert.NotContains(t, st.Context, "_outputs.b", c.id)
		assert.NotEqual(t, store.NodeCommitted, r.nodeState(runs[i], "b"), c.id)
	}
	// The call log is by node id, over all three runs.
	assert.Equal(t, 3, r.log.count("j"))
	assert.Equal(t, 3, r.log.count("k"))
	assert.Zero(t, r.log.count("b"))
	assert.Zero(t, r.log.count("b0"))
	for _, c := range r.log.get("j") {
		assert.Equal(t, map[string]any{"a": map[string]any{"from": "a"}}, c.Input, "only the taken predecessor is in the join's input")
	}
	for _, id := range runs {
		r.drained(id)
	}
}

// An "any" join runs once, on the first arrival, and the run completes only
// when the slower branch is done.
func itAnyJoinRunsOnce(t *testing.T) {
	t.Parallel()
	bp := flow(t, "anyjoin", ids("s", "a", "b", fnode("j", `"config":{"joinStrategy":"any"}`), "k"), "s>a", "s>b", "a>j", "b>j", "j>k")
	release, kRan := newGate(), newGate()
	r := newItRig(t, itRigConfig{nodes: map[string]sqsadapter.NodeFunc{
		"b": blockUntil(release, nil),
		"k": func(context.Context, *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
			kRan.open()
			return sqsadapter.NodeResult{Output: "k"}, nil
		},
	}}, bp)
	openAtEnd(t, release)
	id := r.start("anyjoin", nil)
	kRan.await(t, "the any join and its successor to run while b is blocked")
	assert.Equal(t, map[string]any{"from": "a"}, r.log.input(t, "j"), "an \"any\" join's input is what its firing predecessor staged")
	assert.False(t, r.status(id).Finished(), "the run is not complete while b runs")

	release.open()
	st := r.wait(id)
	requireStatus(t, sqsadapter.StatusCompleted, st)
	assert.Equal(t, 1, r.log.count("j"), "later arrivals are absorbed")
	assert.Equal(t, 1, r.log.count("k"))
	assert.Contains(t, st.Context, "_outputs.b")
	assert.Equal(t, map[string]any{"from": "j"}, st.Context["_outputs.j"])
	assert.Equal(t, 1, r.sqs.sent(jobOf(id, "j")), "the join's job is sent once")
	r.drained(id)
}

// A run whose branches end in different leaves completes when the last
// of them is resolved, whichever they are.
func itDifferentLeaves(t *testing.T) {
	t.Parallel()
	routed := flow(t, "leaves", ids("s", "l1", "l2", "r1", "p"),
		fedge("s", "l1", "action", "left"), "l1>l2", fedge("s", "r1", "action", "right"), "s>p")
	parallel := flow(t, "lengths", ids("t", "a1", "a2", "a3", "b1"), "t>a1", "a1>a2", "a2>a3", "t>b1")
	r := newItRig(t, itRigConfig{nodes: map[string]sqsadapter.NodeFunc{
		"s": func(_ context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
			in, _ := nc.Input.(string)
			return sqsadapter.NodeResult{Action: in}, nil
		},
	}}, routed, parallel)
	left := r.start("leaves", map[string]any{"_inputs.s": "left"})
	right := r.start("leaves", map[string]any{"_inputs.s": "right"})
	lengths := r.start("lengths", nil)

	st := r.wait(left)
	requireStatus(t, sqsadapter.StatusCompleted, st)
	assert.Contains(t, st.Context, "_outputs.l2")
	assert.NotContains(t, st.Context, "_outputs.r1")
	assert.Equal(t, store.NodeSkipped, r.nodeState(left, "r1"))

	st = r.wait(right)
	requireStatus(t, sqsadapter.StatusCompleted, st)
	assert.Contains(t, st.Context, "_outputs.r1")
	assert.NotContains(t, st.Context, "_outputs.l1")
	assert.NotContains(t, st.Context, "_outputs.l2")
	assert.Equal(t, store.NodeSkipped, r.nodeState(right, "l2"))

	st = r.wait(lengths)
	requireStatus(t, sqsadapter.StatusCompleted, st)
	for _, n := range ids("t", "a1", "a2", "a3", "b1") {
		assert.Equal(t, 1, r.log.count(n), n)
		assert.Contains(t, st.Context, "_outputs."+n)
	}
	assert.Equal(t, 2, r.log.count("s"))
	assert.Zero(t, r.log.count("p"), "the default edge is not taken when an action edge is")
	assert.Equal(t, store.NodeSkipped, r.nodeState(left, "p"))
	assert.Equal(t, 1, r.log.count("l2"))
	assert.Equal(t, 1, r.log.count("r1"))
	for _, id := range []string{left, right, lengths} {
		r.drained(id)
	}
}

// A failing node fails the run once, naming the node, and nothing more of
// the run executes: not its successors, not a parallel branch that was
// running at the time, not a job of the run still in the queue.
func itFailureStopsRun(t *testing.T) {
	t.Parallel()
	bp := flow(t, "failing", ids("s", fnode("f", `"config":{"maxRetries":2}`), "p", "q", "d"), "s>f", "s>p", "p>q", "f>d")
	pRelease, pStarted := newGate(), newGate()
	pReturned := newGate()
	counter := &itFinishCounter{}
	r := newItRig(t, itRigConfig{
		nodes: map[string]sqsadapter.NodeFunc{
			"f": func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
				if err := pStarted.wait(ctx); err != nil {
					return sqsadapter.NodeResult{}, err
				}
				return sqsadapter.NodeResult{}, errors.New("f-broke")
			},
			"p": func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
				pStarted.open()
				<-pRelease.done() // ignores ctx: finishes after the failure
				pReturned.open()
				return sqsadapter.NodeResult{Output: "p-late"}, nil
			},
		},
		contexts: func(s sqsadapter.ContextStore) sqsadapter.ContextStore {
			counter.ContextStore = s
			return counter
		},
	}, bp)
	openAtEnd(t, pRelease)
	id := r.start("failing", nil)
	st := r.wait(id)
	requireStatus(t, sqsadapter.StatusFailed, st)
	assert.Equal(t, "f", st.FailedNode)
	assert.Contains(t, st.Error, `"f"`)
	assert.Contains(t, st.Error, "f-broke")
	assert.Equal(t, []int{1, 2}, r.log.attempts("f"))
	itEventually(t, func() bool { return r.nodeState(id, "q") == store.NodeClosed }, "the failed run's nodes are closed")

	pRelease.open()
	pReturned.await(t, "p to return")
	// A job of the run that was still queued executes nothing.
	r.send(sqsadapter.Job{RunID: id, BlueprintID: "failing", NodeID: "q"})
	r.drained(id)

	assert.Zero(t, r.log.count("q"), "p's successor never runs")
	assert.Zero(t, r.log.count("d"), "the failed node's successor never runs")
	assert.Equal(t, 1, r.log.count("p"))
	assert.NotEqual(t, store.NodeCommitted, r.nodeState(id, "p"), "p's late output is not committed")
	last := r.status(id)
	requireStatus(t, sqsadapter.StatusFailed, last)
	assert.Equal(t, st.Error, last.Error)
	assert.Equal(t, st.FailedNode, last.FailedNode)
	assert.True(t, st.FinishedAt.Equal(last.FinishedAt), "finished at %v, then %v", st.FinishedAt, last.FinishedAt)
	assert.NotContains(t, last.Context, "_outputs.p")
	assert.NotContains(t, last.Context, "_outputs.q")
	assert.NotContains(t, last.Context, "_outputs.d")
	assert.Equal(t, []string{string(sqsadapter.StatusFailed)}, counter.statuses(id), "the final status is written once")
}

// maxRetries 3 and two failures: exactly three attempts, counted in the
// node's record.
func itRetriesCountAttempts(t *testing.T) {
	t.Parallel()
	bp := flow(t, "retry", ids(fnode("r", `"config":{"maxRetries":3}`), "after"), "r>after")
	r := newItRig(t, itRigConfig{nodes: map[string]sqsadapter.NodeFunc{"r": func(_ context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
		if nc.Attempt < 3 {
			return sqsadapter.NodeResult{}, fmt.Errorf("transient failure %d", nc.Attempt)
		}
		return sqsadapter.NodeResult{Output: "third time lucky"}, nil
	}}}, bp)
	id := r.start("retry", nil)
	st := r.wait(id)
	requireStatus(t, sqsadapter.StatusCompleted, st)
	assert.Equal(t, []int{1, 2, 3}, r.log.attempts("r"))
	rec := r.node(id, "r")
	require.NotNil(t, rec)
	assert.Equal(t, 3, rec.Attempts, "attempts counted in the node's record")
	assert.Equal(t, "third time lucky", st.Context["_outputs.r"])
	assert.Equal(t, "third time lucky", r.log.input(t, "after"))
	assert.Equal(t, 1, r.log.count("after"))
	r.drained(id)
}

// A node that exhausts its attempts runs its fallback, whose output becomes
// the node's; routing continues from the node with the fallback's action.
func itFallback(t *testing.T) {
	t.Parallel()
	bp := flow(t, "fallback",
		ids("s", fnode("p", `"config":{"maxRetries":2,"fallback":"fb"}`), "fb", "d", "e"),
		"s>p", fedge("p", "d", "action", "recovered"), "p>e")
	fbOut := map[string]any{"recovered": true}
	r := newItRig(t, itRigConfig{nodes: map[string]sqsadapter.NodeFunc{
		"p":  failWith("primary-broke"),
		"fb": output(fbOut, "recovered"),
	}}, bp)
	id := r.start("fallback", nil)
	st := r.wait(id)
	requireStatus(t, sqsadapter.StatusCompleted, st)
	assert.Equal(t, []int{1, 2}, r.log.attempts("p"))
	assert.Equal(t, 1, r.log.count("fb"))
	assert.Equal(t, map[string]any{"from": "s"}, r.log.input(t, "fb"), "the fallback gets the node's input")
	assert.Equal(t, fbOut, st.Context["_outputs.p"], "the fallback's output is the node's output")
	assert.Equal(t, fbOut, r.log.input(t, "d"))
	assert.Zero(t, r.log.count("e"), "p's default edge is not taken: the fallback's action matched")
	catch, ok := st.Context["_catch_error"].(map[string]any)
	require.True(t, ok, "_catch_error in the context: %v", st.Context["_catch_error"])
	assert.Equal(t, "p", catch["nodeId"])
	assert.Equal(t, "fallback", catch["blueprintId"])
	assert.Contains(t, catch["message"], "primary-broke")
	r.drained(id)
}

// StartRun with a run id that exists starts nothing new: not after the run
// completed, not while it runs.
func itStartRunIdempotent(t *testing.T) {
	t.Parallel()
	bp := flow(t, "idem", ids("a", "b"), "a>b")
	release, started := newGate(), newGate()
	r := newItRig(t, itRigConfig{nodes: map[string]sqsadapter.NodeFunc{
		"a": func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
			if nc.RunID != "order-running" {
				return sqsadapter.NodeResult{Output: "A"}, nil
			}
			return blockUntil(release, started)(ctx, nc)
		},
	}}, bp)
	openAtEnd(t, release)

	// After the run completed.
	id := r.start("idem", map[string]any{"x": 1}, sqsadapter.WithRunID("order-done"))
	require.Equal(t, "order-done", id)
	requireStatus(t, sqsadapter.StatusCompleted, r.wait(id))
	sent := r.sqs.sent(jobOf(id, ""))
	assert.Equal(t, 1, sent, "a's job; b runs inline under its message")
	again := r.start("idem", map[string]any{"x": 2}, sqsadapter.WithRunID("order-done"))
	assert.Equal(t, id, again)
	assert.Equal(t, sent, r.sqs.sent(jobOf(id, "")), "a second StartRun sends nothing")
	st := r.status(id)
	requireStatus(t, sqsadapter.StatusCompleted, st)
	assert.Equal(t, int64(1), st.Context["x"], "the initial context is not overwritten")

	// While the run is running.
	running := r.start("idem", map[string]any{"x": 3}, sqsadapter.WithRunID("order-running"))
	started.await(t, "a to start")
	// a has not committed: its job is sent again, and absorbed by its lease.
	assert.Equal(t, running, r.start("idem", map[string]any{"x": 4}, sqsadapter.WithRunID("order-running")))
	release.open()
	st = r.wait(running)
	requireStatus(t, sqsadapter.StatusCompleted, st)
	assert.Equal(t, int64(3), st.Context["x"], "the initial context is not overwritten")
	r.drained(running)
	r.drained(id)
	assert.Equal(t, 2, r.log.count("a"), "a ran once in each run")
	assert.Equal(t, 2, r.log.count("b"), "b ran once in each run")
}

// A node's context writes are committed with its output: visible to later
// nodes on other workers and in the final context; deletes too.
func itContextWrites(t *testing.T) {
	t.Parallel()
	bp := flow(t, "ctx", ids("a", "b", "c"), "a>b", "b>c")
	var seen sync.Map
	r := newItRig(t, itRigConfig{nodes: map[string]sqsadapter.NodeFunc{
		"a": func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
			if err := nc.Set("k1", map[string]any{"by": "a", "n": 1}); err != nil {
				return sqsadapter.NodeResult{}, err
			}
			if err := nc.Delete("tmp"); err != nil {
				return sqsadapter.NodeResult{}, err
			}
			v, ok, err := nc.Get(ctx, "k1")
			seen.Store("a:k1", []any{v, ok, err})
			return sqsadapter.NodeResult{Output: "A"}, err
		},
		"b": func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
			for _, k := range []string{"k1", "tmp", "_outputs.a", "initial"} {
				v, ok, err := nc.Get(ctx, k)
				if err != nil {
					return sqsadapter.NodeResult{}, err
				}
				seen.Store("b:"+k, []any{v, ok})
			}
			return sqsadapter.NodeResult{Output: "B"}, nc.Set("k2", "from b")
		},
	}}, bp)
	id := r.start("ctx", map[string]any{"initial": "i", "tmp": "gone soon"})
	st := r.wait(id)
	requireStatus(t, sqsadapter.StatusCompleted, st)
	load := func(k string) any { v, _ := seen.Load(k); return v }
	assert.Equal(t, []any{map[string]any{"by": "a", "n": int64(1)}, true, nil}, load("a:k1"), "a node reads its own writes")
	assert.Equal(t, []any{map[string]any{"by": "a", "n": int64(1)}, true}, load("b:k1"), "writes are visible downstream")
	assert.Equal(t, []any{nil, false}, load("b:tmp"), "deletes are visible downstream")
	assert.Equal(t, []any{"A", true}, load("b:_outputs.a"))
	assert.Equal(t, []any{"i", true}, load("b:initial"))
	assert.Equal(t, map[string]any{
		"initial":    "i",
		"k1":         map[string]any{"by": "a", "n": int64(1)},
		"k2":         "from b",
		"_outputs.a": "A",
		"_outputs.b": "B",
		"_outputs.c": map[string]any{"from": "c"},
	}, st.Context)
	r.drained(id)
}

// A node output or context value over DynamoDB's 400 KB item limit fails
// the run naming the node; nothing downstream runs.
func itValueTooLarge(t *testing.T) {
	t.Parallel()
	big := strings.Repeat("x", 410<<10)
	bps := []*sqsadapter.Blueprint{
		flow(t, "big-output", ids("s", "big", "after"), "s>big", "big>after"),
		flow(t, "big-write", ids("s", "writer", "after"), "s>writer", "writer>after"),
	}
	r := newItRig(t, itRigConfig{nodes: map[string]sqsadapter.NodeFunc{
		"big": output(big, ""),
		"writer": func(_ context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
			return sqsadapter.NodeResult{Output: "small"}, nc.Set("huge", big)
		},
	}}, bps...)
	outRun := r.start("big-output", nil)
	writeRun := r.start("big-write", nil)
	for _, c := range []struct{ run, node, key string }{{outRun, "big", "_outputs.big"}, {writeRun, "writer", "huge"}} {
		st := r.wait(c.run)
		requireStatus(t, sqsadapter.StatusFailed, st)
		assert.Equal(t, c.node, st.FailedNode)
		assert.Contains(t, st.Error, fmt.Sprintf("%q", c.node))
		assert.Contains(t, st.Error, "item limit")
		assert.Contains(t, st.Error, fmt.Sprintf("%q", c.key))
		assert.NotContains(t, st.Context, c.key)
		assert.NotContains(t, st.Context, "_outputs.after")
		assert.Equal(t, map[string]any{"from": "s"}, st.Context["_outputs.s"])
		r.drained(c.run)
	}
	assert.Zero(t, r.log.count("after"), "nothing downstream runs")
	assert.Equal(t, 1, r.log.count("big"), "a commit that can never succeed is not retried")
	assert.Equal(t, 1, r.log.count("writer"))
}

// ---------------------------------------------------------------------------
// The randomized protocol test on the emulators

// TestIntegrationProtocolRandom runs random blueprints (those of
// TestProtocolRandom's seed) on three workers sharing a queue on fauxqs and
// tables on DynamoDB Local, while a tenth of the received jobs are sent
// again, a tenth of the deliveries are abandoned at a random protocol step
// and one store or queue call in a hundred fails (before or after its
// effect), and compares every run with the sequential interpreter: statuses,
// final contexts, each node's output committed exactly once, and in the end
// an empty queue and dead-letter queue. SQSADAPTER_SEED replays the
// blueprints of a seed.
func TestIntegrationProtocolRandom(t *testing.T) {
	integrationEndpoints(t)
	seed := protocolSeed(t)
	runs := 40
	if testing.Short() {
		runs = 30
	}
	runProtocolRandomOn(t, seed, runs, protoChaos{faultRate: 0.01, crashRate: 0.10, duplicateRate: 0.10}, newIntegrationProtoEnv)
}

// itProtoVisibility is the visibility timeout of the randomized test: an
// abandoned job comes back after it.
const itProtoVisibility = itVisibility

// newIntegrationProtoEnv is the randomized test's environment on the
// emulators: three workers whose crash hook abandons jobs, whose SQS client
// sends copies of received jobs, and whose queue and store calls fail now
// and then; their context store counts commits. The client that starts runs
// and waits for them uses the undecorated stores.
func newIntegrationProtoEnv(t *testing.T, seed uint64, chaos protoChaos, bps []*sqsadapter.Blueprint) *protoEnv {
	t.Helper()
	e, chaosRand := newProtoBase(seed, chaos)
	dupRand := mrand.New(mrand.NewPCG(chaosRand.Uint64(), 3))
	var dupMu sync.Mutex
	env := newItEnv(t, itConfig{
		registry:   e.calls.registry(),
		blueprints: bps,
		visibility: itProtoVisibility,
		setup: func(ie *itEnv) {
			e.counted = &protoContexts{inner: ie.contexts, f: e.faults, obs: e.obs, commits: map[string]int{}}
			if chaos.duplicateRate > 0 {
				ie.sqs.duplicate = func(sqsadapter.Job) bool {
					dupMu.Lock()
					defer dupMu.Unlock()
					return dupRand.Float64() < chaos.duplicateRate
				}
			}
		},
		wrapSQS:      func(q sqsadapter.SQSClient) sqsadapter.SQSClient { return &protoSQS{inner: q, f: e.faults} },
		wrapContexts: func(sqsadapter.ContextStore) sqsadapter.ContextStore { return e.counted },
		wrapCoord: func(c sqsadapter.CoordinationStore) sqsadapter.CoordinationStore {
			return &protoCoord{inner: c, f: e.faults}
		},
		workerOpts: func(int) []sqsadapter.Option { return []sqsadapter.Option{sqsadapter.WithCrashHook(e.crasher.hook)} },
	})
	e.contexts, e.client = env.contexts, env.client
	// The resumer's commits go through the counting store, as the
	// workers' do: each waiting node's resume counts as its commit.
	var err error
	e.resumer, err = sqsadapter.NewSqsAdapter(
		sqsadapter.WithSQSClient(env.sqs), sqsadapter.WithQueueURL(env.queue),
		sqsadapter.WithContextStore(e.counted), sqsadapter.WithCoordinationStore(env.coord),
		sqsadapter.WithRegistry(e.calls.registry()), sqsadapter.WithBlueprints(bps...),
		sqsadapter.WithLogger(testLogger()), sqsadapter.WithWorkerID("resumer"),
	)
	require.NoError(t, err)
	e.queues = itProtoQueues{env}
	e.lostResponses = true
	return e
}

// itProtoQueues is the job queue and dead-letter queue of an itEnv, for the
// randomized test's driver.
type itProtoQueues struct{ e *itEnv }

func (q itProtoQueues) url(dlq bool) string {
	if dlq {
		return q.e.dlq
	}
	return q.e.queue
}

func (q itProtoQueues) depth(dlq bool) (visible, inFlight, delayed int, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return queueDepth(ctx, q.e.raw, q.url(dlq))
}

func (q itProtoQueues) left(dlq bool) int {
	v, f, d, err := q.depth(dlq)
	if err != nil {
		return 1 // unknown: not empty
	}
	return v + f + d
}

func (q itProtoQueues) describe(dlq bool) string {
	v, f, d, err := q.depth(dlq)
	if err != nil {
		return err.Error()
	}
	var bodies []string
	if dlq {
		// The dead-letter queue is only read now, at the end.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		out, err := q.e.raw.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: aws.String(q.e.dlq), MaxNumberOfMessages: 10})
		if err != nil {
			return err.Error()
		}
		for _, m := range out.Messages {
			bodies = append(bodies, aws.ToString(m.Body))
		}
	} else {
		bodies = q.e.sqs.undeleted(func(sqsadapter.Job) bool { return true })
	}
	if len(bodies) > 10 {
		bodies = append(bodies[:10], fmt.Sprintf("... and %d more", len(bodies)-10))
	}
	return fmt.Sprintf("%d visible, %d in flight, %d delayed: %v", v, f, d, bodies)
}

func (q itProtoQueues) queued(runID string) []string {
	return q.e.sqs.undeleted(jobOf(runID, ""))
}

func (q itProtoQueues) deliveries() (received, duplicated int) {
	return q.e.sqs.counts()
}

// ---------------------------------------------------------------------------
// Failure races

// Two nodes of a run fail at once, and each job stops (its worker dies, or
// its heartbeat cancels it) after closing the run's other nodes and before
// writing the failed status. Each closed the other's record, so each
// redelivery finds its own node closed and drops its job as one of a
// finished run: nobody writes the status, and the run must still fail.
func TestIntegrationConcurrentFailuresFailRun(t *testing.T) {
	bp := flow(t, "twofail", ids("s", "f1", "f2", "d"), "s>f1", "s>f2", "f1>d", "f2>d")
	both := newGate() // opens when f1 and f2 both run
	var started sync.Map
	var running atomic.Int32
	fail := func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
		if _, again := started.LoadOrStore(nc.NodeID, true); !again && running.Add(1) == 2 {
			both.open()
		}
		if err := both.wait(ctx); err != nil {
			return sqsadapter.NodeResult{}, err
		}
		return sqsadapter.NodeResult{}, sqsadapter.Permanent(fmt.Errorf("%s-broke", nc.NodeID))
	}
	var crashed sync.Map
	r := newItRig(t, itRigConfig{
		nodes: map[string]sqsadapter.NodeFunc{"f1": fail, "f2": fail},
		opts: []sqsadapter.Option{sqsadapter.WithCrashHook(func(step string, job sqsadapter.Job) bool {
			if step != "failing" {
				return false
			}
			_, again := crashed.LoadOrStore(job.NodeID, true)
			return !again
		})},
	}, bp)
	openAtEnd(t, both)
	id := r.start("twofail", nil)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	st, err := r.client.WaitForRun(ctx, id)
	require.NoError(t, err, "the run never finished; f1: %+v, f2: %+v", r.node(id, "f1"), r.node(id, "f2"))
	requireStatus(t, sqsadapter.StatusFailed, st)
	assert.Contains(t, ids("f1", "f2"), st.FailedNode)
	assert.Zero(t, r.log.count("d"))
}

// A node fails for good (a permanent error, attempts left), and its job
// stops after closing the run's other nodes and before writing the failed
// status. Its redelivery must fail the run: here it runs the node again,
// which succeeds and commits, and the run, whose other nodes are closed,
// never finishes.
func TestIntegrationFailureSurvivesCrashBeforeStatus(t *testing.T) {
	bp := flow(t, "failcrash", ids(fnode("f", `"config":{"maxRetries":3}`), "h"), "f>h")
	var crashed atomic.Bool
	r := newItRig(t, itRigConfig{
		nodes: map[string]sqsadapter.NodeFunc{"f": func(_ context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
			if nc.Attempt == 1 {
				return sqsadapter.NodeResult{}, sqsadapter.Permanent(errors.New("f-broke"))
			}
			return sqsadapter.NodeResult{Output: "f-later"}, nil
		}},
		opts: []sqsadapter.Option{sqsadapter.WithCrashHook(func(step string, job sqsadapter.Job) bool {
			return step == "failing" && job.NodeID == "f" && crashed.CompareAndSwap(false, true)
		})},
	}, bp)
	id := r.start("failcrash", nil)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	st, err := r.client.WaitForRun(ctx, id)
	require.True(t, crashed.Load())
	require.NoError(t, err, "the run never finished; f: %+v, h: %+v; f ran %d time(s)", r.node(id, "f"), r.node(id, "h"), r.log.count("f"))
	requireStatus(t, sqsadapter.StatusFailed, st)
	assert.Equal(t, "f", st.FailedNode)
	assert.Zero(t, r.log.count("h"))
}

// slowCommits is a context store whose CommitNode answers late: the write
// takes effect at once, its response arrives after delay, and a caller
// whose ctx ends meanwhile gets its error, as with the SDK.
type slowCommits struct {
	sqsadapter.ContextStore
	delay   time.Duration
	mu      sync.Mutex
	results []error
}

func (s *slowCommits) CommitNode(ctx context.Context, runID string, c store.NodeCommit) (*store.NodeRecord, error) {
	rec, err := s.ContextStore.CommitNode(ctx, runID, c)
	if err == nil {
		select {
		case <-time.After(s.delay):
		case <-ctx.Done():
			rec, err = nil, fmt.Errorf("commit response: %w", ctx.Err())
		}
	}
	s.mu.Lock()
	s.results = append(s.results, err)
	s.mu.Unlock()
	return rec, err
}

// A commit whose response is slow to arrive (longer than a heartbeat
// period) is not mistaken for a lost lease: the heartbeat that finds the
// lease gone because the node committed must not cancel the job, which
// would lose the commit's response and make the job run again from a
// redelivery.
func TestIntegrationSlowCommitResponseKeepsJob(t *testing.T) {
	bp := flow(t, "slowcommit", ids("a", "b"), "a>b")
	slow := &slowCommits{delay: itVisibility / 2}
	var deliveries sync.Map
	r := newItRig(t, itRigConfig{
		contexts: func(s sqsadapter.ContextStore) sqsadapter.ContextStore {
			slow.ContextStore = s
			return slow
		},
		opts: []sqsadapter.Option{sqsadapter.WithCrashHook(func(step string, job sqsadapter.Job) bool {
			if step == "receive" {
				n, _ := deliveries.LoadOrStore(job.NodeID, new(atomic.Int32))
				n.(*atomic.Int32).Add(1)
			}
			return false
		})},
	}, bp)
	id := r.start("slowcommit", nil)
	requireStatus(t, sqsadapter.StatusCompleted, r.wait(id))
	r.drained(id)
	slow.mu.Lock()
	results := slices.Clone(slow.results)
	slow.mu.Unlock()
	for i, err := range results {
		assert.NoError(t, err, "commit #%d", i+1)
	}
	n, _ := deliveries.Load("a")
	assert.EqualValues(t, 1, n.(*atomic.Int32).Load(), "a's job was delivered again")
}
