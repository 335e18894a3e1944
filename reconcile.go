package sqsadapter

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/flowcraft/sqsadapter/store"
)

// ReconcileStats counts what one reconciliation pass did.
type ReconcileStats struct {
	Scanned int // running runs older than the threshold that were examined
	Stalled int // runs found without progress for the threshold
	Jobs    int // jobs re-enqueued
	Errors  int // runs that could not be examined or repaired (logged)
}

// Reconcile makes one pass over the running runs and repairs the stalled
// ones: runs created more than threshold ago whose node records show no
// progress for threshold and no node running (no live lease). For each, it
// re-enqueues the run's frontier: start nodes that have not run, nodes
// that were started and abandoned, and committed nodes whose consequences
// may be incomplete — a replay of a committed node re-sends only what its
// stored routing decision, its joins and its successors' records say is
// missing, so conditions and joins are respected and nothing runs twice.
//
// It reads only running runs, through the store's index, a page at a time:
// its cost follows the number of running runs, not the size of the tables.
// It blocks until the pass is done and is safe for concurrent use; several
// reconcilers at once only duplicate jobs, which the protocol absorbs.
// Lost work it repairs: jobs whose messages were lost (deleted by hand,
// expired with the queue's retention period, or dead-lettered).
func (a *SqsAdapter) Reconcile(ctx context.Context, threshold time.Duration) (ReconcileStats, error) {
	var st ReconcileStats
	if threshold <= 0 {
		return st, fmt.Errorf("%w: reconcile threshold %v must be positive", ErrInvalidOption, threshold)
	}
	now := time.Now()
	cursor := ""
	for page := 0; page < maxReconcilePages; page++ {
		runs, next, err := a.cfg.contexts.ListRunning(ctx, now.Add(-threshold), cursor, 100)
		if err != nil {
			return st, fmt.Errorf("sqsadapter: reconcile: list running runs: %w", err)
		}
		for i := range runs {
			st.Scanned++
			n, stalled, err := a.reconcileRun(ctx, &runs[i], now, threshold)
			switch {
			case err != nil:
				st.Errors++
				a.log.WarnContext(ctx, "sqsadapter: reconcile run", "run_id", runs[i].RunID, "err", err)
			case stalled:
				st.Stalled++
				st.Jobs += n
			}
		}
		if next == "" {
			return st, nil
		}
		cursor = next
	}
	return st, fmt.Errorf("sqsadapter: reconcile: more than %d pages of running runs", maxReconcilePages)
}

const maxReconcilePages = 10000

// RunReconciler calls Reconcile every interval until ctx is done, then
// returns ctx's error. Failed passes are logged and retried at the next
// interval. Run it in one or a few processes.
func (a *SqsAdapter) RunReconciler(ctx context.Context, interval, threshold time.Duration) error {
	if interval <= 0 || threshold <= 0 {
		return fmt.Errorf("%w: reconciler interval %v and threshold %v must be positive", ErrInvalidOption, interval, threshold)
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		st, err := a.Reconcile(ctx, threshold)
		if err != nil && ctx.Err() == nil {
			a.log.WarnContext(ctx, "sqsadapter: reconcile pass failed", "err", err)
		} else if st.Stalled > 0 {
			a.log.InfoContext(ctx, "sqsadapter: reconciled stalled runs", "stalled", st.Stalled, "jobs", st.Jobs, "scanned", st.Scanned)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// reconcileRun repairs one run if it is stalled, returning how many jobs it
// enqueued.
func (a *SqsAdapter) reconcileRun(ctx context.Context, run *store.RunRecord, now time.Time, threshold time.Duration) (int, bool, error) {
	p := a.plans[planKey{run.BlueprintID, run.BlueprintVersion}]
	if p == nil {
		return 0, false, fmt.Errorf("%w: %q version %q", ErrUnknownBlueprint, run.BlueprintID, run.BlueprintVersion)
	}
	recs, err := a.cfg.contexts.ListNodes(ctx, run.RunID)
	if err != nil {
		return 0, false, err
	}
	last := run.CreatedAt
	for _, r := range recs {
		if r.State == store.NodePending && r.LeaseUntil.After(now) {
			return 0, false, nil // a node is running
		}
		if r.UpdatedAt.After(last) {
			last = r.UpdatedAt
		}
	}
	if now.Sub(last) < threshold {
		return 0, false, nil
	}
	// The index is eventually consistent: make sure the run still runs.
	fresh, err := a.cfg.contexts.GetRun(ctx, run.RunID)
	if errors.Is(err, ErrRunNotFound) {
		return 0, false, nil // finished and deleted (or expired) since the listing
	}
	if err != nil {
		return 0, false, err
	}
	if fresh.Status != StatusRunning {
		return 0, false, nil
	}
	jobs := frontier(p, recs, run.RunID, now.Add(-a.cfg.visibilityTimeout))
	more, err := a.childrenDone(ctx, p, recs, run.RunID)
	if err != nil {
		return 0, false, err
	}
	jobs = append(jobs, more...)
	if len(jobs) == 0 && len(fresh.Waiting) > 0 {
		return 0, false, nil // awaiting: idle by design, not stalled
	}
	if len(jobs) == 0 {
		// Nothing is left to run: the job that resolved the last leaf
		// stopped before it completed the run (its message lost). Complete
		// it here, on the same condition the jobs check.
		return 0, true, a.completeIfDone(ctx, p, run.RunID, recs)
	}
	if err := a.send(ctx, jobs...); err != nil {
		return 0, true, err
	}
	a.log.InfoContext(ctx, "sqsadapter: re-enqueued the frontier of a stalled run", "run_id", run.RunID, "jobs", len(jobs), "idle", now.Sub(last))
	return len(jobs), true, nil
}

// frontier lists the jobs that make a stalled run progress again. A node
// that waits needs none — it is resumed from outside — except a sleep whose
// wake-up time passed before overdue: its timer's message was lost.
//
// Batch items are no plan nodes, and need no case of their own: a lost
// item, page or gather job, or an item's arrivals cut short, leave the
// committed scatter with its gather unresolved, so the scatter is
// re-enqueued like any committed node with an unresolved target, and its
// replay repairs the rest (batchmap.go, sendPage). Their records count
// as progress in reconcileRun (a live lease, a recent update).
func frontier(p *plan, recs map[string]*store.NodeRecord, runID string, overdue time.Time) []Job {
	job := func(n *planNode) Job {
		return Job{RunID: runID, BlueprintID: p.id, NodeID: n.def.ID, BlueprintVersion: p.version, Iter: n.iter}
	}
	done := func(id string) bool {
		r := recs[id]
		return r != nil && r.State != store.NodePending
	}
	var jobs []Job
	consider := func(n *planNode, r *store.NodeRecord) {
		switch {
		case r == nil:
			if n.start {
				jobs = append(jobs, job(n)) // never ran
			}
		case r.State == store.NodePending:
			jobs = append(jobs, job(n)) // started, then abandoned
		case r.State == store.NodeFailed:
			jobs = append(jobs, job(n)) // failed for good; the run was not marked failed yet
		case r.State == store.NodeWaiting:
			if r.Wait != nil && r.Wait.Reason == reasonTimer && r.Wait.WakeAt.Before(overdue) {
				jobs = append(jobs, job(n)) // wakes it
			}
		case r.State == store.NodeCommitted:
			replay := n.leaf // the completion check may not have run
			for _, t := range n.followers(r) {
				replay = replay || !done(t.id) || t.join == "any"
			}
			if n.builtin == builtinLoop && !n.loop.exits && !slices.ContainsFunc(r.Taken, func(id string) bool { return id == iterID(n.loop.start, n.iter+1) }) {
				replay = replay || !done(loopDone(n.loop.id)) // the loop's end decides completion
			}
			if replay {
				jobs = append(jobs, job(n))
			}
		}
	}
	for _, n := range p.order {
		if !n.fallbackOnly {
			consider(n, recs[n.id])
		}
	}
	// A loop's later passes have records of their own.
	for _, rid := range slices.Sorted(maps.Keys(recs)) {
		if _, _, ok := parseIterID(rid); ok {
			if n := p.recordNode(rid); n != nil {
				consider(n, recs[rid])
			}
		}
	}
	return jobs
}

// childrenDone lists the jobs of the waiting subflow nodes of a stalled run
// whose child is finished (the message that tells the node was lost) or
// was never created (the node's job was lost before it created it). A
// node whose child still runs needs none: it waits by design.
func (a *SqsAdapter) childrenDone(ctx context.Context, p *plan, recs map[string]*store.NodeRecord, runID string) ([]Job, error) {
	var jobs []Job
	for _, n := range p.order {
		r := recs[n.id]
		if n.subflow == nil || r == nil || r.State != store.NodeWaiting {
			continue
		}
		child, err := a.cfg.contexts.GetRun(ctx, waitChild(r.Wait))
		if err != nil && !errors.Is(err, ErrRunNotFound) {
			return nil, err
		}
		if err != nil || child.Status != StatusRunning {
			jobs = append(jobs, Job{RunID: runID, BlueprintID: p.id, NodeID: n.id, BlueprintVersion: p.version})
		}
	}
	return jobs, nil
}

// completeIfDone completes a running run whose leaves are all resolved and
// whose "any" joins have heard from every predecessor (the condition of
// docs/protocol.md), and does nothing otherwise.
func (a *SqsAdapter) completeIfDone(ctx context.Context, p *plan, runID string, recs map[string]*store.NodeRecord) error {
	for _, l := range p.leaves {
		if r := recs[l.id]; r == nil || (r.State != store.NodeCommitted && r.State != store.NodeSkipped) {
			return nil
		}
	}
	if len(p.anyJoins) > 0 {
		keys := make([]string, len(p.anyJoins))
		for i, j := range p.anyJoins {
			keys[i] = joinKey(runID, j.id)
		}
		sts, err := a.cfg.coord.GetJoins(ctx, keys)
		if err != nil {
			return err
		}
		for i, j := range p.anyJoins {
			if st := sts[keys[i]]; st == nil || len(st.Arrived) < len(j.preds) {
				return nil
			}
		}
	}
	at := time.Now()
	err := a.cfg.contexts.FinishRun(ctx, runID, StatusCompleted, "", "", at)
	if err != nil && !errors.Is(err, ErrRunFinished) {
		return fmt.Errorf("sqsadapter: complete run %q: %w", runID, err)
	}
	if err == nil {
		a.log.InfoContext(ctx, "sqsadapter: run completed by the reconciler", "run_id", runID)
	} else {
		at = time.Time{} // finished meanwhile, at another time
	}
	if err := a.notifyParent(ctx, runID, err == nil); err != nil {
		return err
	}
	return a.expireRun(ctx, runID, at)
}
