package store

import (
	"errors"
	"fmt"
	"time"
)

// Sentinel errors. Implementations of ContextStore and CoordinationStore
// return them (wrapped with %w) so that callers can test with errors.Is; the
// root package re-exports those a host meets.
var (
	// ErrRunNotFound: no run record with that id.
	ErrRunNotFound = errors.New("sqsadapter: run not found")
	// ErrRunExists: CreateRun found a run with that id; nothing was written.
	ErrRunExists = errors.New("sqsadapter: run already exists")
	// ErrRunFinished: the run is no longer running (completed, failed or cancelled).
	ErrRunFinished = errors.New("sqsadapter: run is finished")
	// ErrRunNotFinished: the run is still running; the call (a deletion)
	// needs a finished run.
	ErrRunNotFinished = errors.New("sqsadapter: run is not finished")
	// ErrNodeCommitted: the node's output is already committed (or the node
	// was skipped); the call changed nothing.
	ErrNodeCommitted = errors.New("sqsadapter: node already committed")
	// ErrNodeClosed: the node's run finished before the node committed; the
	// node must not run.
	ErrNodeClosed = errors.New("sqsadapter: node closed: its run is finished")
	// ErrNodeFailed: the node failed for good (see ContextStore.FailNode);
	// it must not run again and its outcome cannot be committed.
	ErrNodeFailed = errors.New("sqsadapter: node failed for good")
	// ErrLeaseHeld: another worker holds the node's execution lease.
	ErrLeaseHeld = errors.New("sqsadapter: node lease held by another worker")
	// ErrLeaseLost: the caller no longer holds the node's execution lease.
	ErrLeaseLost = errors.New("sqsadapter: node lease lost")
	// ErrNodeWaiting: the node waits (NodeWaiting) to be resumed; it must
	// not run again.
	ErrNodeWaiting = errors.New("sqsadapter: node is waiting")
	// ErrNotWaiting: a resume of a node that does not wait (not reached
	// yet, running, or already resumed).
	ErrNotWaiting = errors.New("sqsadapter: node is not waiting")
	// ErrInvalidKey: an empty, reserved or too long context key or
	// coordination key, or a run or node id that no stored item can be
	// keyed by (see Blueprint.Validate for the id rule).
	ErrInvalidKey = errors.New("sqsadapter: invalid context key")
	// ErrValueTooLarge: a value does not fit in one storage item.
	ErrValueTooLarge = errors.New("sqsadapter: value too large")
	// ErrInvalidCursor: a ListRunning cursor the store did not make (or
	// made in a format it no longer reads). Start the listing again with "".
	ErrInvalidCursor = errors.New("sqsadapter: invalid cursor")
)

// ValueTooLargeError reports a value over the storage item limit. It matches
// ErrValueTooLarge with errors.Is.
type ValueTooLargeError struct {
	RunID string
	Key   string // context key, or "_outputs.<nodeId>" for a node output
	Size  int    // encoded size in bytes
	Limit int
}

func (e *ValueTooLargeError) Error() string {
	return fmt.Sprintf("sqsadapter: run %q key %q: value of %d bytes exceeds the %d-byte item limit", e.RunID, e.Key, e.Size, e.Limit)
}

// Is makes errors.Is(err, ErrValueTooLarge) true.
func (e *ValueTooLargeError) Is(target error) bool { return target == ErrValueTooLarge }

// LeaseHeldError reports who holds a node's lease and until when. It matches
// ErrLeaseHeld with errors.Is.
type LeaseHeldError struct {
	RunID, NodeID, Owner string
	Until                time.Time
}

func (e *LeaseHeldError) Error() string {
	return fmt.Sprintf("sqsadapter: run %q node %q: lease held by %q until %s", e.RunID, e.NodeID, e.Owner, e.Until.Format(time.RFC3339Nano))
}

// Is makes errors.Is(err, ErrLeaseHeld) true.
func (e *LeaseHeldError) Is(target error) bool { return target == ErrLeaseHeld }
