package sqsadapter

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Sentinel errors. Implementations of the storage interfaces return them
// (wrapped with %w) so that callers can test with errors.Is.
var (
	// ErrRunNotFound: no run record with that id.
	ErrRunNotFound = errors.New("sqsadapter: run not found")
	// ErrRunExists: CreateRun found a run with that id; nothing was written.
	ErrRunExists = errors.New("sqsadapter: run already exists")
	// ErrRunFinished: the run is no longer running (completed, failed or cancelled).
	ErrRunFinished = errors.New("sqsadapter: run is finished")
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
	// ErrInvalidKey: an empty, reserved or too long context key or
	// coordination key, or a run or node id that no stored item can be
	// keyed by (see Blueprint.Validate for the id rule).
	ErrInvalidKey = errors.New("sqsadapter: invalid context key")
	// ErrValueTooLarge: a value does not fit in one storage item.
	ErrValueTooLarge = errors.New("sqsadapter: value too large")
	// ErrInvalidBlueprint: a blueprint failed validation (see *BlueprintError).
	ErrInvalidBlueprint = errors.New("sqsadapter: invalid blueprint")
	// ErrUnknownBlueprint: no blueprint (or blueprint version) with that id is registered.
	ErrUnknownBlueprint = errors.New("sqsadapter: unknown blueprint")
	// ErrUnknownNode: the blueprint has no node with that id.
	ErrUnknownNode = errors.New("sqsadapter: unknown node")
	// ErrInvalidJob: a job message that cannot be decoded or lacks required fields.
	ErrInvalidJob = errors.New("sqsadapter: invalid job")
	// ErrInvalidOption: NewSqsAdapter was given an invalid option.
	ErrInvalidOption = errors.New("sqsadapter: invalid option")
	// ErrAdapterClosed: Run was called after Shutdown, or twice.
	ErrAdapterClosed = errors.New("sqsadapter: adapter closed")
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

// BlueprintError lists every problem found in a blueprint. It matches
// ErrInvalidBlueprint with errors.Is.
type BlueprintError struct {
	BlueprintID string
	Problems    []string
}

func (e *BlueprintError) Error() string {
	id := e.BlueprintID
	if id == "" {
		id = "(no id)"
	}
	return fmt.Sprintf("sqsadapter: invalid blueprint %q: %s", id, strings.Join(e.Problems, "; "))
}

// Is makes errors.Is(err, ErrInvalidBlueprint) true.
func (e *BlueprintError) Is(target error) bool { return target == ErrInvalidBlueprint }

// NodeError is the reason a run failed: the node that failed for good and why.
type NodeError struct {
	NodeID  string
	Attempt int
	Err     error
}

func (e *NodeError) Error() string {
	return fmt.Sprintf("node %q failed after %d attempt(s): %v", e.NodeID, e.Attempt, e.Err)
}

func (e *NodeError) Unwrap() error { return e.Err }
