package sqsadapter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/expression"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/smithy-go"

	"github.com/flowcraft/sqsadapter/internal/jsonvalue"
	"github.com/flowcraft/sqsadapter/internal/limits"
	"github.com/flowcraft/sqsadapter/internal/runindex"
	"github.com/flowcraft/sqsadapter/internal/waitvalue"
	"github.com/flowcraft/sqsadapter/store"
)

// DynamoDB storage layout. CreateTables creates exactly this.
//
// Context table: partition key "runId" (S), sort key "key" (S).
//   - A context key is one item: runId, key, value.
//   - A node record is the item at key "_outputs.<nodeId>": state, attempts (N),
//     leaseOwner, leaseUntil (N, unix milliseconds), updatedAt (N, unix
//     milliseconds of the last write), and once committed value (the output),
//     action, taken (L of S), staged (M), fallback and token (a resume's);
//     once failed, error (the failure reason); once suspended, wait (the
//     Wait as a value, see internal/waitvalue), kept after the resume.
//
// Once a run has finished, ExpireRun may give each of its items, in both
// tables, a ttl (N, epoch seconds: DynamoDB's TTL attribute, enabled on
// both tables by CreateTables).
//
// Status table: partition key "runId" (S): blueprintId, blueprintVersion,
// status, error, failedNode, createdAt and finishedAt (N, unix milliseconds),
// waiting (SS, the waiting nodes; absent when none: SuspendNode ADDs a node,
// ResumeNode and CloseNodes DELETE it, in the transaction that changes the
// node record), and, only while the run is running, gsiRunning (S,
// "running#<s>", s in [0, 16) from a hash of the run id; "running" when an
// earlier version wrote it) and runningSince (N, unix milliseconds): the keys
// of the sparse index runningRunsIndex, so a reconciler finds running runs,
// oldest first, with paginated Queries whose cost follows the number of
// running runs.
//
// Coordination table: see DynamoDbCoordinationStore.
//
// Values are stored as native DynamoDB values: maps as M, lists as L, strings
// as S, numbers as N (int64 exactly), booleans as BOOL, null as NULL. A value
// DynamoDB cannot hold natively (an object with an empty key, a number beyond
// DynamoDB's range of 1e-130 to 1e126 in magnitude) is stored whole as its
// JSON encoding in a B attribute, which a native value never uses. Values read
// back in the JSON-like form of the package: integers that fit in int64 as
// int64, other numbers as float64 (a whole float64 such as 2.0 reads back as
// int64 2, as it would through JSON).
// runningRunsIndex is the sparse global secondary index of the status
// table that holds only running runs: partition key "gsiRunning" (S), sort
// key "runningSince" (N, unix milliseconds of the run's creation).
// FinishRun removes both attributes, so a finished run leaves the index.
//
// The partition key is sharded: CreateRun writes "running#<s>" with s =
// runindex.Shard(runId), FNV-1a of the run id modulo runindex.Shards (16),
// so a run keeps its shard and run starts and finishes spread over 16
// partitions of the index instead of one (DynamoDB caps a partition at
// 1,000 write units per second; see docs/scale.md). ListRunning reads every
// shard and the legacy value "running", which versions before the sharding
// wrote: a run started by such a version is still listed, and finished by
// FinishRun (which removes the attribute whatever its value), so a rolling
// upgrade loses no running run. The legacy partition costs one Query per
// listing once it is empty.
const runningRunsIndex = "running-runs"

// Attribute names.
const (
	attrRunID            = "runId"
	attrKey              = "key"
	attrValue            = "value"
	attrState            = "state"
	attrAttempts         = "attempts"
	attrLeaseOwner       = "leaseOwner"
	attrLeaseUntil       = "leaseUntil"
	attrAction           = "action"
	attrTaken            = "taken"
	attrStaged           = "staged"
	attrFallback         = "fallback"
	attrUpdatedAt        = "updatedAt"
	attrWait             = "wait"
	attrToken            = "token"
	attrWaiting          = "waiting"
	attrBlueprintID      = "blueprintId"
	attrBlueprintVersion = "blueprintVersion"
	attrStatus           = "status"
	attrError            = "error"
	attrFailedNode       = "failedNode"
	attrCreatedAt        = "createdAt"
	attrFinishedAt       = "finishedAt"
	attrGSIRunning       = "gsiRunning"
	attrRunningSince     = "runningSince"
	// A child run's parent (store.ParentRef).
	attrParentRunID       = "parentRunId"
	attrParentNodeID      = "parentNodeId"
	attrParentBlueprintID = "parentBlueprintId"
	attrParentVersion     = "parentBlueprintVersion"
)

var _ ContextStore = (*DynamoDbContext)(nil)

// DynamoDbContext is the ContextStore on DynamoDB: run contexts and node
// records in the context table, run records in the status table (see
// runningRunsIndex for the layout). Create the tables with CreateTables.
//
// Every write is conditional or a plain overwrite of one context key; every
// read is strongly consistent. Its methods block for the DynamoDB calls they
// make and are safe for concurrent use.
//
// Limits, from DynamoDB: an item holds at most 400 KB, so a context value or a
// node record (output, staged inputs and routing) larger than that fails with
// a *store.ValueTooLargeError; context writes that go together (CreateRun, Patch,
// CommitNode, ResumeNode) are one transaction of at most 100 items and 4 MB, so
// CreateRun takes at most 99 initial keys, CommitNode at most 99 context
// writes, ResumeNode (which also updates the run record) at most 98 and Patch
// at most 100 changes. Sizes are checked before anything is sent, on an
// estimate that errs on the large side: the item's keys, its values as
// DynamoDB counts them (a string its bytes, a number its digits plus one, a
// list or map 3 bytes plus 1 per element...) and 100 bytes for attribute names
// and bookkeeping. sqsadaptertest.ContextStore estimates the same way, so a
// value that fits one fits the other.
type DynamoDbContext struct {
	client       DynamoDBClient
	contextTable string
	statusTable  string
	now          func() time.Time // decides whether a run has expired
}

// NewDynamoDbContext returns a ContextStore that keeps run contexts and node
// records in contextTable and run records in statusTable.
func NewDynamoDbContext(client DynamoDBClient, contextTable, statusTable string) *DynamoDbContext {
	return &DynamoDbContext{client: client, contextTable: contextTable, statusTable: statusTable, now: time.Now}
}

// CreateRun implements ContextStore. The run record is written with status
// running and the initial keys in the same transaction, conditional on no
// run record with that id: on store.ErrRunExists nothing was written. A zero
// CreatedAt is set to the current time. At most 99 initial keys (one
// transaction holds 100 items); more fail before anything is written.
func (s *DynamoDbContext) CreateRun(ctx context.Context, run store.RunRecord, initial map[string]any) error {
	wrap := func(err error) error { return fmt.Errorf("sqsadapter: create run %q: %w", run.RunID, err) }
	if err := checkRunID(run.RunID); err != nil {
		return err
	}
	if len(initial) > limits.TransactItems-1 {
		return wrap(fmt.Errorf("%w: %d initial keys: one run starts with at most %d", ErrValueTooLarge, len(initial), limits.TransactItems-1))
	}
	puts, err := s.encodeSets(run.RunID, initial)
	if err != nil {
		return wrap(err)
	}
	if run.CreatedAt.IsZero() {
		run.CreatedAt = time.Now()
	}
	created := run.CreatedAt.UnixMilli()
	item := map[string]types.AttributeValue{
		attrRunID:        avS(run.RunID),
		attrStatus:       avS(string(StatusRunning)),
		attrCreatedAt:    avN(created),
		attrGSIRunning:   avS(runindex.Key(run.RunID)),
		attrRunningSince: avN(created),
	}
	putNonEmpty(item, attrBlueprintID, run.BlueprintID)
	putNonEmpty(item, attrBlueprintVersion, run.BlueprintVersion)
	var parent []string
	if pr := run.Parent; pr != nil {
		parent = []string{pr.RunID, pr.NodeID, pr.BlueprintID, pr.BlueprintVersion}
		putNonEmpty(item, attrParentRunID, pr.RunID)
		putNonEmpty(item, attrParentNodeID, pr.NodeID)
		putNonEmpty(item, attrParentBlueprintID, pr.BlueprintID)
		putNonEmpty(item, attrParentVersion, pr.BlueprintVersion)
	}
	recordSize := limits.RunRecordSize(run.RunID, run.BlueprintID, run.BlueprintVersion, parent...)
	if recordSize > limits.ItemBytes {
		return &store.ValueTooLargeError{RunID: run.RunID, Key: "(run record)", Size: recordSize, Limit: limits.ItemBytes}
	}
	cond, err := expression.NewBuilder().
		WithCondition(expression.AttributeNotExists(expression.Name(attrRunID))).Build()
	if err != nil {
		return wrap(err)
	}

	if len(puts) == 0 {
		_, err = s.client.PutItem(ctx, &dynamodb.PutItemInput{
			TableName:                 aws.String(s.statusTable),
			Item:                      item,
			ConditionExpression:       cond.Condition(),
			ExpressionAttributeNames:  cond.Names(),
			ExpressionAttributeValues: cond.Values(),
		})
		if isConditionFailed(err) {
			return wrap(translated(store.ErrRunExists, err))
		}
		if err != nil {
			return wrap(err)
		}
		return nil
	}

	items := make([]types.TransactWriteItem, 0, 1+len(puts))
	items = append(items, types.TransactWriteItem{Put: &types.Put{
		TableName:                 aws.String(s.statusTable),
		Item:                      item,
		ConditionExpression:       cond.Condition(),
		ExpressionAttributeNames:  cond.Names(),
		ExpressionAttributeValues: cond.Values(),
	}})
	items = append(items, s.putItems(puts)...)
	if err := checkTransactSize(run.RunID, puts, nil, recordSize); err != nil {
		return wrap(err)
	}
	reasons, err := s.transact(ctx, items)
	if err != nil {
		if reasons != nil && reasonCode(reasons, 0) == conditionFailedCode {
			return wrap(translated(store.ErrRunExists, err))
		}
		return wrap(s.tooLarge(run.RunID, puts, err))
	}
	return nil
}

// GetRun implements ContextStore.
func (s *DynamoDbContext) GetRun(ctx context.Context, runID string) (*store.RunRecord, error) {
	wrap := func(err error) error { return fmt.Errorf("sqsadapter: get run %q: %w", runID, err) }
	if limits.CheckID("run id", runID) != nil {
		return nil, wrap(ErrRunNotFound) // CreateRun refuses such an id
	}
	out, err := s.client.GetItem(ctx, &dynamodb.GetItemInput{
		TableName:      aws.String(s.statusTable),
		Key:            map[string]types.AttributeValue{attrRunID: avS(runID)},
		ConsistentRead: aws.Bool(true),
	})
	if err != nil {
		return nil, wrap(err)
	}
	if len(out.Item) == 0 || runExpired(out.Item, s.now()) || attrString(out.Item, attrStatus) == string(store.StatusDeleted) {
		return nil, wrap(ErrRunNotFound)
	}
	return decodeRun(out.Item), nil
}

// runExpired reports whether a run record's expiry (its ttl, set by
// ExpireRun) is at or before now: DynamoDB deletes expired items lazily, up
// to days later, so a read treats such a record as absent, as
// DynamoDbCoordinationStore treats its expired records.
func runExpired(item map[string]types.AttributeValue, now time.Time) bool {
	sec, ok := attrInt(item, attrTTL)
	return ok && !time.Unix(sec, 0).After(now)
}

// FinishRun implements ContextStore with one UpdateItem conditional on the
// status being running. It also removes the run from runningRunsIndex. A
// zero at is set to the current time. A reason longer than 32 KiB is
// truncated, so that the final status can always be written.
func (s *DynamoDbContext) FinishRun(ctx context.Context, runID string, status RunState, reason, failedNode string, at time.Time) error {
	wrap := func(err error) error { return fmt.Errorf("sqsadapter: finish run %q as %s: %w", runID, status, err) }
	switch status {
	case StatusCompleted, StatusFailed, StatusCancelled:
	default:
		return wrap(fmt.Errorf("invalid final status %q", status))
	}
	if limits.CheckID("run id", runID) != nil {
		return wrap(ErrRunNotFound) // CreateRun refuses such an id
	}
	if at.IsZero() {
		at = time.Now()
	}
	upd := expression.Set(expression.Name(attrStatus), expression.Value(avS(string(status)))).
		Set(expression.Name(attrFinishedAt), expression.Value(avN(at.UnixMilli()))).
		Remove(expression.Name(attrGSIRunning)).
		Remove(expression.Name(attrRunningSince))
	if reason != "" {
		upd = upd.Set(expression.Name(attrError), expression.Value(avS(limits.TruncateReason(reason))))
	}
	if failedNode != "" {
		upd = upd.Set(expression.Name(attrFailedNode), expression.Value(avS(failedNode)))
	}
	expr, err := expression.NewBuilder().
		WithCondition(expression.Name(attrStatus).Equal(expression.Value(avS(string(StatusRunning))))).
		WithUpdate(upd).Build()
	if err != nil {
		return wrap(err)
	}
	_, err = s.client.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:                           aws.String(s.statusTable),
		Key:                                 map[string]types.AttributeValue{attrRunID: avS(runID)},
		UpdateExpression:                    expr.Update(),
		ConditionExpression:                 expr.Condition(),
		ExpressionAttributeNames:            expr.Names(),
		ExpressionAttributeValues:           expr.Values(),
		ReturnValuesOnConditionCheckFailure: types.ReturnValuesOnConditionCheckFailureAllOld,
	})
	if old, failed := conditionFailedItem(err); failed {
		if len(old) == 0 {
			return wrap(translated(ErrRunNotFound, err))
		}
		return wrap(translated(fmt.Errorf("run is %s: %w", attrString(old, attrStatus), ErrRunFinished), err))
	}
	if err != nil {
		return wrap(err)
	}
	return nil
}

// expireParallel bounds the concurrent UpdateItems of ExpireRun.
const expireParallel = 8

// expirySeconds is at in epoch seconds, rounded up as the coordination
// store's expiries are: DynamoDB never deletes an item before at.
func expirySeconds(at time.Time) int64 {
	_, sec := expiry(0, at)
	return sec
}

// deleteTries bounds the BatchWriteItem requests of one batch of DeleteRun
// whose items come back unprocessed.
const deleteTries = 8

// ExpireRun implements ContextStore: a Query of the run's keys in the
// context table (one page per 1 MB of keys), then one UpdateItem per item,
// eight at a time, each setting ttl and conditional on the item existing
// (an item deleted meanwhile is not written again), then one UpdateItem of
// the run record, conditional on it existing.
func (s *DynamoDbContext) ExpireRun(ctx context.Context, runID string, at time.Time) error {
	wrap := func(err error) error { return fmt.Errorf("sqsadapter: expire run %q: %w", runID, err) }
	if limits.CheckID("run id", runID) != nil {
		return wrap(ErrRunNotFound) // CreateRun refuses such an id
	}
	sec := expirySeconds(at)
	set := expression.Set(expression.Name(attrTTL), expression.Value(avN(sec)))
	exists := expression.AttributeExists(expression.Name(attrRunID))
	// An item keeps a later expiry (a tombstone's); the run record must be
	// a run's, not a deleted run's tombstone.
	itemExpr, err := expression.NewBuilder().WithUpdate(set).WithCondition(exists.And(
		expression.Or(expression.AttributeNotExists(expression.Name(attrTTL)),
			expression.Name(attrTTL).LessThan(expression.Value(avN(sec)))))).Build()
	if err != nil {
		return wrap(err)
	}
	runExpr, err := expression.NewBuilder().WithUpdate(set).WithCondition(exists.And(
		expression.Name(attrStatus).NotEqual(expression.Value(avS(string(store.StatusDeleted)))))).Build()
	if err != nil {
		return wrap(err)
	}
	update := func(ctx context.Context, table string, key map[string]types.AttributeValue, expr expression.Expression) error {
		_, err := s.client.UpdateItem(ctx, &dynamodb.UpdateItemInput{
			TableName:                 aws.String(table),
			Key:                       key,
			UpdateExpression:          expr.Update(),
			ConditionExpression:       expr.Condition(),
			ExpressionAttributeNames:  expr.Names(),
			ExpressionAttributeValues: expr.Values(),
		})
		return err
	}
	err = s.runKeys(ctx, runID, func(keys []string) error {
		return parallel(ctx, expireParallel, len(keys), func(ctx context.Context, i int) error {
			if err := update(ctx, s.contextTable, ctxItemKey(runID, keys[i]), itemExpr); err != nil && !isConditionFailed(err) {
				return err
			}
			return nil
		})
	})
	if err != nil {
		return wrap(err)
	}
	err = update(ctx, s.statusTable, map[string]types.AttributeValue{attrRunID: avS(runID)}, runExpr)
	if isConditionFailed(err) {
		return wrap(translated(ErrRunNotFound, err))
	}
	if err != nil {
		return wrap(err)
	}
	return nil
}

// DeleteRun implements ContextStore: a Query of the run's keys in the
// context table (one page per 1 MB of keys), BatchWriteItem deletes of 25
// items each (unprocessed items are sent again after a short backoff, a
// bounded number of times), then one DeleteItem of the run record,
// conditional on it existing.
func (s *DynamoDbContext) DeleteRun(ctx context.Context, runID string, until time.Time) error {
	wrap := func(err error) error { return fmt.Errorf("sqsadapter: delete run %q: %w", runID, err) }
	if limits.CheckID("run id", runID) != nil {
		return wrap(ErrRunNotFound) // CreateRun refuses such an id
	}
	ttl := avN(expirySeconds(until))
	now := avN(time.Now().UnixMilli())
	err := s.runKeys(ctx, runID, func(keys []string) error {
		for start := 0; start < len(keys); start += limits.BatchWriteItems {
			var reqs []types.WriteRequest
			for _, k := range keys[start:min(start+limits.BatchWriteItems, len(keys))] {
				if !strings.HasPrefix(k, outputsPrefix) {
					reqs = append(reqs, types.WriteRequest{DeleteRequest: &types.DeleteRequest{Key: ctxItemKey(runID, k)}})
					continue
				}
				// A node record's tombstone: closed, and nothing else.
				item := ctxItemKey(runID, k)
				item[attrState], item[attrUpdatedAt], item[attrTTL] = avS(store.NodeClosed), now, ttl
				reqs = append(reqs, types.WriteRequest{PutRequest: &types.PutRequest{Item: item}})
			}
			if err := batchWrite(ctx, s.client, s.contextTable, reqs); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return wrap(err)
	}
	expr, err := expression.NewBuilder().WithCondition(expression.AttributeExists(expression.Name(attrRunID)).And(
		expression.Name(attrStatus).NotEqual(expression.Value(avS(string(store.StatusDeleted)))))).Build()
	if err != nil {
		return wrap(err)
	}
	_, err = s.client.PutItem(ctx, &dynamodb.PutItemInput{
		TableName: aws.String(s.statusTable),
		Item: map[string]types.AttributeValue{
			attrRunID: avS(runID), attrStatus: avS(string(store.StatusDeleted)), attrTTL: ttl,
		},
		ConditionExpression:       expr.Condition(),
		ExpressionAttributeNames:  expr.Names(),
		ExpressionAttributeValues: expr.Values(),
	})
	if isConditionFailed(err) {
		return wrap(translated(ErrRunNotFound, err))
	}
	if err != nil {
		return wrap(err)
	}
	return nil
}

// runKeys calls fn with the keys of the run's items in the context table,
// one Query page at a time (keys only, strongly consistent).
func (s *DynamoDbContext) runKeys(ctx context.Context, runID string, fn func(keys []string) error) error {
	expr, err := expression.NewBuilder().
		WithKeyCondition(expression.Key(attrRunID).Equal(expression.Value(avS(runID)))).
		WithProjection(expression.NamesList(expression.Name(attrKey))).Build()
	if err != nil {
		return err
	}
	pages := dynamodb.NewQueryPaginator(s.client, &dynamodb.QueryInput{
		TableName:                 aws.String(s.contextTable),
		KeyConditionExpression:    expr.KeyCondition(),
		ProjectionExpression:      expr.Projection(),
		ExpressionAttributeNames:  expr.Names(),
		ExpressionAttributeValues: expr.Values(),
		ConsistentRead:            aws.Bool(true),
	})
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if err != nil {
			return err
		}
		keys := make([]string, 0, len(page.Items))
		for _, item := range page.Items {
			keys = append(keys, attrString(item, attrKey))
		}
		if len(keys) > 0 {
			if err := fn(keys); err != nil {
				return err
			}
		}
	}
	return nil
}

// batchWrite sends write requests to one table with BatchWriteItem (at most
// 25), sending the unprocessed ones again with a short backoff a bounded
// number of times.
func batchWrite(ctx context.Context, client DynamoDBClient, table string, reqs []types.WriteRequest) error {
	backoff := 10 * time.Millisecond
	for try := 1; len(reqs) > 0; try++ {
		if try > deleteTries {
			return fmt.Errorf("batch write to %s: %d items still unprocessed after %d requests", table, len(reqs), deleteTries)
		}
		if try > 1 {
			if err := sleepCtx(ctx, backoff); err != nil {
				return err
			}
			backoff = min(2*backoff, time.Second)
		}
		out, err := client.BatchWriteItem(ctx, &dynamodb.BatchWriteItemInput{
			RequestItems: map[string][]types.WriteRequest{table: reqs},
		})
		if err != nil {
			return err
		}
		reqs = out.UnprocessedItems[table]
	}
	return nil
}

// parallel calls fn(ctx, 0) … fn(ctx, n-1), at most width at a time, and
// returns the first error; the calls not started by then are not made, and
// ctx of those under way is cancelled.
func parallel(ctx context.Context, width, n int, fn func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	sem := make(chan struct{}, width)
	var wg sync.WaitGroup
	for i := range n {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := fn(ctx, i); err != nil {
				cancel(err)
			}
		})
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return err
	}
	return nil
}

// AcquireNode implements ContextStore with one UpdateItem: it sets the lease
// and adds one attempt, conditional on the node being absent or pending and
// its lease absent, expired at now (leaseUntil <= now) or held by owner. On a
// failed condition the item as it was decides the error. Lease times are
// kept with millisecond precision.
func (s *DynamoDbContext) AcquireNode(ctx context.Context, runID, nodeID, owner string, until, now time.Time) (*store.NodeRecord, error) {
	wrap := func(err error) error {
		return fmt.Errorf("sqsadapter: acquire node %q of run %q: %w", nodeID, runID, err)
	}
	if err := checkNode(runID, nodeID); err != nil {
		return nil, err
	}
	if owner == "" {
		return nil, wrap(errors.New("empty lease owner"))
	}
	leaseFree := expression.AttributeNotExists(expression.Name(attrLeaseOwner)).Or(
		expression.Name(attrLeaseUntil).LessThanEqual(expression.Value(avN(now.UnixMilli()))),
		expression.Name(attrLeaseOwner).Equal(expression.Value(avS(owner))),
	)
	upd := expression.Set(expression.Name(attrState), expression.Value(avS(store.NodePending))).
		Set(expression.Name(attrLeaseOwner), expression.Value(avS(owner))).
		Set(expression.Name(attrLeaseUntil), expression.Value(avN(until.UnixMilli()))).
		Set(expression.Name(attrUpdatedAt), expression.Value(avN(time.Now().UnixMilli()))).
		Add(expression.Name(attrAttempts), expression.Value(avN(1)))
	expr, err := expression.NewBuilder().WithCondition(nodeOpen().And(leaseFree)).WithUpdate(upd).Build()
	if err != nil {
		return nil, wrap(err)
	}
	item, refused, cause, err := s.updateNode(ctx, runID, nodeID, expr)
	if err != nil {
		return nil, wrap(err)
	}
	if refused {
		err := cause
		rec, derr := decodeNode(nodeID, item)
		if derr != nil {
			return nil, wrap(derr)
		}
		if rerr := refusal(rec); rerr != nil {
			return rec, wrap(translated(rerr, err))
		}
		return rec, translated(&store.LeaseHeldError{RunID: runID, NodeID: nodeID, Owner: rec.LeaseOwner, Until: rec.LeaseUntil}, err)
	}
	rec, err := decodeNode(nodeID, item)
	if err != nil {
		return nil, wrap(err)
	}
	return rec, nil
}

// ExtendLease implements ContextStore with one UpdateItem conditional on the
// node being pending and leased by owner. The current expiry is not checked:
// an owner whose lease expired keeps it until another owner takes it.
func (s *DynamoDbContext) ExtendLease(ctx context.Context, runID, nodeID, owner string, until time.Time) error {
	wrap := func(err error) error {
		return fmt.Errorf("sqsadapter: extend lease of node %q of run %q for %q: %w", nodeID, runID, owner, err)
	}
	if err := checkNode(runID, nodeID); err != nil {
		return err
	}
	if owner == "" {
		return wrap(store.ErrLeaseLost)
	}
	expr, err := expression.NewBuilder().
		WithCondition(leasedBy(owner)).
		WithUpdate(expression.Set(expression.Name(attrLeaseUntil), expression.Value(avN(until.UnixMilli()))).
			Set(expression.Name(attrUpdatedAt), expression.Value(avN(time.Now().UnixMilli())))).
		Build()
	if err != nil {
		return wrap(err)
	}
	_, err = s.client.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:                 aws.String(s.contextTable),
		Key:                       ctxItemKey(runID, outputsPrefix+nodeID),
		UpdateExpression:          expr.Update(),
		ConditionExpression:       expr.Condition(),
		ExpressionAttributeNames:  expr.Names(),
		ExpressionAttributeValues: expr.Values(),
	})
	if isConditionFailed(err) {
		return wrap(translated(store.ErrLeaseLost, err))
	}
	if err != nil {
		return wrap(err)
	}
	return nil
}

// ReleaseLease implements ContextStore with one UpdateItem conditional on
// the node being pending and leased by owner; it never creates a record.
func (s *DynamoDbContext) ReleaseLease(ctx context.Context, runID, nodeID, owner string) error {
	wrap := func(err error) error {
		return fmt.Errorf("sqsadapter: release lease of node %q of run %q for %q: %w", nodeID, runID, owner, err)
	}
	if err := checkNode(runID, nodeID); err != nil {
		return err
	}
	if owner == "" {
		return nil
	}
	expr, err := expression.NewBuilder().
		WithCondition(leasedBy(owner)).
		WithUpdate(expression.Remove(expression.Name(attrLeaseOwner)).Remove(expression.Name(attrLeaseUntil)).
			Set(expression.Name(attrUpdatedAt), expression.Value(avN(time.Now().UnixMilli())))).
		Build()
	if err != nil {
		return wrap(err)
	}
	_, err = s.client.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:                 aws.String(s.contextTable),
		Key:                       ctxItemKey(runID, outputsPrefix+nodeID),
		UpdateExpression:          expr.Update(),
		ConditionExpression:       expr.Condition(),
		ExpressionAttributeNames:  expr.Names(),
		ExpressionAttributeValues: expr.Values(),
	})
	if err != nil && !isConditionFailed(err) {
		return wrap(err)
	}
	return nil
}

// CommitNode implements ContextStore. Without context writes it is one
// UpdateItem of the node record, conditional on the node being absent or
// pending (a waiting node is refused with ErrNodeWaiting); with context
// writes, one TransactWriteItems of that update and a Put or Delete per key
// (at most 99 context writes; a key both set and deleted is refused with
// ErrInvalidKey). The caller's lease is not checked: the first commit wins.
// If a lost response makes the SDK retry a commit that succeeded, the retry
// finds the node committed with an identical outcome (Output, Action, Taken,
// Staged, Fallback and Token, compared decoded) and returns the record with
// no error.
func (s *DynamoDbContext) CommitNode(ctx context.Context, runID string, c store.NodeCommit) (*store.NodeRecord, error) {
	wrap := func(err error) error {
		return fmt.Errorf("sqsadapter: commit output of node %q of run %q: %w", c.NodeID, runID, err)
	}
	if err := checkNode(runID, c.NodeID); err != nil {
		return nil, err
	}
	nodeKey := outputsPrefix + c.NodeID
	cw, err := s.encodeCommit(runID, c, 0, wrap)
	if err != nil {
		return nil, err
	}
	written, upd, nodeSize, sets := cw.written, cw.upd, cw.nodeSize, cw.sets
	expr, err := expression.NewBuilder().WithCondition(nodeOpen()).WithUpdate(upd).Build()
	if err != nil {
		return nil, wrap(err)
	}
	key := ctxItemKey(runID, nodeKey)
	tooLarge := func(err error) error {
		all := maps.Clone(sets)
		if all == nil {
			all = make(map[string]sizedItem)
		}
		all[nodeKey] = sizedItem{item: written, size: nodeSize}
		return s.tooLarge(runID, all, err)
	}

	// The node's outcome committed by another worker (or by this commit,
	// retried after a lost response), closed or failed.
	refused := func(old map[string]types.AttributeValue, cause error) (*store.NodeRecord, error) {
		rec, err := decodeNode(c.NodeID, old)
		if err != nil {
			return nil, wrap(err)
		}
		switch rec.State {
		case store.NodeClosed:
			return rec, wrap(translated(store.ErrNodeClosed, cause))
		case store.NodeFailed:
			return rec, wrap(translated(store.ErrNodeFailed, cause))
		case store.NodeWaiting:
			// Only ResumeNode commits a waiting node.
			return rec, wrap(translated(store.ErrNodeWaiting, cause))
		case store.NodeCommitted:
			mine, err := decodeNode(c.NodeID, written)
			if err == nil && sameOutcome(rec, mine) {
				return rec, nil
			}
		}
		return rec, wrap(translated(fmt.Errorf("node is %s: %w", rec.State, store.ErrNodeCommitted), cause))
	}

	if len(sets) == 0 && len(c.Deletes) == 0 {
		item, wasRefused, cause, err := s.updateNode(ctx, runID, c.NodeID, expr)
		if wasRefused {
			return refused(item, cause)
		}
		if err != nil {
			return nil, wrap(tooLarge(err))
		}
		rec, err := decodeNode(c.NodeID, item)
		if err != nil {
			return nil, wrap(err)
		}
		return rec, nil
	}

	items := make([]types.TransactWriteItem, 0, 1+len(sets)+len(c.Deletes))
	items = append(items, types.TransactWriteItem{Update: &types.Update{
		TableName:                           aws.String(s.contextTable),
		Key:                                 key,
		UpdateExpression:                    expr.Update(),
		ConditionExpression:                 expr.Condition(),
		ExpressionAttributeNames:            expr.Names(),
		ExpressionAttributeValues:           expr.Values(),
		ReturnValuesOnConditionCheckFailure: types.ReturnValuesOnConditionCheckFailureAllOld,
	}})
	items = append(items, s.putItems(sets)...)
	items = append(items, s.deleteItems(runID, c.Deletes)...)
	if err := checkTransactSize(runID, sets, c.Deletes, nodeSize); err != nil {
		return nil, wrap(err)
	}
	reasons, err := s.transact(ctx, items)
	if err != nil {
		if reasons != nil && reasonCode(reasons, 0) == conditionFailedCode {
			old, gerr := s.refusedItem(ctx, runID, nodeKey, reasons)
			if gerr != nil {
				return nil, wrap(gerr)
			}
			return refused(old, err)
		}
		return nil, wrap(tooLarge(err))
	}
	// A committed record never changes again: read it back for the
	// attempt count, which the transaction cannot return.
	item, err := s.getItem(ctx, runID, nodeKey)
	if err != nil {
		return nil, wrap(fmt.Errorf("committed, but reading the record back: %w", err))
	}
	rec, err := decodeNode(c.NodeID, item)
	if err != nil {
		return nil, wrap(err)
	}
	return rec, nil
}

// sameOutcome reports whether two committed records hold the same outcome:
// Output, Action, Taken, Staged and Fallback, and the same Token.
func sameOutcome(a, b *store.NodeRecord) bool {
	return reflect.DeepEqual(a.Output, b.Output) &&
		a.Action == b.Action &&
		reflect.DeepEqual(a.Taken, b.Taken) &&
		reflect.DeepEqual(a.Staged, b.Staged) &&
		a.Fallback == b.Fallback &&
		a.Token == b.Token
}

// commitWrite is a node commit encoded for DynamoDB.
type commitWrite struct {
	written  map[string]types.AttributeValue // the attributes the commit writes, keys included
	upd      expression.UpdateBuilder        // the update of the node record
	nodeSize int                             // the record's estimated size
	sets     map[string]sizedItem            // the context keys set
}

// encodeCommit checks and encodes a commit (CommitNode, ResumeNode). others
// is the number of other items of the transaction (the run record of a
// resume), which leaves fewer to the context writes. Errors other than a
// *store.ValueTooLargeError for the node record come wrapped with wrap.
func (s *DynamoDbContext) encodeCommit(runID string, c store.NodeCommit, others int, wrap func(error) error) (*commitWrite, error) {
	nodeKey := outputsPrefix + c.NodeID
	if n, most := len(c.Sets)+len(c.Deletes), limits.TransactItems-1-others; n > most {
		return nil, wrap(fmt.Errorf("%w: %d context writes: a node commits at most %d", ErrValueTooLarge, n, most))
	}
	out, outSize, err := encodeValue(c.Output)
	if err != nil {
		return nil, wrap(fmt.Errorf("output: %w", err))
	}
	written := map[string]types.AttributeValue{
		attrRunID: avS(runID),
		attrKey:   avS(nodeKey),
		attrState: avS(store.NodeCommitted),
		attrValue: out,
	}
	upd := expression.Set(expression.Name(attrState), expression.Value(avS(store.NodeCommitted))).
		Set(expression.Name(attrValue), expression.Value(out)).
		Set(expression.Name(attrUpdatedAt), expression.Value(avN(time.Now().UnixMilli()))).
		Remove(expression.Name(attrLeaseOwner)).
		Remove(expression.Name(attrLeaseUntil))
	set := func(name string, av types.AttributeValue) {
		written[name] = av
		upd = upd.Set(expression.Name(name), expression.Value(av))
	}
	if c.Action != "" {
		set(attrAction, avS(c.Action))
	}
	if c.Fallback != "" {
		set(attrFallback, avS(c.Fallback))
	}
	if c.Token != "" {
		set(attrToken, avS(c.Token))
	}
	if c.Taken != nil {
		taken := &types.AttributeValueMemberL{Value: make([]types.AttributeValue, len(c.Taken))}
		for i, t := range c.Taken {
			taken.Value[i] = avS(t)
		}
		set(attrTaken, taken)
	}
	stagedSize := 0
	if c.Staged != nil {
		staged, size, err := encodeValue(c.Staged)
		if err != nil {
			return nil, wrap(fmt.Errorf("staged inputs: %w", err))
		}
		set(attrStaged, staged)
		stagedSize = size
	}
	nodeSize := limits.NodeRecordSize(runID, c.NodeID, outSize, stagedSize, c.Action, c.Fallback, c.Taken) + limits.WaitSize(nil, c.Token)
	if nodeSize > limits.ItemBytes {
		return nil, &store.ValueTooLargeError{RunID: runID, Key: nodeKey, Size: nodeSize, Limit: limits.ItemBytes}
	}
	sets, err := s.encodeSets(runID, c.Sets)
	if err != nil {
		return nil, wrap(err)
	}
	if err := checkDeletes(c.Sets, c.Deletes); err != nil {
		return nil, wrap(err)
	}
	return &commitWrite{written: written, upd: upd, nodeSize: nodeSize, sets: sets}, nil
}

// FailNode implements ContextStore with one UpdateItem conditional on the
// node being absent or pending: it sets the state failed and the reason,
// drops the lease and keeps the attempt count. On a failed condition the
// item as it was decides the outcome. A reason longer than 32 KiB is
// truncated.
func (s *DynamoDbContext) FailNode(ctx context.Context, runID, nodeID, reason string) (*store.NodeRecord, error) {
	wrap := func(err error) error {
		return fmt.Errorf("sqsadapter: fail node %q of run %q: %w", nodeID, runID, err)
	}
	if err := checkNode(runID, nodeID); err != nil {
		return nil, err
	}
	upd := expression.Set(expression.Name(attrState), expression.Value(avS(store.NodeFailed))).
		Set(expression.Name(attrUpdatedAt), expression.Value(avN(time.Now().UnixMilli()))).
		Remove(expression.Name(attrLeaseOwner)).
		Remove(expression.Name(attrLeaseUntil))
	if reason != "" {
		upd = upd.Set(expression.Name(attrError), expression.Value(avS(limits.TruncateReason(reason))))
	} else {
		upd = upd.Remove(expression.Name(attrError))
	}
	expr, err := expression.NewBuilder().WithCondition(nodeOpen()).WithUpdate(upd).Build()
	if err != nil {
		return nil, wrap(err)
	}
	item, refused, cause, err := s.updateNode(ctx, runID, nodeID, expr)
	if err != nil {
		return nil, wrap(err)
	}
	if refused {
		err := cause
		rec, derr := decodeNode(nodeID, item)
		if derr != nil {
			return nil, wrap(derr)
		}
		if rec.State == store.NodeFailed {
			return rec, nil
		}
		if rerr := refusal(rec); rerr != nil {
			return rec, wrap(translated(rerr, err))
		}
		return rec, wrap(fmt.Errorf("node in unexpected state %q: %w", rec.State, err))
	}
	rec, err := decodeNode(nodeID, item)
	if err != nil {
		return nil, wrap(err)
	}
	return rec, nil
}

// SkipNodes implements ContextStore: one conditional UpdateItem per node
// turns an absent or pending node into skipped (dropping its lease).
func (s *DynamoDbContext) SkipNodes(ctx context.Context, runID string, nodeIDs []string) error {
	return s.resolveNodes(ctx, "skip", runID, nodeIDs, store.NodeSkipped)
}

// CloseNodes implements ContextStore: one conditional UpdateItem per node
// turns an absent or pending node into closed (dropping its lease); a
// waiting node, which that condition refuses, is closed and removed from
// its run's waiting set by one TransactWriteItems more.
func (s *DynamoDbContext) CloseNodes(ctx context.Context, runID string, nodeIDs []string) error {
	return s.resolveNodes(ctx, "close", runID, nodeIDs, store.NodeClosed)
}

func (s *DynamoDbContext) resolveNodes(ctx context.Context, verb, runID string, nodeIDs []string, state string) error {
	if err := checkRunID(runID); err != nil {
		return err
	}
	for _, id := range nodeIDs {
		if err := checkNode(runID, id); err != nil {
			return err
		}
	}
	expr, err := expression.NewBuilder().
		WithCondition(nodeOpen()).
		WithUpdate(expression.Set(expression.Name(attrState), expression.Value(avS(state))).
			Set(expression.Name(attrUpdatedAt), expression.Value(avN(time.Now().UnixMilli()))).
			Remove(expression.Name(attrLeaseOwner)).
			Remove(expression.Name(attrLeaseUntil))).
		Build()
	if err != nil {
		return fmt.Errorf("sqsadapter: %s nodes of run %q: %w", verb, runID, err)
	}
	seen := make(map[string]bool, len(nodeIDs))
	for _, id := range nodeIDs {
		if seen[id] {
			continue
		}
		seen[id] = true
		in := &dynamodb.UpdateItemInput{
			TableName:                 aws.String(s.contextTable),
			Key:                       ctxItemKey(runID, outputsPrefix+id),
			UpdateExpression:          expr.Update(),
			ConditionExpression:       expr.Condition(),
			ExpressionAttributeNames:  expr.Names(),
			ExpressionAttributeValues: expr.Values(),
		}
		if state == store.NodeClosed {
			in.ReturnValuesOnConditionCheckFailure = types.ReturnValuesOnConditionCheckFailureAllOld
		}
		_, err := s.client.UpdateItem(ctx, in)
		old, refused := conditionFailedItem(err)
		if err != nil && !refused {
			return fmt.Errorf("sqsadapter: %s node %q of run %q: %w", verb, id, runID, err)
		}
		if !refused || state != store.NodeClosed {
			continue
		}
		if len(old) == 0 {
			if old, err = s.getItem(ctx, runID, outputsPrefix+id); err != nil {
				return fmt.Errorf("sqsadapter: %s node %q of run %q: %w", verb, id, runID, err)
			}
		}
		if attrString(old, attrState) == store.NodeWaiting {
			if err := s.closeWaiting(ctx, runID, id); err != nil {
				return fmt.Errorf("sqsadapter: %s waiting node %q of run %q: %w", verb, id, runID, err)
			}
		}
	}
	return nil
}

// GetNodes implements ContextStore with BatchGetItem.
func (s *DynamoDbContext) GetNodes(ctx context.Context, runID string, nodeIDs []string) (map[string]*store.NodeRecord, error) {
	wrap := func(err error) error { return fmt.Errorf("sqsadapter: get nodes of run %q: %w", runID, err) }
	if err := checkRunID(runID); err != nil {
		return nil, err
	}
	keys := make([]string, 0, len(nodeIDs))
	for _, id := range nodeIDs {
		if err := checkNode(runID, id); err != nil {
			return nil, err
		}
		keys = append(keys, outputsPrefix+id)
	}
	items, err := s.batchGet(ctx, runID, keys)
	if err != nil {
		return nil, wrap(err)
	}
	recs := make(map[string]*store.NodeRecord, len(items))
	for key, item := range items {
		id := strings.TrimPrefix(key, outputsPrefix)
		rec, err := decodeNode(id, item)
		if err != nil {
			return nil, wrap(err)
		}
		recs[id] = rec
	}
	return recs, nil
}

// ListRunning returns running runs created strictly before createdBefore,
// oldest first, at most limit of them (100 when limit <= 0). To continue,
// call it again with next as cursor; next is "" when no run remains, and a
// page may hold fewer than limit runs (none, even) while next is not empty.
// An empty cursor starts from the oldest run; a cursor that is not one of
// ListRunning's (a cursor of a version before the index was sharded
// included) fails with an error matching store.ErrInvalidCursor. The cursor
// holds a position in each partition of the index, so runs that start or
// finish during a listing do not make it repeat or skip the others.
//
// runningRunsIndex has runindex.Shards+1 partition key values (the shards
// and the legacy "running"): a page Queries each value that is not done
// (runningSince before createdBefore, ascending, with a Limit of about
// twice its share of the page), runindex.Parallel at a time, and merges
// them oldest first (see runindex.List). So a page costs up to
// runindex.Shards+1 = 17 Query calls, once the legacy value is found empty
// 16, and a few more when one partition's runs are much older than the
// others' (at most runindex.MaxRounds reads of each); its read capacity
// follows the runs it returns, about twice them, not the table. The index
// projects every attribute (see CreateTables), so each record is the whole
// run record as the index holds it; the status table itself is not read.
// Reads of a global secondary index are eventually consistent: a run may be
// missing for a short while after it was created, and may still be listed,
// as running, for a short while after it finished. A caller that acts on a
// run reads it again with GetRun first. CreatedAt has millisecond
// precision; runs created in the same millisecond are in run id order
// within a page, but not across pages.
func (s *DynamoDbContext) ListRunning(ctx context.Context, createdBefore time.Time, cursor string, limit int) (runs []store.RunRecord, next string, err error) {
	wrap := func(err error) error { return fmt.Errorf("sqsadapter: list running runs: %w", err) }
	// Stored creation times are whole milliseconds: one is before
	// createdBefore exactly when it is before createdBefore rounded up.
	before := createdBefore.UnixMilli()
	if createdBefore.After(time.UnixMilli(before)) {
		before++
	}
	var at *runindex.Cursor
	if cursor != "" {
		if at, err = runindex.Decode(cursor); err != nil {
			return nil, "", wrap(err)
		}
	}
	if limit <= 0 {
		limit = defaultListLimit
	}
	items, after, err := runindex.List(ctx, at, limit, func(ctx context.Context, source int, from *runindex.Position, n int) ([]runindex.Item[map[string]types.AttributeValue], bool, error) {
		return s.queryRunning(ctx, source, before, from, n)
	})
	if err != nil {
		return nil, "", wrap(err)
	}
	runs = make([]store.RunRecord, 0, len(items))
	partial := map[string]bool{} // runs the index does not hold whole
	for _, it := range items {
		run := decodeRun(it.Value)
		// An index that projects only its keys (CreateTables projects
		// every attribute) holds no createdAt, no status and no waiting
		// set: such runs are read from the table.
		if run.CreatedAt.IsZero() {
			run.CreatedAt = time.UnixMilli(it.Since).UTC()
		}
		if run.Status == "" {
			run.Status = StatusRunning
			partial[run.RunID] = true
		}
		runs = append(runs, *run)
	}
	if len(partial) > 0 {
		if runs, err = s.completeRuns(ctx, runs, partial); err != nil {
			return nil, "", wrap(err)
		}
	}
	slices.SortStableFunc(runs, func(a, b store.RunRecord) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.RunID, b.RunID)
	})
	if after != nil {
		next = runindex.Encode(after)
	}
	return runs, next, nil
}

// queryRunning is one Query of one partition key value of runningRunsIndex
// (source, see runindex.SourceKey): at most limit runs created before
// before (unix milliseconds), after from.
func (s *DynamoDbContext) queryRunning(ctx context.Context, source int, before int64, from *runindex.Position, limit int) ([]runindex.Item[map[string]types.AttributeValue], bool, error) {
	key := runindex.SourceKey(source)
	var start map[string]types.AttributeValue
	if from != nil {
		if from.Since >= before {
			// Past the range: DynamoDB would refuse the start key.
			return nil, false, nil
		}
		start = map[string]types.AttributeValue{
			attrGSIRunning:   avS(key),
			attrRunningSince: avN(from.Since),
			attrRunID:        avS(from.RunID),
		}
	}
	keyCond := expression.Key(attrGSIRunning).Equal(expression.Value(avS(key))).
		And(expression.Key(attrRunningSince).LessThan(expression.Value(avN(before))))
	expr, err := expression.NewBuilder().WithKeyCondition(keyCond).Build()
	if err != nil {
		return nil, false, err
	}
	out, err := s.client.Query(ctx, &dynamodb.QueryInput{
		TableName:                 aws.String(s.statusTable),
		IndexName:                 aws.String(runningRunsIndex),
		KeyConditionExpression:    expr.KeyCondition(),
		ExpressionAttributeNames:  expr.Names(),
		ExpressionAttributeValues: expr.Values(),
		ScanIndexForward:          aws.Bool(true),
		Limit:                     aws.Int32(int32(min(limit, math.MaxInt32))),
		ExclusiveStartKey:         start,
	})
	if err != nil {
		return nil, false, fmt.Errorf("query %s = %q: %w", attrGSIRunning, key, err)
	}
	items := make([]runindex.Item[map[string]types.AttributeValue], 0, len(out.Items))
	for _, item := range out.Items {
		since, ok := attrInt(item, attrRunningSince)
		runID := attrString(item, attrRunID)
		if !ok || runID == "" {
			return nil, false, fmt.Errorf("query %s = %q: an item without %s or %s", attrGSIRunning, key, attrRunningSince, attrRunID)
		}
		items = append(items, runindex.Item[map[string]types.AttributeValue]{Since: since, RunID: runID, Value: item})
	}
	return items, len(out.LastEvaluatedKey) > 0, nil
}

// completeRuns replaces the runs read from an index that does not project
// every attribute (partial, by run id) by their records in the status
// table, read consistently; a run finished since it was listed is dropped.
func (s *DynamoDbContext) completeRuns(ctx context.Context, runs []store.RunRecord, partial map[string]bool) ([]store.RunRecord, error) {
	keys := make([]map[string]types.AttributeValue, 0, len(partial))
	for id := range partial {
		keys = append(keys, map[string]types.AttributeValue{attrRunID: avS(id)})
	}
	items, err := batchGetItems(ctx, s.client, s.statusTable, keys)
	if err != nil {
		return nil, fmt.Errorf("read run records: %w", err)
	}
	whole := make(map[string]*store.RunRecord, len(items))
	for _, item := range items {
		run := decodeRun(item)
		whole[run.RunID] = run
	}
	kept := runs[:0]
	for _, run := range runs {
		if partial[run.RunID] {
			if w, ok := whole[run.RunID]; ok {
				if w.Status != StatusRunning {
					continue
				}
				run = *w
			}
		}
		kept = append(kept, run)
	}
	return kept, nil
}

// defaultListLimit is the page size of ListRunning when its limit is 0 or
// less.
const defaultListLimit = 100

// ListNodes returns every node record of a run, whatever its state, by node
// id; a run without node records has an empty map. It is a paginated,
// strongly consistent Query of the run's items whose key begins with
// "_outputs.", so context keys are not read.
func (s *DynamoDbContext) ListNodes(ctx context.Context, runID string) (map[string]*store.NodeRecord, error) {
	wrap := func(err error) error { return fmt.Errorf("sqsadapter: list nodes of run %q: %w", runID, err) }
	if err := checkRunID(runID); err != nil {
		return nil, err
	}
	keyCond := expression.Key(attrRunID).Equal(expression.Value(avS(runID))).
		And(expression.KeyBeginsWith(expression.Key(attrKey), outputsPrefix))
	expr, err := expression.NewBuilder().WithKeyCondition(keyCond).Build()
	if err != nil {
		return nil, wrap(err)
	}
	pages := dynamodb.NewQueryPaginator(s.client, &dynamodb.QueryInput{
		TableName:                 aws.String(s.contextTable),
		KeyConditionExpression:    expr.KeyCondition(),
		ExpressionAttributeNames:  expr.Names(),
		ExpressionAttributeValues: expr.Values(),
		ConsistentRead:            aws.Bool(true),
	})
	recs := make(map[string]*store.NodeRecord)
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if err != nil {
			return nil, wrap(err)
		}
		for _, item := range page.Items {
			id, ok := strings.CutPrefix(attrString(item, attrKey), outputsPrefix)
			if !ok {
				continue
			}
			rec, err := decodeNode(id, item)
			if err != nil {
				return nil, wrap(err)
			}
			recs[id] = rec
		}
	}
	return recs, nil
}

// Get implements ContextStore.
func (s *DynamoDbContext) Get(ctx context.Context, runID, key string) (any, bool, error) {
	wrap := func(err error) error { return fmt.Errorf("sqsadapter: get %q of run %q: %w", key, runID, err) }
	if err := checkRunID(runID); err != nil {
		return nil, false, err
	}
	if err := checkReadKey(key); err != nil {
		return nil, false, wrap(err)
	}
	item, err := s.getItem(ctx, runID, key)
	if err != nil {
		return nil, false, wrap(err)
	}
	v, ok, err := contextValue(key, item)
	if err != nil {
		return nil, false, wrap(err)
	}
	return v, ok, nil
}

// GetMany implements ContextStore with BatchGetItem (100 keys a request).
func (s *DynamoDbContext) GetMany(ctx context.Context, runID string, keys []string) (map[string]any, error) {
	wrap := func(err error) error { return fmt.Errorf("sqsadapter: get keys of run %q: %w", runID, err) }
	if err := checkRunID(runID); err != nil {
		return nil, err
	}
	for _, k := range keys {
		if err := checkReadKey(k); err != nil {
			return nil, wrap(err)
		}
	}
	items, err := s.batchGet(ctx, runID, keys)
	if err != nil {
		return nil, wrap(err)
	}
	vals := make(map[string]any, len(items))
	for k, item := range items {
		v, ok, err := contextValue(k, item)
		if err != nil {
			return nil, wrap(err)
		}
		if ok {
			vals[k] = v
		}
	}
	return vals, nil
}

// Set implements ContextStore with one PutItem (last write wins).
func (s *DynamoDbContext) Set(ctx context.Context, runID, key string, value any) error {
	wrap := func(err error) error { return fmt.Errorf("sqsadapter: set %q of run %q: %w", key, runID, err) }
	if err := checkRunID(runID); err != nil {
		return err
	}
	puts, err := s.encodeSets(runID, map[string]any{key: value})
	if err != nil {
		return wrap(err)
	}
	_, err = s.client.PutItem(ctx, &dynamodb.PutItemInput{
		TableName: aws.String(s.contextTable),
		Item:      puts[key].item,
	})
	if err != nil {
		return wrap(s.tooLarge(runID, puts, err))
	}
	return nil
}

// Delete implements ContextStore with one DeleteItem.
func (s *DynamoDbContext) Delete(ctx context.Context, runID, key string) (bool, error) {
	wrap := func(err error) error { return fmt.Errorf("sqsadapter: delete %q of run %q: %w", key, runID, err) }
	if err := checkRunID(runID); err != nil {
		return false, err
	}
	if err := checkContextKey(key); err != nil {
		return false, wrap(err)
	}
	out, err := s.client.DeleteItem(ctx, &dynamodb.DeleteItemInput{
		TableName:    aws.String(s.contextTable),
		Key:          ctxItemKey(runID, key),
		ReturnValues: types.ReturnValueAllOld,
	})
	if err != nil {
		return false, wrap(err)
	}
	return len(out.Attributes) > 0, nil
}

// Patch implements ContextStore: one PutItem or DeleteItem for a single
// change, else one TransactWriteItems (at most 100 changes; a key both set
// and deleted is refused with ErrInvalidKey).
func (s *DynamoDbContext) Patch(ctx context.Context, runID string, sets map[string]any, deletes []string) error {
	wrap := func(err error) error { return fmt.Errorf("sqsadapter: patch run %q: %w", runID, err) }
	if err := checkRunID(runID); err != nil {
		return err
	}
	if n := len(sets) + len(deletes); n > limits.TransactItems {
		return wrap(fmt.Errorf("%w: %d changes: one patch makes at most %d", ErrValueTooLarge, n, limits.TransactItems))
	}
	puts, err := s.encodeSets(runID, sets)
	if err != nil {
		return wrap(err)
	}
	if err := checkDeletes(sets, deletes); err != nil {
		return wrap(err)
	}
	items := append(s.putItems(puts), s.deleteItems(runID, deletes)...)
	switch {
	case len(items) == 0:
		return nil
	case len(items) == 1 && items[0].Put != nil:
		_, err = s.client.PutItem(ctx, &dynamodb.PutItemInput{TableName: items[0].Put.TableName, Item: items[0].Put.Item})
	case len(items) == 1:
		_, err = s.client.DeleteItem(ctx, &dynamodb.DeleteItemInput{TableName: items[0].Delete.TableName, Key: items[0].Delete.Key})
	default:
		if err := checkTransactSize(runID, puts, deletes); err != nil {
			return wrap(err)
		}
		_, err = s.transact(ctx, items)
	}
	if err != nil {
		return wrap(s.tooLarge(runID, puts, err))
	}
	return nil
}

// Snapshot implements ContextStore with a paginated Query of the run's
// items. An unknown run has an empty context.
func (s *DynamoDbContext) Snapshot(ctx context.Context, runID string) (map[string]any, error) {
	vals, _, err := s.snapshot(ctx, runID, false)
	return vals, err
}

// SnapshotNodes is Snapshot and ListNodes from one paginated Query of the
// run's items, which both read: GetRun and WaitForRun use it for a finished
// run.
func (s *DynamoDbContext) SnapshotNodes(ctx context.Context, runID string) (map[string]any, map[string]*store.NodeRecord, error) {
	return s.snapshot(ctx, runID, true)
}

func (s *DynamoDbContext) snapshot(ctx context.Context, runID string, nodes bool) (map[string]any, map[string]*store.NodeRecord, error) {
	wrap := func(err error) error { return fmt.Errorf("sqsadapter: snapshot of run %q: %w", runID, err) }
	if err := checkRunID(runID); err != nil {
		return nil, nil, err
	}
	expr, err := expression.NewBuilder().
		WithKeyCondition(expression.Key(attrRunID).Equal(expression.Value(avS(runID)))).Build()
	if err != nil {
		return nil, nil, wrap(err)
	}
	pages := dynamodb.NewQueryPaginator(s.client, &dynamodb.QueryInput{
		TableName:                 aws.String(s.contextTable),
		KeyConditionExpression:    expr.KeyCondition(),
		ExpressionAttributeNames:  expr.Names(),
		ExpressionAttributeValues: expr.Values(),
		ConsistentRead:            aws.Bool(true),
	})
	vals := make(map[string]any)
	var recs map[string]*store.NodeRecord
	if nodes {
		recs = make(map[string]*store.NodeRecord)
	}
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if err != nil {
			return nil, nil, wrap(err)
		}
		for _, item := range page.Items {
			k := attrString(item, attrKey)
			v, ok, err := contextValue(k, item)
			if err != nil {
				return nil, nil, wrap(err)
			}
			if ok {
				vals[k] = v
			}
			if id, node := strings.CutPrefix(k, outputsPrefix); node && nodes {
				if recs[id], err = decodeNode(id, item); err != nil {
					return nil, nil, wrap(err)
				}
			}
		}
	}
	return vals, recs, nil
}

// getItem reads one context-table item with a consistent read; nil when absent.
func (s *DynamoDbContext) getItem(ctx context.Context, runID, key string) (map[string]types.AttributeValue, error) {
	out, err := s.client.GetItem(ctx, &dynamodb.GetItemInput{
		TableName:      aws.String(s.contextTable),
		Key:            ctxItemKey(runID, key),
		ConsistentRead: aws.Bool(true),
	})
	if err != nil {
		return nil, err
	}
	return out.Item, nil
}

// batchGet reads context-table items of a run by key, consistently; absent
// items are absent from the map.
func (s *DynamoDbContext) batchGet(ctx context.Context, runID string, keys []string) (map[string]map[string]types.AttributeValue, error) {
	seen := make(map[string]bool, len(keys))
	avKeys := make([]map[string]types.AttributeValue, 0, len(keys))
	for _, k := range keys {
		if !seen[k] {
			seen[k] = true
			avKeys = append(avKeys, ctxItemKey(runID, k))
		}
	}
	items, err := batchGetItems(ctx, s.client, s.contextTable, avKeys)
	if err != nil {
		return nil, err
	}
	found := make(map[string]map[string]types.AttributeValue, len(items))
	for _, item := range items {
		found[attrString(item, attrKey)] = item
	}
	return found, nil
}

// sizedItem is an item to write and its estimated size (limits.ItemSize).
type sizedItem struct {
	item map[string]types.AttributeValue
	size int
}

// encodeSets checks and encodes context writes into context-table items,
// checking each item's size.
func (s *DynamoDbContext) encodeSets(runID string, sets map[string]any) (map[string]sizedItem, error) {
	if len(sets) == 0 {
		return nil, nil
	}
	items := make(map[string]sizedItem, len(sets))
	for _, k := range slices.Sorted(maps.Keys(sets)) {
		if err := checkContextKey(k); err != nil {
			return nil, err
		}
		av, vsize, err := encodeValue(sets[k])
		if err != nil {
			return nil, fmt.Errorf("key %q: %w", k, err)
		}
		size := limits.ItemSize(runID, k, vsize)
		if size > limits.ItemBytes {
			return nil, &store.ValueTooLargeError{RunID: runID, Key: k, Size: size, Limit: limits.ItemBytes}
		}
		items[k] = sizedItem{size: size, item: map[string]types.AttributeValue{
			attrRunID: avS(runID),
			attrKey:   avS(k),
			attrValue: av,
		}}
	}
	return items, nil
}

// putItems returns a transaction Put per item, in key order.
func (s *DynamoDbContext) putItems(items map[string]sizedItem) []types.TransactWriteItem {
	out := make([]types.TransactWriteItem, 0, len(items))
	for _, k := range slices.Sorted(maps.Keys(items)) {
		out = append(out, types.TransactWriteItem{Put: &types.Put{
			TableName: aws.String(s.contextTable),
			Item:      items[k].item,
		}})
	}
	return out
}

// deleteItems returns a transaction Delete per key.
func (s *DynamoDbContext) deleteItems(runID string, keys []string) []types.TransactWriteItem {
	out := make([]types.TransactWriteItem, 0, len(keys))
	seen := make(map[string]bool, len(keys))
	for _, k := range keys {
		if seen[k] {
			continue
		}
		seen[k] = true
		out = append(out, types.TransactWriteItem{Delete: &types.Delete{
			TableName: aws.String(s.contextTable),
			Key:       ctxItemKey(runID, k),
		}})
	}
	return out
}

// transact runs a TransactWriteItems, trying again (a bounded number of
// times, with backoff) when it was cancelled only by a conflict with a
// concurrent transaction on one of its items, which the SDK does not retry.
// When the transaction was cancelled, reasons holds the reasons, one per
// item.
func (s *DynamoDbContext) transact(ctx context.Context, items []types.TransactWriteItem) (reasons []types.CancellationReason, err error) {
	const tries = 5
	backoff := 20 * time.Millisecond
	for try := 1; ; try++ {
		_, err = s.client.TransactWriteItems(ctx, &dynamodb.TransactWriteItemsInput{TransactItems: items})
		var tce *types.TransactionCanceledException
		if !errors.As(err, &tce) {
			return nil, err
		}
		conflict := false
		for i := range tce.CancellationReasons {
			switch reasonCode(tce.CancellationReasons, i) {
			case conditionFailedCode:
				return tce.CancellationReasons, err
			case "TransactionConflict":
				conflict = true
			}
		}
		if !conflict || try == tries {
			return tce.CancellationReasons, err
		}
		if err := sleepCtx(ctx, backoff); err != nil {
			return nil, err
		}
		backoff *= 2
	}
}

// tooLarge translates DynamoDB's item size ValidationException into a
// *store.ValueTooLargeError naming the largest of the items written; other errors
// are returned as they are. The SDK error stays in the chain.
func (s *DynamoDbContext) tooLarge(runID string, items map[string]sizedItem, err error) error {
	if !isItemTooLarge(err) {
		return err
	}
	vt := &store.ValueTooLargeError{RunID: runID, Limit: limits.ItemBytes}
	for _, k := range slices.Sorted(maps.Keys(items)) {
		if size := items[k].size; size > vt.Size {
			vt.Key, vt.Size = k, size
		}
	}
	return translated(vt, err)
}

// decodeRun decodes a status-table item.
func decodeRun(item map[string]types.AttributeValue) *store.RunRecord {
	run := &store.RunRecord{
		RunID:            attrString(item, attrRunID),
		BlueprintID:      attrString(item, attrBlueprintID),
		BlueprintVersion: attrString(item, attrBlueprintVersion),
		Status:           RunState(attrString(item, attrStatus)),
		Error:            attrString(item, attrError),
		FailedNode:       attrString(item, attrFailedNode),
	}
	if ms, ok := attrInt(item, attrCreatedAt); ok {
		run.CreatedAt = time.UnixMilli(ms).UTC()
	}
	if ms, ok := attrInt(item, attrFinishedAt); ok {
		run.FinishedAt = time.UnixMilli(ms).UTC()
	}
	if sec, ok := attrInt(item, attrTTL); ok {
		run.ExpiresAt = time.Unix(sec, 0).UTC()
	}
	if ss, ok := item[attrWaiting].(*types.AttributeValueMemberSS); ok && len(ss.Value) > 0 {
		run.Waiting = slices.Sorted(slices.Values(ss.Value))
	}
	if id := attrString(item, attrParentRunID); id != "" {
		run.Parent = &store.ParentRef{
			RunID:            id,
			NodeID:           attrString(item, attrParentNodeID),
			BlueprintID:      attrString(item, attrParentBlueprintID),
			BlueprintVersion: attrString(item, attrParentVersion),
		}
	}
	return run
}

// decodeNode decodes a node record item.
func decodeNode(nodeID string, item map[string]types.AttributeValue) (*store.NodeRecord, error) {
	rec := &store.NodeRecord{
		NodeID:     nodeID,
		State:      attrString(item, attrState),
		LeaseOwner: attrString(item, attrLeaseOwner),
		Action:     attrString(item, attrAction),
		Fallback:   attrString(item, attrFallback),
		Token:      attrString(item, attrToken),
	}
	if n, ok := attrInt(item, attrAttempts); ok {
		rec.Attempts = int(n)
	}
	if ms, ok := attrInt(item, attrLeaseUntil); ok && rec.LeaseOwner != "" {
		rec.LeaseUntil = time.UnixMilli(ms).UTC()
	}
	if ms, ok := attrInt(item, attrUpdatedAt); ok {
		rec.UpdatedAt = time.UnixMilli(ms).UTC()
	}
	if rec.State == store.NodeFailed {
		rec.Error = attrString(item, attrError)
	}
	if rec.State == store.NodeCommitted {
		if av, ok := item[attrValue]; ok {
			v, err := decodeValue(av)
			if err != nil {
				return nil, fmt.Errorf("node %q: output: %w", nodeID, err)
			}
			rec.Output = v
		}
	}
	if l, ok := item[attrTaken].(*types.AttributeValueMemberL); ok {
		rec.Taken = make([]string, 0, len(l.Value))
		for _, e := range l.Value {
			if s, ok := e.(*types.AttributeValueMemberS); ok {
				rec.Taken = append(rec.Taken, s.Value)
			}
		}
	}
	if av, ok := item[attrStaged]; ok {
		v, err := decodeValue(av)
		if err != nil {
			return nil, fmt.Errorf("node %q: staged inputs: %w", nodeID, err)
		}
		m, ok := v.(map[string]any)
		if !ok && v != nil {
			return nil, fmt.Errorf("node %q: staged inputs are a %T, not an object", nodeID, v)
		}
		rec.Staged = m
	}
	if av, ok := item[attrWait]; ok {
		v, err := decodeValue(av)
		if err == nil {
			rec.Wait, err = waitvalue.Decode(v)
		}
		if err != nil {
			return nil, fmt.Errorf("node %q: wait: %w", nodeID, err)
		}
	}
	return rec, nil
}

// contextValue returns the value a context-table item gives to key: its
// value for a context key, the committed output for a node record.
func contextValue(key string, item map[string]types.AttributeValue) (any, bool, error) {
	if len(item) == 0 {
		return nil, false, nil
	}
	if strings.HasPrefix(key, outputsPrefix) && attrString(item, attrState) != store.NodeCommitted {
		return nil, false, nil
	}
	av, ok := item[attrValue]
	if !ok {
		return nil, false, nil
	}
	v, err := decodeValue(av)
	if err != nil {
		return nil, false, err
	}
	return v, true, nil
}

// nodeOpen is the condition "the node is absent or pending".
func nodeOpen() expression.ConditionBuilder {
	return expression.AttributeNotExists(expression.Name(attrState)).
		Or(expression.Name(attrState).Equal(expression.Value(avS(store.NodePending))))
}

// leasedBy is the condition "the node is pending and leased by owner".
func leasedBy(owner string) expression.ConditionBuilder {
	return expression.Name(attrState).Equal(expression.Value(avS(store.NodePending))).
		And(expression.Name(attrLeaseOwner).Equal(expression.Value(avS(owner))))
}

func ctxItemKey(runID, key string) map[string]types.AttributeValue {
	return map[string]types.AttributeValue{attrRunID: avS(runID), attrKey: avS(key)}
}

// checkRunID checks a run id (limits.CheckID); the error matches
// ErrInvalidKey: the run id is part of the key of every item of the run.
func checkRunID(runID string) error {
	if err := limits.CheckID("run id", runID); err != nil {
		return fmt.Errorf("sqsadapter: %w: %v", ErrInvalidKey, err)
	}
	return nil
}

// checkNode checks a run id and a node id (limits.CheckNodeRecordID), whose
// record key must be a valid context key.
func checkNode(runID, nodeID string) error {
	if err := checkRunID(runID); err != nil {
		return err
	}
	if err := limits.CheckNodeRecordID(nodeID); err != nil {
		return fmt.Errorf("sqsadapter: run %q: %w: %v", runID, ErrInvalidKey, err)
	}
	return nil
}

// checkReadKey checks a context key that a caller reads: node outputs
// ("_outputs.<nodeId>") included (see limits.CheckReadKey).
func checkReadKey(key string) error {
	if err := limits.CheckReadKey(key); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidKey, err)
	}
	return nil
}

// checkDeletes checks the keys to delete, none of which may also be set.
func checkDeletes(sets map[string]any, deletes []string) error {
	for _, k := range deletes {
		if err := checkContextKey(k); err != nil {
			return err
		}
		if _, ok := sets[k]; ok {
			return fmt.Errorf("%w: %q is both set and deleted", ErrInvalidKey, k)
		}
	}
	return nil
}

// checkTransactSize refuses, before sending it, a transaction over
// DynamoDB's 4 MB request limit: one that writes puts and the items of the
// given sizes and deletes the keys deletes (limits.TransactionBytes).
func checkTransactSize(runID string, puts map[string]sizedItem, deletes []string, sizes ...int) error {
	for _, p := range puts {
		sizes = append(sizes, p.size)
	}
	if total := limits.TransactionBytes(runID, sizes, deletes); total > limits.TransactBytes {
		return fmt.Errorf("%w: run %q: the writes that go together total %d bytes, over DynamoDB's %d-byte transaction limit",
			ErrValueTooLarge, runID, total, limits.TransactBytes)
	}
	return nil
}

// Value codec.

// encodeValue converts a value to the DynamoDB attribute value stored for
// it: its JSON-like form (jsonvalue.Normalize) as native DynamoDB types, or,
// when DynamoDB cannot hold it natively, its JSON encoding as B. It also
// returns the value's estimated size (limits.ValueSize).
func encodeValue(v any) (types.AttributeValue, int, error) {
	n, err := jsonvalue.Normalize(v)
	if err != nil {
		return nil, 0, err
	}
	native, err := limits.Native(n)
	if err != nil {
		return nil, 0, err
	}
	if !native {
		b, err := json.Marshal(n)
		if err != nil {
			return nil, 0, fmt.Errorf("value is not JSON-marshalable: %w", err)
		}
		return &types.AttributeValueMemberB{Value: b}, limits.ValueSize(n), nil
	}
	av, err := attributevalue.Marshal(n)
	if err != nil {
		return nil, 0, err
	}
	return av, limits.ValueSize(n), nil
}

// decodeValue converts a stored attribute value back to the JSON-like form.
func decodeValue(av types.AttributeValue) (any, error) {
	if b, ok := av.(*types.AttributeValueMemberB); ok {
		return jsonvalue.Decode(b.Value)
	}
	var v any
	if err := attributevalue.UnmarshalWithOptions(av, &v, func(o *attributevalue.DecoderOptions) {
		o.UseNumber = true
	}); err != nil {
		return nil, err
	}
	return convertNumbers(v)
}

// convertNumbers turns the numbers of a decoded value into int64 (integers
// that fit) or float64, as jsonvalue.Decode does.
func convertNumbers(v any) (any, error) {
	switch x := v.(type) {
	case attributevalue.Number:
		if i, err := strconv.ParseInt(string(x), 10, 64); err == nil {
			return i, nil
		}
		f, err := strconv.ParseFloat(string(x), 64)
		if err != nil && !errors.Is(err, strconv.ErrRange) {
			return nil, fmt.Errorf("number %q: %w", string(x), err)
		}
		return f, nil
	case map[string]any:
		for k, e := range x {
			c, err := convertNumbers(e)
			if err != nil {
				return nil, err
			}
			x[k] = c
		}
		return x, nil
	case []any:
		for i, e := range x {
			c, err := convertNumbers(e)
			if err != nil {
				return nil, err
			}
			x[i] = c
		}
		return x, nil
	}
	return v, nil
}

// Attribute helpers, shared with the coordination store.

func avS(s string) types.AttributeValue { return &types.AttributeValueMemberS{Value: s} }

func avN(n int64) types.AttributeValue {
	return &types.AttributeValueMemberN{Value: strconv.FormatInt(n, 10)}
}

func putNonEmpty(item map[string]types.AttributeValue, name, s string) {
	if s != "" {
		item[name] = avS(s)
	}
}

func attrString(item map[string]types.AttributeValue, name string) string {
	if s, ok := item[name].(*types.AttributeValueMemberS); ok {
		return s.Value
	}
	return ""
}

func attrInt(item map[string]types.AttributeValue, name string) (int64, bool) {
	n, ok := item[name].(*types.AttributeValueMemberN)
	if !ok {
		return 0, false
	}
	i, err := strconv.ParseInt(n.Value, 10, 64)
	return i, err == nil
}

// Errors.

// translatedError is an SDK error translated into the package's terms: it
// reads as outcome, and errors.Is and errors.As find both outcome and the SDK
// error.
type translatedError struct {
	outcome, cause error
}

func (e *translatedError) Error() string   { return e.outcome.Error() }
func (e *translatedError) Unwrap() []error { return []error{e.outcome, e.cause} }

func translated(outcome, cause error) error {
	if cause == nil {
		return outcome
	}
	return &translatedError{outcome: outcome, cause: cause}
}

const conditionFailedCode = "ConditionalCheckFailed"

// refusal is the error a node record in a resolved or suspended state
// answers a write with: committed or skipped, closed, failed, waiting; nil
// for a pending record. Each write decides which states it accepts first.
func refusal(rec *store.NodeRecord) error {
	switch rec.State {
	case store.NodeCommitted, store.NodeSkipped:
		return fmt.Errorf("node is %s: %w", rec.State, store.ErrNodeCommitted)
	case store.NodeClosed:
		return store.ErrNodeClosed
	case store.NodeFailed:
		return store.ErrNodeFailed
	case store.NodeWaiting:
		return store.ErrNodeWaiting
	}
	return nil
}

// refusedItem is the node item as it was when a transaction's first item,
// its conditional update of the node, was refused: what the refusal
// returned, or, when it returned nothing (the item was absent, or an
// emulator returns no old item), a consistent read.
func (s *DynamoDbContext) refusedItem(ctx context.Context, runID, nodeKey string, reasons []types.CancellationReason) (map[string]types.AttributeValue, error) {
	if old := reasons[0].Item; len(old) > 0 {
		return old, nil
	}
	return s.getItem(ctx, runID, nodeKey)
}

// conditionFailedItem reports whether err is a failed condition, with the
// item as it was when the request asked for it.
func conditionFailedItem(err error) (map[string]types.AttributeValue, bool) {
	var ccf *types.ConditionalCheckFailedException
	if errors.As(err, &ccf) {
		return ccf.Item, true
	}
	return nil, false
}

func isConditionFailed(err error) bool {
	var ccf *types.ConditionalCheckFailedException
	return errors.As(err, &ccf)
}

func reasonCode(reasons []types.CancellationReason, i int) string {
	if i >= len(reasons) {
		return ""
	}
	return aws.ToString(reasons[i].Code)
}

// isItemTooLarge reports DynamoDB's item size error. It arrives as a plain
// ValidationException, so only its message tells it apart.
func isItemTooLarge(err error) bool {
	var ae smithy.APIError
	if !errors.As(err, &ae) || ae.ErrorCode() != "ValidationException" {
		return false
	}
	msg := ae.ErrorMessage()
	return strings.Contains(msg, "Item size has exceeded the maximum allowed size") ||
		strings.Contains(msg, "Item size to update has exceeded the maximum allowed size")
}

// batchGetItems reads items of one table by key with consistent reads, 100
// keys a request, retrying unprocessed keys with a short backoff a bounded
// number of times. Keys must be distinct.
func batchGetItems(ctx context.Context, client DynamoDBClient, table string, keys []map[string]types.AttributeValue) ([]map[string]types.AttributeValue, error) {
	const tries = 8
	var items []map[string]types.AttributeValue
	for start := 0; start < len(keys); start += limits.BatchGetKeys {
		pending := keys[start:min(start+limits.BatchGetKeys, len(keys))]
		backoff := 10 * time.Millisecond
		for try := 1; len(pending) > 0; try++ {
			if try > tries {
				return nil, fmt.Errorf("batch get from %s: %d keys still unprocessed after %d requests", table, len(pending), tries)
			}
			if try > 1 {
				if err := sleepCtx(ctx, backoff); err != nil {
					return nil, err
				}
				backoff = min(2*backoff, time.Second)
			}
			out, err := client.BatchGetItem(ctx, &dynamodb.BatchGetItemInput{
				RequestItems: map[string]types.KeysAndAttributes{
					table: {Keys: pending, ConsistentRead: aws.Bool(true)},
				},
			})
			if err != nil {
				return nil, err
			}
			items = append(items, out.Responses[table]...)
			pending = out.UnprocessedKeys[table].Keys
		}
	}
	return items, nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// updateNode makes one conditional UpdateItem of a node record and returns
// the record after it. When the condition fails it returns the record as it
// is (read again if the server did not send it back) with refused true and
// cause holding the SDK's error, for translation by the caller.
func (s *DynamoDbContext) updateNode(ctx context.Context, runID, nodeID string, expr expression.Expression) (item map[string]types.AttributeValue, refused bool, cause, err error) {
	nodeKey := outputsPrefix + nodeID
	out, err := s.client.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:                           aws.String(s.contextTable),
		Key:                                 ctxItemKey(runID, nodeKey),
		UpdateExpression:                    expr.Update(),
		ConditionExpression:                 expr.Condition(),
		ExpressionAttributeNames:            expr.Names(),
		ExpressionAttributeValues:           expr.Values(),
		ReturnValues:                        types.ReturnValueAllNew,
		ReturnValuesOnConditionCheckFailure: types.ReturnValuesOnConditionCheckFailureAllOld,
	})
	if old, failed := conditionFailedItem(err); failed {
		if len(old) == 0 {
			// Only an item that exists can fail these conditions; a server
			// that does not return it is read again.
			var gerr error
			if old, gerr = s.getItem(ctx, runID, nodeKey); gerr != nil {
				return nil, false, nil, gerr
			}
		}
		return old, true, err, nil
	}
	if err != nil {
		return nil, false, nil, err
	}
	return out.Attributes, false, nil, nil
}
