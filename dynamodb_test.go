package sqsadapter_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/expression"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/smithy-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowcraft/sqsadapter"
	"github.com/flowcraft/sqsadapter/internal/runindex"
	"github.com/flowcraft/sqsadapter/store"
	"github.com/flowcraft/sqsadapter/store/storetest"
)

// dynamoDBEndpointEnv names the DynamoDB endpoint of the integration tests.
const dynamoDBEndpointEnv = "SQSADAPTER_DYNAMODB_ENDPOINT"

// dynamoDBClient returns a client of the DynamoDB server named by
// SQSADAPTER_DYNAMODB_ENDPOINT, or skips the test when it is not set.
func dynamoDBClient(t *testing.T) *dynamodb.Client {
	t.Helper()
	endpoint := os.Getenv(dynamoDBEndpointEnv)
	if endpoint == "" {
		t.Skipf("DynamoDB integration test: %s is not set. To run it: "+
			"scripts/emulators.sh start, then `. <state dir>/env` (it sets %s, e.g. http://127.0.0.1:8000), "+
			"then go test -race ./...; or run `make test`, which does all of it", dynamoDBEndpointEnv, dynamoDBEndpointEnv)
	}
	// A transport of the test's own, whose idle connections (and their
	// goroutines) are closed when the test ends.
	transport := http.DefaultTransport.(*http.Transport).Clone()
	t.Cleanup(transport.CloseIdleConnections)
	return dynamodb.New(dynamodb.Options{
		Region:       "us-east-1",
		Credentials:  credentials.NewStaticCredentialsProvider("test", "test", ""),
		BaseEndpoint: aws.String(endpoint),
		HTTPClient:   &http.Client{Transport: transport, Timeout: time.Minute},
		// DynamoDB Local's error responses lack the CRC32 header.
		DisableValidateResponseChecksum: true,
	})
}

var tableNameUnsafe = regexp.MustCompile(`[^a-zA-Z0-9_.-]+`)

// testTables creates the adapter's tables under names of this test's own
// and deletes them when the test ends.
func testTables(t *testing.T, client *dynamodb.Client) sqsadapter.TableNames {
	t.Helper()
	base := tableNameUnsafe.ReplaceAllString(t.Name(), "-")
	if len(base) > 60 {
		base = base[:60]
	}
	base = "sqsadapter-" + base + "-" + strings.ToLower(rand.Text()[:8])
	names := sqsadapter.TableNames{
		Context:      base + "-context",
		Status:       base + "-status",
		Coordination: base + "-coordination",
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := deleteTables(ctx, client, names); err != nil {
			t.Errorf("delete tables: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	require.NoError(t, sqsadapter.CreateTables(ctx, client, names))
	return names
}

// deleteTables deletes the tables of names; absent tables are not an error.
func deleteTables(ctx context.Context, client *dynamodb.Client, names sqsadapter.TableNames) error {
	var errs []error
	for _, name := range []string{names.Context, names.Status, names.Coordination} {
		_, err := client.DeleteTable(ctx, &dynamodb.DeleteTableInput{TableName: aws.String(name)})
		var notFound *types.ResourceNotFoundException
		if err != nil && !errors.As(err, &notFound) {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

func TestDynamoDbContextConformance(t *testing.T) {
	client := dynamoDBClient(t)
	names := testTables(t, client)
	storetest.TestContextStore(t, func(t *testing.T) sqsadapter.ContextStore {
		return sqsadapter.NewDynamoDbContext(client, names.Context, names.Status)
	})
}

func TestDynamoDbContextLimits(t *testing.T) {
	client := dynamoDBClient(t)
	names := testTables(t, client)
	storetest.TestContextStoreLimits(t, func(t *testing.T) sqsadapter.ContextStore {
		return sqsadapter.NewDynamoDbContext(client, names.Context, names.Status)
	})
}

func TestDynamoDbCoordinationStoreConformance(t *testing.T) {
	client := dynamoDBClient(t)
	names := testTables(t, client)
	storetest.TestCoordinationStore(t, func(t *testing.T) sqsadapter.CoordinationStore {
		return sqsadapter.NewDynamoDbCoordinationStore(client, names.Coordination)
	})
}

func TestDynamoDbCoordinationStoreLimits(t *testing.T) {
	client := dynamoDBClient(t)
	names := testTables(t, client)
	storetest.TestCoordinationStoreLimits(t, func(t *testing.T) sqsadapter.CoordinationStore {
		return sqsadapter.NewDynamoDbCoordinationStore(client, names.Coordination)
	})
}

func TestCreateTables(t *testing.T) {
	client := dynamoDBClient(t)
	ctx := t.Context()
	names := testTables(t, client)

	// Idempotent: a second call keeps the tables and succeeds.
	require.NoError(t, sqsadapter.CreateTables(ctx, client, names))

	for _, name := range []string{names.Context, names.Status, names.Coordination} {
		out, err := client.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(name)})
		require.NoError(t, err)
		assert.Equal(t, types.TableStatusActive, out.Table.TableStatus, name)
		require.NotNil(t, out.Table.BillingModeSummary, name)
		assert.Equal(t, types.BillingModePayPerRequest, out.Table.BillingModeSummary.BillingMode, name)
	}
	status, err := client.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(names.Status)})
	require.NoError(t, err)
	require.Len(t, status.Table.GlobalSecondaryIndexes, 1)
	assert.Equal(t, "running-runs", aws.ToString(status.Table.GlobalSecondaryIndexes[0].IndexName))

	// TTL on every table: join records, and the items of finished runs
	// (Tuning.Retention).
	for _, name := range []string{names.Context, names.Status, names.Coordination} {
		ttl, err := client.DescribeTimeToLive(ctx, &dynamodb.DescribeTimeToLiveInput{TableName: aws.String(name)})
		require.NoError(t, err)
		assert.Equal(t, types.TimeToLiveStatusEnabled, ttl.TimeToLiveDescription.TimeToLiveStatus, name)
		assert.Equal(t, "ttl", aws.ToString(ttl.TimeToLiveDescription.AttributeName), name)
	}

	// Concurrent callers all succeed.
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() { errs[i] = sqsadapter.CreateTables(ctx, client, names) })
	}
	wg.Wait()
	for _, err := range errs {
		assert.NoError(t, err)
	}

	// A table of that name with another layout is reported, not used.
	wrong := names
	wrong.Context = names.Context + "-wrong"
	_, err = client.CreateTable(ctx, &dynamodb.CreateTableInput{
		TableName:            aws.String(wrong.Context),
		BillingMode:          types.BillingModePayPerRequest,
		AttributeDefinitions: []types.AttributeDefinition{{AttributeName: aws.String("id"), AttributeType: types.ScalarAttributeTypeS}},
		KeySchema:            []types.KeySchemaElement{{AttributeName: aws.String("id"), KeyType: types.KeyTypeHash}},
	})
	require.NoError(t, err)
	t.Cleanup(func() {
		_, _ = client.DeleteTable(context.Background(), &dynamodb.DeleteTableInput{TableName: aws.String(wrong.Context)})
	})
	err = sqsadapter.CreateTables(ctx, client, wrong)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "key schema")

	require.Error(t, sqsadapter.CreateTables(ctx, client, sqsadapter.TableNames{Context: "a-b-c"}))
}

// TestDynamoDbRunningIndex checks that the sparse index holds exactly the
// running runs, each under its shard's partition key value, in creation
// order.
func TestDynamoDbRunningIndex(t *testing.T) {
	client := dynamoDBClient(t)
	ctx := t.Context()
	names := testTables(t, client)
	s := sqsadapter.NewDynamoDbContext(client, names.Context, names.Status)

	base := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	for i, id := range []string{"r3", "r1", "r2"} {
		require.NoError(t, s.CreateRun(ctx, store.RunRecord{RunID: id, BlueprintID: "bp", CreatedAt: base.Add(time.Duration(3-i) * time.Minute)}, nil))
	}
	require.NoError(t, s.FinishRun(ctx, "r2", sqsadapter.StatusCompleted, "", "", time.Now()))

	running := map[string][]string{} // by partition key value
	for source := range runindex.Sources {
		key := runindex.SourceKey(source)
		keyCond := expression.Key("gsiRunning").Equal(expression.Value(key))
		expr, err := expression.NewBuilder().WithKeyCondition(keyCond).Build()
		require.NoError(t, err)
		pages := dynamodb.NewQueryPaginator(client, &dynamodb.QueryInput{
			TableName:                 aws.String(names.Status),
			IndexName:                 aws.String("running-runs"),
			KeyConditionExpression:    expr.KeyCondition(),
			ExpressionAttributeNames:  expr.Names(),
			ExpressionAttributeValues: expr.Values(),
			Limit:                     aws.Int32(1), // several pages
		})
		for pages.HasMorePages() {
			page, err := pages.NextPage(ctx)
			require.NoError(t, err)
			for _, item := range page.Items {
				running[key] = append(running[key], item["runId"].(*types.AttributeValueMemberS).Value)
			}
		}
	}
	want := map[string][]string{}
	for _, id := range []string{"r1", "r3"} { // oldest first
		want[runindex.Key(id)] = append(want[runindex.Key(id)], id)
	}
	assert.Equal(t, want, running, "running runs under their shards")
	assert.NotContains(t, running, "running", "nothing under the legacy value")
}

// TestDynamoDbListRunningLegacy: runs written by a version before the index
// was sharded (gsiRunning "running") are listed with the sharded ones, in
// creation order, across pages, and FinishRun takes them out of the index.
func TestDynamoDbListRunningLegacy(t *testing.T) {
	client := dynamoDBClient(t)
	ctx := t.Context()
	names := testTables(t, client)
	s := sqsadapter.NewDynamoDbContext(client, names.Context, names.Status)

	base := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	legacy := func(id string, created time.Time) {
		ms := &types.AttributeValueMemberN{Value: fmt.Sprint(created.UnixMilli())}
		_, err := client.PutItem(ctx, &dynamodb.PutItemInput{
			TableName: aws.String(names.Status),
			Item: map[string]types.AttributeValue{
				"runId":        &types.AttributeValueMemberS{Value: id},
				"status":       &types.AttributeValueMemberS{Value: "running"},
				"blueprintId":  &types.AttributeValueMemberS{Value: "bp"},
				"createdAt":    ms,
				"gsiRunning":   &types.AttributeValueMemberS{Value: "running"},
				"runningSince": ms,
			},
		})
		require.NoError(t, err)
	}
	var want []string
	for i := range 12 {
		id := fmt.Sprint("run-", i)
		created := base.Add(time.Duration(i) * time.Second)
		if i%3 == 0 {
			legacy(id, created)
		} else {
			require.NoError(t, s.CreateRun(ctx, store.RunRecord{RunID: id, BlueprintID: "bp", CreatedAt: created}, nil))
		}
		want = append(want, id)
	}
	listAll := func(limit int) ([]string, error) {
		var ids []string
		cursor := ""
		for range 100 {
			runs, next, err := s.ListRunning(ctx, time.Now(), cursor, limit)
			if err != nil {
				return nil, err
			}
			for _, run := range runs {
				assert.Equal(t, sqsadapter.StatusRunning, run.Status, run.RunID)
				assert.Equal(t, "bp", run.BlueprintID, run.RunID)
				ids = append(ids, run.RunID)
			}
			if next == "" {
				return ids, nil
			}
			cursor = next
		}
		return nil, errors.New("too many pages")
	}
	for _, limit := range []int{1, 2, 5, 100} {
		got, err := listAll(limit)
		require.NoError(t, err)
		assert.Equal(t, want, got, "limit %d", limit)
	}

	// An old run finishes as a new one does, and leaves the index.
	require.NoError(t, s.FinishRun(ctx, "run-3", sqsadapter.StatusCompleted, "", "", time.Now()))
	out, err := client.GetItem(ctx, &dynamodb.GetItemInput{
		TableName: aws.String(names.Status), Key: map[string]types.AttributeValue{"runId": &types.AttributeValueMemberS{Value: "run-3"}},
	})
	require.NoError(t, err)
	assert.NotContains(t, out.Item, "gsiRunning")
	assert.NotContains(t, out.Item, "runningSince")
	got, err := listAll(4)
	require.NoError(t, err)
	assert.Equal(t, slices.DeleteFunc(slices.Clone(want), func(id string) bool { return id == "run-3" }), got)

	// A cursor of the single-key index is refused.
	old := base64.RawURLEncoding.EncodeToString([]byte(`{"gsiRunning":{"S":"running"},"runId":{"S":"run-0"},"runningSince":{"N":"1"}}`))
	_, _, err = s.ListRunning(ctx, time.Now(), old, 10)
	require.ErrorIs(t, err, store.ErrInvalidCursor)
}

// queryCounter counts Query calls.
type queryCounter struct {
	sqsadapter.DynamoDBClient
	n atomic.Int64
}

func (c *queryCounter) Query(ctx context.Context, in *dynamodb.QueryInput, optFns ...func(*dynamodb.Options)) (*dynamodb.QueryOutput, error) {
	c.n.Add(1)
	return c.DynamoDBClient.Query(ctx, in, optFns...)
}

// TestDynamoDbListRunningCost: a page reads each partition key value of the
// index once (the legacy one only on the first page, while it is empty),
// and pages are full.
func TestDynamoDbListRunningCost(t *testing.T) {
	client := dynamoDBClient(t)
	ctx := t.Context()
	names := testTables(t, client)
	counter := &queryCounter{DynamoDBClient: client}
	s := sqsadapter.NewDynamoDbContext(counter, names.Context, names.Status)
	base := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	const runs, limit = 320, 40
	for i := range runs {
		require.NoError(t, s.CreateRun(ctx, store.RunRecord{RunID: fmt.Sprint("run-", i), BlueprintID: "bp", CreatedAt: base.Add(time.Duration(i) * time.Millisecond)}, nil))
	}
	cursor, listed, pages := "", 0, 0
	for ; pages < 100; pages++ {
		page, next, err := s.ListRunning(ctx, time.Now(), cursor, limit)
		require.NoError(t, err)
		listed += len(page)
		if next == "" {
			break
		}
		cursor = next
	}
	pages++
	assert.Equal(t, runs, listed)
	assert.LessOrEqual(t, pages, runs/limit+1, "pages")
	queries := counter.n.Load()
	assert.LessOrEqual(t, queries, int64(pages*runindex.Shards+1+runindex.Shards/2), "queries for %d pages", pages)
	t.Logf("%d runs, limit %d: %d pages, %d Query calls", runs, limit, pages, queries)
}

// TestDynamoDbListRunningKeysOnlyIndex: on a status table whose running
// runs index projects only its keys (not made by CreateTables, which keeps
// it), ListRunning still returns whole run records, Waiting included, by
// reading them from the table.
func TestDynamoDbListRunningKeysOnlyIndex(t *testing.T) {
	client := dynamoDBClient(t)
	ctx := t.Context()
	base := "sqsadapter-keysonly-" + strings.ToLower(rand.Text()[:8])
	names := sqsadapter.TableNames{Context: base + "-context", Status: base + "-status", Coordination: base + "-coordination"}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := deleteTables(ctx, client, names); err != nil {
			t.Errorf("delete tables: %v", err)
		}
	})
	_, err := client.CreateTable(ctx, &dynamodb.CreateTableInput{
		TableName:   aws.String(names.Status),
		BillingMode: types.BillingModePayPerRequest,
		AttributeDefinitions: []types.AttributeDefinition{
			{AttributeName: aws.String("runId"), AttributeType: types.ScalarAttributeTypeS},
			{AttributeName: aws.String("gsiRunning"), AttributeType: types.ScalarAttributeTypeS},
			{AttributeName: aws.String("runningSince"), AttributeType: types.ScalarAttributeTypeN},
		},
		KeySchema: []types.KeySchemaElement{{AttributeName: aws.String("runId"), KeyType: types.KeyTypeHash}},
		GlobalSecondaryIndexes: []types.GlobalSecondaryIndex{{
			IndexName: aws.String("running-runs"),
			KeySchema: []types.KeySchemaElement{
				{AttributeName: aws.String("gsiRunning"), KeyType: types.KeyTypeHash},
				{AttributeName: aws.String("runningSince"), KeyType: types.KeyTypeRange},
			},
			Projection: &types.Projection{ProjectionType: types.ProjectionTypeKeysOnly},
		}},
	})
	require.NoError(t, err)
	require.NoError(t, sqsadapter.CreateTables(ctx, client, names))
	s := sqsadapter.NewDynamoDbContext(client, names.Context, names.Status)

	created := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	for i, id := range []string{"r1", "r2"} {
		require.NoError(t, s.CreateRun(ctx, store.RunRecord{RunID: id, BlueprintID: "bp", BlueprintVersion: "v1", CreatedAt: created.Add(time.Duration(i) * time.Second)}, nil))
	}
	for _, node := range []string{"b", "a"} {
		_, err := s.AcquireNode(ctx, "r1", node, "w", time.Now().Add(time.Minute), time.Now())
		require.NoError(t, err)
		_, err = s.SuspendNode(ctx, "r1", node, "w", store.Wait{Reason: "timer"})
		require.NoError(t, err)
	}
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		runs, next, err := s.ListRunning(ctx, time.Now(), "", 0)
		if !assert.NoError(c, err) {
			return
		}
		assert.Empty(c, next)
		if !assert.Len(c, runs, 2) {
			return
		}
		assert.Equal(c, "r1", runs[0].RunID)
		assert.Equal(c, []string{"a", "b"}, runs[0].Waiting)
		assert.Empty(c, runs[1].Waiting)
		for _, run := range runs {
			assert.Equal(c, "bp", run.BlueprintID, run.RunID)
			assert.Equal(c, "v1", run.BlueprintVersion, run.RunID)
			assert.Equal(c, sqsadapter.StatusRunning, run.Status, run.RunID)
		}
		assert.WithinDuration(c, created, runs[0].CreatedAt, time.Millisecond)
	}, 10*time.Second, 50*time.Millisecond)
}

// sizeInflatingClient adds a large attribute to every item written, so that
// DynamoDB itself refuses the write for its size.
type sizeInflatingClient struct {
	sqsadapter.DynamoDBClient
}

func (c sizeInflatingClient) PutItem(ctx context.Context, in *dynamodb.PutItemInput, optFns ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error) {
	item := make(map[string]types.AttributeValue, len(in.Item)+1)
	for k, v := range in.Item {
		item[k] = v
	}
	item["padding"] = &types.AttributeValueMemberS{Value: strings.Repeat("p", 401*1024)}
	copied := *in
	copied.Item = item
	return c.DynamoDBClient.PutItem(ctx, &copied, optFns...)
}

func TestDynamoDbContextOversizedItem(t *testing.T) {
	client := dynamoDBClient(t)
	ctx := t.Context()
	names := testTables(t, client)
	s := sqsadapter.NewDynamoDbContext(client, names.Context, names.Status)
	runID := "run-" + strings.ToLower(rand.Text()[:8])
	now := time.Now()
	require.NoError(t, s.CreateRun(ctx, store.RunRecord{RunID: runID, BlueprintID: "bp", CreatedAt: now}, map[string]any{"k": "v"}))

	// DynamoDB's own refusal is translated, with its error kept in the chain.
	inflated := sqsadapter.NewDynamoDbContext(sizeInflatingClient{client}, names.Context, names.Status)
	err := inflated.Set(ctx, runID, "k", "small")
	var tooLarge *store.ValueTooLargeError
	require.ErrorAs(t, err, &tooLarge)
	assert.Equal(t, runID, tooLarge.RunID)
	assert.Equal(t, "k", tooLarge.Key)
	assert.Equal(t, 400*1024, tooLarge.Limit)
	var apiErr smithy.APIError
	require.ErrorAs(t, err, &apiErr)
	assert.Equal(t, "ValidationException", apiErr.ErrorCode())

	// A node record whose output and staged inputs together pass the limit.
	half := strings.Repeat("h", 250*1024)
	_, err = s.CommitNode(ctx, runID, store.NodeCommit{NodeID: "n", Output: half, Staged: map[string]any{"next": half}})
	require.ErrorAs(t, err, &tooLarge)
	assert.Equal(t, "_outputs.n", tooLarge.Key)
	assert.Greater(t, tooLarge.Size, 500*1024)

	// Context writes over DynamoDB's 4 MB transaction limit, each item fitting.
	sets := map[string]any{}
	for i := range 14 {
		sets[fmt.Sprintf("k%02d", i)] = strings.Repeat("x", 350*1024)
	}
	_, err = s.CommitNode(ctx, runID, store.NodeCommit{NodeID: "n", Output: 1, Sets: sets})
	require.ErrorIs(t, err, sqsadapter.ErrValueTooLarge)
	require.ErrorIs(t, s.Patch(ctx, runID, sets, nil), sqsadapter.ErrValueTooLarge)

	// Too many items for one transaction.
	many := map[string]any{}
	for i := range 100 {
		many[fmt.Sprintf("m%03d", i)] = i
	}
	_, err = s.CommitNode(ctx, runID, store.NodeCommit{NodeID: "n", Output: 1, Sets: many})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "at most 99")
	err = s.CreateRun(ctx, store.RunRecord{RunID: runID + "-many", BlueprintID: "bp"}, many)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "at most 99")
	_, err = s.GetRun(ctx, runID+"-many")
	require.ErrorIs(t, err, sqsadapter.ErrRunNotFound)

	// Nothing was written; the node can still commit with 99 context writes.
	snap, err := s.Snapshot(ctx, runID)
	require.NoError(t, err)
	assert.Equal(t, map[string]any{"k": "v"}, snap)
	delete(many, "m099")
	rec, err := s.CommitNode(ctx, runID, store.NodeCommit{NodeID: "n", Output: "ok", Sets: many})
	require.NoError(t, err)
	assert.Equal(t, "ok", rec.Output)
	got, err := s.GetMany(ctx, runID, []string{"m000", "m098", "_outputs.n"})
	require.NoError(t, err)
	assert.Equal(t, map[string]any{"m000": int64(0), "m098": int64(98), "_outputs.n": "ok"}, got)
}

// TestDynamoDbBatchReads reads more keys than one BatchGetItem takes.
func TestDynamoDbBatchReads(t *testing.T) {
	client := dynamoDBClient(t)
	ctx := t.Context()
	names := testTables(t, client)
	s := sqsadapter.NewDynamoDbContext(client, names.Context, names.Status)
	runID := "run-" + strings.ToLower(rand.Text()[:8])

	var keys []string
	want := map[string]any{}
	for i := range 250 {
		k := fmt.Sprintf("key-%03d", i)
		keys = append(keys, k, k) // duplicates are read once
		if i%5 != 0 {
			require.NoError(t, s.Set(ctx, runID, k, int64(i)))
			want[k] = int64(i)
		}
	}
	got, err := s.GetMany(ctx, runID, keys)
	require.NoError(t, err)
	assert.Equal(t, want, got)
	snap, err := s.Snapshot(ctx, runID)
	require.NoError(t, err)
	assert.Equal(t, want, snap)

	c := sqsadapter.NewDynamoDbCoordinationStore(client, names.Coordination)
	var joinKeys []string
	for i := range 150 {
		k := fmt.Sprintf("flowcraft:fanin:%s:j%03d", runID, i)
		joinKeys = append(joinKeys, k)
		if i%2 == 0 {
			_, err := c.Arrive(ctx, k, store.Arrival{Source: "a", Taken: true}, time.Hour)
			require.NoError(t, err)
		}
	}
	joins, err := c.GetJoins(ctx, joinKeys)
	require.NoError(t, err)
	assert.Len(t, joins, 75)
}

// --- Unit tests, without a server ---

// itemClient keeps the items that PutItem writes and GetItem reads in
// memory; it implements no other call.
type itemClient struct {
	sqsadapter.DynamoDBClient

	mu    sync.Mutex
	items map[string]map[string]types.AttributeValue
	puts  int
}

func itemClientKey(table string, key map[string]types.AttributeValue) string {
	return table + "\x00" + key["runId"].(*types.AttributeValueMemberS).Value + "\x00" + key["key"].(*types.AttributeValueMemberS).Value
}

func (c *itemClient) PutItem(_ context.Context, in *dynamodb.PutItemInput, _ ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.items == nil {
		c.items = make(map[string]map[string]types.AttributeValue)
	}
	c.items[itemClientKey(aws.ToString(in.TableName), in.Item)] = in.Item
	c.puts++
	return &dynamodb.PutItemOutput{}, nil
}

func (c *itemClient) GetItem(_ context.Context, in *dynamodb.GetItemInput, _ ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return &dynamodb.GetItemOutput{Item: c.items[itemClientKey(aws.ToString(in.TableName), in.Key)]}, nil
}

func (c *itemClient) stored(runID, key string) types.AttributeValue {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.items["ctx\x00"+runID+"\x00"+key]["value"]
}

// TestDynamoDbValueCodec checks how values are stored as DynamoDB attribute
// values and that they read back in the package's JSON-like form.
func TestDynamoDbValueCodec(t *testing.T) {
	type item struct {
		Name  string   `json:"name"`
		Count int64    `json:"count"`
		Tags  []string `json:"tags,omitempty"`
		Skip  string   `json:"-"`
	}
	S := func(s string) types.AttributeValue { return &types.AttributeValueMemberS{Value: s} }
	N := func(s string) types.AttributeValue { return &types.AttributeValueMemberN{Value: s} }
	null := &types.AttributeValueMemberNULL{Value: true}
	tests := []struct {
		name   string
		value  any
		want   any                  // read back
		stored types.AttributeValue // nil: any native form
		binary bool                 // stored as JSON in B
	}{
		{name: "string", value: "héllo 🚀 \u0000", want: "héllo 🚀 \u0000", stored: S("héllo 🚀 \u0000")},
		{name: "empty string", value: "", want: "", stored: S("")},
		{name: "true", value: true, want: true, stored: &types.AttributeValueMemberBOOL{Value: true}},
		{name: "false", value: false, want: false, stored: &types.AttributeValueMemberBOOL{Value: false}},
		{name: "null", value: nil, want: nil, stored: null},
		{name: "int", value: 42, want: int64(42), stored: N("42")},
		{name: "int64 max", value: int64(math.MaxInt64), want: int64(math.MaxInt64), stored: N("9223372036854775807")},
		{name: "int64 min", value: int64(math.MinInt64), want: int64(math.MinInt64), stored: N("-9223372036854775808")},
		{name: "uint64 max", value: uint64(math.MaxUint64), want: float64(math.MaxUint64)},
		{name: "float", value: 3.25, want: 3.25, stored: N("3.25")},
		{name: "whole float", value: 2.0, want: int64(2), stored: N("2")},
		{name: "tiny float", value: 2.5e-12, want: 2.5e-12},
		{name: "huge float", value: 1.5e300, want: 1.5e300, binary: true},
		{name: "below DynamoDB's range", value: 1e-200, want: 1e-200, binary: true},
		{name: "empty map", value: map[string]any{}, want: map[string]any{}, stored: &types.AttributeValueMemberM{Value: map[string]types.AttributeValue{}}},
		{name: "empty list", value: []any{}, want: []any{}, stored: &types.AttributeValueMemberL{Value: []types.AttributeValue{}}},
		{name: "nil slice", value: []string(nil), want: nil, stored: null},
		{
			name:  "list",
			value: []any{1, "two", nil, []any{}, map[string]any{"x": ""}},
			want:  []any{int64(1), "two", nil, []any{}, map[string]any{"x": ""}},
			stored: &types.AttributeValueMemberL{Value: []types.AttributeValue{
				N("1"), S("two"), null, &types.AttributeValueMemberL{Value: []types.AttributeValue{}},
				&types.AttributeValueMemberM{Value: map[string]types.AttributeValue{"x": S("")}},
			}},
		},
		{name: "empty key", value: map[string]any{"": 1, "a": map[string]any{"": nil}}, want: map[string]any{"": int64(1), "a": map[string]any{"": nil}}, binary: true},
		{name: "nested huge float", value: map[string]any{"a": []any{1e130}}, want: map[string]any{"a": []any{1e130}}, binary: true},
		{
			name:  "struct",
			value: item{Name: "n", Count: math.MaxInt64, Skip: "x"},
			want:  map[string]any{"name": "n", "count": int64(math.MaxInt64)},
			stored: &types.AttributeValueMemberM{Value: map[string]types.AttributeValue{
				"name": S("n"), "count": N("9223372036854775807"),
			}},
		},
		{name: "typed map", value: map[string][]int{"a": {1, 2}}, want: map[string]any{"a": []any{int64(1), int64(2)}}},
	}
	client := &itemClient{}
	s := sqsadapter.NewDynamoDbContext(client, "ctx", "status")
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			require.NoError(t, s.Set(ctx, "run", tc.name, tc.value))
			stored := client.stored("run", tc.name)
			require.NotNil(t, stored)
			if tc.binary {
				assert.IsType(t, &types.AttributeValueMemberB{}, stored)
			} else {
				assert.NotEqual(t, fmt.Sprintf("%T", &types.AttributeValueMemberB{}), fmt.Sprintf("%T", stored), "stored natively")
			}
			if tc.stored != nil {
				assert.Equal(t, tc.stored, stored)
			}
			got, ok, err := s.Get(ctx, "run", tc.name)
			require.NoError(t, err)
			require.True(t, ok)
			assert.Equal(t, tc.want, got)
		})
	}

	t.Run("not JSON", func(t *testing.T) {
		ctx := t.Context()
		before := client.puts
		for _, v := range []any{math.NaN(), math.Inf(1), make(chan int), map[string]any{"f": func() {}}} {
			assert.Error(t, s.Set(ctx, "run", "bad", v), "%T", v)
		}
		assert.Equal(t, before, client.puts, "nothing written")
	})
}

// TestDynamoDbContextPrecheck checks that values too large for an item, and
// invalid keys, fail before any request.
func TestDynamoDbContextPrecheck(t *testing.T) {
	ctx := t.Context()
	client := &itemClient{}
	s := sqsadapter.NewDynamoDbContext(client, "ctx", "status")

	err := s.Set(ctx, "run", "big", strings.Repeat("x", 401*1024))
	var tooLarge *store.ValueTooLargeError
	require.ErrorAs(t, err, &tooLarge)
	assert.Equal(t, "run", tooLarge.RunID)
	assert.Equal(t, "big", tooLarge.Key)
	assert.Equal(t, 400*1024, tooLarge.Limit)
	assert.GreaterOrEqual(t, tooLarge.Size, 401*1024)

	_, err = s.CommitNode(ctx, "run", store.NodeCommit{NodeID: "n", Output: strings.Repeat("x", 401*1024)})
	require.ErrorAs(t, err, &tooLarge)
	assert.Equal(t, "_outputs.n", tooLarge.Key)

	require.ErrorIs(t, s.Set(ctx, "run", "_outputs.n", 1), sqsadapter.ErrInvalidKey)
	require.ErrorIs(t, s.Set(ctx, "run", "", 1), sqsadapter.ErrInvalidKey)
	require.ErrorIs(t, s.Patch(ctx, "run", map[string]any{"a": 1}, []string{"a"}), sqsadapter.ErrInvalidKey)
	assert.Zero(t, client.puts, "nothing written")
}

// conditionClient answers every UpdateItem with a failed condition that
// returns item, as DynamoDB does with ReturnValuesOnConditionCheckFailure.
type conditionClient struct {
	sqsadapter.DynamoDBClient
	item map[string]types.AttributeValue
}

func (c conditionClient) UpdateItem(context.Context, *dynamodb.UpdateItemInput, ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error) {
	return nil, &smithy.OperationError{ServiceID: "DynamoDB", OperationName: "UpdateItem",
		Err: &types.ConditionalCheckFailedException{Message: aws.String("The conditional request failed"), Item: c.item}}
}

// TestDynamoDbConditionFailures checks how the item returned with a failed
// condition decides AcquireNode's and CommitNode's errors.
func TestDynamoDbConditionFailures(t *testing.T) {
	ctx := t.Context()
	until := time.Now().Add(time.Minute).Truncate(time.Millisecond)
	node := func(attrs map[string]types.AttributeValue) map[string]types.AttributeValue {
		attrs["runId"] = &types.AttributeValueMemberS{Value: "run"}
		attrs["key"] = &types.AttributeValueMemberS{Value: "_outputs.n"}
		return attrs
	}
	S := func(s string) types.AttributeValue { return &types.AttributeValueMemberS{Value: s} }
	N := func(n int64) types.AttributeValue { return &types.AttributeValueMemberN{Value: fmt.Sprint(n)} }
	tests := []struct {
		name        string
		item        map[string]types.AttributeValue
		acquireErr  error
		commitErr   error
		wantOwner   string
		wantOutput  any
		wantState   string
		wantAttempt int
	}{
		{
			name:       "lease held",
			item:       node(map[string]types.AttributeValue{"state": S("pending"), "attempts": N(2), "leaseOwner": S("w2"), "leaseUntil": N(until.UnixMilli())}),
			acquireErr: store.ErrLeaseHeld, wantOwner: "w2", wantState: "pending", wantAttempt: 2,
		},
		{
			name:       "committed",
			item:       node(map[string]types.AttributeValue{"state": S("committed"), "attempts": N(1), "value": &types.AttributeValueMemberM{Value: map[string]types.AttributeValue{"n": N(7)}}, "action": S("ok"), "taken": &types.AttributeValueMemberL{Value: []types.AttributeValue{S("b")}}}),
			acquireErr: store.ErrNodeCommitted, commitErr: store.ErrNodeCommitted,
			wantOutput: map[string]any{"n": int64(7)}, wantState: "committed", wantAttempt: 1,
		},
		{
			name:       "skipped",
			item:       node(map[string]types.AttributeValue{"state": S("skipped")}),
			acquireErr: store.ErrNodeCommitted, commitErr: store.ErrNodeCommitted, wantState: "skipped",
		},
		{
			name:       "closed",
			item:       node(map[string]types.AttributeValue{"state": S("closed"), "attempts": N(3)}),
			acquireErr: store.ErrNodeClosed, commitErr: store.ErrNodeClosed, wantState: "closed", wantAttempt: 3,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := sqsadapter.NewDynamoDbContext(conditionClient{item: tc.item}, "ctx", "status")
			rec, err := s.AcquireNode(ctx, "run", "n", "w1", until, time.Now())
			require.ErrorIs(t, err, tc.acquireErr)
			require.NotNil(t, rec)
			assert.Equal(t, tc.wantState, rec.State)
			assert.Equal(t, tc.wantAttempt, rec.Attempts)
			assert.Equal(t, tc.wantOutput, rec.Output)
			if tc.acquireErr == store.ErrLeaseHeld {
				var held *store.LeaseHeldError
				require.ErrorAs(t, err, &held)
				assert.Equal(t, tc.wantOwner, held.Owner)
				assert.True(t, until.Equal(held.Until), "until %v, got %v", until, held.Until)
				return
			}
			var ccf *types.ConditionalCheckFailedException
			assert.ErrorAs(t, err, &ccf, "the SDK error stays in the chain")

			rec, err = s.CommitNode(ctx, "run", store.NodeCommit{NodeID: "n", Output: "mine"})
			require.ErrorIs(t, err, tc.commitErr)
			require.NotNil(t, rec)
			assert.Equal(t, tc.wantState, rec.State)
			assert.Equal(t, tc.wantOutput, rec.Output)
		})
	}
}
