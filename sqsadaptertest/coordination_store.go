package sqsadaptertest

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/flowcraft/sqsadapter"
	"github.com/flowcraft/sqsadapter/internal/limits"
	"github.com/flowcraft/sqsadapter/store"
)

var _ sqsadapter.CoordinationStore = (*CoordinationStore)(nil)

// CoordinationStore is an in-memory sqsadapter.CoordinationStore. A record
// holds a string (SetIfNotExist), a counter (Increment) or a join (Arrive),
// and an optional expiry. A record whose expiry is before the current time is
// treated as absent by every method, as DynamoDB's TTL is by the DynamoDB
// implementation. A ttl <= 0 means no expiry.
//
// A string record reads with Get as its value and a counter as its decimal
// value; using a record of one kind as another (Increment on a string, Arrive
// on a counter, Get of a join...) is an error.
//
// Create it with NewCoordinationStore (the zero value is also ready to use).
// Its methods never block on anything but a short internal lock and are safe
// for concurrent use. The exported hook fields must be set before the store
// is used concurrently.
type CoordinationStore struct {
	// BeforeCall, if set, is called with the method name before every call
	// (after the ctx check); a non-nil error fails the call with that error
	// before it has any effect.
	BeforeCall func(op string) error
	// AfterCall, if set, is called with the method name after the call's
	// effect; a non-nil error is returned to the caller although the effect
	// happened (a lost response).
	AfterCall func(op string) error

	mu      sync.Mutex
	calls   map[string]int
	records map[string]coordItem
}

type coordKind int

const (
	coordString coordKind = iota + 1
	coordCounter
	coordJoin
)

func (k coordKind) String() string {
	switch k {
	case coordString:
		return "string"
	case coordCounter:
		return "counter"
	case coordJoin:
		return "join"
	}
	return "unknown"
}

// coordItem is a stored coordination record. Its slices are never modified
// once stored.
type coordItem struct {
	kind    coordKind
	str     string
	n       int64
	arrived []string // sorted
	taken   []string // sorted
	firedBy string
	expires time.Time // zero: never
}

func (it coordItem) live(now time.Time) bool {
	return it.expires.IsZero() || !it.expires.Before(now)
}

func (it coordItem) join() *store.JoinState {
	return &store.JoinState{
		Arrived: slices.Clone(it.arrived),
		Taken:   slices.Clone(it.taken),
		FiredBy: it.firedBy,
	}
}

func coordExpiry(ttl time.Duration, now time.Time) time.Time {
	if ttl <= 0 {
		return time.Time{}
	}
	return now.Add(ttl).Round(0)
}

// NewCoordinationStore returns an empty in-memory coordination store.
func NewCoordinationStore() *CoordinationStore {
	s := &CoordinationStore{}
	s.lock()
	s.mu.Unlock()
	return s
}

// Calls returns how many times each method was called, by method name
// (calls failed by a cancelled ctx or a hook included).
func (s *CoordinationStore) Calls() map[string]int {
	s.lock()
	defer s.mu.Unlock()
	return maps.Clone(s.calls)
}

func (s *CoordinationStore) lock() {
	s.mu.Lock()
	if s.records == nil {
		s.calls = make(map[string]int)
		s.records = make(map[string]coordItem)
	}
}

func (s *CoordinationStore) begin(ctx context.Context, op, key string) error {
	s.lock()
	s.calls[op]++
	s.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.BeforeCall != nil {
		if err := s.BeforeCall(op); err != nil {
			return err
		}
	}
	if op != "GetJoins" {
		return storeCheckCoordinationKey(key)
	}
	return nil
}

// storeCheckCoordinationKey checks a coordination key
// (limits.CheckCoordinationKey), as the DynamoDB store does: the error
// matches ErrInvalidKey.
func storeCheckCoordinationKey(key string) error {
	if err := limits.CheckCoordinationKey(key); err != nil {
		return fmt.Errorf("sqsadaptertest: %w: %v", sqsadapter.ErrInvalidKey, err)
	}
	return nil
}

func (s *CoordinationStore) end(op string) error {
	if s.AfterCall != nil {
		return s.AfterCall(op)
	}
	return nil
}

// get returns the live record at key. Call with the lock held.
func (s *CoordinationStore) get(key string, now time.Time) (coordItem, bool) {
	it, ok := s.records[key]
	if ok && !it.live(now) {
		delete(s.records, key)
		return coordItem{}, false
	}
	return it, ok
}

func coordWrongKind(key string, have, want coordKind) error {
	return fmt.Errorf("sqsadaptertest: coordination key %q holds a %s record, not a %s", key, have, want)
}

// Increment implements sqsadapter.CoordinationStore.
func (s *CoordinationStore) Increment(ctx context.Context, key string, delta int64, ttl time.Duration) (int64, error) {
	const op = "Increment"
	if err := s.begin(ctx, op, key); err != nil {
		return 0, err
	}
	now := time.Now()
	s.lock()
	it, ok := s.get(key, now)
	if ok && it.kind != coordCounter {
		s.mu.Unlock()
		return 0, coordWrongKind(key, it.kind, coordCounter)
	}
	it.kind = coordCounter
	it.n += delta
	it.expires = coordExpiry(ttl, now)
	s.records[key] = it
	s.mu.Unlock()
	if err := s.end(op); err != nil {
		return 0, err
	}
	return it.n, nil
}

// SetIfNotExist implements sqsadapter.CoordinationStore.
func (s *CoordinationStore) SetIfNotExist(ctx context.Context, key, value string, ttl time.Duration) (bool, error) {
	const op = "SetIfNotExist"
	if err := s.begin(ctx, op, key); err != nil {
		return false, err
	}
	now := time.Now()
	s.lock()
	_, exists := s.get(key, now)
	if !exists {
		s.records[key] = coordItem{kind: coordString, str: value, expires: coordExpiry(ttl, now)}
	}
	s.mu.Unlock()
	if err := s.end(op); err != nil {
		return false, err
	}
	return !exists, nil
}

// ExtendTTL implements sqsadapter.CoordinationStore. A ttl <= 0 removes the
// expiry.
func (s *CoordinationStore) ExtendTTL(ctx context.Context, key string, ttl time.Duration) (bool, error) {
	const op = "ExtendTTL"
	if err := s.begin(ctx, op, key); err != nil {
		return false, err
	}
	now := time.Now()
	s.lock()
	it, ok := s.get(key, now)
	if ok {
		it.expires = coordExpiry(ttl, now)
		s.records[key] = it
	}
	s.mu.Unlock()
	if err := s.end(op); err != nil {
		return false, err
	}
	return ok, nil
}

// Delete implements sqsadapter.CoordinationStore.
func (s *CoordinationStore) Delete(ctx context.Context, key string) error {
	const op = "Delete"
	if err := s.begin(ctx, op, key); err != nil {
		return err
	}
	s.lock()
	delete(s.records, key)
	s.mu.Unlock()
	return s.end(op)
}

// Get implements sqsadapter.CoordinationStore.
func (s *CoordinationStore) Get(ctx context.Context, key string) (string, bool, error) {
	const op = "Get"
	if err := s.begin(ctx, op, key); err != nil {
		return "", false, err
	}
	s.lock()
	it, ok := s.get(key, time.Now())
	s.mu.Unlock()
	var v string
	if ok {
		switch it.kind {
		case coordString:
			v = it.str
		case coordCounter:
			v = strconv.FormatInt(it.n, 10)
		default:
			return "", false, coordWrongKind(key, it.kind, coordString)
		}
	}
	if err := s.end(op); err != nil {
		return "", false, err
	}
	return v, ok, nil
}

// Arrive implements sqsadapter.CoordinationStore. Arrived and Taken grow as
// sets; FiredBy is set by the first taken arrival that claims, and never
// changes afterwards. Every arrival resets the record's TTL.
func (s *CoordinationStore) Arrive(ctx context.Context, key string, a store.Arrival, ttl time.Duration) (*store.JoinState, error) {
	const op = "Arrive"
	if err := s.begin(ctx, op, key); err != nil {
		return nil, err
	}
	if a.Source == "" {
		return nil, fmt.Errorf("sqsadaptertest: arrive at %q: empty source", key)
	}
	now := time.Now()
	s.lock()
	it, ok := s.get(key, now)
	if ok && it.kind != coordJoin {
		s.mu.Unlock()
		return nil, coordWrongKind(key, it.kind, coordJoin)
	}
	it.kind = coordJoin
	it.arrived = coordAdd(it.arrived, a.Source)
	if a.Taken {
		it.taken = coordAdd(it.taken, a.Source)
		if a.Claim && it.firedBy == "" {
			it.firedBy = a.Source
		}
	}
	it.expires = coordExpiry(ttl, now)
	s.records[key] = it
	s.mu.Unlock()
	if err := s.end(op); err != nil {
		return nil, err
	}
	return it.join(), nil
}

// GetJoins implements sqsadapter.CoordinationStore.
func (s *CoordinationStore) GetJoins(ctx context.Context, keys []string) (map[string]*store.JoinState, error) {
	const op = "GetJoins"
	if err := s.begin(ctx, op, ""); err != nil {
		return nil, err
	}
	for _, k := range keys {
		if err := storeCheckCoordinationKey(k); err != nil {
			return nil, err
		}
	}
	now := time.Now()
	found := make(map[string]coordItem, len(keys))
	s.lock()
	for _, k := range keys {
		it, ok := s.get(k, now)
		if !ok {
			continue
		}
		if it.kind != coordJoin {
			s.mu.Unlock()
			return nil, coordWrongKind(k, it.kind, coordJoin)
		}
		found[k] = it
	}
	s.mu.Unlock()
	joins := make(map[string]*store.JoinState, len(found))
	for k, it := range found {
		joins[k] = it.join()
	}
	if err := s.end(op); err != nil {
		return nil, err
	}
	return joins, nil
}

// coordAdd returns the sorted set sorted with s added. It never modifies
// sorted: a new slice is returned when s is added.
func coordAdd(sorted []string, s string) []string {
	i := sort.SearchStrings(sorted, s)
	if i < len(sorted) && sorted[i] == s {
		return sorted
	}
	return slices.Insert(slices.Clip(sorted), i, s)
}
