package sqsadapter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/flowcraft/sqsadapter/store"
	"time"

	"github.com/flowcraft/sqsadapter/internal/jsonvalue"
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
}

// Finished reports whether the run reached a final status.
func (s *RunStatus) Finished() bool { return s.Status != StatusRunning }

// RunOption configures StartRun.
type RunOption func(*runOptions)

type runOptions struct {
	runID   string
	version *string
}

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
	rec := store.RunRecord{RunID: runID, BlueprintID: p.id, BlueprintVersion: p.version, Status: StatusRunning, CreatedAt: time.Now()}
	err := a.cfg.contexts.CreateRun(ctx, rec, values)
	created, pending := err == nil, p.starts
	switch {
	case err == nil:
	case errors.Is(err, store.ErrRunExists):
		existing, gerr := a.cfg.contexts.GetRun(ctx, runID)
		if gerr != nil {
			return "", fmt.Errorf("sqsadapter: start run %q: %w", runID, gerr)
		}
		if existing.BlueprintID != p.id {
			return "", fmt.Errorf("%w: run %q exists with blueprint %q", store.ErrRunExists, runID, existing.BlueprintID)
		}
		if existing.Status != StatusRunning {
			return runID, nil
		}
		if p = a.plans[planKey{existing.BlueprintID, existing.BlueprintVersion}]; p == nil {
			return runID, nil // another version's worker will see it through
		}
		if pending, err = a.unstarted(ctx, runID, p); err != nil {
			return "", fmt.Errorf("sqsadapter: start run %q: %w", runID, err)
		}
	default:
		return "", fmt.Errorf("sqsadapter: start run %q: %w", runID, err)
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
		return "", fmt.Errorf("sqsadapter: start run %q: enqueue start nodes (repeat StartRun with WithRunID(%q) to resume): %w", runID, runID, err)
	}
	a.log.InfoContext(ctx, "sqsadapter: run started", "run_id", runID, "blueprint_id", p.id, "version", p.version)
	return runID, nil
}

// unstarted lists the start nodes of a run that have no record yet.
func (a *SqsAdapter) unstarted(ctx context.Context, runID string, p *plan) ([]*planNode, error) {
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
		if r := recs[n.id]; r == nil || r.State == store.NodePending {
			out = append(out, n)
		}
	}
	return out, nil
}

// GetRun reports a run's status, with its whole context once it has
// finished. It does not block beyond the reads and is safe for concurrent
// use. An unknown run is an error matching ErrRunNotFound.
func (a *SqsAdapter) GetRun(ctx context.Context, runID string) (*RunStatus, error) {
	rec, err := a.cfg.contexts.GetRun(ctx, runID)
	if err != nil {
		return nil, fmt.Errorf("sqsadapter: get run %q: %w", runID, err)
	}
	st := &RunStatus{
		RunID: rec.RunID, BlueprintID: rec.BlueprintID, BlueprintVersion: rec.BlueprintVersion,
		Status: rec.Status, Error: rec.Error, FailedNode: rec.FailedNode,
		CreatedAt: rec.CreatedAt, FinishedAt: rec.FinishedAt,
	}
	if st.Finished() {
		if st.Context, err = a.cfg.contexts.Snapshot(ctx, runID); err != nil {
			return nil, fmt.Errorf("sqsadapter: read context of run %q: %w", runID, err)
		}
	}
	return st, nil
}

// WaitForRun blocks until the run is completed, failed or cancelled, or ctx
// is done, polling its status with a growing interval (10ms to 1s). It is
// safe for concurrent use.
func (a *SqsAdapter) WaitForRun(ctx context.Context, runID string) (*RunStatus, error) {
	interval := 10 * time.Millisecond
	for {
		st, err := a.GetRun(ctx, runID)
		if err != nil {
			return nil, err
		}
		if st.Finished() {
			return st, nil
		}
		t := time.NewTimer(interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return st, context.Cause(ctx)
		case <-t.C:
		}
		interval = min(interval*2, time.Second)
	}
}

// CancelRun marks a running run cancelled: nodes that have not started never
// will, and running nodes' outputs are not committed. It returns
// ErrRunFinished if the run had already finished.
func (a *SqsAdapter) CancelRun(ctx context.Context, runID, reason string) error {
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
	err = a.cfg.contexts.FinishRun(ctx, runID, StatusCancelled, reason, "", time.Now())
	if err != nil && !errors.Is(err, ErrRunFinished) {
		return fmt.Errorf("sqsadapter: cancel run %q: %w", runID, err)
	}
	return err
}
