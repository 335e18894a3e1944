package sqsadaptertest

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/flowcraft/sqsadapter"
	"github.com/flowcraft/sqsadapter/internal/limits"
	"github.com/flowcraft/sqsadapter/internal/waitvalue"
	"github.com/flowcraft/sqsadapter/store"
)

// SuspendNode implements sqsadapter.ContextStore. The lease's expiry is not
// checked, as in ExtendLease: an owner whose lease expired may suspend the
// node as long as no other owner has taken it over. The run must have a
// record (ErrRunNotFound otherwise): its Waiting set gains the node. A wait
// whose record would exceed MaxItemBytes is refused with a
// *store.ValueTooLargeError. An absent node comes back as a nil record.
func (s *ContextStore) SuspendNode(ctx context.Context, runID, nodeID, owner string, w store.Wait) (*store.NodeRecord, error) {
	const op = "SuspendNode"
	if err := s.begin(ctx, op); err != nil {
		return nil, err
	}
	if err := storeCheckNode(runID, nodeID); err != nil {
		return nil, err
	}
	wrap := func(err error) error {
		return fmt.Errorf("sqsadaptertest: suspend node %q of run %q for %q: %w", nodeID, runID, owner, err)
	}
	wv, err := waitvalue.Encode(w)
	if err != nil {
		return nil, wrap(err)
	}
	enc, _, err := storeEncode(wv)
	if err != nil {
		return nil, wrap(fmt.Errorf("wait: %w", err))
	}
	waitSize := limits.WaitSize(wv, "")
	if size := limits.NodeRecordSize(runID, nodeID, 0, 0, "", "", nil) + waitSize; size > limits.ItemBytes {
		return nil, &store.ValueTooLargeError{RunID: runID, Key: limits.OutputsPrefix + nodeID, Size: size, Limit: limits.ItemBytes}
	}

	s.lock()
	it, ok := s.nodes[runID][nodeID]
	_, runExists := s.runs[runID]
	var failure error
	switch {
	case !ok:
		failure = wrap(fmt.Errorf("no node record: %w", store.ErrLeaseLost))
	case it.state == store.NodeWaiting:
		// Suspended already: the first Wait stays.
	case it.state == store.NodeCommitted || it.state == store.NodeSkipped:
		failure = wrap(fmt.Errorf("node is %s: %w", it.state, store.ErrNodeCommitted))
	case it.state == store.NodeClosed:
		failure = wrap(store.ErrNodeClosed)
	case it.state == store.NodeFailed:
		failure = wrap(store.ErrNodeFailed)
	case owner == "" || it.leaseOwner != owner:
		failure = wrap(fmt.Errorf("lease held by %q: %w", it.leaseOwner, store.ErrLeaseLost))
	case !runExists:
		failure = wrap(sqsadapter.ErrRunNotFound)
	default:
		it.state = store.NodeWaiting
		it.wait = enc
		it.waitSize = waitSize
		it.leaseOwner = ""
		it.leaseUntil = time.Time{}
		it.updatedAt = storeNow()
		s.nodes[runID][nodeID] = it
		s.addWaiting(runID, nodeID)
	}
	s.mu.Unlock()
	return s.answer(op, it, ok, nodeID, failure)
}

// ResumeNode implements sqsadapter.ContextStore. It checks sizes and keys
// as CommitNode does; the node record keeps its Wait, so its size counts
// too, and the run record's update takes one of the transaction's items (at
// most 98 context writes). A resume identical to the one committed (Output,
// Action, Taken, Staged, Fallback and Token) returns the record with no
// error and writes nothing; a node committed by CommitNode was never
// resumed, so a resume of it is refused with ErrNodeCommitted. An absent
// node comes back as a nil record.
func (s *ContextStore) ResumeNode(ctx context.Context, runID string, c store.NodeCommit) (*store.NodeRecord, error) {
	const op = "ResumeNode"
	if err := s.begin(ctx, op); err != nil {
		return nil, err
	}
	if err := storeCheckNode(runID, c.NodeID); err != nil {
		return nil, err
	}
	wrap := func(err error) error {
		return fmt.Errorf("sqsadaptertest: resume node %q of run %q: %w", c.NodeID, runID, err)
	}
	next, sets, nodeSize, err := storeEncodeCommit(runID, c, []int{limits.WaitingUpdateSize(runID, c.NodeID)}, wrap)
	if err != nil {
		return nil, err
	}

	s.lock()
	it, ok := s.nodes[runID][c.NodeID]
	var failure error
	switch {
	case !ok:
		failure = wrap(fmt.Errorf("no node record: %w", store.ErrNotWaiting))
	case it.state == store.NodeCommitted && it.wait != nil && sameCommit(it, next):
		// Our own earlier resume, retried: nothing to write.
	case it.state == store.NodeCommitted || it.state == store.NodeSkipped:
		failure = wrap(fmt.Errorf("node is %s: %w", it.state, store.ErrNodeCommitted))
	case it.state == store.NodeClosed:
		failure = wrap(store.ErrNodeClosed)
	case it.state == store.NodeFailed:
		failure = wrap(store.ErrNodeFailed)
	case it.state != store.NodeWaiting:
		failure = wrap(fmt.Errorf("node is %s: %w", it.state, store.ErrNotWaiting))
	case nodeSize+it.waitSize > limits.ItemBytes:
		s.mu.Unlock()
		return nil, &store.ValueTooLargeError{RunID: runID, Key: limits.OutputsPrefix + c.NodeID, Size: nodeSize + it.waitSize, Limit: limits.ItemBytes}
	default:
		next.attempts = it.attempts
		next.wait = it.wait
		next.waitSize = it.waitSize
		next.updatedAt = storeNow()
		it = next
		s.nodes[runID][c.NodeID] = it
		s.applyWrites(runID, sets, c.Deletes)
		s.unwait(runID, c.NodeID)
	}
	s.mu.Unlock()
	return s.answer(op, it, ok, c.NodeID, failure)
}

// WakeNode implements sqsadapter.ContextStore.
func (s *ContextStore) WakeNode(ctx context.Context, runID, nodeID, owner string, attempts int, until time.Time) (*store.NodeRecord, error) {
	const op = "WakeNode"
	if err := s.begin(ctx, op); err != nil {
		return nil, err
	}
	if err := storeCheckNode(runID, nodeID); err != nil {
		return nil, err
	}
	wrap := func(err error) error {
		return fmt.Errorf("sqsadaptertest: wake node %q of run %q for %q: %w", nodeID, runID, owner, err)
	}
	s.lock()
	it, ok := s.nodes[runID][nodeID]
	var failure error
	switch {
	case !ok:
		failure = wrap(fmt.Errorf("no node record: %w", store.ErrNotWaiting))
	case it.state == store.NodePending && owner != "" && it.leaseOwner == owner && it.attempts == attempts:
		// Woken by this owner already: a retry.
	case it.state == store.NodeCommitted || it.state == store.NodeSkipped:
		failure = wrap(fmt.Errorf("node is %s: %w", it.state, store.ErrNodeCommitted))
	case it.state == store.NodeClosed:
		failure = wrap(store.ErrNodeClosed)
	case it.state == store.NodeFailed:
		failure = wrap(store.ErrNodeFailed)
	case it.state != store.NodeWaiting || it.attempts != attempts || owner == "":
		failure = wrap(fmt.Errorf("node is %s after %d attempts: %w", it.state, it.attempts, store.ErrNotWaiting))
	default:
		it.state = store.NodePending
		it.leaseOwner = owner
		it.leaseUntil = until.Round(0)
		it.updatedAt = storeNow()
		s.nodes[runID][nodeID] = it
		s.unwait(runID, nodeID)
	}
	s.mu.Unlock()
	return s.answer(op, it, ok, nodeID, failure)
}

// answer is what a write of a node record returns once it has decided:
// the record (nil when the node has none) and the refusal, if any; a call
// that was not refused ends op (its injected failures after the call).
func (s *ContextStore) answer(op string, it nodeItem, ok bool, nodeID string, failure error) (*store.NodeRecord, error) {
	var rec *store.NodeRecord
	if ok {
		var err error
		if rec, err = it.record(nodeID); err != nil {
			return nil, err
		}
	}
	if failure != nil {
		return rec, failure
	}
	if err := s.end(op); err != nil {
		return nil, err
	}
	return rec, nil
}

// applyWrites sets and deletes context keys of a run. Call with the lock
// held.
func (s *ContextStore) applyWrites(runID string, sets map[string][]byte, deletes []string) {
	if len(sets) == 0 && len(deletes) == 0 {
		return
	}
	vals := s.runValues(runID)
	for k, b := range sets {
		vals[k] = b
		s.replaced(runID, k)
	}
	for _, k := range deletes {
		delete(vals, k)
	}
	s.replaced(runID, deletes...)
}

// addWaiting adds a node to its run's Waiting set, kept sorted. The slice
// is replaced, never modified, since copies of the record share it. Call
// with the lock held.
func (s *ContextStore) addWaiting(runID, nodeID string) {
	run, ok := s.runs[runID]
	if !ok {
		return
	}
	i, found := slices.BinarySearch(run.Waiting, nodeID)
	if found {
		return
	}
	run.Waiting = slices.Insert(slices.Clone(run.Waiting), i, nodeID)
	s.runs[runID] = run
}

// unwait removes a node from its run's Waiting set. Call with the lock held.
func (s *ContextStore) unwait(runID, nodeID string) {
	run, ok := s.runs[runID]
	if !ok {
		return
	}
	i, found := slices.BinarySearch(run.Waiting, nodeID)
	if !found {
		return
	}
	run.Waiting = slices.Delete(slices.Clone(run.Waiting), i, i+1)
	if len(run.Waiting) == 0 {
		run.Waiting = nil
	}
	s.runs[runID] = run
}
