package sqsadaptertest

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/flowcraft/sqsadapter"
	"github.com/flowcraft/sqsadapter/internal/jsonvalue"
	"github.com/flowcraft/sqsadapter/internal/limits"
	"github.com/flowcraft/sqsadapter/internal/waitvalue"
	"github.com/flowcraft/sqsadapter/store"
)

// MaxItemBytes is the size limit of one stored item, as in DynamoDB. A
// context value or node record whose estimated item size exceeds it is
// refused with a *store.ValueTooLargeError. The estimate is the one of
// sqsadapter.DynamoDbContext (its keys, its values as DynamoDB counts them,
// and a fixed per-item overhead), so a value that fits one fits the other.
const MaxItemBytes = limits.ItemBytes

var _ sqsadapter.ContextStore = (*ContextStore)(nil)

// ContextStore is an in-memory sqsadapter.ContextStore: run records, context
// keys and node records, with the same conditional semantics and limits as
// the DynamoDB implementation: it refuses what DynamoDbContext refuses (item
// and transaction sizes, transaction items, ids and keys), with the same
// errors. Values are stored as JSON, so a caller
// never shares memory with the store: writes normalize and encode, reads
// decode a fresh copy.
//
// Create it with NewContextStore (the zero value is also ready to use). Its
// methods never block on anything but a short internal lock and are safe for
// concurrent use. The exported hook fields must be set before the store is
// used concurrently.
type ContextStore struct {
	// BeforeCall, if set, is called with the method name before every call
	// (after the ctx check); a non-nil error fails the call with that error
	// before it has any effect.
	BeforeCall func(op string) error
	// AfterCall, if set, is called with the method name after the call's
	// effect; a non-nil error is returned to the caller although the effect
	// happened (a lost response).
	AfterCall func(op string) error
	// Now, if set, is the clock that decides whether a run has expired
	// (ExpireRun): GetRun treats a run whose expiry is at or before Now()
	// as absent. nil: time.Now. A test sets it to move past an expiry
	// without waiting.
	Now func() time.Time

	mu     sync.Mutex
	calls  map[string]int
	runs   map[string]store.RunRecord
	values map[string]map[string][]byte   // run id → key → encoded value
	nodes  map[string]map[string]nodeItem // run id → node id → record
	// Expiries set by ExpireRun: of run records, and of the items of the
	// context table (run id → context key or "_outputs.<nodeId>"), as
	// DynamoDB keeps its "ttl" attribute: an update of an item keeps it, a
	// write that replaces a context key drops it.
	runExpiry  map[string]time.Time
	itemExpiry map[string]map[string]time.Time
}

// nodeItem is a stored node record. Its slices and byte slices are never
// modified once stored, so copies of the struct may be read outside the lock.
type nodeItem struct {
	state      string
	attempts   int
	leaseOwner string
	leaseUntil time.Time
	output     []byte // encoded Output, when committed
	action     string
	taken      []string
	staged     []byte // encoded Staged, nil when there is none
	fallback   string
	errMsg     string // failure reason, when failed
	wait       []byte // encoded Wait (waitvalue.Encode), once suspended
	waitSize   int    // what wait adds to the record's size (limits.WaitSize)
	token      string // the commit's Token
	updatedAt  time.Time
}

// NewContextStore returns an empty in-memory context store.
func NewContextStore() *ContextStore {
	s := &ContextStore{}
	s.lock()
	s.mu.Unlock()
	return s
}

// Calls returns how many times each method was called, by method name
// (calls failed by a cancelled ctx or a hook included).
func (s *ContextStore) Calls() map[string]int {
	s.lock()
	defer s.mu.Unlock()
	return maps.Clone(s.calls)
}

// lock takes the store's lock, creating the maps of a zero store.
func (s *ContextStore) lock() {
	s.mu.Lock()
	if s.runs == nil {
		s.calls = make(map[string]int)
		s.runs = make(map[string]store.RunRecord)
		s.values = make(map[string]map[string][]byte)
		s.nodes = make(map[string]map[string]nodeItem)
		s.runExpiry = make(map[string]time.Time)
		s.itemExpiry = make(map[string]map[string]time.Time)
	}
}

// now reads the store's clock.
func (s *ContextStore) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// expiryOf returns the expiry DynamoDbContext stores for at: its "ttl"
// attribute holds epoch seconds, rounded up.
func expiryOf(at time.Time) time.Time {
	sec := at.Unix()
	if at.After(time.Unix(sec, 0)) {
		sec++
	}
	return time.Unix(sec, 0)
}

// replaced drops the expiries of context keys of a run that a write
// replaces or deletes. Call with the lock held.
func (s *ContextStore) replaced(runID string, keys ...string) {
	if m := s.itemExpiry[runID]; m != nil {
		for _, k := range keys {
			delete(m, k)
		}
	}
}

// begin counts a call and runs the checks that precede any effect.
func (s *ContextStore) begin(ctx context.Context, op string) error {
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
	return nil
}

// end runs the AfterCall hook.
func (s *ContextStore) end(op string) error {
	if s.AfterCall != nil {
		return s.AfterCall(op)
	}
	return nil
}

// runValues returns the value map of a run, creating it. Call with the lock held.
func (s *ContextStore) runValues(runID string) map[string][]byte {
	m := s.values[runID]
	if m == nil {
		m = make(map[string][]byte)
		s.values[runID] = m
	}
	return m
}

// runNodes returns the node map of a run, creating it. Call with the lock held.
func (s *ContextStore) runNodes(runID string) map[string]nodeItem {
	m := s.nodes[runID]
	if m == nil {
		m = make(map[string]nodeItem)
		s.nodes[runID] = m
	}
	return m
}

// CreateRun implements sqsadapter.ContextStore. The record is stored with
// status running, no finish time and no error; a zero CreatedAt is set to the
// current time.
func (s *ContextStore) CreateRun(ctx context.Context, run store.RunRecord, initial map[string]any) error {
	const op = "CreateRun"
	if err := s.begin(ctx, op); err != nil {
		return err
	}
	if err := storeCheckRunID(run.RunID); err != nil {
		return err
	}
	wrap := func(err error) error { return fmt.Errorf("sqsadaptertest: create run %q: %w", run.RunID, err) }
	if len(initial) > limits.TransactItems-1 {
		return wrap(fmt.Errorf("%w: %d initial keys: one run starts with at most %d", sqsadapter.ErrValueTooLarge, len(initial), limits.TransactItems-1))
	}
	enc, sizes, err := storeEncodeSets(run.RunID, initial)
	if err != nil {
		return wrap(err)
	}
	var parent []string
	if pr := run.Parent; pr != nil {
		parent = []string{pr.RunID, pr.NodeID, pr.BlueprintID, pr.BlueprintVersion}
		cp := *pr
		run.Parent = &cp // the caller's struct is not shared
	}
	recordSize := limits.RunRecordSize(run.RunID, run.BlueprintID, run.BlueprintVersion, parent...)
	if recordSize > limits.ItemBytes {
		return &store.ValueTooLargeError{RunID: run.RunID, Key: "(run record)", Size: recordSize, Limit: limits.ItemBytes}
	}
	if err := storeCheckTransaction(run.RunID, append(sizes, recordSize), nil); err != nil {
		return wrap(err)
	}
	run.Status = sqsadapter.StatusRunning
	run.Error, run.FailedNode = "", ""
	run.Waiting = nil
	run.FinishedAt = time.Time{}
	if run.CreatedAt.IsZero() {
		run.CreatedAt = time.Now()
	}
	run.CreatedAt = run.CreatedAt.Round(0)

	s.lock()
	if _, ok := s.runs[run.RunID]; ok {
		s.mu.Unlock()
		return fmt.Errorf("sqsadaptertest: create run %q: %w", run.RunID, store.ErrRunExists)
	}
	s.runs[run.RunID] = run
	if len(enc) > 0 {
		vals := s.runValues(run.RunID)
		for k, b := range enc {
			vals[k] = b
		}
	}
	s.mu.Unlock()
	return s.end(op)
}

// GetRun implements sqsadapter.ContextStore.
func (s *ContextStore) GetRun(ctx context.Context, runID string) (*store.RunRecord, error) {
	const op = "GetRun"
	if err := s.begin(ctx, op); err != nil {
		return nil, err
	}
	s.lock()
	run, ok := s.runs[runID]
	exp, expires := s.runExpiry[runID]
	s.mu.Unlock()
	if ok && expires && !exp.After(s.now()) || run.Status == store.StatusDeleted {
		ok = false // expired (absent, though not deleted yet), or a tombstone
	}
	if !ok {
		return nil, fmt.Errorf("sqsadaptertest: get run %q: %w", runID, sqsadapter.ErrRunNotFound)
	}
	if err := s.end(op); err != nil {
		return nil, err
	}
	if expires {
		run.ExpiresAt = exp.UTC()
	}
	run.Waiting = slices.Clone(run.Waiting)
	if run.Parent != nil {
		pr := *run.Parent
		run.Parent = &pr
	}
	return &run, nil
}

// FinishRun implements sqsadapter.ContextStore. status must be
// StatusCompleted, StatusFailed or StatusCancelled; a zero at is set to the
// current time. A reason longer than 32 KiB is truncated, as on DynamoDB.
func (s *ContextStore) FinishRun(ctx context.Context, runID string, status sqsadapter.RunState, reason, failedNode string, at time.Time) error {
	const op = "FinishRun"
	if err := s.begin(ctx, op); err != nil {
		return err
	}
	switch status {
	case sqsadapter.StatusCompleted, sqsadapter.StatusFailed, sqsadapter.StatusCancelled:
	default:
		return fmt.Errorf("sqsadaptertest: finish run %q: invalid final status %q", runID, status)
	}
	if at.IsZero() {
		at = time.Now()
	}
	s.lock()
	run, ok := s.runs[runID]
	switch {
	case !ok:
		s.mu.Unlock()
		return fmt.Errorf("sqsadaptertest: finish run %q: %w", runID, sqsadapter.ErrRunNotFound)
	case run.Status != sqsadapter.StatusRunning:
		s.mu.Unlock()
		return fmt.Errorf("sqsadaptertest: finish run %q as %s: run is %s: %w", runID, status, run.Status, sqsadapter.ErrRunFinished)
	}
	run.Status = status
	run.Error = limits.TruncateReason(reason)
	run.FailedNode = failedNode
	run.FinishedAt = at.Round(0)
	s.runs[runID] = run
	s.mu.Unlock()
	return s.end(op)
}

// ExpireRun implements sqsadapter.ContextStore: the run record and every
// stored item of the run (context keys and node records) expire at at,
// rounded up to the second as on DynamoDB. Nothing is ever deleted on
// expiry: GetRun treats the run as absent from then on (see Now), and
// Expiries reports what was set.
func (s *ContextStore) ExpireRun(ctx context.Context, runID string, at time.Time) error {
	const op = "ExpireRun"
	if err := s.begin(ctx, op); err != nil {
		return err
	}
	if err := storeCheckRunID(runID); err != nil {
		return err
	}
	exp := expiryOf(at)
	s.lock()
	m := s.itemExpiry[runID]
	if m == nil {
		m = make(map[string]time.Time)
		s.itemExpiry[runID] = m
	}
	later := func(k string) { // an item keeps a later expiry (a tombstone's)
		if old, ok := m[k]; !ok || old.Before(exp) {
			m[k] = exp
		}
	}
	for k := range s.values[runID] {
		later(k)
	}
	for id := range s.nodes[runID] {
		later("_outputs." + id)
	}
	run, ok := s.runs[runID]
	ok = ok && run.Status != store.StatusDeleted
	if ok {
		s.runExpiry[runID] = exp
	}
	s.mu.Unlock()
	if !ok {
		return fmt.Errorf("sqsadaptertest: expire run %q: %w", runID, sqsadapter.ErrRunNotFound)
	}
	return s.end(op)
}

// DeleteRun implements sqsadapter.ContextStore.
func (s *ContextStore) DeleteRun(ctx context.Context, runID string, until time.Time) error {
	const op = "DeleteRun"
	if err := s.begin(ctx, op); err != nil {
		return err
	}
	if err := storeCheckRunID(runID); err != nil {
		return err
	}
	exp := expiryOf(until)
	s.lock()
	delete(s.values, runID)
	m := make(map[string]time.Time)
	for id := range s.nodes[runID] {
		// A tombstone: closed, and nothing else.
		s.nodes[runID][id] = nodeItem{state: store.NodeClosed, updatedAt: time.Now()}
		m["_outputs."+id] = exp
	}
	s.itemExpiry[runID] = m
	run, ok := s.runs[runID]
	ok = ok && run.Status != store.StatusDeleted
	if ok {
		s.runs[runID] = store.RunRecord{RunID: runID, Status: store.StatusDeleted}
		s.runExpiry[runID] = exp
	}
	s.mu.Unlock()
	if !ok {
		return fmt.Errorf("sqsadaptertest: delete run %q: %w", runID, sqsadapter.ErrRunNotFound)
	}
	return s.end(op)
}

// Expiries reports the expiries that ExpireRun set on a run, as DynamoDB's
// "ttl" attribute would hold them: run is the run record's (zero: none or
// no record), and items holds every stored item of the run, by context key
// or "_outputs.<nodeId>" for a node record, with its expiry (zero: none).
// An expired run is still reported: nothing is deleted on expiry.
func (s *ContextStore) Expiries(runID string) (run time.Time, items map[string]time.Time) {
	s.lock()
	defer s.mu.Unlock()
	items = make(map[string]time.Time)
	for k := range s.values[runID] {
		items[k] = s.itemExpiry[runID][k]
	}
	for id := range s.nodes[runID] {
		items["_outputs."+id] = s.itemExpiry[runID]["_outputs."+id]
	}
	return s.runExpiry[runID], items
}

// AcquireNode implements sqsadapter.ContextStore. The lease is held by
// another owner only while its LeaseUntil is after now.
func (s *ContextStore) AcquireNode(ctx context.Context, runID, nodeID, owner string, until, now time.Time) (*store.NodeRecord, error) {
	const op = "AcquireNode"
	if err := s.begin(ctx, op); err != nil {
		return nil, err
	}
	if err := storeCheckNode(runID, nodeID); err != nil {
		return nil, err
	}
	if owner == "" {
		return nil, fmt.Errorf("sqsadaptertest: acquire node %q of run %q: empty lease owner", nodeID, runID)
	}
	s.lock()
	it, ok := s.nodes[runID][nodeID]
	if !ok {
		it = nodeItem{state: store.NodePending}
	}
	var failure error
	switch {
	case it.state == store.NodeCommitted || it.state == store.NodeSkipped:
		failure = fmt.Errorf("sqsadaptertest: acquire node %q of run %q: node is %s: %w", nodeID, runID, it.state, store.ErrNodeCommitted)
	case it.state == store.NodeClosed:
		failure = fmt.Errorf("sqsadaptertest: acquire node %q of run %q: %w", nodeID, runID, store.ErrNodeClosed)
	case it.state == store.NodeFailed:
		failure = fmt.Errorf("sqsadaptertest: acquire node %q of run %q: %w", nodeID, runID, store.ErrNodeFailed)
	case it.state == store.NodeWaiting:
		failure = fmt.Errorf("sqsadaptertest: acquire node %q of run %q: %w", nodeID, runID, store.ErrNodeWaiting)
	case it.leaseOwner != "" && it.leaseOwner != owner && it.leaseUntil.After(now):
		failure = &store.LeaseHeldError{RunID: runID, NodeID: nodeID, Owner: it.leaseOwner, Until: it.leaseUntil}
	default:
		it.leaseOwner = owner
		it.leaseUntil = until.Round(0)
		it.attempts++
		it.updatedAt = storeNow()
		s.runNodes(runID)[nodeID] = it
	}
	s.mu.Unlock()
	rec, err := it.record(nodeID)
	if err != nil {
		return nil, err
	}
	if failure != nil {
		return rec, failure
	}
	if err := s.end(op); err != nil {
		return nil, err
	}
	return rec, nil
}

// ExtendLease implements sqsadapter.ContextStore. The lease's current expiry
// is not checked: an owner whose lease expired may extend it as long as no
// other owner has taken it over.
func (s *ContextStore) ExtendLease(ctx context.Context, runID, nodeID, owner string, until time.Time) error {
	const op = "ExtendLease"
	if err := s.begin(ctx, op); err != nil {
		return err
	}
	if err := storeCheckNode(runID, nodeID); err != nil {
		return err
	}
	s.lock()
	it, ok := s.nodes[runID][nodeID]
	if !ok || owner == "" || it.state != store.NodePending || it.leaseOwner != owner {
		s.mu.Unlock()
		return fmt.Errorf("sqsadaptertest: extend lease of node %q of run %q for %q: %w", nodeID, runID, owner, store.ErrLeaseLost)
	}
	it.leaseUntil = until.Round(0)
	it.updatedAt = storeNow()
	s.nodes[runID][nodeID] = it
	s.mu.Unlock()
	return s.end(op)
}

// ReleaseLease implements sqsadapter.ContextStore. It never creates a node
// record.
func (s *ContextStore) ReleaseLease(ctx context.Context, runID, nodeID, owner string) error {
	const op = "ReleaseLease"
	if err := s.begin(ctx, op); err != nil {
		return err
	}
	if err := storeCheckNode(runID, nodeID); err != nil {
		return err
	}
	s.lock()
	if it, ok := s.nodes[runID][nodeID]; ok && owner != "" && it.state == store.NodePending && it.leaseOwner == owner {
		it.leaseOwner = ""
		it.leaseUntil = time.Time{}
		it.updatedAt = storeNow()
		s.nodes[runID][nodeID] = it
	}
	s.mu.Unlock()
	return s.end(op)
}

// CommitNode implements sqsadapter.ContextStore. It does not require the
// caller to hold the node's lease: the first commit wins. A commit identical
// to the committed one (Output, Action, Taken, Staged and Fallback compared
// as read back) returns the record with no error and writes nothing. Every
// size and key is checked before anything is written; a key both set and
// deleted is refused with ErrInvalidKey.
func (s *ContextStore) CommitNode(ctx context.Context, runID string, c store.NodeCommit) (*store.NodeRecord, error) {
	const op = "CommitNode"
	if err := s.begin(ctx, op); err != nil {
		return nil, err
	}
	if err := storeCheckNode(runID, c.NodeID); err != nil {
		return nil, err
	}
	wrap := func(err error) error {
		return fmt.Errorf("sqsadaptertest: commit node %q of run %q: %w", c.NodeID, runID, err)
	}
	next, sets, _, err := storeEncodeCommit(runID, c, nil, wrap)
	if err != nil {
		return nil, err
	}

	s.lock()
	it, ok := s.nodes[runID][c.NodeID]
	var failure error
	switch {
	case ok && it.state == store.NodeCommitted && sameCommit(it, next):
		// Our own earlier commit, retried: nothing to write.
	case ok && (it.state == store.NodeCommitted || it.state == store.NodeSkipped):
		failure = wrap(fmt.Errorf("node is %s: %w", it.state, store.ErrNodeCommitted))
	case ok && it.state == store.NodeClosed:
		failure = wrap(store.ErrNodeClosed)
	case ok && it.state == store.NodeFailed:
		failure = wrap(store.ErrNodeFailed)
	case ok && it.state == store.NodeWaiting:
		failure = wrap(store.ErrNodeWaiting) // only ResumeNode commits it
	default:
		next.attempts = it.attempts
		next.updatedAt = storeNow()
		it = next
		s.runNodes(runID)[c.NodeID] = it
		s.applyWrites(runID, sets, c.Deletes)
	}
	s.mu.Unlock()
	rec, err := it.record(c.NodeID)
	if err != nil {
		return nil, err
	}
	if failure != nil {
		return rec, failure
	}
	if err := s.end(op); err != nil {
		return nil, err
	}
	return rec, nil
}

// storeEncodeCommit checks and encodes a commit: the committed item, the
// encoded context writes and the item's estimated size. others are the
// sizes of the other items written with it (the run record of a resume),
// each of which takes one of the transaction's items. Errors other than a
// *store.ValueTooLargeError for the node record come wrapped with wrap.
func storeEncodeCommit(runID string, c store.NodeCommit, others []int, wrap func(error) error) (nodeItem, map[string][]byte, int, error) {
	if n, most := len(c.Sets)+len(c.Deletes), limits.TransactItems-1-len(others); n > most {
		return nodeItem{}, nil, 0, wrap(fmt.Errorf("%w: %d context writes: a node commits at most %d", sqsadapter.ErrValueTooLarge, n, most))
	}
	out, outSize, err := storeEncode(c.Output)
	if err != nil {
		return nodeItem{}, nil, 0, wrap(fmt.Errorf("output: %w", err))
	}
	var staged []byte
	stagedSize := 0
	if c.Staged != nil {
		if staged, stagedSize, err = storeEncode(c.Staged); err != nil {
			return nodeItem{}, nil, 0, wrap(fmt.Errorf("staged inputs: %w", err))
		}
	}
	nodeSize := limits.NodeRecordSize(runID, c.NodeID, outSize, stagedSize, c.Action, c.Fallback, c.Taken) + limits.WaitSize(nil, c.Token)
	if nodeSize > limits.ItemBytes {
		return nodeItem{}, nil, 0, &store.ValueTooLargeError{RunID: runID, Key: limits.OutputsPrefix + c.NodeID, Size: nodeSize, Limit: limits.ItemBytes}
	}
	sets, sizes, err := storeEncodeSets(runID, c.Sets)
	if err != nil {
		return nodeItem{}, nil, 0, wrap(err)
	}
	if err := storeCheckDeletes(c.Sets, c.Deletes); err != nil {
		return nodeItem{}, nil, 0, wrap(err)
	}
	if err := storeCheckTransaction(runID, append(append(sizes, nodeSize), others...), c.Deletes); err != nil {
		return nodeItem{}, nil, 0, wrap(err)
	}
	return nodeItem{
		state:    store.NodeCommitted,
		output:   out,
		action:   c.Action,
		taken:    slices.Clone(c.Taken),
		staged:   staged,
		fallback: c.Fallback,
		token:    c.Token,
	}, sets, nodeSize, nil
}

// sameCommit reports whether two committed items hold the same outcome:
// Output, Action, Taken, Staged and Fallback, compared decoded, and the same
// Token.
func sameCommit(a, b nodeItem) bool {
	ra, err := a.record("")
	if err != nil {
		return false
	}
	rb, err := b.record("")
	if err != nil {
		return false
	}
	return reflect.DeepEqual(ra.Output, rb.Output) &&
		ra.Action == rb.Action &&
		reflect.DeepEqual(ra.Taken, rb.Taken) &&
		reflect.DeepEqual(ra.Staged, rb.Staged) &&
		ra.Fallback == rb.Fallback &&
		a.token == b.token
}

// FailNode implements sqsadapter.ContextStore. A reason longer than 32 KiB
// is truncated, as on DynamoDB.
func (s *ContextStore) FailNode(ctx context.Context, runID, nodeID, reason string) (*store.NodeRecord, error) {
	const op = "FailNode"
	if err := s.begin(ctx, op); err != nil {
		return nil, err
	}
	if err := storeCheckNode(runID, nodeID); err != nil {
		return nil, err
	}
	s.lock()
	it, ok := s.nodes[runID][nodeID]
	var failure error
	switch {
	case ok && (it.state == store.NodeCommitted || it.state == store.NodeSkipped):
		failure = fmt.Errorf("sqsadaptertest: fail node %q of run %q: node is %s: %w", nodeID, runID, it.state, store.ErrNodeCommitted)
	case ok && it.state == store.NodeClosed:
		failure = fmt.Errorf("sqsadaptertest: fail node %q of run %q: %w", nodeID, runID, store.ErrNodeClosed)
	case ok && it.state == store.NodeFailed:
		// Failed already: the first reason stays.
	case ok && it.state == store.NodeWaiting:
		failure = fmt.Errorf("sqsadaptertest: fail node %q of run %q: %w", nodeID, runID, store.ErrNodeWaiting)
	default:
		it.state = store.NodeFailed
		it.errMsg = limits.TruncateReason(reason)
		it.leaseOwner = ""
		it.leaseUntil = time.Time{}
		it.updatedAt = storeNow()
		s.runNodes(runID)[nodeID] = it
	}
	s.mu.Unlock()
	rec, err := it.record(nodeID)
	if err != nil {
		return nil, err
	}
	if failure != nil {
		return rec, failure
	}
	if err := s.end(op); err != nil {
		return nil, err
	}
	return rec, nil
}

// SkipNodes implements sqsadapter.ContextStore: absent and pending nodes
// become skipped (a pending node's lease is dropped).
func (s *ContextStore) SkipNodes(ctx context.Context, runID string, nodeIDs []string) error {
	return s.resolveNodes(ctx, "SkipNodes", runID, nodeIDs, store.NodeSkipped)
}

// CloseNodes implements sqsadapter.ContextStore: absent, pending and waiting
// nodes become closed (a pending node's lease is dropped, a waiting node
// leaves its run's Waiting set).
func (s *ContextStore) CloseNodes(ctx context.Context, runID string, nodeIDs []string) error {
	return s.resolveNodes(ctx, "CloseNodes", runID, nodeIDs, store.NodeClosed)
}

func (s *ContextStore) resolveNodes(ctx context.Context, op, runID string, nodeIDs []string, state string) error {
	if err := s.begin(ctx, op); err != nil {
		return err
	}
	if err := storeCheckRunID(runID); err != nil {
		return err
	}
	for _, id := range nodeIDs {
		if err := storeCheckNode(runID, id); err != nil {
			return err
		}
	}
	s.lock()
	if len(nodeIDs) > 0 {
		nodes := s.runNodes(runID)
		for _, id := range nodeIDs {
			it, ok := nodes[id]
			waiting := ok && it.state == store.NodeWaiting && state == store.NodeClosed
			if ok && it.state != store.NodePending && !waiting {
				continue
			}
			if waiting {
				s.unwait(runID, id)
			}
			it.state = state
			it.leaseOwner = ""
			it.leaseUntil = time.Time{}
			it.updatedAt = storeNow()
			nodes[id] = it
		}
	}
	s.mu.Unlock()
	return s.end(op)
}

// GetNodes implements sqsadapter.ContextStore.
func (s *ContextStore) GetNodes(ctx context.Context, runID string, nodeIDs []string) (map[string]*store.NodeRecord, error) {
	const op = "GetNodes"
	if err := s.begin(ctx, op); err != nil {
		return nil, err
	}
	if err := storeCheckRunID(runID); err != nil {
		return nil, err
	}
	for _, id := range nodeIDs {
		if err := storeCheckNode(runID, id); err != nil {
			return nil, err
		}
	}
	items := make(map[string]nodeItem, len(nodeIDs))
	s.lock()
	nodes := s.nodes[runID]
	for _, id := range nodeIDs {
		if it, ok := nodes[id]; ok {
			items[id] = it
		}
	}
	s.mu.Unlock()
	recs := make(map[string]*store.NodeRecord, len(items))
	for id, it := range items {
		rec, err := it.record(id)
		if err != nil {
			return nil, err
		}
		recs[id] = rec
	}
	if err := s.end(op); err != nil {
		return nil, err
	}
	return recs, nil
}

// storeDefaultListLimit is the page size of ListRunning when its limit is 0
// or less.
const storeDefaultListLimit = 100

// ListRunning returns running runs created strictly before createdBefore,
// oldest first (runs created at the same time in run id order), at most
// limit of them (100 when limit <= 0). To continue, call it again with next
// as cursor; next is "" when no run remains. An empty cursor starts from the
// oldest run; a cursor that is not one of ListRunning's fails with an error
// matching store.ErrInvalidCursor.
// The cursor names the last run returned, so runs that start or finish
// during a listing do not make it repeat or skip the others. Unlike
// sqsadapter.DynamoDbContext.ListRunning, it reads run records
// consistently: a run is listed from its creation until it finishes.
func (s *ContextStore) ListRunning(ctx context.Context, createdBefore time.Time, cursor string, limit int) (runs []store.RunRecord, next string, err error) {
	const op = "ListRunning"
	if err := s.begin(ctx, op); err != nil {
		return nil, "", err
	}
	var after *storeRunCursor
	if cursor != "" {
		c, err := storeDecodeCursor(cursor)
		if err != nil {
			return nil, "", fmt.Errorf("sqsadaptertest: list running runs: %w", err)
		}
		after = &c
	}
	if limit <= 0 {
		limit = storeDefaultListLimit
	}
	s.lock()
	for _, run := range s.runs {
		if run.Status != sqsadapter.StatusRunning || !run.CreatedAt.Before(createdBefore) {
			continue
		}
		if after != nil && storeCompareRun(run, after.createdAt(), after.RunID) <= 0 {
			continue
		}
		run.Waiting = slices.Clone(run.Waiting)
		runs = append(runs, run)
	}
	s.mu.Unlock()
	slices.SortFunc(runs, func(a, b store.RunRecord) int {
		return storeCompareRun(a, b.CreatedAt, b.RunID)
	})
	if len(runs) > limit {
		runs = runs[:limit]
		last := runs[limit-1]
		next = storeEncodeCursor(storeRunCursor{CreatedAt: last.CreatedAt.UnixNano(), RunID: last.RunID})
	}
	if err := s.end(op); err != nil {
		return nil, "", err
	}
	return runs, next, nil
}

// storeRunCursor is the position of a ListRunning page: the last run returned.
type storeRunCursor struct {
	CreatedAt int64  `json:"t"` // unix nanoseconds
	RunID     string `json:"r"`
}

func (c storeRunCursor) createdAt() time.Time { return time.Unix(0, c.CreatedAt) }

func storeEncodeCursor(c storeRunCursor) string {
	b, err := json.Marshal(c)
	if err != nil {
		panic(err) // an int64 and a string always marshal
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

func storeDecodeCursor(cursor string) (storeRunCursor, error) {
	var c storeRunCursor
	b, err := base64.RawURLEncoding.DecodeString(cursor)
	if err == nil {
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		if err = dec.Decode(&c); err == nil && dec.More() {
			err = errors.New("trailing data")
		}
	}
	if err == nil && c.RunID == "" {
		err = errors.New("no run id")
	}
	if err != nil {
		return storeRunCursor{}, fmt.Errorf("%w %q: %v", store.ErrInvalidCursor, cursor, err)
	}
	return c, nil
}

// storeCompareRun orders runs by creation time, then run id.
func storeCompareRun(run store.RunRecord, createdAt time.Time, runID string) int {
	if c := run.CreatedAt.Compare(createdAt); c != 0 {
		return c
	}
	return strings.Compare(run.RunID, runID)
}

// ListNodes returns every node record of a run, whatever its state, by node
// id; a run without node records has an empty map. Context keys are no node
// records.
func (s *ContextStore) ListNodes(ctx context.Context, runID string) (map[string]*store.NodeRecord, error) {
	const op = "ListNodes"
	if err := s.begin(ctx, op); err != nil {
		return nil, err
	}
	if err := storeCheckRunID(runID); err != nil {
		return nil, err
	}
	s.lock()
	items := maps.Clone(s.nodes[runID])
	s.mu.Unlock()
	recs, err := nodeRecords(items)
	if err != nil {
		return nil, err
	}
	if err := s.end(op); err != nil {
		return nil, err
	}
	return recs, nil
}

// Get implements sqsadapter.ContextStore.
func (s *ContextStore) Get(ctx context.Context, runID, key string) (any, bool, error) {
	const op = "Get"
	if err := s.begin(ctx, op); err != nil {
		return nil, false, err
	}
	if err := storeCheckRunID(runID); err != nil {
		return nil, false, err
	}
	if err := storeCheckReadKey(key); err != nil {
		return nil, false, err
	}
	s.lock()
	b, ok := s.lookup(runID, key)
	s.mu.Unlock()
	var v any
	if ok {
		var err error
		if v, err = storeDecode(b); err != nil {
			return nil, false, fmt.Errorf("sqsadaptertest: get %q of run %q: %w", key, runID, err)
		}
	}
	if err := s.end(op); err != nil {
		return nil, false, err
	}
	return v, ok, nil
}

// GetMany implements sqsadapter.ContextStore.
func (s *ContextStore) GetMany(ctx context.Context, runID string, keys []string) (map[string]any, error) {
	const op = "GetMany"
	if err := s.begin(ctx, op); err != nil {
		return nil, err
	}
	if err := storeCheckRunID(runID); err != nil {
		return nil, err
	}
	for _, k := range keys {
		if err := storeCheckReadKey(k); err != nil {
			return nil, err
		}
	}
	found := make(map[string][]byte, len(keys))
	s.lock()
	for _, k := range keys {
		if b, ok := s.lookup(runID, k); ok {
			found[k] = b
		}
	}
	s.mu.Unlock()
	vals, err := storeDecodeAll(found)
	if err != nil {
		return nil, fmt.Errorf("sqsadaptertest: get keys of run %q: %w", runID, err)
	}
	if err := s.end(op); err != nil {
		return nil, err
	}
	return vals, nil
}

// lookup finds the encoded value of a context key or committed node output.
// Call with the lock held.
func (s *ContextStore) lookup(runID, key string) ([]byte, bool) {
	if id, ok := strings.CutPrefix(key, limits.OutputsPrefix); ok {
		it, ok := s.nodes[runID][id]
		if !ok || it.state != store.NodeCommitted {
			return nil, false
		}
		return it.output, true
	}
	b, ok := s.values[runID][key]
	return b, ok
}

// Set implements sqsadapter.ContextStore.
func (s *ContextStore) Set(ctx context.Context, runID, key string, value any) error {
	const op = "Set"
	if err := s.begin(ctx, op); err != nil {
		return err
	}
	if err := storeCheckRunID(runID); err != nil {
		return err
	}
	enc, _, err := storeEncodeSets(runID, map[string]any{key: value})
	if err != nil {
		return fmt.Errorf("sqsadaptertest: set %q of run %q: %w", key, runID, err)
	}
	s.lock()
	s.runValues(runID)[key] = enc[key]
	s.replaced(runID, key)
	s.mu.Unlock()
	return s.end(op)
}

// Delete implements sqsadapter.ContextStore.
func (s *ContextStore) Delete(ctx context.Context, runID, key string) (bool, error) {
	const op = "Delete"
	if err := s.begin(ctx, op); err != nil {
		return false, err
	}
	if err := storeCheckRunID(runID); err != nil {
		return false, err
	}
	if err := storeCheckWriteKey(key); err != nil {
		return false, fmt.Errorf("sqsadaptertest: delete %q of run %q: %w", key, runID, err)
	}
	s.lock()
	_, existed := s.values[runID][key]
	delete(s.values[runID], key)
	s.replaced(runID, key)
	s.mu.Unlock()
	if err := s.end(op); err != nil {
		return false, err
	}
	return existed, nil
}

// Patch implements sqsadapter.ContextStore. Every key and size is checked
// before anything is written; a key both set and deleted is refused with
// ErrInvalidKey.
func (s *ContextStore) Patch(ctx context.Context, runID string, sets map[string]any, deletes []string) error {
	const op = "Patch"
	if err := s.begin(ctx, op); err != nil {
		return err
	}
	if err := storeCheckRunID(runID); err != nil {
		return err
	}
	wrap := func(err error) error { return fmt.Errorf("sqsadaptertest: patch run %q: %w", runID, err) }
	if n := len(sets) + len(deletes); n > limits.TransactItems {
		return wrap(fmt.Errorf("%w: %d changes: one patch makes at most %d", sqsadapter.ErrValueTooLarge, n, limits.TransactItems))
	}
	enc, sizes, err := storeEncodeSets(runID, sets)
	if err == nil {
		err = storeCheckDeletes(sets, deletes)
	}
	if err == nil {
		err = storeCheckTransaction(runID, sizes, deletes)
	}
	if err != nil {
		return wrap(err)
	}
	s.lock()
	vals := s.runValues(runID)
	for k, b := range enc {
		vals[k] = b
		s.replaced(runID, k)
	}
	for _, k := range deletes {
		delete(vals, k)
	}
	s.replaced(runID, deletes...)
	s.mu.Unlock()
	return s.end(op)
}

// Snapshot implements sqsadapter.ContextStore. An unknown run has an empty
// context.
func (s *ContextStore) Snapshot(ctx context.Context, runID string) (map[string]any, error) {
	const op = "Snapshot"
	if err := s.begin(ctx, op); err != nil {
		return nil, err
	}
	if err := storeCheckRunID(runID); err != nil {
		return nil, err
	}
	vals, _, err := s.snapshot(runID, false)
	if err != nil {
		return nil, err
	}
	if err := s.end(op); err != nil {
		return nil, err
	}
	return vals, nil
}

// SnapshotNodes is Snapshot and ListNodes in one call, as
// sqsadapter.DynamoDbContext reads both with one Query.
func (s *ContextStore) SnapshotNodes(ctx context.Context, runID string) (map[string]any, map[string]*store.NodeRecord, error) {
	const op = "SnapshotNodes"
	if err := s.begin(ctx, op); err != nil {
		return nil, nil, err
	}
	if err := storeCheckRunID(runID); err != nil {
		return nil, nil, err
	}
	vals, recs, err := s.snapshot(runID, true)
	if err != nil {
		return nil, nil, err
	}
	if err := s.end(op); err != nil {
		return nil, nil, err
	}
	return vals, recs, nil
}

// snapshot is run runID's context as Snapshot returns it, and with nodes
// its node records as ListNodes returns them, from one look at the run.
func (s *ContextStore) snapshot(runID string, nodes bool) (map[string]any, map[string]*store.NodeRecord, error) {
	s.lock()
	found := maps.Clone(s.values[runID])
	if found == nil {
		found = make(map[string][]byte)
	}
	items := s.nodes[runID]
	for id, it := range items {
		if it.state == store.NodeCommitted {
			found[limits.OutputsPrefix+id] = it.output
		}
	}
	if nodes {
		items = maps.Clone(items)
	}
	s.mu.Unlock()
	vals, err := storeDecodeAll(found)
	if err != nil {
		return nil, nil, fmt.Errorf("sqsadaptertest: snapshot of run %q: %w", runID, err)
	}
	if !nodes {
		return vals, nil, nil
	}
	recs, err := nodeRecords(items)
	return vals, recs, err
}

// nodeRecords decodes a copy of a run's node items.
func nodeRecords(items map[string]nodeItem) (map[string]*store.NodeRecord, error) {
	recs := make(map[string]*store.NodeRecord, len(items))
	for id, it := range items {
		rec, err := it.record(id)
		if err != nil {
			return nil, err
		}
		recs[id] = rec
	}
	return recs, nil
}

// storeNow is the time a node record is written at.
func storeNow() time.Time {
	return time.Now().Round(0)
}

// record decodes a fresh NodeRecord from a stored item.
func (it nodeItem) record(nodeID string) (*store.NodeRecord, error) {
	rec := &store.NodeRecord{
		NodeID:     nodeID,
		State:      it.state,
		Attempts:   it.attempts,
		LeaseOwner: it.leaseOwner,
		LeaseUntil: it.leaseUntil,
		Action:     it.action,
		Taken:      slices.Clone(it.taken),
		Fallback:   it.fallback,
		Error:      it.errMsg,
		Token:      it.token,
		UpdatedAt:  it.updatedAt,
	}
	if it.wait != nil {
		v, err := storeDecode(it.wait)
		if err == nil {
			rec.Wait, err = waitvalue.Decode(v)
		}
		if err != nil {
			return nil, fmt.Errorf("sqsadaptertest: node %q: wait: %w", nodeID, err)
		}
	}
	if it.output != nil {
		v, err := storeDecode(it.output)
		if err != nil {
			return nil, fmt.Errorf("sqsadaptertest: node %q: output: %w", nodeID, err)
		}
		rec.Output = v
	}
	if it.staged != nil {
		v, err := storeDecode(it.staged)
		if err != nil {
			return nil, fmt.Errorf("sqsadaptertest: node %q: staged inputs: %w", nodeID, err)
		}
		m, ok := v.(map[string]any)
		if !ok && v != nil {
			return nil, fmt.Errorf("sqsadaptertest: node %q: staged inputs are a %T, not an object", nodeID, v)
		}
		rec.Staged = m
	}
	return rec, nil
}

// storeEncode normalizes v to its JSON-like form and encodes it as JSON. It
// also returns the size DynamoDbContext counts for the value
// (limits.ValueSize).
func storeEncode(v any) ([]byte, int, error) {
	n, err := jsonvalue.Normalize(v)
	if err != nil {
		return nil, 0, err
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(n); err != nil {
		return nil, 0, fmt.Errorf("value is not JSON-marshalable: %w", err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), limits.ValueSize(n), nil
}

// storeDecode decodes a stored value into a fresh JSON-like value.
func storeDecode(b []byte) (any, error) {
	return jsonvalue.Decode(b)
}

func storeDecodeAll(found map[string][]byte) (map[string]any, error) {
	vals := make(map[string]any, len(found))
	for k, b := range found {
		v, err := storeDecode(b)
		if err != nil {
			return nil, fmt.Errorf("key %q: %w", k, err)
		}
		vals[k] = v
	}
	return vals, nil
}

// storeEncodeSets checks the keys of sets and encodes their values, checking
// each item's size; it returns the encoded values and the items' estimated
// sizes. Keys are visited in order, so the error is deterministic.
func storeEncodeSets(runID string, sets map[string]any) (map[string][]byte, []int, error) {
	enc := make(map[string][]byte, len(sets))
	sizes := make([]int, 0, len(sets)+1)
	for _, k := range slices.Sorted(maps.Keys(sets)) {
		if err := storeCheckWriteKey(k); err != nil {
			return nil, nil, err
		}
		b, vsize, err := storeEncode(sets[k])
		if err != nil {
			return nil, nil, fmt.Errorf("key %q: %w", k, err)
		}
		size := limits.ItemSize(runID, k, vsize)
		if size > limits.ItemBytes {
			return nil, nil, &store.ValueTooLargeError{RunID: runID, Key: k, Size: size, Limit: limits.ItemBytes}
		}
		enc[k] = b
		sizes = append(sizes, size)
	}
	return enc, sizes, nil
}

// storeCheckTransaction refuses, as DynamoDbContext does, writes that go
// together (one transaction on DynamoDB) over the transaction size limit:
// items of the given sizes written, the keys deletes deleted.
func storeCheckTransaction(runID string, sizes []int, deletes []string) error {
	if total := limits.TransactionBytes(runID, sizes, deletes); total > limits.TransactBytes {
		return fmt.Errorf("%w: run %q: the writes that go together total %d bytes, over DynamoDB's %d-byte transaction limit",
			sqsadapter.ErrValueTooLarge, runID, total, limits.TransactBytes)
	}
	return nil
}

// storeCheckDeletes checks the keys to delete, none of which may also be set.
func storeCheckDeletes(sets map[string]any, deletes []string) error {
	for _, k := range deletes {
		if err := storeCheckWriteKey(k); err != nil {
			return err
		}
		if _, ok := sets[k]; ok {
			return fmt.Errorf("%w: %q is both set and deleted", sqsadapter.ErrInvalidKey, k)
		}
	}
	return nil
}

// storeCheckWriteKey checks a context key that a caller writes: not empty,
// not reserved for node records, not too long (limits.CheckContextKey).
func storeCheckWriteKey(key string) error {
	if err := limits.CheckContextKey(key); err != nil {
		return fmt.Errorf("%w: %v", sqsadapter.ErrInvalidKey, err)
	}
	return nil
}

// storeCheckReadKey checks a context key that a caller reads
// (limits.CheckReadKey).
func storeCheckReadKey(key string) error {
	if err := limits.CheckReadKey(key); err != nil {
		return fmt.Errorf("%w: %v", sqsadapter.ErrInvalidKey, err)
	}
	return nil
}

// storeCheckRunID checks a run id (limits.CheckID), as the DynamoDB store
// does: the error matches ErrInvalidKey.
func storeCheckRunID(runID string) error {
	if err := limits.CheckID("run id", runID); err != nil {
		return fmt.Errorf("sqsadaptertest: %w: %v", sqsadapter.ErrInvalidKey, err)
	}
	return nil
}

// storeCheckNode checks a run id and a node id (limits.CheckNodeRecordID).
func storeCheckNode(runID, nodeID string) error {
	if err := storeCheckRunID(runID); err != nil {
		return err
	}
	if err := limits.CheckNodeRecordID(nodeID); err != nil {
		return fmt.Errorf("sqsadaptertest: run %q: %w: %v", runID, sqsadapter.ErrInvalidKey, err)
	}
	return nil
}
