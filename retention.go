package sqsadapter

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/flowcraft/sqsadapter/store"
)

// expireRun gives every item of finished run runID its expiry: finishedAt
// plus Tuning.Retention (ContextStore.ExpireRun). It does nothing without
// a retention, so that a worker without one makes no request for it. A
// zero finishedAt means that another call finished the run (a replay, a
// repeated CancelRun): the finish time is read from the run record, so that
// every path sets the same expiry. A run that is absent (expired or
// deleted already) needs none. It is idempotent. A run record that has an
// expiry already is expired again all the same: a late handling of the run
// (a duplicate, a stray job) may have written records since, and this is
// where they get theirs (the randomized protocol test's strays show it).
func (a *SqsAdapter) expireRun(ctx context.Context, runID string, finishedAt time.Time) error {
	if a.cfg.retention <= 0 {
		return nil
	}
	if finishedAt.IsZero() {
		rec, err := a.cfg.contexts.GetRun(ctx, runID)
		switch {
		case errors.Is(err, ErrRunNotFound):
			return nil
		case err != nil:
			return fmt.Errorf("sqsadapter: read finished run %q: %w", runID, err)
		case rec.Status == StatusRunning:
			return nil // not finished: nothing expires
		}
		finishedAt = rec.FinishedAt
	}
	// The store keeps the finish time to the millisecond: the expiry set
	// here is the one a later call computes from the record.
	at := finishedAt.Truncate(time.Millisecond).Add(a.cfg.retention)
	if err := a.cfg.contexts.ExpireRun(ctx, runID, at); err != nil && !errors.Is(err, ErrRunNotFound) {
		return fmt.Errorf("sqsadapter: set the retention of run %q: %w", runID, err)
	}
	return nil
}

// tombstoneTTL is how long a deleted run's tombstones are kept: longer
// than SQS keeps a message (14 days at most), so that no job of the run can
// arrive after them and run its node again on records it would create.
const tombstoneTTL = 15 * 24 * time.Hour

// DeleteRun deletes a finished run's data at once: its context keys, its
// node outputs and its run record (ContextStore.DeleteRun). Small
// tombstones stay for 15 days, longer than SQS keeps a message, and then
// expire through the tables' TTL: each node record is kept closed and
// empty, so that a late job of the run (a redelivered or redriven message)
// is dropped instead of running its node again, and the run record is kept
// as a tombstone, so that its id is not reused meanwhile (StartRun with it
// fails with an error matching ErrRunExists). To GetRun, WaitForRun and
// ListRuns a deleted run is absent (ErrRunNotFound), so a repeated
// DeleteRun returns ErrRunNotFound, as it does for an unknown run or one
// expired by Tuning.Retention. A deletion cut short leaves the run record,
// rewritten last: call it again.
//
// A run that is still running is refused with an error matching
// store.ErrRunNotFinished (cancel it first), and so is a subflow's child
// run while its parent runs (its parent reads its end from it). A child
// run is a run of its own: deleting a parent leaves its children, deleted
// by their own DeleteRun or expired by their own retention. Join records
// expire on their own (Tuning.CoordinationTTL).
//
// It blocks for the store's calls (a Query page per 1 MB of keys and a
// BatchWriteItem per 25 items on DynamoDB) and is safe for concurrent use.
func (a *SqsAdapter) DeleteRun(ctx context.Context, runID string) error {
	ctx, end := a.operation(ctx, "DeleteRun", "")
	err := a.deleteRun(ctx, runID)
	end(runID, err)
	return err
}

func (a *SqsAdapter) deleteRun(ctx context.Context, runID string) error {
	rec, err := a.cfg.contexts.GetRun(ctx, runID)
	if err != nil {
		return fmt.Errorf("sqsadapter: delete run %q: %w", runID, err)
	}
	if rec.Status == StatusRunning {
		return fmt.Errorf("sqsadapter: delete run %q: %w: cancel it first", runID, store.ErrRunNotFinished)
	}
	if pr := rec.Parent; pr != nil {
		// The parent's subflow node reads its child's end from the child's
		// records, possibly after the child finished: deleted, the child
		// would be started again.
		parent, err := a.cfg.contexts.GetRun(ctx, pr.RunID)
		switch {
		case errors.Is(err, ErrRunNotFound):
		case err != nil:
			return fmt.Errorf("sqsadapter: delete run %q: read its parent run: %w", runID, err)
		case parent.Status == StatusRunning:
			return fmt.Errorf("sqsadapter: delete run %q: %w: it is a child of run %q, which is still running", runID, store.ErrRunNotFinished, pr.RunID)
		}
	}
	if err := a.cfg.contexts.DeleteRun(ctx, runID, time.Now().Add(tombstoneTTL)); err != nil {
		return fmt.Errorf("sqsadapter: delete run %q: %w", runID, err)
	}
	return nil
}
