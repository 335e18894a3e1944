package sqsadapter

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/flowcraft/sqsadapter/store"
)

// This file is the subflow built-in (docs/protocol.md, "Subflows"): a
// subflow node starts a child run of another blueprint — a run like any
// other, its nodes jobs spread over the workers — and waits for it without
// holding a worker or a message. The child's final status resumes it.

// builtinSubflow is the subflow node kind; reasonSubflow is why its node
// waits (store.Wait.Reason).
const (
	builtinSubflow = "subflow"
	reasonSubflow  = "subflow"
)

// childRunPrefix begins the id of every child run, and of no run started
// with StartRun: a finishing run whose id has it tells its parent.
const childRunPrefix = "subflow:"

// subflowSpec is a subflow node's params (reference §4.4).
type subflowSpec struct {
	blueprintID string
	// inputs maps a child context key to the parent key whose value seeds
	// it; outputs maps a parent context key to the child node (or context
	// key) whose value it receives. Both sorted by their first element.
	inputs  [][2]string
	outputs [][2]string
}

// parseSubflow reads and checks a subflow node's params.
func parseSubflow(params map[string]any) (*subflowSpec, error) {
	id, _ := params["blueprintId"].(string)
	if id == "" {
		return nil, errors.New(`params.blueprintId (a string) is missing`)
	}
	if err := checkID("blueprintId", id); err != nil {
		return nil, err
	}
	spec := &subflowSpec{blueprintID: id}
	// The keys of both are written into a context (the child's, the
	// parent's): keys a node may write.
	for _, f := range []struct {
		name string
		dst  *[][2]string
	}{{"inputs", &spec.inputs}, {"outputs", &spec.outputs}} {
		raw, ok := params[f.name]
		if !ok || raw == nil {
			continue
		}
		m, ok := raw.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("params.%s must be an object of strings, not %T", f.name, raw)
		}
		for _, k := range slices.Sorted(maps.Keys(m)) {
			v, ok := m[k].(string)
			if !ok || v == "" {
				return nil, fmt.Errorf("params.%s[%q] must be a non-empty string", f.name, k)
			}
			if err := checkContextKey(k); err != nil {
				return nil, fmt.Errorf("params.%s: %w", f.name, err)
			}
			*f.dst = append(*f.dst, [2]string{k, v})
		}
	}
	return spec, nil
}

// parentKeys lists the parent context keys a subflow node reads to seed its
// child: each mapped key, and failing it that node's output.
func (s *subflowSpec) parentKeys() []string {
	var keys []string
	for _, m := range s.inputs {
		keys = append(keys, m[1], outputsPrefix+m[1])
	}
	return keys
}

// subflowRunID is the id of the child run that attempt of node nodeID of
// run runID starts: derived, so that a redelivered job finds its child
// instead of starting a second. "%" and ":" are escaped in both ids, so
// no two (run, node, attempt) share one; an id over the length limit is
// replaced by a digest.
func subflowRunID(runID, nodeID string, attempt int) string {
	id := childRunPrefix + keyEscaper.Replace(runID) + ":" + keyEscaper.Replace(nodeID) + ":" + strconv.Itoa(attempt)
	if len(id) <= maxIDLength {
		return id
	}
	sum := sha256.Sum256([]byte(runID + "\x1f" + nodeID + "\x1f" + strconv.Itoa(attempt)))
	return childRunPrefix + hex.EncodeToString(sum[:20])
}

// checkSubflows checks that the blueprint of every subflow node is
// registered and that no blueprint contains itself through subflows (so
// nesting is bounded by the number of blueprints).
func (a *SqsAdapter) checkSubflows() error {
	children := map[string][]string{} // blueprint id -> blueprint ids its subflows start, any version
	var problems []error
	for _, k := range slices.SortedFunc(maps.Keys(a.plans), func(x, y planKey) int { return strings.Compare(x.id+"\x00"+x.version, y.id+"\x00"+y.version) }) {
		p := a.plans[k]
		for _, n := range p.order {
			if n.subflow == nil {
				continue
			}
			if a.latest[n.subflow.blueprintID] == nil {
				problems = append(problems, fmt.Errorf("%w: blueprint %q version %q: subflow node %q starts blueprint %q, which is not registered",
					ErrInvalidBlueprint, p.id, p.version, n.id, n.subflow.blueprintID))
				continue
			}
			if !slices.Contains(children[p.id], n.subflow.blueprintID) {
				children[p.id] = append(children[p.id], n.subflow.blueprintID)
			}
		}
	}
	// A depth-first search for a blueprint reached from itself.
	state := map[string]int{} // 1: on the path, 2: done
	var path []string
	var visit func(id string) []string
	visit = func(id string) []string {
		switch state[id] {
		case 1:
			i := slices.Index(path, id)
			return append(slices.Clone(path[i:]), id)
		case 2:
			return nil
		}
		state[id] = 1
		path = append(path, id)
		for _, c := range children[id] {
			if cycle := visit(c); cycle != nil {
				return cycle
			}
		}
		path = path[:len(path)-1]
		state[id] = 2
		return nil
	}
	for _, id := range slices.Sorted(maps.Keys(children)) {
		if cycle := visit(id); cycle != nil {
			problems = append(problems, fmt.Errorf("%w: subflows form a cycle: %s (a blueprint may not contain itself)", ErrInvalidBlueprint, strings.Join(cycle, " -> ")))
			break
		}
	}
	return errors.Join(problems...)
}

// subflowWait is the wait of a subflow node whose attempt starts child.
func subflowWait(blueprintID, child string) store.Wait {
	return store.Wait{Reason: reasonSubflow, Details: map[string]any{"blueprintId": blueprintID, "runId": child}}
}

// waitChild is the child run a waiting subflow node waits for.
func waitChild(w *store.Wait) string {
	if w == nil || w.Reason != reasonSubflow {
		return ""
	}
	id, _ := w.Details["runId"].(string)
	return id
}

// onSubflow handles a job of a waiting subflow node — its own job
// redelivered, or the one its child sends when it finishes: it starts the
// child if it is not started yet, and once the child has finished, resumes
// the node with the child's result, or retries or fails it.
func (x *jobRun) onSubflow(ctx context.Context, rec *store.NodeRecord, in any, vals map[string]any) outcome {
	childID := waitChild(rec.Wait)
	var child *store.RunRecord
	err := x.idempotent(ctx, func() (err error) {
		child, err = x.a.cfg.contexts.GetRun(ctx, childID)
		return err
	})
	switch {
	case errors.Is(err, ErrRunNotFound):
		return x.startChild(ctx, rec, childID, in, vals)
	case err != nil:
		return retryAfter(0, fmt.Errorf("sqsadapter: read child run %q of node %q: %w", childID, x.n.id, err))
	case !x.isChild(child):
		return x.subflowFailed(ctx, rec, in, vals, Permanent(fmt.Errorf("subflow: run id %q is taken by a run that is not this node's child", childID)))
	case child.Status == StatusRunning:
		return x.startChild(ctx, rec, childID, in, vals) // a repeated start sends only the start jobs that did not run
	case child.Status == StatusCompleted:
		return x.childCompleted(ctx, rec, child, in, vals)
	default:
		msg := child.Error
		if msg == "" {
			msg = "Unknown error"
		}
		return x.subflowFailed(ctx, rec, in, vals, fmt.Errorf("Sub-workflow '%s' did not complete successfully. Status: %s. Error: %s", child.BlueprintID, child.Status, msg))
	}
}

// isChild reports whether run rec was started by this job's node.
func (x *jobRun) isChild(rec *store.RunRecord) bool {
	pr := rec.Parent
	return pr != nil && pr.RunID == x.job.RunID && pr.NodeID == x.n.id && rec.BlueprintID == x.n.subflow.blueprintID
}

// startChild creates the child run (once: its id is derived) with its
// initial context, and sends its start jobs. It then looks at the node
// again: if the parent run finished meanwhile (cancelled, failed), the
// child it may just have created is cancelled too.
func (x *jobRun) startChild(ctx context.Context, rec *store.NodeRecord, childID string, in any, vals map[string]any) outcome {
	a, spec := x.a, x.n.subflow
	cp := a.latest[spec.blueprintID]
	initial := map[string]any{}
	if len(spec.inputs) > 0 {
		for _, m := range spec.inputs {
			v, ok := vals[m[1]]
			if !ok || v == nil {
				v = vals[outputsPrefix+m[1]]
			}
			if v != nil {
				initial[m[0]] = v
			}
		}
	} else if in != nil {
		// Flowcraft seeds every node without incoming edges.
		for _, n := range cp.order {
			if len(n.preds) == 0 {
				initial["_inputs."+n.id] = in
			}
		}
	}
	parent := &store.ParentRef{RunID: x.job.RunID, NodeID: x.n.id, BlueprintID: x.p.id, BlueprintVersion: x.p.version}
	err := a.launch(ctx, cp, childID, initial, parent)
	switch {
	case errors.Is(err, ErrValueTooLarge), errors.Is(err, ErrInvalidKey), errors.Is(err, errNotChild):
		return x.subflowFailed(ctx, rec, in, vals, Permanent(fmt.Errorf("subflow: start child run: %w", err)))
	case err != nil:
		return retryAfter(0, fmt.Errorf("sqsadapter: start child run %q of node %q: %w", childID, x.n.id, err))
	}
	x.log.InfoContext(ctx, "sqsadapter: subflow started", "child_run_id", childID, "child_blueprint_id", cp.id)
	if x.crash("subflow-started") {
		return abandon
	}
	var now *store.NodeRecord
	err = x.idempotent(ctx, func() (err error) {
		now, err = x.nodeRecord(ctx, x.n.id)
		return err
	})
	if err != nil {
		// The redelivery finds the node waiting (and goes on here) or
		// closed (and cancels the child: acquire).
		return retryAfter(0, fmt.Errorf("sqsadapter: read subflow node %q after starting its child: %w", x.n.id, err))
	}
	if now.State == store.NodeClosed {
		if err := x.a.cancelChild(ctx, childID, "parent run finished"); err != nil {
			return retryAfter(0, err)
		}
	}
	return done
}

// errNotChild: a child run's id is taken by another run.
var errNotChild = errors.New("the run id is taken by a run that is not this node's child")

// childCompleted resumes the node with its completed child's result
// (reference §4.4): with params.outputs, each parent key receives the
// child's output of the node it names (or its context key), and the
// node's output is the child's final context; without, the output is the
// child's single terminal node's output, or a map of each terminal node's.
func (x *jobRun) childCompleted(ctx context.Context, rec *store.NodeRecord, child *store.RunRecord, in any, vals map[string]any) outcome {
	spec := x.n.subflow
	var snap map[string]any
	err := x.idempotent(ctx, func() (err error) {
		snap, err = x.a.cfg.contexts.Snapshot(ctx, child.RunID)
		return err
	})
	if err != nil {
		return retryAfter(0, fmt.Errorf("sqsadapter: read the context of child run %q: %w", child.RunID, err))
	}
	dropItemOutputs(snap) // a batch's item records are no nodes of the child
	c := store.NodeCommit{NodeID: x.n.id, Token: "subflow:" + child.RunID}
	if len(spec.outputs) > 0 {
		c.Sets = make(map[string]any, len(spec.outputs))
		for _, m := range spec.outputs {
			v := snap[outputsPrefix+m[1]]
			if v == nil {
				v = snap[m[1]]
			}
			if v != nil {
				c.Sets[m[0]] = v
			}
		}
		c.Output = snap
	} else {
		cp := x.a.plans[planKey{child.BlueprintID, child.BlueprintVersion}]
		if cp == nil {
			return retryAfter(x.a.cfg.visibilityTimeout, fmt.Errorf("%w: child run %q: %q version %q", ErrUnknownBlueprint, child.RunID, child.BlueprintID, child.BlueprintVersion))
		}
		var terminals []string
		for _, n := range cp.order {
			if len(n.out) == 0 {
				terminals = append(terminals, n.id)
			}
		}
		if len(terminals) == 1 {
			c.Output = snap[outputsPrefix+terminals[0]]
		} else {
			out := map[string]any{}
			for _, t := range terminals {
				if v, ok := snap[outputsPrefix+t]; ok && v != nil {
					out[t] = v
				}
			}
			c.Output = out
		}
	}
	got, err := x.commitResume(ctx, c, in, vals)
	switch {
	case err == nil:
		return x.advance(ctx, got, false)
	case errors.Is(err, store.ErrNodeCommitted) && got != nil && got.Token == c.Token:
		return x.advance(ctx, got, true)
	case errors.Is(err, store.ErrNodeCommitted), errors.Is(err, store.ErrNodeClosed), errors.Is(err, store.ErrNotWaiting):
		return done
	case errors.Is(err, ErrValueTooLarge), errors.Is(err, ErrInvalidKey):
		return x.subflowFailed(ctx, rec, in, vals, Permanent(fmt.Errorf("subflow: the child's result cannot be committed (map what you need with params.outputs? the output is still the child's whole context): %w", err)))
	default:
		return retryAfter(0, fmt.Errorf("sqsadapter: resume subflow node %q: %w", x.n.id, err))
	}
}

// subflowFailed handles a failed attempt of a waiting subflow node: it
// takes the node back (WakeNode, conditional on the attempt that failed, so
// that a stale job cannot undo a later attempt), then starts the next
// attempt — a fresh child — after the retry delay, or runs the fallback, or
// fails the run, as for any node whose attempt failed.
func (x *jobRun) subflowFailed(ctx context.Context, rec *store.NodeRecord, in any, vals map[string]any, cause error) outcome {
	cs := x.a.cfg.contexts
	var got *store.NodeRecord
	err := x.retried(ctx, func() (err error) {
		got, err = cs.WakeNode(ctx, x.job.RunID, x.n.id, x.owner, rec.Attempts, time.Now().Add(x.a.cfg.visibilityTimeout))
		return err
	})
	switch {
	case err == nil:
	case errors.Is(err, store.ErrNodeCommitted):
		return x.advance(ctx, got, true)
	case errors.Is(err, store.ErrNodeFailed):
		return x.failRun(ctx, x.n.id, got.Error)
	case errors.Is(err, store.ErrNodeClosed), errors.Is(err, store.ErrNotWaiting):
		return done // another job took this failure, or the run finished
	default:
		return retryAfter(0, fmt.Errorf("sqsadapter: take back subflow node %q: %w", x.n.id, err))
	}
	x.setLease(x.leaseOn(x.n.id))
	attempt := got.Attempts
	x.log.WarnContext(ctx, "sqsadapter: subflow attempt failed", "attempt", attempt, "max_attempts", x.n.maxAttempts, "err", cause)
	if !IsPermanent(cause) && attempt < x.n.maxAttempts {
		delay := x.a.retryDelay(x.n, attempt)
		if x.crash("retry-wait") {
			return abandon
		}
		if !x.a.sleep(ctx, delay) {
			return x.release(ctx, x.n.id, retryAfter(delay, cause))
		}
		next, o, ok := x.acquire(ctx, x.n.id, attempt)
		if !ok {
			return o
		}
		return x.suspend(ctx, next, in, vals)
	}
	if fb := x.n.fallback; fb != nil && !IsPermanent(cause) {
		return x.runFallback(ctx, fb, in, vals, cause, attempt)
	}
	return x.failRun(ctx, x.n.id, (&nodeError{NodeID: x.n.id, Attempt: attempt, Err: cause}).Error())
}

// notifyParent sends the job of the subflow node that started run runID,
// if it is a child run, so that the node sees the child's final status.
// It is called after every attempt to finish a run: finished says this
// call's status write took effect. A repeated attempt (a redelivery, a
// replay; the status was written already) sends the job only if the node
// still waits for this child: replays of a finished child's jobs must not
// each wake its parent, whose replay could reach the child again.
func (a *SqsAdapter) notifyParent(ctx context.Context, runID string, finished bool) error {
	if !strings.HasPrefix(runID, childRunPrefix) {
		return nil
	}
	rec, err := a.cfg.contexts.GetRun(ctx, runID)
	if errors.Is(err, ErrRunNotFound) {
		// Expired or deleted (Tuning.Retention, DeleteRun): a late replay
		// of one of its jobs, long after its parent heard of it.
		return nil
	}
	if err != nil {
		return fmt.Errorf("sqsadapter: read child run %q: %w", runID, err)
	}
	pr := rec.Parent
	if pr == nil {
		return nil
	}
	if !finished {
		recs, err := a.cfg.contexts.GetNodes(ctx, pr.RunID, []string{pr.NodeID})
		if err != nil {
			return fmt.Errorf("sqsadapter: read the node of parent run %q that started run %q: %w", pr.RunID, runID, err)
		}
		if r := recs[pr.NodeID]; r == nil || r.State != store.NodeWaiting || waitChild(r.Wait) != runID {
			return nil
		}
	}
	if err := a.send(ctx, Job{RunID: pr.RunID, BlueprintID: pr.BlueprintID, BlueprintVersion: pr.BlueprintVersion, NodeID: pr.NodeID}); err != nil {
		return fmt.Errorf("sqsadapter: tell parent run %q that child run %q finished: %w", pr.RunID, runID, err)
	}
	return nil
}

// cancelChildren cancels the child runs that the subflow nodes of a
// finished run wait for (their records keep the wait once closed). Each
// cancel cascades to its own children.
func (a *SqsAdapter) cancelChildren(ctx context.Context, runID string, p *plan, reason string) error {
	var ids []string
	for _, n := range p.order {
		if n.subflow != nil {
			ids = append(ids, n.id)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	recs, err := a.cfg.contexts.GetNodes(ctx, runID, ids)
	if err != nil {
		return fmt.Errorf("sqsadapter: read subflow nodes of run %q: %w", runID, err)
	}
	var errs []error
	for _, id := range ids {
		r := recs[id]
		if r == nil || r.State != store.NodeClosed {
			continue
		}
		if child := waitChild(r.Wait); child != "" {
			if err := a.cancelChild(ctx, child, reason); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// cancelChild cancels a child run; one that is absent or finished is left
// as it is (a CancelRun would tell its parent again, whose job would come
// here again).
func (a *SqsAdapter) cancelChild(ctx context.Context, childID, reason string) error {
	rec, err := a.cfg.contexts.GetRun(ctx, childID)
	switch {
	case errors.Is(err, ErrRunNotFound):
		return nil
	case err != nil:
		return fmt.Errorf("sqsadapter: read child run %q: %w", childID, err)
	case rec.Status == StatusCompleted:
		return nil
	case rec.Status != StatusRunning:
		// Finished already, by a cancel or failure that may have stopped
		// before its own children or its expiry: repeat those parts only.
		if p := a.plans[planKey{rec.BlueprintID, rec.BlueprintVersion}]; p != nil {
			if err := a.cancelChildren(ctx, childID, p, reason); err != nil {
				return err
			}
		}
		return a.expireRun(ctx, childID, rec.FinishedAt)
	}
	err = a.CancelRun(ctx, childID, reason)
	if err == nil || errors.Is(err, ErrRunFinished) || errors.Is(err, ErrRunNotFound) {
		return nil
	}
	return err
}
