package sqsadapter

import "github.com/flowcraft/sqsadapter/store"

// ContextStore holds run contexts, node records and run records:
// DynamoDbContext on AWS, sqsadaptertest.ContextStore in memory. Package
// store defines it with the records it exchanges, for implementers.
type ContextStore = store.ContextStore

// CoordinationStore holds fan-in join records: DynamoDbCoordinationStore on
// AWS, sqsadaptertest.CoordinationStore in memory. Package store defines it.
type CoordinationStore = store.CoordinationStore

// RunState is a run's status: StatusRunning, StatusCompleted, StatusFailed
// or StatusCancelled.
type RunState = store.RunState

// Run statuses.
const (
	StatusRunning   = store.StatusRunning
	StatusCompleted = store.StatusCompleted
	StatusFailed    = store.StatusFailed
	StatusCancelled = store.StatusCancelled
	// StatusAwaiting is reported by GetRun for a running run whose only
	// remaining work is nodes that wait (ResumeRun, a webhook, a timer).
	StatusAwaiting = store.StatusAwaiting
)
