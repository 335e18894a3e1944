package sqsadapter

import (
	"context"
	"fmt"
	"maps"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/expression"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/flowcraft/sqsadapter/internal/limits"
	"github.com/flowcraft/sqsadapter/internal/waitvalue"
	"github.com/flowcraft/sqsadapter/store"
)

// SuspendNode implements ContextStore with one TransactWriteItems: the
// update of the node record, conditional on the node being pending and
// leased by owner (its lease's expiry is not checked, as in ExtendLease),
// and the ADD of the node to the run record's waiting set, conditional on
// the run record existing. On a failed condition the node record as it was
// decides the outcome. The Wait is stored as a value (wait), as outputs are.
// An absent node comes back as a nil record.
func (s *DynamoDbContext) SuspendNode(ctx context.Context, runID, nodeID, owner string, w store.Wait) (*store.NodeRecord, error) {
	wrap := func(err error) error {
		return fmt.Errorf("sqsadapter: suspend node %q of run %q for %q: %w", nodeID, runID, owner, err)
	}
	if err := checkNode(runID, nodeID); err != nil {
		return nil, err
	}
	nodeKey := outputsPrefix + nodeID
	wv, err := waitvalue.Encode(w)
	if err != nil {
		return nil, wrap(err)
	}
	wait, _, err := encodeValue(wv)
	if err != nil {
		return nil, wrap(fmt.Errorf("wait: %w", err))
	}
	if size := limits.NodeRecordSize(runID, nodeID, 0, 0, "", "", nil) + limits.WaitSize(wv, ""); size > limits.ItemBytes {
		return nil, &store.ValueTooLargeError{RunID: runID, Key: nodeKey, Size: size, Limit: limits.ItemBytes}
	}

	// The node waits already (its first Wait stays), or the caller may not
	// suspend it.
	refused := func(old map[string]types.AttributeValue, cause error) (*store.NodeRecord, error) {
		if len(old) == 0 {
			return nil, wrap(translated(fmt.Errorf("no node record: %w", store.ErrLeaseLost), cause))
		}
		rec, err := decodeNode(nodeID, old)
		if err != nil {
			return nil, wrap(err)
		}
		if rec.State == store.NodeWaiting {
			return rec, nil
		}
		if rerr := refusal(rec); rerr != nil {
			return rec, wrap(translated(rerr, cause))
		}
		return rec, wrap(translated(fmt.Errorf("lease held by %q: %w", rec.LeaseOwner, store.ErrLeaseLost), cause))
	}
	if owner == "" {
		// No one holds a lease as "": nothing to write.
		old, err := s.getItem(ctx, runID, nodeKey)
		if err != nil {
			return nil, wrap(err)
		}
		return refused(old, nil)
	}

	nodeExpr, err := expression.NewBuilder().
		WithCondition(leasedBy(owner)).
		WithUpdate(expression.Set(expression.Name(attrState), expression.Value(avS(store.NodeWaiting))).
			Set(expression.Name(attrWait), expression.Value(wait)).
			Set(expression.Name(attrUpdatedAt), expression.Value(avN(time.Now().UnixMilli()))).
			Remove(expression.Name(attrLeaseOwner)).
			Remove(expression.Name(attrLeaseUntil))).
		Build()
	if err != nil {
		return nil, wrap(err)
	}
	runExpr, err := expression.NewBuilder().
		WithCondition(expression.AttributeExists(expression.Name(attrRunID))).
		WithUpdate(expression.Add(expression.Name(attrWaiting), expression.Value(avSS(nodeID)))).
		Build()
	if err != nil {
		return nil, wrap(err)
	}
	return s.transactWaiting(ctx, runID, nodeID, nodeExpr, runExpr, refused, wrap)
}

// transactWaiting writes a node record and its run record's waiting set in
// one TransactWriteItems, then reads the record back (a transaction returns
// nothing). A failed condition on the node is decided by refused, from the
// record as it was; one on the run record means the run has none.
func (s *DynamoDbContext) transactWaiting(ctx context.Context, runID, nodeID string, nodeExpr, runExpr expression.Expression,
	refused func(old map[string]types.AttributeValue, cause error) (*store.NodeRecord, error), wrap func(error) error) (*store.NodeRecord, error) {
	nodeKey := outputsPrefix + nodeID
	reasons, err := s.transact(ctx, []types.TransactWriteItem{
		{Update: s.nodeUpdate(runID, nodeKey, nodeExpr)},
		{Update: s.waitingUpdate(runID, runExpr)},
	})
	if err != nil {
		switch {
		case reasonCode(reasons, 0) == conditionFailedCode:
			old, gerr := s.refusedItem(ctx, runID, nodeKey, reasons)
			if gerr != nil {
				return nil, wrap(gerr)
			}
			return refused(old, err)
		case reasonCode(reasons, 1) == conditionFailedCode:
			return nil, wrap(translated(ErrRunNotFound, err))
		}
		return nil, wrap(err)
	}
	item, err := s.getItem(ctx, runID, nodeKey)
	if err != nil {
		return nil, wrap(fmt.Errorf("written, but reading the record back: %w", err))
	}
	rec, err := decodeNode(nodeID, item)
	if err != nil {
		return nil, wrap(err)
	}
	return rec, nil
}

// unwaitExpr removes a node from its run record's waiting set.
func unwaitExpr(nodeID string) (expression.Expression, error) {
	return expression.NewBuilder().
		WithUpdate(expression.Delete(expression.Name(attrWaiting), expression.Value(avSS(nodeID)))).
		Build()
}

// ResumeNode implements ContextStore with one TransactWriteItems: the
// commit of the node record, conditional on the node waiting, the DELETE of
// the node from the run record's waiting set, and a Put or Delete per
// context key (at most 98 context writes). The record keeps its wait. On a
// failed condition the node record as it was decides the outcome: a node
// resumed with an identical commit (Output, Action, Taken, Staged,
// Fallback and Token, compared decoded) is returned with no error, so that a
// retry after a lost response succeeds. An absent node comes back as a nil
// record.
func (s *DynamoDbContext) ResumeNode(ctx context.Context, runID string, c store.NodeCommit) (*store.NodeRecord, error) {
	wrap := func(err error) error {
		return fmt.Errorf("sqsadapter: resume node %q of run %q: %w", c.NodeID, runID, err)
	}
	if err := checkNode(runID, c.NodeID); err != nil {
		return nil, err
	}
	nodeKey := outputsPrefix + c.NodeID
	cw, err := s.encodeCommit(runID, c, 1, wrap)
	if err != nil {
		return nil, err
	}
	nodeExpr, err := expression.NewBuilder().WithCondition(nodeWaiting()).WithUpdate(cw.upd).Build()
	if err != nil {
		return nil, wrap(err)
	}
	runExpr, err := unwaitExpr(c.NodeID)
	if err != nil {
		return nil, wrap(err)
	}

	// The node resumed by another call (or by this one, retried after a
	// lost response), or not waiting.
	refused := func(old map[string]types.AttributeValue, cause error) (*store.NodeRecord, error) {
		if len(old) == 0 {
			return nil, wrap(translated(fmt.Errorf("no node record: %w", store.ErrNotWaiting), cause))
		}
		rec, err := decodeNode(c.NodeID, old)
		if err != nil {
			return nil, wrap(err)
		}
		if rec.State == store.NodeCommitted {
			mine, err := decodeNode(c.NodeID, cw.written)
			if err == nil && rec.Wait != nil && sameOutcome(rec, mine) {
				return rec, nil
			}
		}
		if rerr := refusal(rec); rerr != nil && rec.State != store.NodeWaiting {
			return rec, wrap(translated(rerr, cause))
		}
		return rec, wrap(translated(fmt.Errorf("node is %s: %w", rec.State, store.ErrNotWaiting), cause))
	}

	items := make([]types.TransactWriteItem, 0, 2+len(cw.sets)+len(c.Deletes))
	items = append(items,
		types.TransactWriteItem{Update: s.nodeUpdate(runID, nodeKey, nodeExpr)},
		types.TransactWriteItem{Update: s.waitingUpdate(runID, runExpr)})
	items = append(items, s.putItems(cw.sets)...)
	items = append(items, s.deleteItems(runID, c.Deletes)...)
	if err := checkTransactSize(runID, cw.sets, c.Deletes, cw.nodeSize, limits.WaitingUpdateSize(runID, c.NodeID)); err != nil {
		return nil, wrap(err)
	}
	reasons, err := s.transact(ctx, items)
	if err != nil {
		if reasonCode(reasons, 0) == conditionFailedCode {
			old, gerr := s.refusedItem(ctx, runID, nodeKey, reasons)
			if gerr != nil {
				return nil, wrap(gerr)
			}
			return refused(old, err)
		}
		all := maps.Clone(cw.sets)
		if all == nil {
			all = make(map[string]sizedItem)
		}
		all[nodeKey] = sizedItem{item: cw.written, size: cw.nodeSize}
		return nil, wrap(s.tooLarge(runID, all, err))
	}
	// A committed record never changes again: read it back for the
	// attempt count and the wait, which the transaction cannot return.
	item, err := s.getItem(ctx, runID, nodeKey)
	if err != nil {
		return nil, wrap(fmt.Errorf("resumed, but reading the record back: %w", err))
	}
	rec, err := decodeNode(c.NodeID, item)
	if err != nil {
		return nil, wrap(err)
	}
	return rec, nil
}

// WakeNode implements ContextStore with one TransactWriteItems: the update
// of the node record to pending, leased by owner, conditional on the node
// waiting after attempts attempts, and the DELETE of the node from the run
// record's waiting set. On a failed condition the node record as it was
// decides the outcome. An absent node comes back as a nil record.
func (s *DynamoDbContext) WakeNode(ctx context.Context, runID, nodeID, owner string, attempts int, until time.Time) (*store.NodeRecord, error) {
	wrap := func(err error) error {
		return fmt.Errorf("sqsadapter: wake node %q of run %q for %q: %w", nodeID, runID, owner, err)
	}
	if err := checkNode(runID, nodeID); err != nil {
		return nil, err
	}
	nodeKey := outputsPrefix + nodeID
	refused := func(old map[string]types.AttributeValue, cause error) (*store.NodeRecord, error) {
		if len(old) == 0 {
			return nil, wrap(translated(fmt.Errorf("no node record: %w", store.ErrNotWaiting), cause))
		}
		rec, err := decodeNode(nodeID, old)
		if err != nil {
			return nil, wrap(err)
		}
		if rec.State == store.NodePending && owner != "" && rec.LeaseOwner == owner && rec.Attempts == attempts {
			return rec, nil // woken by this owner already
		}
		if rerr := refusal(rec); rerr != nil && rec.State != store.NodeWaiting {
			return rec, wrap(translated(rerr, cause))
		}
		return rec, wrap(translated(fmt.Errorf("node is %s after %d attempts: %w", rec.State, rec.Attempts, store.ErrNotWaiting), cause))
	}
	if owner == "" {
		old, err := s.getItem(ctx, runID, nodeKey)
		if err != nil {
			return nil, wrap(err)
		}
		return refused(old, nil)
	}
	nodeExpr, err := expression.NewBuilder().
		WithCondition(nodeWaiting().And(expression.Name(attrAttempts).Equal(expression.Value(avN(int64(attempts)))))).
		WithUpdate(expression.Set(expression.Name(attrState), expression.Value(avS(store.NodePending))).
			Set(expression.Name(attrLeaseOwner), expression.Value(avS(owner))).
			Set(expression.Name(attrLeaseUntil), expression.Value(avN(until.UnixMilli()))).
			Set(expression.Name(attrUpdatedAt), expression.Value(avN(time.Now().UnixMilli())))).
		Build()
	if err != nil {
		return nil, wrap(err)
	}
	runExpr, err := unwaitExpr(nodeID)
	if err != nil {
		return nil, wrap(err)
	}
	return s.transactWaiting(ctx, runID, nodeID, nodeExpr, runExpr, refused, wrap)
}

// closeWaiting closes a waiting node and removes it from its run's waiting
// set, in one TransactWriteItems conditional on the node waiting. A node
// that no longer waits (resumed, or closed by a concurrent call) is left as
// it is.
func (s *DynamoDbContext) closeWaiting(ctx context.Context, runID, nodeID string) error {
	nodeExpr, err := expression.NewBuilder().
		WithCondition(nodeWaiting()).
		WithUpdate(expression.Set(expression.Name(attrState), expression.Value(avS(store.NodeClosed))).
			Set(expression.Name(attrUpdatedAt), expression.Value(avN(time.Now().UnixMilli())))).
		Build()
	if err != nil {
		return err
	}
	runExpr, err := unwaitExpr(nodeID)
	if err != nil {
		return err
	}
	reasons, err := s.transact(ctx, []types.TransactWriteItem{
		{Update: s.nodeUpdate(runID, outputsPrefix+nodeID, nodeExpr)},
		{Update: s.waitingUpdate(runID, runExpr)},
	})
	if err != nil && reasonCode(reasons, 0) != conditionFailedCode {
		return err
	}
	return nil
}

// nodeUpdate is the transaction item of a conditional update of a node
// record, which returns the record as it was when its condition fails.
func (s *DynamoDbContext) nodeUpdate(runID, nodeKey string, expr expression.Expression) *types.Update {
	return &types.Update{
		TableName:                           aws.String(s.contextTable),
		Key:                                 ctxItemKey(runID, nodeKey),
		UpdateExpression:                    expr.Update(),
		ConditionExpression:                 expr.Condition(),
		ExpressionAttributeNames:            expr.Names(),
		ExpressionAttributeValues:           expr.Values(),
		ReturnValuesOnConditionCheckFailure: types.ReturnValuesOnConditionCheckFailureAllOld,
	}
}

// waitingUpdate is the transaction item of an update of a run record's
// waiting set.
func (s *DynamoDbContext) waitingUpdate(runID string, expr expression.Expression) *types.Update {
	return &types.Update{
		TableName:                 aws.String(s.statusTable),
		Key:                       map[string]types.AttributeValue{attrRunID: avS(runID)},
		UpdateExpression:          expr.Update(),
		ConditionExpression:       expr.Condition(),
		ExpressionAttributeNames:  expr.Names(),
		ExpressionAttributeValues: expr.Values(),
	}
}

// nodeWaiting is the condition "the node waits".
func nodeWaiting() expression.ConditionBuilder {
	return expression.Name(attrState).Equal(expression.Value(avS(store.NodeWaiting)))
}

// avSS is a string set of one element: a run record's waiting set is
// changed with ADD and DELETE of one node, which are idempotent.
func avSS(s string) types.AttributeValue {
	return &types.AttributeValueMemberSS{Value: []string{s}}
}
