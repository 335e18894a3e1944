package sqsadapter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/flowcraft/sqsadapter/internal/jsonvalue"
	"github.com/flowcraft/sqsadapter/store"
)

// RunStatus is a run's status as GetRun and WaitForRun report it. It
// marshals to JSON with the field names below; zero times and empty fields
// are omitted.
type RunStatus struct {
	RunID            string         `json:"runId"`
	BlueprintID      string         `json:"blueprintId"`
	BlueprintVersion string         `json:"blueprintVersion,omitempty"`
	Status           RunState       `json:"status"`
	Context          map[string]any `json:"context,omitempty"`    // the context when finished: initial keys, node-written keys, "_outputs.<nodeId>"
	Error            string         `json:"error,omitempty"`      // why it failed: node id and message
	FailedNode       string         `json:"failedNode,omitempty"` // the node that failed the run
	CreatedAt        time.Time      `json:"createdAt"`
	FinishedAt       time.Time      `json:"finishedAt,omitzero"` // zero while running
	// Nodes gives the state of every node that has a record: those that
	// ran, run or wait to run again, and those resolved without running.
	// A node not yet reached is absent. GetRun and WaitForRun fill it;
	// ListRuns does not.
	Nodes map[string]NodeStatus `json:"nodes,omitempty"`
	// Parent is the subflow node that started this run, for a child run.
	Parent *store.ParentRef `json:"parent,omitempty"`
	// Children are the child runs started by the run's subflow nodes, the
	// latest attempt's of each node, sorted (GetRun and WaitForRun).
	Children []string `json:"children,omitempty"`

	waiting []string                     // the run record's waiting nodes
	records map[string]*store.NodeRecord // the node records, when read with the context
}

// NodeStatus is one node of a run, as RunStatus.Nodes reports it.
type NodeStatus struct {
	// State is "running" (an attempt holds the node's lease), "retrying"
	// (attempted, not finished, no live lease: its job is waiting to be
	// received again), "completed", "skipped" (every edge into it was
	// dead), "failed" (failed for good), or "closed" (its run finished
	// before it ran).
	State string `json:"state"`
	// Attempts counts the attempts started, a crashed one included.
	Attempts int `json:"attempts"`
	// LeaseOwner and LeaseUntil name the worker running it ("running").
	LeaseOwner string    `json:"leaseOwner,omitempty"`
	LeaseUntil time.Time `json:"leaseUntil,omitzero"`
	// Fallback is the fallback node whose output it committed, if one ran.
	Fallback string `json:"fallback,omitempty"`
	// Error is why it failed ("failed").
	Error string `json:"error,omitempty"`
	// Wait is why it waits ("waiting": for ResumeRun, a webhook delivery or
	// its timer) or waited: the reason, the wake-up time of a sleep, the
	// id of a webhook.
	Wait *store.Wait `json:"wait,omitempty"`
	// UpdatedAt is when its record last changed.
	UpdatedAt time.Time `json:"updatedAt,omitzero"`
	// Iterations is, for a node of a loop that ran more than one pass,
	// how many passes have a record of it (Attempts and State are the
	// latest pass's).
	Iterations int `json:"iterations,omitempty"`
	// BatchItems, BatchCompleted and BatchFailed are a committed
	// batch-scatter node's progress (a map node's is its "<id>_scatter"):
	// its items, those whose output is committed, and those that failed
	// for good. The items themselves are no nodes and are not listed.
	BatchItems     int `json:"batchItems,omitempty"`
	BatchCompleted int `json:"batchCompleted,omitempty"`
	BatchFailed    int `json:"batchFailed,omitempty"`
}

// Finished reports whether the run reached a final status.
func (s *RunStatus) Finished() bool {
	return s.Status == StatusCompleted || s.Status == StatusFailed || s.Status == StatusCancelled
}

// RunOption configures StartRun.
type RunOption func(*runOptions)

type runOptions struct {
	runID         string
	version       *string
	untilAwaiting bool
}

// UntilAwaiting makes WaitForRun return also when the run is awaiting: its
// only remaining work is nodes that wait for ResumeRun, a webhook or a
// timer. Without it WaitForRun waits through that.
func UntilAwaiting() RunOption { return func(o *runOptions) { o.untilAwaiting = true } }

// WithRunID sets the run id, which makes StartRun idempotent: starting a run
// with an id that exists returns (id, nil) and starts nothing new.
func WithRunID(id string) RunOption { return func(o *runOptions) { o.runID = id } }

// WithBlueprintVersion starts the run on a given registered version of the
// blueprint instead of the one registered last.
func WithBlueprintVersion(v string) RunOption { return func(o *runOptions) { o.version = &v } }

// StartRun creates a run of a registered blueprint with the initial context
// and enqueues its start nodes. It blocks until both are durable and is
// safe for concurrent use. A start node without "inputs" receives the
// initial key "_inputs.<nodeId>" as its input, if present.
//
// With WithRunID, a run that already exists is not started again: StartRun
// returns (id, nil), after re-enqueueing any start node that has not run yet
// (so a StartRun that failed halfway can simply be repeated).
func (a *SqsAdapter) StartRun(ctx context.Context, blueprintID string, initial map[string]any, opts ...RunOption) (string, error) {
	ctx, end := a.operation(ctx, "StartRun", blueprintID)
	runID, err := a.startRun(ctx, blueprintID, initial, opts...)
	end(runID, err)
	return runID, err
}

func (a *SqsAdapter) startRun(ctx context.Context, blueprintID string, initial map[string]any, opts ...RunOption) (string, error) {
	var o runOptions
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	p := a.latest[blueprintID]
	if o.version != nil {
		p = a.plans[planKey{blueprintID, *o.version}]
	}
	if p == nil {
		return "", fmt.Errorf("%w: %q", ErrUnknownBlueprint, blueprintID)
	}
	runID := o.runID
	if runID == "" {
		runID = randomID()
	}
	if err := checkID("run id", runID); err != nil {
		return "", fmt.Errorf("%w: %v", ErrInvalidOption, err)
	}
	if strings.HasPrefix(runID, childRunPrefix) {
		return "", fmt.Errorf("%w: run id %q: ids beginning with %q are those of subflows' child runs", ErrInvalidOption, runID, childRunPrefix)
	}
	values := make(map[string]any, len(initial))
	for k, v := range initial {
		if err := checkContextKey(k); err != nil {
			return "", err
		}
		nv, err := jsonvalue.Normalize(v)
		if err != nil {
			return "", fmt.Errorf("sqsadapter: initial context key %q: %w", k, err)
		}
		values[k] = nv
	}
	at := time.Now()
	if err := a.launch(ctx, p, runID, values, nil); err != nil {
		return "", err
	}
	a.runTimes.start(runID, planKey{p.id, p.version}, at)
	a.log.InfoContext(ctx, "sqsadapter: run started", "run_id", runID, "blueprint_id", p.id, "version", p.version)
	return runID, nil
}

// launch creates run runID of plan p with the initial context values (its
// parent, for a child run) and sends its start jobs. A run that exists
// already is not created again: launch re-sends the jobs of its start
// nodes that have not run yet, if it is still running.
func (a *SqsAdapter) launch(ctx context.Context, p *plan, runID string, values map[string]any, parent *store.ParentRef) error {
	rec := store.RunRecord{RunID: runID, BlueprintID: p.id, BlueprintVersion: p.version, Status: StatusRunning, CreatedAt: time.Now(), Parent: parent}
	err := a.cfg.contexts.CreateRun(ctx, rec, values)
	created, pending := err == nil, p.starts
	switch {
	case err == nil:
	case errors.Is(err, store.ErrRunExists):
		existing, gerr := a.cfg.contexts.GetRun(ctx, runID)
		if errors.Is(gerr, ErrRunNotFound) {
			// Its run record is a deleted run's tombstone, or an expired run
			// DynamoDB has not removed yet: its node records would be taken
			// for this run's.
			return fmt.Errorf("%w: run id %q belongs to a run that was deleted or has expired; use another id", store.ErrRunExists, runID)
		}
		if gerr != nil {
			return fmt.Errorf("sqsadapter: start run %q: %w", runID, gerr)
		}
		if existing.BlueprintID != p.id {
			return fmt.Errorf("%w: run %q exists with blueprint %q", store.ErrRunExists, runID, existing.BlueprintID)
		}
		if parent != nil && (existing.Parent == nil || existing.Parent.RunID != parent.RunID || existing.Parent.NodeID != parent.NodeID) {
			return fmt.Errorf("sqsadapter: start child run %q: %w", runID, errNotChild)
		}
		if existing.Status != StatusRunning {
			return nil
		}
		if p = a.plans[planKey{existing.BlueprintID, existing.BlueprintVersion}]; p == nil {
			return nil // another version's worker will see it through
		}
		if parent != nil {
			// A child's start jobs were sent once this marker exists: its
			// parent node's job comes back while the child runs, and must
			// not send them again each time.
			if _, sent, gerr := a.cfg.coord.Get(ctx, startedKey(runID)); gerr != nil || sent {
				return gerr
			}
		}
		if pending, err = a.unstarted(ctx, runID, p, parent == nil); err != nil {
			return fmt.Errorf("sqsadapter: start run %q: %w", runID, err)
		}
	default:
		return fmt.Errorf("sqsadapter: start run %q: %w", runID, err)
	}
	jobs := make([]Job, 0, len(pending))
	for _, n := range pending {
		j := Job{RunID: runID, BlueprintID: p.id, NodeID: n.id, BlueprintVersion: p.version}
		// A repeated start carries no input: the run's input is the one
		// stored by the call that created it, read by the node.
		if created && n.def.Inputs == nil && a.cfg.maxInlineInput > 0 {
			v := values["_inputs."+n.id] // nil when absent: no input
			if b, err := json.Marshal(v); err == nil && len(b) <= a.cfg.maxInlineInput {
				j.Input = b
			}
		}
		jobs = append(jobs, j)
	}
	if err := a.send(ctx, jobs...); err != nil {
		return fmt.Errorf("sqsadapter: start run %q: enqueue start nodes (repeat StartRun with WithRunID(%q) to resume): %w", runID, runID, err)
	}
	if parent != nil {
		if _, err := a.cfg.coord.SetIfNotExist(ctx, startedKey(runID), "sent", a.cfg.coordinationTTL); err != nil {
			return fmt.Errorf("sqsadapter: start child run %q: mark its start jobs sent: %w", runID, err)
		}
	}
	return nil
}

// startedKey names the coordination record that says a child run's start
// jobs were sent.
func startedKey(runID string) string { return "flowcraft:started:" + keyEscaper.Replace(runID) }

// unstarted lists the start nodes of a run that have no record yet, and,
// with attempted, those attempted and not finished (pending). A child run's
// start nodes are re-sent only when they have no record: its parent node's
// job looks at a running child each time the job is delivered again, and
// re-sending a running node's job each time would fill the queue with
// duplicates.
func (a *SqsAdapter) unstarted(ctx context.Context, runID string, p *plan, attempted bool) ([]*planNode, error) {
	ids := make([]string, len(p.starts))
	for i, n := range p.starts {
		ids[i] = n.id
	}
	recs, err := a.cfg.contexts.GetNodes(ctx, runID, ids)
	if err != nil {
		return nil, err
	}
	var out []*planNode
	for _, n := range p.starts {
		if r := recs[n.id]; r == nil || (attempted && r.State == store.NodePending) {
			out = append(out, n)
		}
	}
	return out, nil
}

// GetRun reports a run's status and the state of each of its nodes, with
// its whole context once it has finished. It does not block beyond the
// reads (the run record, the node records, and the context when finished)
// and is safe for concurrent use. An unknown run is an error matching
// ErrRunNotFound.
func (a *SqsAdapter) GetRun(ctx context.Context, runID string) (*RunStatus, error) {
	st, err := a.getRun(ctx, runID)
	if err != nil {
		return nil, err
	}
	return st, a.addNodes(ctx, st)
}

// getRun reads the run record, and the context of a finished run.
func (a *SqsAdapter) getRun(ctx context.Context, runID string) (*RunStatus, error) {
	rec, err := a.cfg.contexts.GetRun(ctx, runID)
	if err != nil {
		return nil, fmt.Errorf("sqsadapter: get run %q: %w", runID, err)
	}
	st := runStatus(rec)
	if st.Finished() {
		if both, ok := a.cfg.contexts.(snapshotNodes); ok {
			st.Context, st.records, err = both.SnapshotNodes(ctx, runID)
		} else {
			st.Context, err = a.cfg.contexts.Snapshot(ctx, runID)
		}
		if err != nil {
			return nil, fmt.Errorf("sqsadapter: read context of run %q: %w", runID, err)
		}
		dropItemOutputs(st.Context) // batch items are no nodes (batchmap.go)
	}
	return st, nil
}

// snapshotNodes is a ContextStore that reads a run's context and node
// records in one call (DynamoDbContext, sqsadaptertest.ContextStore).
type snapshotNodes interface {
	SnapshotNodes(ctx context.Context, runID string) (map[string]any, map[string]*store.NodeRecord, error)
}

func runStatus(rec *store.RunRecord) *RunStatus {
	return &RunStatus{
		RunID: rec.RunID, BlueprintID: rec.BlueprintID, BlueprintVersion: rec.BlueprintVersion,
		Status: rec.Status, Error: rec.Error, FailedNode: rec.FailedNode,
		CreatedAt: rec.CreatedAt, FinishedAt: rec.FinishedAt, waiting: rec.Waiting, Parent: rec.Parent,
	}
}

// addNodes fills st.Nodes from the run's node records. A fallback's own
// attempt record is not a node of the blueprint: it is left out.
func (a *SqsAdapter) addNodes(ctx context.Context, st *RunStatus) error {
	recs := st.records
	if recs == nil {
		var err error
		if recs, err = a.cfg.contexts.ListNodes(ctx, st.RunID); err != nil {
			return fmt.Errorf("sqsadapter: read nodes of run %q: %w", st.RunID, err)
		}
	}
	now := time.Now()
	st.Nodes = make(map[string]NodeStatus, len(recs))
	// A loop's node is shown as of its latest pass, with the number of
	// passes that have its record; passes closed with a finished run, which
	// never ran, do not count.
	passes, latest := map[string]int{}, map[string]int{}
	for rid, r := range recs {
		if id, k, ok := parseIterID(rid); ok && r.State != store.NodeClosed {
			passes[id]++
			latest[id] = max(latest[id], k)
		}
	}
	for rid, r := range recs {
		if strings.HasSuffix(rid, fallbackSuffix) || isItemRecord(rid) || strings.HasSuffix(rid, loopDoneSuffix) {
			continue
		}
		id, k, iter := parseIterID(rid)
		if !iter {
			id = rid
		}
		if k != latest[id] {
			continue
		}
		ns := NodeStatus{Attempts: r.Attempts, Fallback: r.Fallback, Error: r.Error, UpdatedAt: r.UpdatedAt, Wait: r.Wait}
		if passes[id] > 0 {
			ns.Iterations = passes[id]
			if recs[id] != nil {
				ns.Iterations++
			}
		}
		if child := waitChild(r.Wait); child != "" {
			st.Children = append(st.Children, child)
		}
		switch r.State {
		case store.NodeCommitted:
			ns.State = "completed"
		case store.NodePending:
			ns.State = "retrying"
			if r.LeaseOwner != "" && r.LeaseUntil.After(now) {
				ns.State, ns.LeaseOwner, ns.LeaseUntil = "running", r.LeaseOwner, r.LeaseUntil
			}
		default:
			ns.State = r.State
		}
		st.Nodes[id] = ns
	}
	addBatchProgress(a.plans[planKey{st.BlueprintID, st.BlueprintVersion}], st.Nodes, recs)
	// Decided from the node records, read after the run record: the run
	// record's waiting set may name a node resumed in between.
	if st.Status == StatusRunning && slices.ContainsFunc(slices.Collect(maps.Values(recs)), func(r *store.NodeRecord) bool { return r.State == store.NodeWaiting }) {
		if p := a.plans[planKey{st.BlueprintID, st.BlueprintVersion}]; p != nil && !runnable(p, recs) {
			awaiting, err := a.childrenAwait(ctx, recs)
			if err != nil {
				return err
			}
			if awaiting {
				st.Status = StatusAwaiting
			}
		}
	}
	slices.Sort(st.Children)
	return nil
}

// childrenAwait reports whether the child run of every waiting subflow node
// among recs is awaiting: a run waits for its child as long as the child
// can move by itself (reference §4.4: awaiting propagates).
func (a *SqsAdapter) childrenAwait(ctx context.Context, recs map[string]*store.NodeRecord) (bool, error) {
	for _, r := range recs {
		child := waitChild(r.Wait)
		if r.State != store.NodeWaiting || child == "" {
			continue
		}
		st, err := a.GetRun(ctx, child)
		if errors.Is(err, ErrRunNotFound) {
			return false, nil // about to be created
		}
		if err != nil {
			return false, err
		}
		if st.Status != StatusAwaiting {
			return false, nil
		}
	}
	return true, nil
}

// WaitForRun blocks until the run is completed, failed or cancelled (or,
// with UntilAwaiting, awaiting), or ctx is done, polling its status, and
// returns it as GetRun does. It is safe for concurrent use.
//
// It reads the status first when the run is expected to finish: at once
// for a run it knows nothing of, else at 0.9 of the average duration of the
// completed runs of its blueprint version that this adapter waited for,
// counted from the run's creation (at most 5s ahead). After that it polls
// with a growing interval, from a tenth of that average (at least 10ms) to
// 1s. A client that starts and waits for each run with one adapter
// usually pays one or two reads of the run record per run.
func (a *SqsAdapter) WaitForRun(ctx context.Context, runID string, opts ...RunOption) (*RunStatus, error) {
	var o runOptions
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	wait, interval := a.runTimes.firstRead(runID, time.Now()), time.Duration(0)
	if wait > 0 && !a.sleep(ctx, wait) && ctx.Err() != nil {
		return nil, fmt.Errorf("sqsadapter: wait for run %q: %w", runID, context.Cause(ctx))
	}
	for {
		st, err := a.getRun(ctx, runID)
		if err != nil {
			return nil, err
		}
		if st.Finished() {
			a.runTimes.finished(st)
			return st, a.addNodes(ctx, st)
		}
		if o.untilAwaiting && len(st.waiting) > 0 {
			if err := a.addNodes(ctx, st); err != nil {
				return nil, err
			}
			if st.Status == StatusAwaiting {
				return st, nil
			}
		}
		wait, interval = a.runTimes.next(planKey{st.BlueprintID, st.BlueprintVersion}, st.CreatedAt, time.Now(), interval)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			// Say where the run stands: which nodes run or wait.
			if err := a.addNodes(context.WithoutCancel(ctx), st); err != nil {
				return st, context.Cause(ctx)
			}
			return st, fmt.Errorf("sqsadapter: wait for run %q: %w (%s)", runID, context.Cause(ctx), st.pending())
		case <-t.C:
		}
	}
}

// pending describes the nodes of an unfinished run that are running or
// waiting to run again, for errors.
func (s *RunStatus) pending() string {
	var parts []string
	for _, id := range slices.Sorted(maps.Keys(s.Nodes)) {
		n := s.Nodes[id]
		switch n.State {
		case "running":
			parts = append(parts, fmt.Sprintf("node %q running attempt %d on %s", id, n.Attempts, n.LeaseOwner))
		case "retrying":
			parts = append(parts, fmt.Sprintf("node %q waiting to retry after %d attempt(s)", id, n.Attempts))
		}
	}
	if len(parts) == 0 {
		return "no node running: its jobs are queued"
	}
	return strings.Join(parts, "; ")
}

// ListRuns lists running runs, oldest first: of blueprintID, or of every
// blueprint when it is "". It returns at most limit runs (100 when limit <=
// 0) and a cursor to pass back for the next page, "" after the last. It
// reads an index of running runs (no table scan), so its cost follows their
// number; a run that finishes meanwhile may still be listed. Listed runs
// have no Context and no Nodes: call GetRun for those.
func (a *SqsAdapter) ListRuns(ctx context.Context, blueprintID, cursor string, limit int) ([]*RunStatus, string, error) {
	if limit <= 0 {
		limit = 100
	}
	var out []*RunStatus
	for {
		recs, next, err := a.cfg.contexts.ListRunning(ctx, time.Now(), cursor, limit-len(out))
		if err != nil {
			return nil, "", fmt.Errorf("sqsadapter: list runs: %w", err)
		}
		for i := range recs {
			if blueprintID == "" || recs[i].BlueprintID == blueprintID {
				out = append(out, runStatus(&recs[i]))
			}
		}
		cursor = next
		if next == "" || len(out) >= limit {
			return out, next, nil
		}
	}
}

// CancelRun marks a running run cancelled: nodes that have not started never
// will, and running nodes' outputs are not committed. It returns
// ErrRunFinished if the run had already finished, after repeating the steps
// that follow the status write (cancelling child runs, telling the parent
// run, setting the expiry of Tuning.Retention), so that a CancelRun cut
// short is completed by calling it again.
func (a *SqsAdapter) CancelRun(ctx context.Context, runID, reason string) error {
	ctx, end := a.operation(ctx, "CancelRun", "")
	err := a.cancelRun(ctx, runID, reason)
	end(runID, err)
	return err
}

func (a *SqsAdapter) cancelRun(ctx context.Context, runID, reason string) error {
	rec, err := a.cfg.contexts.GetRun(ctx, runID)
	if err != nil {
		return fmt.Errorf("sqsadapter: cancel run %q: %w", runID, err)
	}
	p := a.plans[planKey{rec.BlueprintID, rec.BlueprintVersion}]
	if p == nil {
		return fmt.Errorf("sqsadapter: cancel run %q: %w: %q version %q", runID, ErrUnknownBlueprint, rec.BlueprintID, rec.BlueprintVersion)
	}
	// Close first: once the status says cancelled, nothing of the run commits.
	if err := a.cfg.contexts.CloseNodes(ctx, runID, p.closeIDs); err != nil {
		return fmt.Errorf("sqsadapter: cancel run %q: close nodes: %w", runID, err)
	}
	if err := a.closeBatchItems(ctx, p, runID, func(call func() error) error { return call() }); err != nil {
		return fmt.Errorf("sqsadapter: cancel run %q: close batch items: %w", runID, err)
	}
	if err := a.closeLoops(ctx, p, runID, func(call func() error) error { return call() }); err != nil {
		return fmt.Errorf("sqsadapter: cancel run %q: close loop iterations: %w", runID, err)
	}
	at := time.Now()
	err = a.cfg.contexts.FinishRun(ctx, runID, StatusCancelled, reason, "", at)
	if err != nil && !errors.Is(err, ErrRunFinished) {
		return fmt.Errorf("sqsadapter: cancel run %q: %w", runID, err)
	}
	if err != nil {
		at = time.Time{} // finished before, at another time
	}
	// Its children stop too, and its parent hears of it; a repeated
	// CancelRun repeats both.
	if cerr := a.cancelChildren(ctx, runID, p, "parent run cancelled"); cerr != nil {
		return fmt.Errorf("sqsadapter: cancel run %q: %w", runID, cerr)
	}
	if nerr := a.notifyParent(ctx, runID, err == nil); nerr != nil {
		return fmt.Errorf("sqsadapter: cancel run %q: %w", runID, nerr)
	}
	// Last, as in every path that finishes a run: a repeated CancelRun
	// (which returns ErrRunFinished) repeats it.
	if eerr := a.expireRun(ctx, runID, at); eerr != nil {
		return fmt.Errorf("sqsadapter: cancel run %q: %w", runID, eerr)
	}
	return err
}
