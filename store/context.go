package store

import (
	"context"
	"time"
)

// RunState is a run's status.
type RunState string

// Run statuses.
const (
	StatusRunning   RunState = "running"
	StatusCompleted RunState = "completed"
	StatusFailed    RunState = "failed"
	StatusCancelled RunState = "cancelled"
	// StatusAwaiting is never stored: GetRun reports it for a running run
	// whose only remaining work is waiting nodes.
	StatusAwaiting RunState = "awaiting"
	// StatusDeleted is the status of a deleted run's tombstone
	// (ContextStore.DeleteRun), which stores keep and never report: to
	// GetRun a deleted run is absent.
	StatusDeleted RunState = "deleted"
)

// RunRecord is a run's status record (one item of the status table).
type RunRecord struct {
	RunID            string
	BlueprintID      string
	BlueprintVersion string
	Status           RunState
	Error            string // why the run failed: node id and message
	FailedNode       string // the node that failed the run, if a node did
	CreatedAt        time.Time
	FinishedAt       time.Time // zero while running
	// Waiting lists the nodes of the run that wait now (NodeWaiting),
	// sorted: SuspendNode adds a node, ResumeNode removes it.
	Waiting []string
	// Parent is the subflow node whose child this run is; nil for a run
	// started by StartRun. It is written by CreateRun and never changes.
	Parent *ParentRef
	// ExpiresAt is the expiry ExpireRun gave the run (to the second,
	// rounded up, as DynamoDB's TTL keeps it); zero while it has none.
	// ExpireRun sets it last, after every other item of the run.
	ExpiresAt time.Time
}

// ParentRef names the node of the run that started a child run (a subflow
// node), and that run's blueprint version.
type ParentRef struct {
	RunID            string `json:"runId"`
	NodeID           string `json:"nodeId"`
	BlueprintID      string `json:"blueprintId"`
	BlueprintVersion string `json:"blueprintVersion,omitempty"`
}

// Node record states.
const (
	NodePending   = "pending"   // leased and/or attempted, not committed
	NodeCommitted = "committed" // output committed, exactly once
	NodeSkipped   = "skipped"   // resolved without running: every incoming edge dead
	NodeClosed    = "closed"    // the run finished before the node committed
	NodeFailed    = "failed"    // the node failed for good; its run is being or has been failed
	NodeWaiting   = "waiting"   // suspended without an output until resumed (wait, webhook, sleep)
)

// NodeRecord is the durable record of one node of one run: the context item
// "_outputs.<nodeId>". Before the commit it holds the attempt count and the
// execution lease; the commit adds the output and the routing decision, so a
// redelivered job replays exactly the decision that was made.
type NodeRecord struct {
	NodeID   string
	State    string // NodePending, NodeCommitted, NodeSkipped, NodeClosed, NodeFailed or NodeWaiting
	Attempts int    // attempts started, counted durably
	// Error is the failure reason, set when State is NodeFailed.
	Error string
	// Lease.
	LeaseOwner string
	LeaseUntil time.Time
	// Commit (State == NodeCommitted).
	Output   any
	Action   string
	Taken    []string       // targets of the edges taken, in blueprint order, without duplicates
	Staged   map[string]any // transform results, by target id
	Fallback string         // the fallback node that produced Output, if one did
	// Wait is why the node waits (State == NodeWaiting); it is kept once
	// the node is resumed, as its history.
	Wait *Wait
	// Token is the NodeCommit's Token (a resume's).
	Token string
	// UpdatedAt is when the record last changed: every write of the record
	// (AcquireNode, ExtendLease, ReleaseLease, CommitNode, SuspendNode,
	// ResumeNode, FailNode, SkipNodes, CloseNodes) sets it to the writer's clock, to the millisecond on
	// DynamoDB. A call that changes nothing (a refused acquisition, a release
	// of a lease not held, a skip of a committed node) leaves it. It is zero
	// on a record last written by a store that did not keep it.
	UpdatedAt time.Time
}

// NodeCommit is a node's outcome, written once by ContextStore.CommitNode
// together with the node's buffered context writes.
type NodeCommit struct {
	NodeID   string
	Output   any
	Action   string
	Taken    []string
	Staged   map[string]any
	Fallback string
	Sets     map[string]any // context keys written by the node
	Deletes  []string       // context keys deleted by the node
	// Token identifies one ResumeNode call, so that its retry is told
	// apart from another resume: commits are identical only with equal
	// tokens. Empty for CommitNode.
	Token string
}

// Wait is why a node waits, as SuspendNode records it.
type Wait struct {
	Reason    string         `json:"reason"`              // "external_event", "timer" or "webhook"
	Details   map[string]any `json:"details,omitempty"`   // e.g. {"eventName": "order-review"}; JSON-like values
	WakeAt    time.Time      `json:"wakeAt,omitzero"`     // timer: when the node wakes
	WebhookID string         `json:"webhookId,omitempty"` // webhook: the id that resumes it
}

// ContextStore holds run contexts, node records and run records. It is
// DynamoDbContext on AWS and sqsadaptertest.ContextStore in memory; both pass
// the conformance suite in package storetest.
//
// Every method is safe for concurrent use and every read is strongly
// consistent. Values are JSON-like (see the package documentation); a value
// too large for one item fails with a *ValueTooLargeError, and writes that go
// together over DynamoDB's transaction limits (100 items, 4 MB) with
// ErrValueTooLarge. Run ids follow the id rule of Blueprint.Validate; a node
// id may also name an internal record built from one (any UTF-8, its key
// "_outputs.<nodeId>" within 1,024 bytes). Others fail with ErrInvalidKey,
// except in GetRun and FinishRun, where no run has such an id
// (ErrRunNotFound).
type ContextStore interface {
	// CreateRun writes the run record (status running) and the initial
	// context keys, atomically: if a run with that id exists it returns
	// ErrRunExists and writes nothing.
	CreateRun(ctx context.Context, run RunRecord, initial map[string]any) error
	// GetRun reads a run record; ErrRunNotFound if there is none, or if
	// its expiry (ExpireRun) is at or before the current time.
	GetRun(ctx context.Context, runID string) (*RunRecord, error)
	// FinishRun moves a running run to status (completed, failed or
	// cancelled) with reason and failedNode, once: if the run is not running it
	// returns ErrRunFinished and changes nothing.
	FinishRun(ctx context.Context, runID string, status RunState, reason, failedNode string, at time.Time) error

	// AcquireNode takes the execution lease of a node for owner until the
	// given time and counts one more attempt, then returns the record. The
	// lease is free when absent, expired at now, or held by owner.
	// Otherwise it returns the current record with ErrNodeCommitted (the node
	// was committed or skipped), ErrNodeClosed, ErrNodeFailed, ErrNodeWaiting,
	// or a *LeaseHeldError.
	AcquireNode(ctx context.Context, runID, nodeID, owner string, until, now time.Time) (*NodeRecord, error)
	// ExtendLease moves the lease expiry of a node held by owner; ErrLeaseLost
	// if owner does not hold it (or the node is no longer pending).
	ExtendLease(ctx context.Context, runID, nodeID, owner string, until time.Time) error
	// ReleaseLease gives up owner's lease on a pending node, keeping its
	// attempt count. Releasing a lease not held is not an error.
	ReleaseLease(ctx context.Context, runID, nodeID, owner string) error
	// CommitNode writes the node's outcome and its context writes atomically,
	// once. If the node is already committed or skipped it returns the
	// existing record with ErrNodeCommitted, except that a commit identical
	// to the existing one (same Output, Action, Taken, Staged and Fallback)
	// succeeds, so that a retried commit whose first response was lost is
	// not reported as a conflict; it then returns the existing record and
	// writes nothing. If the node is closed it returns the record with
	// ErrNodeClosed; if it failed, with ErrNodeFailed; if it waits, with
	// ErrNodeWaiting (only ResumeNode commits a waiting node), and writes
	// nothing.
	CommitNode(ctx context.Context, runID string, c NodeCommit) (*NodeRecord, error)
	// SuspendNode makes a pending node whose lease owner holds wait: the
	// record becomes NodeWaiting with w, its lease is dropped (its attempt
	// count kept), and the node joins its run's Waiting set, atomically. A
	// node already waiting is returned as it is, with no error (its first
	// Wait kept). Otherwise the record comes back with ErrNodeCommitted
	// (committed or skipped), ErrNodeClosed, ErrNodeFailed, or ErrLeaseLost
	// (pending, absent, or leased by another owner) and nothing is written;
	// ErrRunNotFound if the run has no record. An absent node has no record
	// (nil).
	SuspendNode(ctx context.Context, runID, nodeID, owner string, w Wait) (*NodeRecord, error)
	// ResumeNode commits the outcome of a waiting node, as CommitNode does,
	// and removes the node from its run's Waiting set, atomically, once: it
	// is conditional on the node waiting. A commit identical to the
	// existing one (Token included) succeeds and writes nothing, so that a
	// retried call whose response was lost is not refused; any other call on
	// a node that is not waiting returns its record with ErrNodeCommitted,
	// ErrNodeClosed or ErrNodeFailed, or ErrNotWaiting (pending or absent,
	// with a nil record). A node committed by CommitNode was never resumed:
	// ErrNodeCommitted, whatever the commit.
	ResumeNode(ctx context.Context, runID string, c NodeCommit) (*NodeRecord, error)
	// WakeNode takes a waiting node back to pending, leased by owner until
	// the given time, if it waits after exactly attempts attempts (so a
	// caller that decided on one suspension never wakes a later one): the
	// node leaves its run's Waiting set and keeps its attempt count and its
	// Wait, atomically, and the record comes back. A node already pending,
	// leased by owner, with that attempt count is returned as it is (a retry
	// whose response was lost). Otherwise nothing is written and the record
	// comes back with ErrNodeCommitted (committed or skipped), ErrNodeClosed,
	// ErrNodeFailed, or ErrNotWaiting (waiting after another number of
	// attempts, pending for another owner, or absent with a nil record).
	WakeNode(ctx context.Context, runID, nodeID, owner string, attempts int, until time.Time) (*NodeRecord, error)
	// FailNode marks a node failed for good with reason, once: a pending or
	// absent node becomes failed (its lease is dropped, its attempt count
	// kept) and the record is returned. A node already failed is returned as
	// it is, with no error (its first reason kept). A committed or skipped
	// node returns its record with ErrNodeCommitted; a closed node returns
	// its record with ErrNodeClosed; a waiting node returns its record with
	// ErrNodeWaiting (it is not running: its suspension stands).
	FailNode(ctx context.Context, runID, nodeID, reason string) (*NodeRecord, error)
	// SkipNodes marks nodes resolved without running. Idempotent; a
	// committed, closed, failed or waiting node is left as it is.
	SkipNodes(ctx context.Context, runID string, nodeIDs []string) error
	// CloseNodes marks every listed node that is not committed, skipped or
	// failed as closed, so that it never runs (a waiting node too: it can no
	// longer be resumed, and it leaves its run's Waiting set). Idempotent.
	CloseNodes(ctx context.Context, runID string, nodeIDs []string) error
	// GetNodes reads node records; absent nodes are absent from the map.
	GetNodes(ctx context.Context, runID string, nodeIDs []string) (map[string]*NodeRecord, error)
	// ListNodes reads every node record of a run, whatever its state.
	ListNodes(ctx context.Context, runID string) (map[string]*NodeRecord, error)
	// ListRunning lists running runs created before createdBefore, oldest
	// first, at most limit per call (100 when limit <= 0); pass next back as
	// cursor to continue ("" starts; next is "" at the end; a page may hold
	// fewer than limit runs before the end). A cursor the store did not make
	// fails with an error matching ErrInvalidCursor. It reads only
	// running runs (an index), so its cost follows their number; the listing
	// may lag creations and finishes slightly, so callers re-check a run with
	// GetRun before acting on it.
	ListRunning(ctx context.Context, createdBefore time.Time, cursor string, limit int) (runs []RunRecord, next string, err error)

	// Get reads a context key. "_outputs.<nodeId>" reads the committed output
	// of a node. ok is false when the key is absent.
	Get(ctx context.Context, runID, key string) (value any, ok bool, err error)
	// GetMany reads several keys in one round trip; absent keys are absent
	// from the map.
	GetMany(ctx context.Context, runID string, keys []string) (map[string]any, error)
	// Set writes a context key.
	Set(ctx context.Context, runID, key string, value any) error
	// Delete removes a context key and reports whether it existed.
	Delete(ctx context.Context, runID, key string) (bool, error)
	// Patch applies several sets and deletes atomically.
	Patch(ctx context.Context, runID string, sets map[string]any, deletes []string) error
	// Snapshot returns the whole context of a run: every key, and
	// "_outputs.<nodeId>" for every committed node (Flowcraft's toJSON).
	Snapshot(ctx context.Context, runID string) (map[string]any, error)

	// ExpireRun sets the expiry of every item of a run — its context keys,
	// its node records, and its run record last — to at (on DynamoDB the
	// TTL attribute "ttl", in epoch seconds rounded up). An item deleted
	// meanwhile is not written again. From at on, GetRun treats the run as
	// absent (ErrRunNotFound), even while the backing store still holds it
	// (DynamoDB deletes expired items lazily, up to days later). Items
	// written after the call carry no expiry, and an item's later expiry
	// is kept (a deleted run's tombstones outlive a late call). It does not
	// look at the run's status. Idempotent; ErrRunNotFound if there is no
	// run record or it is a tombstone (DeleteRun); an expired one that is
	// still stored counts as a record.
	ExpireRun(ctx context.Context, runID string, at time.Time) error
	// DeleteRun deletes a run's data at once and leaves tombstones that
	// expire at until: its context keys are deleted; each node record
	// becomes a tombstone, NodeClosed and holding nothing else, so that a
	// late job of the run finds its node closed instead of running it
	// again on a record it would create; last, the run record becomes a
	// tombstone of status StatusDeleted, absent to GetRun and ListRunning
	// but holding the id against CreateRun (ErrRunExists) until it
	// expires. A call stopped midway can be repeated. It does not look at
	// the run's status (callers do). ErrRunNotFound if there is no run
	// record or it is a tombstone already (the other items are handled all
	// the same); a repeated call returns ErrRunNotFound.
	DeleteRun(ctx context.Context, runID string, until time.Time) error
}
