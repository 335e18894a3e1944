package sqsadapter

import (
	"errors"
	"fmt"
	"strings"

	"github.com/flowcraft/sqsadapter/store"
)

// Sentinel errors. Implementations of the storage interfaces return them
// (wrapped with %w) so that callers can test with errors.Is.
var (
	// ErrInvalidBlueprint: a blueprint failed validation (see *BlueprintError).
	ErrInvalidBlueprint = errors.New("sqsadapter: invalid blueprint")
	// ErrUnknownBlueprint: no blueprint (or blueprint version) with that id is registered.
	ErrUnknownBlueprint = errors.New("sqsadapter: unknown blueprint")
	// ErrInvalidJob: a job message that cannot be decoded, lacks required
	// fields, or names a node its blueprint does not have.
	ErrInvalidJob = errors.New("sqsadapter: invalid job")
	// ErrInvalidOption: NewSqsAdapter was given an invalid option.
	ErrInvalidOption = errors.New("sqsadapter: invalid option")
	// ErrAdapterClosed: Run was called after Shutdown, or twice.
	ErrAdapterClosed = errors.New("sqsadapter: adapter closed")
)

// Errors of the storage seams, returned by the stores and by the adapter's
// methods; package store documents them.
var (
	ErrRunNotFound   = store.ErrRunNotFound
	ErrRunFinished   = store.ErrRunFinished
	ErrInvalidKey    = store.ErrInvalidKey
	ErrValueTooLarge = store.ErrValueTooLarge
	// ErrNotWaiting: ResumeRun or a webhook delivery for a node that does
	// not wait (not reached yet, running, or already resumed).
	ErrNotWaiting = store.ErrNotWaiting
)

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

// nodeError is the reason a run failed: the node that failed for good and why.
type nodeError struct {
	NodeID  string
	Attempt int
	Err     error
}

func (e *nodeError) Error() string {
	return fmt.Sprintf("node %q failed after %d attempt(s): %v", e.NodeID, e.Attempt, e.Err)
}

func (e *nodeError) Unwrap() error { return e.Err }
