package sqsadapter

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/expression"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/flowcraft/sqsadapter/internal/limits"
	"github.com/flowcraft/sqsadapter/store"
)

// Coordination table attribute names.
const (
	attrCoordinationKey = "coordinationKey"
	attrTTL             = "ttl"
	attrExpiresAt       = "expiresAt"
	attrArrived         = "arrived"
	attrJoinTaken       = "taken"
	attrFiredBy         = "firedBy"
)

// coordinationTries bounds the attempts of an operation that races with the
// restart of an expired record.
const coordinationTries = 5

var _ CoordinationStore = (*DynamoDbCoordinationStore)(nil)

// DynamoDbCoordinationStore is the CoordinationStore on DynamoDB. Its table
// (see CreateTables) has the partition key "coordinationKey" (S); a record
// holds one of:
//   - a string (SetIfNotExist): value (S);
//   - a counter (Increment): value (N);
//   - a join (Arrive): arrived and taken (string sets), firedBy (S);
//
// and, when it has a TTL, ttl (N, epoch seconds, rounded up: DynamoDB's TTL
// attribute, for garbage collection) and expiresAt (N, unix milliseconds).
// DynamoDB deletes expired items lazily, up to days later, so every method
// treats a record whose expiresAt is not after the current time as absent:
// conditions accept it as absent, reads skip it, and writes to it restart it
// empty. A ttl <= 0 means no expiry. Using a record of one kind as another
// (Increment on a join, Get of a join...) is an error.
//
// Every write is conditional or set-based and every read is strongly
// consistent. The methods block for the DynamoDB calls they make and are safe
// for concurrent use.
type DynamoDbCoordinationStore struct {
	client DynamoDBClient
	table  string
	now    func() time.Time
}

// NewDynamoDbCoordinationStore returns a CoordinationStore that keeps its
// records in table.
func NewDynamoDbCoordinationStore(client DynamoDBClient, table string) *DynamoDbCoordinationStore {
	return &DynamoDbCoordinationStore{client: client, table: table, now: time.Now}
}

// Increment implements CoordinationStore with one UpdateItem (ADD value),
// conditional on the record being absent or live; an expired record is
// replaced by a counter at delta.
func (s *DynamoDbCoordinationStore) Increment(ctx context.Context, key string, delta int64, ttl time.Duration) (int64, error) {
	wrap := func(err error) error { return fmt.Errorf("sqsadapter: increment %q: %w", key, err) }
	if err := checkCoordinationKey(key); err != nil {
		return 0, err
	}
	for try := 0; try < coordinationTries; try++ {
		now := s.now()
		upd := withExpiry(expression.Add(expression.Name(attrValue), expression.Value(avN(delta))), ttl, now)
		cond := liveOrAbsent(now).And(
			expression.AttributeNotExists(expression.Name(attrArrived)),
			expression.AttributeNotExists(expression.Name(attrValue)).
				Or(expression.Name(attrValue).AttributeType(expression.Number)),
		)
		expr, err := expression.NewBuilder().WithCondition(cond).WithUpdate(upd).Build()
		if err != nil {
			return 0, wrap(err)
		}
		out, err := s.client.UpdateItem(ctx, &dynamodb.UpdateItemInput{
			TableName:                           aws.String(s.table),
			Key:                                 coordKey(key),
			UpdateExpression:                    expr.Update(),
			ConditionExpression:                 expr.Condition(),
			ExpressionAttributeNames:            expr.Names(),
			ExpressionAttributeValues:           expr.Values(),
			ReturnValues:                        types.ReturnValueUpdatedNew,
			ReturnValuesOnConditionCheckFailure: types.ReturnValuesOnConditionCheckFailureAllOld,
		})
		if old, failed := conditionFailedItem(err); failed {
			if old != nil && !expired(old, now) {
				return 0, wrap(wrongKind(old, "counter"))
			}
			item := map[string]types.AttributeValue{attrValue: avN(delta)}
			restarted, err := s.restart(ctx, key, item, ttl, now)
			if err != nil {
				return 0, wrap(err)
			}
			if restarted {
				return delta, nil
			}
			continue
		}
		if err != nil {
			return 0, wrap(err)
		}
		n, ok := attrInt(out.Attributes, attrValue)
		if !ok {
			return 0, wrap(errors.New("the record holds no counter"))
		}
		return n, nil
	}
	return 0, wrap(errRestartRace)
}

// SetIfNotExist implements CoordinationStore with one PutItem conditional
// on the key being absent or expired.
func (s *DynamoDbCoordinationStore) SetIfNotExist(ctx context.Context, key, value string, ttl time.Duration) (bool, error) {
	wrap := func(err error) error { return fmt.Errorf("sqsadapter: set %q if absent: %w", key, err) }
	if err := checkCoordinationKey(key); err != nil {
		return false, err
	}
	now := s.now()
	item := coordKey(key)
	item[attrValue] = avS(value)
	addExpiry(item, ttl, now)
	expr, err := expression.NewBuilder().WithCondition(absentOrExpired(now)).Build()
	if err != nil {
		return false, wrap(err)
	}
	_, err = s.client.PutItem(ctx, &dynamodb.PutItemInput{
		TableName:                 aws.String(s.table),
		Item:                      item,
		ConditionExpression:       expr.Condition(),
		ExpressionAttributeNames:  expr.Names(),
		ExpressionAttributeValues: expr.Values(),
	})
	if isConditionFailed(err) {
		return false, nil
	}
	if err != nil {
		return false, wrap(err)
	}
	return true, nil
}

// ExtendTTL implements CoordinationStore with one UpdateItem conditional on
// the key being live. A ttl <= 0 removes the expiry.
func (s *DynamoDbCoordinationStore) ExtendTTL(ctx context.Context, key string, ttl time.Duration) (bool, error) {
	wrap := func(err error) error { return fmt.Errorf("sqsadapter: extend TTL of %q: %w", key, err) }
	if err := checkCoordinationKey(key); err != nil {
		return false, err
	}
	now := s.now()
	var upd expression.UpdateBuilder
	upd = withExpiry(upd, ttl, now)
	cond := expression.AttributeExists(expression.Name(attrCoordinationKey)).And(liveOrAbsent(now))
	expr, err := expression.NewBuilder().WithCondition(cond).WithUpdate(upd).Build()
	if err != nil {
		return false, wrap(err)
	}
	_, err = s.client.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:                 aws.String(s.table),
		Key:                       coordKey(key),
		UpdateExpression:          expr.Update(),
		ConditionExpression:       expr.Condition(),
		ExpressionAttributeNames:  expr.Names(),
		ExpressionAttributeValues: expr.Values(),
	})
	if isConditionFailed(err) {
		return false, nil
	}
	if err != nil {
		return false, wrap(err)
	}
	return true, nil
}

// Delete implements CoordinationStore with one DeleteItem.
func (s *DynamoDbCoordinationStore) Delete(ctx context.Context, key string) error {
	if err := checkCoordinationKey(key); err != nil {
		return err
	}
	_, err := s.client.DeleteItem(ctx, &dynamodb.DeleteItemInput{
		TableName: aws.String(s.table),
		Key:       coordKey(key),
	})
	if err != nil {
		return fmt.Errorf("sqsadapter: delete %q: %w", key, err)
	}
	return nil
}

// Get implements CoordinationStore with a consistent GetItem. A counter
// reads as its decimal value.
func (s *DynamoDbCoordinationStore) Get(ctx context.Context, key string) (string, bool, error) {
	wrap := func(err error) error { return fmt.Errorf("sqsadapter: get %q: %w", key, err) }
	if err := checkCoordinationKey(key); err != nil {
		return "", false, err
	}
	out, err := s.client.GetItem(ctx, &dynamodb.GetItemInput{
		TableName:      aws.String(s.table),
		Key:            coordKey(key),
		ConsistentRead: aws.Bool(true),
	})
	if err != nil {
		return "", false, wrap(err)
	}
	if len(out.Item) == 0 || expired(out.Item, s.now()) {
		return "", false, nil
	}
	switch v := out.Item[attrValue].(type) {
	case *types.AttributeValueMemberS:
		return v.Value, true, nil
	case *types.AttributeValueMemberN:
		return v.Value, true, nil
	}
	return "", false, wrap(wrongKind(out.Item, "string"))
}

// Arrive implements CoordinationStore with one UpdateItem: ADD arrived
// {source} (and taken {source} for a taken arrival), SET firedBy =
// if_not_exists(firedBy, source) for a taken arrival that claims, and the
// TTL; repeating it changes nothing but the TTL. It is conditional on the
// record being absent or live: an expired record is replaced by a record of
// this arrival alone.
func (s *DynamoDbCoordinationStore) Arrive(ctx context.Context, key string, a store.Arrival, ttl time.Duration) (*store.JoinState, error) {
	wrap := func(err error) error {
		return fmt.Errorf("sqsadapter: arrive at join %q from %q: %w", key, a.Source, err)
	}
	if err := checkCoordinationKey(key); err != nil {
		return nil, err
	}
	if a.Source == "" {
		return nil, wrap(errors.New("empty source"))
	}
	src := &types.AttributeValueMemberSS{Value: []string{a.Source}}
	for try := 0; try < coordinationTries; try++ {
		now := s.now()
		upd := expression.Add(expression.Name(attrArrived), expression.Value(src))
		if a.Taken {
			upd = upd.Add(expression.Name(attrJoinTaken), expression.Value(src))
			if a.Claim {
				upd = upd.Set(expression.Name(attrFiredBy),
					expression.IfNotExists(expression.Name(attrFiredBy), expression.Value(avS(a.Source))))
			}
		}
		upd = withExpiry(upd, ttl, now)
		cond := liveOrAbsent(now).And(expression.AttributeNotExists(expression.Name(attrValue)))
		expr, err := expression.NewBuilder().WithCondition(cond).WithUpdate(upd).Build()
		if err != nil {
			return nil, wrap(err)
		}
		out, err := s.client.UpdateItem(ctx, &dynamodb.UpdateItemInput{
			TableName:                           aws.String(s.table),
			Key:                                 coordKey(key),
			UpdateExpression:                    expr.Update(),
			ConditionExpression:                 expr.Condition(),
			ExpressionAttributeNames:            expr.Names(),
			ExpressionAttributeValues:           expr.Values(),
			ReturnValues:                        types.ReturnValueAllNew,
			ReturnValuesOnConditionCheckFailure: types.ReturnValuesOnConditionCheckFailureAllOld,
		})
		if old, failed := conditionFailedItem(err); failed {
			if old != nil && !expired(old, now) {
				return nil, wrap(wrongKind(old, "join"))
			}
			item := map[string]types.AttributeValue{attrArrived: src}
			if a.Taken {
				item[attrJoinTaken] = src
				if a.Claim {
					item[attrFiredBy] = avS(a.Source)
				}
			}
			restarted, err := s.restart(ctx, key, item, ttl, now)
			if err != nil {
				return nil, wrap(err)
			}
			if restarted {
				return decodeJoin(item), nil
			}
			continue
		}
		if err != nil {
			return nil, wrap(err)
		}
		return decodeJoin(out.Attributes), nil
	}
	return nil, wrap(errRestartRace)
}

// GetJoins implements CoordinationStore with consistent BatchGetItem reads.
func (s *DynamoDbCoordinationStore) GetJoins(ctx context.Context, keys []string) (map[string]*store.JoinState, error) {
	wrap := func(err error) error { return fmt.Errorf("sqsadapter: get joins: %w", err) }
	seen := make(map[string]bool, len(keys))
	avKeys := make([]map[string]types.AttributeValue, 0, len(keys))
	for _, k := range keys {
		if err := checkCoordinationKey(k); err != nil {
			return nil, err
		}
		if !seen[k] {
			seen[k] = true
			avKeys = append(avKeys, coordKey(k))
		}
	}
	items, err := batchGetItems(ctx, s.client, s.table, avKeys)
	if err != nil {
		return nil, wrap(err)
	}
	now := s.now()
	joins := make(map[string]*store.JoinState, len(items))
	for _, item := range items {
		if expired(item, now) {
			continue
		}
		k := attrString(item, attrCoordinationKey)
		if _, ok := item[attrValue]; ok {
			return nil, wrap(fmt.Errorf("%q: %w", k, wrongKind(item, "join")))
		}
		joins[k] = decodeJoin(item)
	}
	return joins, nil
}

// restart replaces the expired record at key by item (with the key and
// expiry added), conditional on the record still being expired. It reports
// false when the record is no longer expired (it was restarted or deleted
// meanwhile): the caller starts over.
func (s *DynamoDbCoordinationStore) restart(ctx context.Context, key string, item map[string]types.AttributeValue, ttl time.Duration, now time.Time) (bool, error) {
	item[attrCoordinationKey] = avS(key)
	addExpiry(item, ttl, now)
	expr, err := expression.NewBuilder().
		WithCondition(expression.Name(attrExpiresAt).LessThanEqual(expression.Value(avN(now.UnixMilli())))).Build()
	if err != nil {
		return false, err
	}
	_, err = s.client.PutItem(ctx, &dynamodb.PutItemInput{
		TableName:                 aws.String(s.table),
		Item:                      item,
		ConditionExpression:       expr.Condition(),
		ExpressionAttributeNames:  expr.Names(),
		ExpressionAttributeValues: expr.Values(),
	})
	if isConditionFailed(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return true, nil
}

var errRestartRace = fmt.Errorf("the record kept changing between expired and live in %d tries", coordinationTries)

func coordKey(key string) map[string]types.AttributeValue {
	return map[string]types.AttributeValue{attrCoordinationKey: avS(key)}
}

// checkCoordinationKey checks a coordination key (limits.CheckCoordinationKey);
// the error matches ErrInvalidKey.
func checkCoordinationKey(key string) error {
	if err := limits.CheckCoordinationKey(key); err != nil {
		return fmt.Errorf("sqsadapter: %w: %v", ErrInvalidKey, err)
	}
	return nil
}

// liveOrAbsent is true for an absent record and for a record that has no
// expiry or whose expiry is after now.
func liveOrAbsent(now time.Time) expression.ConditionBuilder {
	return expression.AttributeNotExists(expression.Name(attrExpiresAt)).
		Or(expression.Name(attrExpiresAt).GreaterThan(expression.Value(avN(now.UnixMilli()))))
}

// absentOrExpired is true for an absent record and for one whose expiry is
// not after now.
func absentOrExpired(now time.Time) expression.ConditionBuilder {
	return expression.AttributeNotExists(expression.Name(attrCoordinationKey)).
		Or(expression.Name(attrExpiresAt).LessThanEqual(expression.Value(avN(now.UnixMilli()))))
}

func expired(item map[string]types.AttributeValue, now time.Time) bool {
	ms, ok := attrInt(item, attrExpiresAt)
	return ok && ms <= now.UnixMilli()
}

// expiry returns the expiry of a record written at now with ttl, in unix
// milliseconds, and DynamoDB's TTL value, in epoch seconds rounded up so that
// DynamoDB never deletes a live record.
func expiry(ttl time.Duration, now time.Time) (ms, sec int64) {
	ms = now.Add(ttl).UnixMilli()
	if now.Add(ttl).Sub(time.UnixMilli(ms)) > 0 {
		ms++ // round up to the next millisecond
	}
	sec = (ms + 999) / 1000
	return ms, sec
}

// withExpiry adds to upd the setting (ttl > 0) or removal of the expiry.
func withExpiry(upd expression.UpdateBuilder, ttl time.Duration, now time.Time) expression.UpdateBuilder {
	if ttl <= 0 {
		return upd.Remove(expression.Name(attrExpiresAt)).Remove(expression.Name(attrTTL))
	}
	ms, sec := expiry(ttl, now)
	return upd.Set(expression.Name(attrExpiresAt), expression.Value(avN(ms))).
		Set(expression.Name(attrTTL), expression.Value(avN(sec)))
}

func addExpiry(item map[string]types.AttributeValue, ttl time.Duration, now time.Time) {
	if ttl <= 0 {
		return
	}
	ms, sec := expiry(ttl, now)
	item[attrExpiresAt] = avN(ms)
	item[attrTTL] = avN(sec)
}

func decodeJoin(item map[string]types.AttributeValue) *store.JoinState {
	js := &store.JoinState{FiredBy: attrString(item, attrFiredBy)}
	if ss, ok := item[attrArrived].(*types.AttributeValueMemberSS); ok {
		js.Arrived = slices.Sorted(slices.Values(ss.Value))
	}
	if ss, ok := item[attrJoinTaken].(*types.AttributeValueMemberSS); ok {
		js.Taken = slices.Sorted(slices.Values(ss.Value))
	}
	return js
}

// wrongKind describes a record used as the wrong kind.
func wrongKind(item map[string]types.AttributeValue, want string) error {
	have := "string"
	switch item[attrValue].(type) {
	case *types.AttributeValueMemberN:
		have = "counter"
	case nil:
		if _, ok := item[attrArrived]; ok {
			have = "join"
		} else {
			have = "empty"
		}
	}
	return fmt.Errorf("the record holds a %s, not a %s", have, want)
}
