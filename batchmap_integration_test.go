package sqsadapter_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/smithy-go/middleware"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowcraft/sqsadapter"
	"github.com/flowcraft/sqsadapter/internal/reqcount"
)

// One run maps 10,000 items on the real SDK clients against the emulators,
// and reports its wall time, its requests per item by operation (each
// HTTP attempt, counted by reqcount on the clients) and the largest item
// and message written. Every record the engine keeps for the batch stays
// small: item records hold one item's output, join records at most 100
// members, messages one item's input. Only the user data grows with N:
// the input, its frozen copy, and the results.
//
// Its wall time is DynamoDB Local's: the batch makes three conditional
// writes per item (acquire, commit, arrive), 30,000 in all, which DynamoDB
// Local (one SQLite queue thread) takes at a few hundred per second on a
// busy two-core machine: about 90 s here, 150 s under -race. The test
// command maps 1,000 items (a tenth of the time, the same figures per
// item); make batch-10k maps 10,000 (SQSADAPTER_BATCH_ITEMS sets any).
func TestIntegrationBatch10000(t *testing.T) {
	sqsEndpoint, ddbEndpoint := integrationEndpoints(t)
	n := 1000
	if v := os.Getenv("SQSADAPTER_BATCH_ITEMS"); v != "" {
		var err error
		n, err = strconv.Atoi(v)
		require.NoError(t, err, "SQSADAPTER_BATCH_ITEMS must be a number of items")
	}
	counter := reqcount.NewRequestCounter()
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.Proxy = nil
	transport.MaxIdleConnsPerHost = 64
	t.Cleanup(transport.CloseIdleConnections)
	httpClient := &http.Client{Transport: transport, Timeout: time.Minute}
	creds := credentials.NewStaticCredentialsProvider("test", "test", "")
	apiOptions := []func(*middleware.Stack) error{counter.AddTo}
	rawSQS := sqs.New(sqs.Options{Region: "us-east-1", Credentials: creds, BaseEndpoint: aws.String(sqsEndpoint), HTTPClient: httpClient, APIOptions: apiOptions})
	ddb := dynamodb.New(dynamodb.Options{Region: "us-east-1", Credentials: creds, BaseEndpoint: aws.String(ddbEndpoint), HTTPClient: httpClient,
		APIOptions: apiOptions, DisableValidateResponseChecksum: true})
	tables := testTables(t, ddb)
	queue, _ := testQueues(t, rawSQS, itVisibility, itMaxReceiveCount)
	q := &largestMessage{SQSClient: rawSQS}
	contexts := sqsadapter.NewDynamoDbContext(ddb, tables.Context, tables.Status)
	coord := sqsadapter.NewDynamoDbCoordinationStore(ddb, tables.Coordination)
	bp := mustParse(t, `{"id": "ten-thousand", "nodes": [{"id": "m", "uses": "map", "inputs": "items", "params": {"worker": "double"}}], "edges": []}`)
	reg := sqsadapter.NodeRegistry{"double": func(_ context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
		return sqsadapter.NodeResult{Output: 2 * nc.Input.(int64)}, nil
	}}
	opts := func(extra ...sqsadapter.Option) []sqsadapter.Option {
		return append([]sqsadapter.Option{
			sqsadapter.WithSQSClient(q), sqsadapter.WithQueueURL(queue),
			sqsadapter.WithContextStore(contexts), sqsadapter.WithCoordinationStore(coord),
			sqsadapter.WithRegistry(reg), sqsadapter.WithBlueprints(bp), sqsadapter.WithLogger(testLogger()),
			sqsadapter.WithVisibilityTimeout(itVisibility), sqsadapter.WithWaitTime(time.Second),
		}, extra...)
	}
	client, err := sqsadapter.NewSqsAdapter(opts()...)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, client.Shutdown(context.Background())) })
	for i := range 3 {
		w, err := sqsadapter.NewSqsAdapter(opts(sqsadapter.WithWorkerID(fmt.Sprintf("w%d", i)), sqsadapter.WithConcurrency(16))...)
		require.NoError(t, err)
		errc := make(chan error, 1)
		go func() { errc <- w.Run(context.Background()) }()
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			assert.NoError(t, w.Shutdown(ctx))
			if err := <-errc; !errors.Is(err, sqsadapter.ErrAdapterClosed) {
				assert.NoError(t, err)
			}
		})
	}
	items, doubled := ints(n)
	counter.Reset()
	start := time.Now()
	id := startRun(t, client, "ten-thousand", map[string]any{"items": items})
	ctx, cancel := context.WithTimeout(t.Context(), 8*time.Minute)
	defer cancel()
	st, err := client.WaitForRun(ctx, id)
	require.NoError(t, err)
	wall := time.Since(start)
	counts := counter.Snapshot()
	requireStatus(t, sqsadapter.StatusCompleted, st)
	require.Equal(t, doubled, st.Context["_outputs.m"])
	assert.Equal(t, n, st.Nodes["m_scatter"].BatchCompleted)
	assert.Len(t, st.Nodes, 2)

	t.Logf("%d items in %v (%.0f items/s); requests per item (%d in all):", n, wall.Round(time.Millisecond), float64(n)/wall.Seconds(), counts.Total())
	for _, op := range counts.Operations() {
		t.Logf("  %-34s %.3f", op, float64(counts.Requests[op])/float64(n))
	}
	t.Logf("  write capacity units per item %.2f, read %.2f", counts.WriteCapacityUnits/float64(n), counts.ReadCapacityUnits/float64(n))
	per := func(op string) float64 { return float64(counts.Requests[op]) / float64(n) }
	// Acquire, commit and arrive, and the tree's 1/100 above that; the
	// rest are per page, per batch and per run, and lease extensions of
	// jobs that a loaded machine kept over a third of the visibility
	// timeout (a few hundredths).
	assert.InDelta(t, 3.01, per("DynamoDB.UpdateItem"), 0.1)
	// Per page: the gather's record, the page's join record and the frozen
	// items; the gather reads the records 100 at a time (BatchGetItem
	// each); WaitForRun polls the run record (GetItem) about once a second.
	// What is per batch and per run is spread over n items: a few
	// requests more, whatever n (fixed).
	fixed := func(k float64) float64 { return k / float64(n) }
	assert.Less(t, per("DynamoDB.BatchGetItem"), 0.05+fixed(50))
	assert.Less(t, per("DynamoDB.GetItem")-wall.Seconds()/float64(n), 0.005+fixed(5))
	assert.Less(t, per("DynamoDB.TransactWriteItems")+per("DynamoDB.PutItem"), 0.001+fixed(5), "per batch: the scatter's and the gather's commits")
	assert.Less(t, per("SQS.SendMessageBatch"), 0.2)

	// The largest things written: messages, and the items of the three
	// tables (the frozen items were deleted by the gather: their size is
	// the input's, the initial key "items").
	biggest, what := tableLargest(t, ddb, tables.Context, id)
	t.Logf("largest message %d bytes (%s)", q.size(), q.body())
	t.Logf("largest context item %d bytes (%s); the input was %d bytes", biggest, what, attrSizeOf(t, ddb, tables.Context, id, "items"))
	internal, internalWhat := tableLargest(t, ddb, tables.Context, id, "_outputs.m_scatter")
	t.Logf("largest internal record %d bytes (%s)", internal, internalWhat)
	joins, members := coordinationLargest(t, ddb, tables.Coordination)
	t.Logf("largest coordination record %d bytes (%d members)", joins, members)
	assert.Less(t, q.size(), 512, "a message grew with the item count")
	assert.Less(t, internal, 512, "an internal record grew with the item count")
	assert.LessOrEqual(t, members, 100)
	assert.Less(t, joins, 1024)
}

// largestMessage remembers the largest message body sent.
type largestMessage struct {
	sqsadapter.SQSClient
	mu      sync.Mutex
	largest string
}

func (q *largestMessage) SendMessageBatch(ctx context.Context, in *sqs.SendMessageBatchInput, o ...func(*sqs.Options)) (*sqs.SendMessageBatchOutput, error) {
	q.mu.Lock()
	for _, e := range in.Entries {
		if b := aws.ToString(e.MessageBody); len(b) > len(q.largest) {
			q.largest = b
		}
	}
	q.mu.Unlock()
	return q.SQSClient.SendMessageBatch(ctx, in, o...)
}

func (q *largestMessage) size() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.largest)
}

func (q *largestMessage) body() string {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.largest
}

// avSize estimates the bytes DynamoDB counts for an attribute value.
func avSize(v ddbtypes.AttributeValue) int {
	switch x := v.(type) {
	case *ddbtypes.AttributeValueMemberS:
		return len(x.Value)
	case *ddbtypes.AttributeValueMemberN:
		return len(x.Value) + 1
	case *ddbtypes.AttributeValueMemberB:
		return len(x.Value)
	case *ddbtypes.AttributeValueMemberSS:
		n := 0
		for _, s := range x.Value {
			n += len(s)
		}
		return n
	case *ddbtypes.AttributeValueMemberL:
		n := 3
		for _, e := range x.Value {
			n += 1 + avSize(e)
		}
		return n
	case *ddbtypes.AttributeValueMemberM:
		n := 3
		for k, e := range x.Value {
			n += 1 + len(k) + avSize(e)
		}
		return n
	}
	return 1
}

func itemSize(item map[string]ddbtypes.AttributeValue) int {
	n := 0
	for k, v := range item {
		n += len(k) + avSize(v)
	}
	return n
}

// tableLargest returns the size and key of the largest item of run runID
// in the context table whose key begins with prefix.
func tableLargest(t *testing.T, ddb *dynamodb.Client, table, runID string, prefix ...string) (int, string) {
	t.Helper()
	pages := dynamodb.NewQueryPaginator(ddb, &dynamodb.QueryInput{
		TableName:                 aws.String(table),
		KeyConditionExpression:    aws.String("#r = :r"),
		ExpressionAttributeNames:  map[string]string{"#r": "runId"},
		ExpressionAttributeValues: map[string]ddbtypes.AttributeValue{":r": &ddbtypes.AttributeValueMemberS{Value: runID}},
	})
	largest, what := 0, ""
	for pages.HasMorePages() {
		page, err := pages.NextPage(t.Context())
		require.NoError(t, err)
		for _, item := range page.Items {
			key := ""
			if k, ok := item["key"].(*ddbtypes.AttributeValueMemberS); ok {
				key = k.Value
			}
			if len(prefix) > 0 && !strings.HasPrefix(key, prefix[0]) {
				continue
			}
			if s := itemSize(item); s > largest {
				largest, what = s, strings.ReplaceAll(key, "\x1f", "␟")
			}
		}
	}
	return largest, what
}

// attrSizeOf is the size of the context item key of run runID.
func attrSizeOf(t *testing.T, ddb *dynamodb.Client, table, runID, key string) int {
	t.Helper()
	out, err := ddb.GetItem(t.Context(), &dynamodb.GetItemInput{TableName: aws.String(table), Key: map[string]ddbtypes.AttributeValue{
		"runId": &ddbtypes.AttributeValueMemberS{Value: runID}, "key": &ddbtypes.AttributeValueMemberS{Value: key}}})
	require.NoError(t, err)
	return itemSize(out.Item)
}

// coordinationLargest returns the size of the largest coordination record
// and the most members a record holds.
func coordinationLargest(t *testing.T, ddb *dynamodb.Client, table string) (int, int) {
	t.Helper()
	largest, members := 0, 0
	var start map[string]ddbtypes.AttributeValue
	for {
		out, err := ddb.Scan(t.Context(), &dynamodb.ScanInput{TableName: aws.String(table), ExclusiveStartKey: start})
		require.NoError(t, err)
		for _, item := range out.Items {
			largest = max(largest, itemSize(item))
			for _, v := range item {
				if ss, ok := v.(*ddbtypes.AttributeValueMemberSS); ok {
					members = max(members, len(ss.Value))
				}
			}
		}
		if len(out.LastEvaluatedKey) == 0 {
			break
		}
		start = out.LastEvaluatedKey
	}
	return largest, members
}
