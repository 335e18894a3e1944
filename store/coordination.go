package store

import (
	"context"
	"time"
)

// JoinState is a fan-in join record: which predecessors' edges into the join
// are resolved, which of them were taken, and which predecessor claimed the
// firing of an "any" join.
type JoinState struct {
	Arrived []string // sorted
	Taken   []string // sorted
	FiredBy string
}

// Arrival is one predecessor's resolved edge into a join.
type Arrival struct {
	Source string
	Taken  bool
	// Claim asks to record Source as FiredBy if nobody has claimed the
	// firing yet ("any" joins). Only taken arrivals claim.
	Claim bool
}

// CoordinationStore holds coordination records: fan-in joins, locks and
// markers, under keys such as "flowcraft:fanin:<runId>:<nodeId>" (1 to 2,048
// bytes, DynamoDB's partition key limit; another key is refused with
// ErrInvalidKey). Records expire after their TTL (garbage collection); an
// expired record is treated as absent even before the backing store removes
// it.
//
// It is DynamoDbCoordinationStore on AWS and sqsadaptertest.CoordinationStore
// in memory; both pass the conformance suite in package storetest. Every
// method is safe for concurrent use and every read is strongly consistent.
type CoordinationStore interface {
	// Increment adds delta to the counter at key (created at 0) and returns
	// the new value; it also sets the record's TTL.
	Increment(ctx context.Context, key string, delta int64, ttl time.Duration) (int64, error)
	// SetIfNotExist writes value at key if the key is absent (or expired) and
	// reports whether it did.
	SetIfNotExist(ctx context.Context, key, value string, ttl time.Duration) (bool, error)
	// ExtendTTL resets the TTL of an existing key and reports whether the key existed.
	ExtendTTL(ctx context.Context, key string, ttl time.Duration) (bool, error)
	// Delete removes key; deleting an absent key is not an error.
	Delete(ctx context.Context, key string) error
	// Get reads the string value at key.
	Get(ctx context.Context, key string) (value string, ok bool, err error)

	// Arrive records an arrival in the join record at key and returns the
	// record after it. It is idempotent: repeating an arrival changes nothing.
	Arrive(ctx context.Context, key string, a Arrival, ttl time.Duration) (*JoinState, error)
	// GetJoins reads join records; absent records are absent from the map.
	GetJoins(ctx context.Context, keys []string) (map[string]*JoinState, error)
}
