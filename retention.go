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

// DeleteRun deletes a finished run: its run record, its context and its
// node records (ContextStore.DeleteRun). A run that is still running is
// refused with an error matching store.ErrRunNotFinished (cancel it
// first); an unknown run, or one expired by Tuning.Retention, is an error
// matching ErrRunNotFound, so a repeated DeleteRun returns ErrRunNotFound.
// A deletion cut short leaves the run record, deleted last: call it again.
//
// It does not touch other runs: a subflow's child run is a run of its own
// (its id is in the subflow node's record), deleted by its own DeleteRun or
// expired by its own retention. Join records are left to expire on their
// own (Tuning.CoordinationTTL). A job message of the run still in the queue
// finds no records and runs its node again, as for an expired run; delete
// runs whose messages are gone, or use WithRunCheck.
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
	if err := a.cfg.contexts.DeleteRun(ctx, runID); err != nil {
		return fmt.Errorf("sqsadapter: delete run %q: %w", runID, err)
	}
	return nil
}
