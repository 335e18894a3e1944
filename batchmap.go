package sqsadapter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/flowcraft/sqsadapter/internal/jsonvalue"
	"github.com/flowcraft/sqsadapter/store"
)

// This file is the batch built-ins (docs/protocol.md, "Batches"):
// batch-scatter and batch-gather, as Flowcraft's builder writes them for
// .batch(id, worker, {inputKey, outputKey, chunkSize}), and the "map" node,
// which compiles to the same pair.
//
// A batch of N items runs as:
//
//   - the scatter's job (node S) commits S without a node function: output
//     {"gatherNodeId": G, "count": N}, and the items, frozen, in the
//     context key "_batch.<S>";
//   - S's advance sends the jobs of items [0, P) and, if N > P, a page job
//     for S (Job.Page 1), which sends the next P items and the next page:
//     no job sends more than P+1 messages;
//   - each item (Job.Item i+1) runs the worker function under its own node
//     record "S␟i" through the usual acquire, attempts and commit (without
//     routing), then arrives in a tree of join records of at most
//     batchFanIn members each; the arrival that completes the top of the
//     tree sends the gather's job;
//   - the gather (node G) reads the item records, in pages, commits the
//     outputs of the committed items in input order as its output and in
//     the context key outputKey, and routes like any node.
//
// Requests per item, inline input, no context writes (measured by
// TestBatchCost): AcquireNode 1, CommitNode 1, Arrive 1 (and 1/100 more per
// level of the tree), and a share of the messages: one SendMessageBatch,
// ReceiveMessage and DeleteMessageBatch per ten items at best. Per page of
// P items: one read of the gather's record, one of the page's join records
// and one of the frozen items (and, on a replay whose items have begun
// arriving, one of the page's records). Per batch and worker: one read of
// S's record (its count). The gather reads the N records 100 at a time.
// On DynamoDB (TestIntegrationBatch10000, 10,000 items): 3.01 UpdateItem
// and 0.04 BatchGetItem per item, about 3.04 WCU and 1.2 RCU. No record or message grows with N beyond the user data: the frozen
// items (one context item) and the gather's results (its output and
// outputKey).

// The batch built-ins. Like wait and sleep, a registered function of that
// name overrides them.
const (
	builtinScatter = "batch-scatter"
	builtinGather  = "batch-gather"
	builtinMap     = "map"
)

const (
	// defaultChunkSize is the page size P when chunkSize is absent.
	defaultChunkSize = 100
	// maxChunkSize bounds chunkSize: a page job sends P+1 messages.
	maxChunkSize = 1000
	// batchFanIn is F, the most members of one join record of the tree
	// that tells when every item is resolved.
	batchFanIn = 100
	// batchReadPage is how many item records one GetNodes call reads.
	batchReadPage = 100
	// batchKeyPrefix begins the context key of a scatter's frozen items.
	batchKeyPrefix = "_batch."
	// itemSeparator separates a scatter's id and an item's index in the
	// item's record id: node ids hold no control characters, so no node's
	// record has such a name (as the fallback record's).
	itemSeparator = "\x1f"
)

// batchSpec is a batch: its scatter and gather, and how its items run.
type batchSpec struct {
	scatter, gather *planNode
	// worker runs the items: the registry function, and the attempts,
	// retry delay and timeout of the scatter's config.
	worker    *planNode
	chunk     int    // P: items per page
	tolerated int    // items that may fail for good without failing the run
	outputKey string // the context key of the results
	name      string // how messages name it: `node "S"` or `map node "m"`
}

// batchRun is what one job of a batch knows about it.
type batchRun struct {
	count int   // N
	items []any // the frozen items, once read (nil before)
}

// batchKey is the context key of scatter s's frozen items.
func batchKey(s string) string { return batchKeyPrefix + s }

// itemRecord is the record id of item i (from 0) of scatter s.
func itemRecord(s string, i int) string { return s + itemSeparator + strconv.Itoa(i) }

// itemName is item i's NodeContext.NodeID, "S[i]": readable, and unique in
// its run (compilePlan refuses node ids of that form), so its
// IdempotencyKey is stable per item.
func itemName(s string, i int) string { return s + "[" + strconv.Itoa(i) + "]" }

// parseItemRecord splits an item record id into its scatter and index.
func parseItemRecord(id string) (scatter string, i int, ok bool) {
	s, suffix, found := strings.Cut(id, itemSeparator)
	if !found || !digits(suffix) || len(suffix) > 9 {
		return "", 0, false
	}
	i, err := strconv.Atoi(suffix)
	return s, i, err == nil
}

// isItemRecord reports whether a record id is a batch item's.
func isItemRecord(id string) bool {
	_, _, ok := parseItemRecord(id)
	return ok
}

func digits(s string) bool {
	return s != "" && strings.Trim(s, "0123456789") == ""
}

// batchGroupKey names the join record of group g at level l of scatter s's
// tree, escaped as joinKey escapes: "flowcraft:batch:<run>:<S>:<l>:<g>".
func batchGroupKey(runID, s string, level, group int) string {
	return "flowcraft:batch:" + keyEscaper.Replace(runID) + ":" + keyEscaper.Replace(s) + ":" +
		strconv.Itoa(level) + ":" + strconv.Itoa(group)
}

// scatterCount is N, from a committed scatter's record.
func scatterCount(r *store.NodeRecord) (int, bool) {
	if r == nil || r.State != store.NodeCommitted {
		return 0, false
	}
	out, _ := r.Output.(map[string]any)
	switch n := out["count"].(type) {
	case int64:
		return int(n), n >= 0
	case float64:
		return int(n), n >= 0 && n == float64(int(n))
	}
	return 0, false
}

// ---------------------------------------------------------------------------
// Jobs.

// batchNode runs the job of a scatter or a gather whose lease this job
// holds; ok is false for other nodes.
func (x *jobRun) batchNode(ctx context.Context, rec *store.NodeRecord, in any, vals map[string]any) (outcome, bool) {
	switch x.n.builtin {
	case builtinScatter:
		return x.scatter(ctx, rec, in, vals), true
	case builtinGather:
		return x.gather(ctx, rec, in, vals), true
	}
	return outcome{}, false
}

// scatter commits the scatter node: its output says how many items there
// are, and its context writes freeze them. advanceBatch sends them.
func (x *jobRun) scatter(ctx context.Context, rec *store.NodeRecord, in any, vals map[string]any) outcome {
	b := x.n.batch
	items, ok := in.([]any)
	if !ok && in != nil {
		x.setLease(nil)
		return x.failRun(ctx, x.n.id, fmt.Sprintf("node %q: the input of a batch must be an array, not %s", x.n.id, jsonvalue.Kind(in)))
	}
	if items == nil {
		items = []any{}
	}
	x.batch = &batchRun{count: len(items), items: items}
	nc := &NodeContext{RunID: x.job.RunID, BlueprintID: x.p.id, NodeID: x.n.id, Input: in, Params: x.n.def.Params, Attempt: rec.Attempts}
	if err := nc.Set(batchKey(x.n.id), items); err != nil {
		x.setLease(nil)
		return x.failRun(ctx, x.n.id, (&nodeError{NodeID: x.n.id, Attempt: rec.Attempts, Err: err}).Error())
	}
	out := map[string]any{"gatherNodeId": b.gather.id, "count": int64(len(items))}
	return x.commit(ctx, NodeResult{Output: out}, nc, in, vals, "")
}

// gather commits the gather node: the outputs of the committed items, in
// input order, once every item is resolved; or fails the run if more items
// failed than the batch tolerates.
func (x *jobRun) gather(ctx context.Context, rec *store.NodeRecord, in any, vals map[string]any) outcome {
	b := x.n.batch
	s := b.scatter.id
	var srec map[string]*store.NodeRecord
	if err := x.idempotent(ctx, func() (err error) {
		srec, err = x.a.cfg.contexts.GetNodes(ctx, x.job.RunID, []string{s})
		return err
	}); err != nil {
		return x.release(ctx, x.n.id, retryAfter(0, fmt.Errorf("sqsadapter: read the scatter of gather %q: %w", x.n.id, err)))
	}
	n, ok := scatterCount(srec[s])
	if !ok {
		err := fmt.Errorf("%w: gather %q ran before its scatter %q committed", ErrInvalidJob, x.n.id, s)
		x.log.ErrorContext(ctx, "sqsadapter: stray gather job; left for the dead-letter queue", "err", err)
		return x.release(ctx, x.n.id, retryAfter(x.a.cfg.visibilityTimeout, err))
	}
	results := make([]any, 0, n)
	failed, first := 0, ""
	for lo := 0; lo < n; lo += batchReadPage {
		hi := min(lo+batchReadPage, n)
		ids := make([]string, 0, hi-lo)
		for i := lo; i < hi; i++ {
			ids = append(ids, itemRecord(s, i))
		}
		var recs map[string]*store.NodeRecord
		if err := x.idempotent(ctx, func() (err error) {
			recs, err = x.a.cfg.contexts.GetNodes(ctx, x.job.RunID, ids)
			return err
		}); err != nil {
			return x.release(ctx, x.n.id, retryAfter(0, fmt.Errorf("sqsadapter: read the items of batch %q: %w", s, err)))
		}
		for k, id := range ids {
			r := recs[id]
			switch {
			case r != nil && r.State == store.NodeCommitted:
				results = append(results, r.Output)
			case r != nil && r.State == store.NodeFailed:
				if failed++; first == "" {
					first = fmt.Sprintf("item %d: %s", lo+k, r.Error)
				}
			case r != nil && r.State == store.NodeClosed:
				return x.release(ctx, x.n.id, done) // the run finished
			default:
				// The tree fires the gather only once every item is resolved.
				err := fmt.Errorf("sqsadapter: gather %q: item %d of batch %q is not resolved", x.n.id, lo+k, s)
				x.log.ErrorContext(ctx, "sqsadapter: gather fired before its items were resolved; retried later", "err", err)
				return x.release(ctx, x.n.id, retryAfter(x.a.cfg.visibilityTimeout, err))
			}
		}
	}
	if failed > b.tolerated {
		x.setLease(nil)
		return x.failRun(ctx, x.n.id, fmt.Sprintf("node %q: %d of %d batch items failed, more than toleratedFailures (%d); first: %s",
			x.n.id, failed, n, b.tolerated, first))
	}
	nc := &NodeContext{RunID: x.job.RunID, BlueprintID: x.p.id, NodeID: x.n.id, Input: in, Params: x.n.def.Params, Attempt: rec.Attempts}
	if err := nc.Set(b.outputKey, results); err != nil {
		x.setLease(nil)
		return x.failRun(ctx, x.n.id, (&nodeError{NodeID: x.n.id, Attempt: rec.Attempts, Err: err}).Error())
	}
	// The frozen items are no longer needed: every item is resolved, so a
	// late job of one finds its record so and needs no input.
	_ = nc.Delete(batchKey(s))
	return x.commit(ctx, NodeResult{Output: results}, nc, in, vals, "")
}

// batchJob runs an item's or a page's job (Job.Item or Job.Page set).
func (x *jobRun) batchJob(ctx context.Context) outcome {
	if x.n.builtin != builtinScatter {
		return x.invalidBatchJob(ctx, fmt.Sprintf("node %q is not a batch-scatter node", x.n.id))
	}
	if o, ok := x.batchCount(ctx); !ok {
		return o
	}
	if x.job.Page > 0 {
		x.log = x.log.With("page", x.job.Page)
		if x.job.Page*x.n.batch.chunk >= x.batch.count {
			return x.invalidBatchJob(ctx, fmt.Sprintf("page %d is past the batch's %d items", x.job.Page, x.batch.count))
		}
		return x.sendPage(ctx, x.job.Page, true)
	}
	i := x.job.Item - 1
	x.log = x.log.With("item", i)
	if i >= x.batch.count {
		return x.invalidBatchJob(ctx, fmt.Sprintf("item %d is past the batch's %d items", i, x.batch.count))
	}
	s := x.n.id
	// As for any node, the input is read before the lease is taken.
	var in any
	missing := false
	if x.job.Input != nil {
		v, err := jsonvalue.Decode(x.job.Input)
		if err != nil {
			return x.invalidBatchJob(ctx, fmt.Sprintf("input: %v", err))
		}
		in = v
	} else {
		if err := x.loadItems(ctx); err != nil {
			return retryAfter(0, err)
		}
		if i < len(x.batch.items) {
			in = x.batch.items[i]
		} else {
			missing = true // checked once the lease is held: the item may be resolved
		}
	}
	id := itemRecord(s, i)
	rec, o, ok := x.acquire(ctx, id, 0)
	if !ok {
		return o
	}
	if x.crash("acquired") {
		return abandon
	}
	if missing {
		x.setLease(nil)
		return x.failRun(ctx, s, (&nodeError{NodeID: s, Attempt: rec.Attempts,
			Err: fmt.Errorf("batch item %d: its input is missing from %q (a node deleted or overwrote it)", i, batchKey(s))}).Error())
	}
	w := x.n.batch.worker
	item := &planNode{def: &NodeDefinition{ID: itemName(s, i), Uses: w.def.Uses}, id: itemName(s, i), fn: w.fn,
		maxAttempts: w.maxAttempts, retryDelay: w.retryDelay, timeout: w.timeout}
	res, nc, attempt, o, ok := x.attempts(ctx, item, id, rec, in)
	if !ok {
		return o
	}
	if nc == nil {
		x.setLease(nil)
		return x.failRun(ctx, s, (&nodeError{NodeID: s, Attempt: attempt, Err: fmt.Errorf("batch item %d: %w", i, o.err)}).Error())
	}
	return x.commitItem(ctx, id, res, nc)
}

// invalidBatchJob leaves a malformed batch job to the dead-letter queue.
func (x *jobRun) invalidBatchJob(ctx context.Context, why string) outcome {
	err := fmt.Errorf("%w: %s: %s", ErrInvalidJob, x.job, why)
	x.log.ErrorContext(ctx, "sqsadapter: invalid batch job; left for the dead-letter queue", "err", err)
	return retryAfter(x.a.cfg.visibilityTimeout, err)
}

// batchCount learns N from the scatter's committed record, which never
// changes once written: each worker reads it once per batch. ok is false
// when the job must stop with outcome o.
func (x *jobRun) batchCount(ctx context.Context) (outcome, bool) {
	s := x.n.id
	if n, ok := x.a.batchCounts.get(x.job.RunID, s); ok {
		x.batch = &batchRun{count: n}
		return outcome{}, true
	}
	var recs map[string]*store.NodeRecord
	if err := x.idempotent(ctx, func() (err error) {
		recs, err = x.a.cfg.contexts.GetNodes(ctx, x.job.RunID, []string{s})
		return err
	}); err != nil {
		return retryAfter(0, fmt.Errorf("sqsadapter: read batch %q: %w", s, err)), false
	}
	r := recs[s]
	switch {
	case r == nil || r.State == store.NodePending || r.State == store.NodeWaiting:
		// Items and pages are sent only once the scatter is committed.
		return x.invalidBatchJob(ctx, fmt.Sprintf("batch %q is not committed", s)), false
	case r.State != store.NodeCommitted:
		x.log.DebugContext(ctx, "sqsadapter: batch job of a finished run or a dead branch dropped", "scatter_state", r.State)
		return done, false
	}
	n, ok := scatterCount(r)
	if !ok {
		return x.invalidBatchJob(ctx, fmt.Sprintf("batch %q has no item count", s)), false
	}
	x.a.batchCounts.put(x.job.RunID, s, n)
	x.batch = &batchRun{count: n}
	return outcome{}, true
}

// loadItems reads the frozen items of the job's batch, if not read yet.
// Absent (the gather, done, deleted them), they are empty.
func (x *jobRun) loadItems(ctx context.Context) error {
	if x.batch.items != nil {
		return nil
	}
	key := batchKey(x.n.id)
	var vals map[string]any
	if err := x.idempotent(ctx, func() (err error) {
		vals, err = x.a.cfg.contexts.GetMany(ctx, x.job.RunID, []string{key})
		return err
	}); err != nil {
		return fmt.Errorf("sqsadapter: read the items of batch %q: %w", x.n.id, err)
	}
	items, _ := vals[key].([]any)
	if items == nil {
		items = []any{}
	}
	x.batch.items = items
	return nil
}

// commitItem commits an item's output and its context writes, once,
// without routing, then makes it arrive.
func (x *jobRun) commitItem(ctx context.Context, id string, res NodeResult, nc *NodeContext) outcome {
	s := x.n.id
	failItem := func(err error) outcome {
		x.setLease(nil)
		return x.failRun(ctx, s, (&nodeError{NodeID: s, Attempt: nc.Attempt, Err: fmt.Errorf("batch item %d: %w", x.job.Item-1, err)}).Error())
	}
	out, err := jsonvalue.Normalize(res.Output)
	if err != nil {
		return failItem(fmt.Errorf("output: %w", err))
	}
	sets, deletes := nc.buffered()
	c := store.NodeCommit{NodeID: id, Output: out, Action: res.Action, Sets: sets, Deletes: deletes}
	if x.crash("commit") {
		return abandon
	}
	x.setLease(nil) // the commit drops the lease
	var rec *store.NodeRecord
	err = x.retried(ctx, func() (err error) {
		rec, err = x.a.cfg.contexts.CommitNode(ctx, x.job.RunID, c)
		return err
	})
	switch {
	case err == nil:
	case errors.Is(err, store.ErrNodeCommitted):
		return x.advance(ctx, rec, true)
	case errors.Is(err, store.ErrNodeFailed):
		return x.failRun(ctx, s, rec.Error)
	case errors.Is(err, store.ErrNodeClosed):
		return done
	case errors.Is(err, ErrValueTooLarge), errors.Is(err, ErrInvalidKey):
		return failItem(err)
	default:
		return x.release(ctx, id, retryAfter(0, fmt.Errorf("sqsadapter: commit output of batch item %d of %q: %w", x.job.Item-1, s, err)))
	}
	if x.crash("committed") {
		return abandon
	}
	return x.itemResolved(ctx, false)
}

// advanceBatch is advance for a scatter's records: an item's (its
// arrival) or the scatter's own (its first page).
func (x *jobRun) advanceBatch(ctx context.Context, rec *store.NodeRecord, replay bool) outcome {
	if rec == nil || rec.State != store.NodeCommitted {
		return retryAfter(0, fmt.Errorf("sqsadapter: batch %q: unexpected record state %v", x.n.id, rec))
	}
	if x.job.Item > 0 {
		return x.itemResolved(ctx, replay)
	}
	n, ok := scatterCount(rec)
	if !ok {
		return retryAfter(0, fmt.Errorf("sqsadapter: batch %q: its record has no item count", x.n.id))
	}
	if x.batch == nil {
		x.batch = &batchRun{count: n}
	}
	return x.sendPage(ctx, 0, replay)
}

// sendPage sends the jobs of the items of page p and the job of page p+1.
// On a replay (a page job, or the scatter's job finding it committed) it
// first reads the gather's record — resolved, everything is done and the
// chain stops — and the page's level-1 join records. If no item of the
// page has arrived (a page's first job, usually), it sends them all; else
// it reads the page's item records and sends only what may be missing
// (pageRepairs). Resent jobs are absorbed by their item's acquire.
func (x *jobRun) sendPage(ctx context.Context, p int, replay bool) outcome {
	b, n := x.n.batch, x.batch.count
	s, g := x.n.id, b.gather.id
	lo, hi := min(p*b.chunk, n), min((p+1)*b.chunk, n)
	send := make([]bool, hi-lo)
	for k := range send {
		send[k] = true
	}
	if replay {
		var grec map[string]*store.NodeRecord
		if err := x.idempotent(ctx, func() (err error) {
			grec, err = x.a.cfg.contexts.GetNodes(ctx, x.job.RunID, []string{g})
			return err
		}); err != nil {
			return retryAfter(0, fmt.Errorf("sqsadapter: read page %d of batch %q: %w", p, s, err))
		}
		if r := grec[g]; r != nil && r.State != store.NodePending {
			return done // the gather ran, or the run finished
		}
		var keys []string
		for grp := lo / batchFanIn; grp*batchFanIn < hi; grp++ {
			keys = append(keys, batchGroupKey(x.job.RunID, s, 1, grp))
		}
		var groups map[string]*store.JoinState
		if len(keys) > 0 {
			if err := x.idempotent(ctx, func() (err error) {
				groups, err = x.a.cfg.coord.GetJoins(ctx, keys)
				return err
			}); err != nil {
				return retryAfter(0, fmt.Errorf("sqsadapter: read the arrivals of batch %q: %w", s, err))
			}
		}
		arrived := 0
		for _, st := range groups {
			arrived += arrivedIn(st.Arrived, lo, hi)
		}
		if arrived > 0 {
			if o, ok := x.pageRepairs(ctx, p, lo, hi, groups, send); !ok {
				return o
			}
		}
	}
	if slices.Contains(send, true) && x.batch.items == nil {
		if err := x.loadItems(ctx); err != nil {
			return retryAfter(0, err)
		}
	}
	for k, ok := range send {
		if ok {
			x.sends = append(x.sends, x.itemJob(lo+k))
		}
	}
	if n == 0 {
		x.sends = append(x.sends, Job{RunID: x.job.RunID, BlueprintID: x.p.id, NodeID: g, BlueprintVersion: x.p.version})
	}
	if hi < n {
		x.sends = append(x.sends, Job{RunID: x.job.RunID, BlueprintID: x.p.id, NodeID: s, BlueprintVersion: x.p.version, Page: p + 1})
	}
	if err := x.flush(ctx); err != nil {
		return retryAfter(0, err)
	}
	if x.crash("advanced") {
		return abandon
	}
	return done
}

// pageRepairs narrows send, for page p ([lo, hi)) some of whose items
// have arrived, to what may be missing: items without a resolved record
// or whose arrival is not recorded, and one item of each complete group,
// whose replay redoes the arrivals above it.
func (x *jobRun) pageRepairs(ctx context.Context, p, lo, hi int, groups map[string]*store.JoinState, send []bool) (outcome, bool) {
	s, n := x.n.id, x.batch.count
	ids := make([]string, 0, hi-lo)
	for i := lo; i < hi; i++ {
		ids = append(ids, itemRecord(s, i))
	}
	var recs map[string]*store.NodeRecord
	if err := x.idempotent(ctx, func() (err error) {
		recs, err = x.a.cfg.contexts.GetNodes(ctx, x.job.RunID, ids)
		return err
	}); err != nil {
		return retryAfter(0, fmt.Errorf("sqsadapter: read page %d of batch %q: %w", p, s, err)), false
	}
	sent := map[int]bool{}
	for i := lo; i < hi; i++ {
		st := groups[batchGroupKey(x.job.RunID, s, 1, i/batchFanIn)]
		switch r := recs[itemRecord(s, i)]; {
		case r == nil || r.State == store.NodePending:
			send[i-lo] = true // not run yet, or abandoned
		case r.State == store.NodeCommitted || r.State == store.NodeFailed:
			// Resolved; its arrival may be missing (a failed item that
			// fails the run never arrives: its job resumes the failure).
			send[i-lo] = st == nil || !slices.Contains(st.Arrived, strconv.Itoa(i))
		default:
			send[i-lo] = false // closed: the run finished
		}
		if send[i-lo] {
			sent[i/batchFanIn] = true
		}
	}
	for grp := lo / batchFanIn; grp*batchFanIn < hi; grp++ {
		first, last := grp*batchFanIn, min((grp+1)*batchFanIn, n)
		if st := groups[batchGroupKey(x.job.RunID, s, 1, grp)]; !sent[grp] && st != nil && arrivedIn(st.Arrived, first, last) == last-first {
			send[max(first, lo)-lo] = true // redoes the arrivals above the group
		}
	}
	return outcome{}, true
}

// itemJob is the job of item i, carrying its input when it is small.
func (x *jobRun) itemJob(i int) Job {
	j := Job{RunID: x.job.RunID, BlueprintID: x.p.id, NodeID: x.n.id, BlueprintVersion: x.p.version, Item: i + 1}
	if i < len(x.batch.items) && x.a.cfg.maxInlineInput > 0 {
		if b, err := json.Marshal(x.batch.items[i]); err == nil && len(b) <= x.a.cfg.maxInlineInput {
			j.Input = b
		}
	}
	return j
}

// itemResolved makes a resolved item (committed, or failed and tolerated)
// arrive in the batch's tree: at its level-1 group; if that arrival
// completes the group, the group arrives at its level-2 group, and so on;
// the arrival that completes the top group sends the gather's job. Every
// arrival is a set union, so a replay redoes them all harmlessly, and
// repairs a chain a crash cut.
func (x *jobRun) itemResolved(ctx context.Context, replay bool) outcome {
	s, g := x.n.id, x.n.batch.gather
	member, units := x.job.Item-1, x.batch.count
	for level := 1; ; level++ {
		grp := member / batchFanIn
		groups := (units + batchFanIn - 1) / batchFanIn
		first, last := grp*batchFanIn, min((grp+1)*batchFanIn, units)
		key := batchGroupKey(x.job.RunID, s, level, grp)
		var st *store.JoinState
		if err := x.idempotent(ctx, func() (err error) {
			st, err = x.a.cfg.coord.Arrive(ctx, key, store.Arrival{Source: strconv.Itoa(member)}, x.a.cfg.coordinationTTL)
			return err
		}); err != nil {
			return retryAfter(0, fmt.Errorf("sqsadapter: arrive in batch %q: %w", s, err))
		}
		if x.crash("arrived") {
			return abandon
		}
		if arrivedIn(st.Arrived, first, last) < last-first {
			break // another member completes the group
		}
		if groups > 1 {
			member, units = grp, groups
			continue
		}
		// Every item is resolved.
		needed := true
		if replay {
			var recs map[string]*store.NodeRecord
			if err := x.idempotent(ctx, func() (err error) {
				recs, err = x.a.cfg.contexts.GetNodes(ctx, x.job.RunID, []string{g.id})
				return err
			}); err != nil {
				return retryAfter(0, err)
			}
			r := recs[g.id]
			needed = r == nil || r.State == store.NodePending
		}
		if needed {
			x.sends = append(x.sends, Job{RunID: x.job.RunID, BlueprintID: x.p.id, NodeID: g.id, BlueprintVersion: x.p.version})
		}
		break
	}
	if err := x.flush(ctx); err != nil {
		return retryAfter(0, err)
	}
	if x.crash("advanced") {
		return abandon
	}
	return done
}

// arrivedIn counts the members of a group record in [first, last): members
// are decimal indexes.
func arrivedIn(arrived []string, first, last int) int {
	n := 0
	for _, m := range arrived {
		if i, err := strconv.Atoi(m); err == nil && i >= first && i < last && strconv.Itoa(i) == m {
			n++
		}
	}
	return n
}

// failedRecord is the record that failRun marks failed for nodeID: an
// item's own, when this job is an item of nodeID.
func (x *jobRun) failedRecord(nodeID string) string {
	if x.job.Item > 0 && x.n != nil && x.n.batch != nil && nodeID == x.n.id && x.n.builtin == builtinScatter {
		return itemRecord(nodeID, x.job.Item-1)
	}
	return nodeID
}

// toleratedItem reports whether this job is an item of a batch that
// tolerates failed items: one that failed is resolved, and arrives.
func (x *jobRun) toleratedItem() bool {
	return x.job.Item > 0 && x.n != nil && x.n.batch != nil && x.batch != nil && x.n.batch.tolerated > 0
}

// closeBatchItems closes the unresolved item records of every committed
// scatter of a failing or cancelled run, so that none of them starts: item
// records are not in the plan's closeIDs. It reads the items' records in
// pages of 100 and closes the open ones: O(N), on failure and cancel only.
// call runs each store call (with retries, or not).
func (a *SqsAdapter) closeBatchItems(ctx context.Context, p *plan, runID string, call func(func() error) error) error {
	var scatters []string
	for _, n := range p.order {
		if n.builtin == builtinScatter && n.batch != nil {
			scatters = append(scatters, n.id)
		}
	}
	if len(scatters) == 0 {
		return nil
	}
	cs := a.cfg.contexts
	var recs map[string]*store.NodeRecord
	if err := call(func() (err error) { recs, err = cs.GetNodes(ctx, runID, scatters); return err }); err != nil {
		return err
	}
	for _, s := range scatters {
		n, ok := scatterCount(recs[s])
		if !ok {
			continue // never committed: it is closed, so it sends no item
		}
		for lo := 0; lo < n; lo += batchReadPage {
			ids := make([]string, 0, batchReadPage)
			for i := lo; i < min(lo+batchReadPage, n); i++ {
				ids = append(ids, itemRecord(s, i))
			}
			var items map[string]*store.NodeRecord
			if err := call(func() (err error) { items, err = cs.GetNodes(ctx, runID, ids); return err }); err != nil {
				return err
			}
			open := slices.DeleteFunc(ids, func(id string) bool {
				r := items[id]
				return r != nil && r.State != store.NodePending
			})
			if len(open) > 0 {
				if err := call(func() error { return cs.CloseNodes(ctx, runID, open) }); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// batchCounts caches N by run and scatter: a committed scatter's count
// never changes. It is bounded: it is emptied when full.
type batchCounts struct {
	mu sync.Mutex
	m  map[[2]string]int
}

const batchCountsMax = 4096

func (c *batchCounts) get(runID, s string) (int, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, ok := c.m[[2]string{runID, s}]
	return n, ok
}

func (c *batchCounts) put(runID, s string, n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= batchCountsMax {
		c.m = make(map[[2]string]int)
	}
	c.m[[2]string{runID, s}] = n
}

// ---------------------------------------------------------------------------
// Run status.

// dropItemOutputs removes the item records' "_outputs.S␟i" keys from a
// context snapshot: items are no nodes; their outputs are the gather's. It
// also shows a loop's nodes as of the iteration that ran last
// (collapseIterations).
func dropItemOutputs(vals map[string]any) {
	maps.DeleteFunc(vals, func(k string, _ any) bool {
		id, ok := strings.CutPrefix(k, outputsPrefix)
		return ok && isItemRecord(id)
	})
	collapseIterations(vals)
}

// addBatchProgress adds to the NodeStatus of each committed scatter of p
// its item count and how many of its items, among recs, are committed and
// failed.
func addBatchProgress(p *plan, nodes map[string]NodeStatus, recs map[string]*store.NodeRecord) {
	if p == nil {
		return
	}
	for _, n := range p.order {
		if n.builtin != builtinScatter || n.batch == nil {
			continue
		}
		if count, ok := scatterCount(recs[n.id]); ok {
			ns := nodes[n.id]
			ns.BatchItems = count
			nodes[n.id] = ns
		}
	}
	for id, r := range recs {
		s, _, ok := parseItemRecord(id)
		ns, found := nodes[s]
		if !ok || !found || ns.BatchItems == 0 {
			continue
		}
		switch r.State {
		case store.NodeCommitted:
			ns.BatchCompleted++
		case store.NodeFailed:
			ns.BatchFailed++
		}
		nodes[s] = ns
	}
}

// ---------------------------------------------------------------------------
// Compilation.

// expandMaps replaces every "map" node m (unless "map" is registered) by
// the pair Flowcraft's builder writes for .batch(m, ...), except that the
// gather keeps the id m: a scatter "m_scatter" takes the edges into m and
// the map's inputs, config and params; the gather m keeps the edges out of
// m. A start map node without inputs reads "_inputs.m", as a start node m
// would. names maps the ids of the pair to how messages name them.
func expandMaps(bp *Blueprint, reg NodeRegistry) (*Blueprint, map[string]string, error) {
	if reg == nil || reg[builtinMap] != nil || !slices.ContainsFunc(bp.Nodes, func(n NodeDefinition) bool { return n.Uses == builtinMap }) {
		return bp, nil, nil
	}
	var problems []string
	ids := make(map[string]bool, len(bp.Nodes))
	for _, n := range bp.Nodes {
		ids[n.ID] = true
	}
	out := &Blueprint{ID: bp.ID, Metadata: bp.Metadata, Edges: slices.Clone(bp.Edges)}
	names := map[string]string{}
	scatterOf := map[string]string{}
	for _, n := range bp.Nodes {
		if n.Uses != builtinMap {
			out.Nodes = append(out.Nodes, n)
			continue
		}
		name := fmt.Sprintf("map node %q", n.ID)
		s := n.ID + "_scatter"
		if ids[s] {
			problems = append(problems, fmt.Sprintf("%s: its scatter's id %q is taken by another node", name, s))
			continue
		}
		for _, k := range slices.Sorted(maps.Keys(n.Params)) {
			if !slices.Contains([]string{"worker", "chunkSize", "toleratedFailures", "outputKey"}, k) {
				problems = append(problems, fmt.Sprintf("%s: unknown param %q (a map node takes worker, chunkSize, toleratedFailures and outputKey)", name, k))
			}
		}
		worker, ok := n.Params["worker"].(string)
		if !ok || worker == "" {
			problems = append(problems, fmt.Sprintf("%s: params.worker must name the registered function that runs each item", name))
		}
		params := map[string]any{"workerUsesKey": worker, "gatherNodeId": n.ID}
		for _, k := range []string{"chunkSize", "toleratedFailures", "outputKey"} {
			if v, ok := n.Params[k]; ok {
				params[k] = v
			}
		}
		gparams := map[string]any{"gatherNodeId": n.ID}
		if v, ok := n.Params["outputKey"]; ok {
			gparams["outputKey"] = v
		}
		cfg := n.Config
		inputs := n.Inputs
		if inputs == nil && !slices.ContainsFunc(bp.Edges, func(e EdgeDefinition) bool { return e.Target == n.ID }) {
			inputs = "_inputs." + n.ID // a start node's input is named after the node, not its scatter
		}
		scatter := NodeDefinition{ID: s, Uses: builtinScatter, Inputs: inputs, Params: params, Config: cfg, SourceLocation: n.SourceLocation}
		gather := NodeDefinition{ID: n.ID, Uses: builtinGather, Params: gparams, Config: NodeConfig{JoinStrategy: "all", Fallback: cfg.Fallback},
			SourceLocation: n.SourceLocation}
		scatter.Config.Fallback = "" // reported on the gather, once
		out.Nodes = append(out.Nodes, scatter, gather)
		names[s], names[n.ID] = name, name
		scatterOf[n.ID] = s
	}
	if len(problems) > 0 {
		return nil, nil, &BlueprintError{BlueprintID: bp.ID, Problems: problems}
	}
	for i, e := range out.Edges {
		if s, ok := scatterOf[e.Target]; ok {
			out.Edges[i].Target = s
		}
	}
	for _, m := range slices.Sorted(maps.Keys(scatterOf)) {
		out.Edges = append(out.Edges, EdgeDefinition{Source: scatterOf[m], Target: m})
	}
	if err := out.Validate(); err != nil {
		return nil, nil, err
	}
	return out, names, nil
}

// compileBatches checks the batch nodes of p and links each scatter and
// gather to their batchSpec. names are the map nodes' (expandMaps).
func compileBatches(p *plan, reg NodeRegistry, names map[string]string) []string {
	var problems []string
	add := func(n *planNode, format string, args ...any) {
		name := names[n.id]
		if name == "" {
			name = fmt.Sprintf("%s node %q", n.builtin, n.id)
		}
		problems = append(problems, name+": "+fmt.Sprintf(format, args...))
	}
	scatters := map[string][]*planNode{} // by gather id
	for _, n := range p.order {
		if n.builtin != builtinScatter && n.builtin != builtinGather {
			continue
		}
		if n.def.Config.Fallback != "" {
			add(n, "a batch node cannot have a fallback")
		}
		if n.fallbackOnly {
			add(n, "a batch node cannot be a fallback")
		}
		if n.builtin != builtinScatter {
			continue
		}
		b := &batchSpec{scatter: n, chunk: defaultChunkSize, name: names[n.id]}
		params := n.def.Params
		w, _ := params["workerUsesKey"].(string)
		switch fn := reg[w]; {
		case w == "":
			add(n, "params.workerUsesKey must name the registered function that runs each item")
		case fn != nil:
			b.worker = &planNode{def: &NodeDefinition{Uses: w}, fn: fn, maxAttempts: n.maxAttempts, retryDelay: n.retryDelay, timeout: n.timeout}
		case slices.Contains([]string{builtinWait, builtinWebhook, builtinSleep, builtinScatter, builtinGather, builtinMap}, w):
			add(n, "the worker %q is a built-in node, which cannot run batch items: register a function", w)
		default:
			add(n, "the worker %q is not in the registry", w)
		}
		gid, _ := params["gatherNodeId"].(string)
		if g := p.nodes[gid]; g == nil || g.builtin != builtinGather {
			add(n, "params.gatherNodeId %q must name a batch-gather node", gid)
		} else {
			b.gather = g
			scatters[gid] = append(scatters[gid], n)
		}
		if v, ok, valid := intParam(params, "chunkSize"); ok && (!valid || v < 1 || v > maxChunkSize) {
			add(n, "chunkSize must be an integer from 1 to %d, not %v", maxChunkSize, params["chunkSize"])
		} else if ok {
			b.chunk = v
		}
		if v, ok, valid := intParam(params, "toleratedFailures"); ok && (!valid || v < 0) {
			add(n, "toleratedFailures must be a non-negative integer, not %v", params["toleratedFailures"])
		} else if ok {
			b.tolerated = v
		}
		if len(n.out) != 1 || n.out[0].target != b.gather || b.gather == nil {
			add(n, "its only outgoing edge must be the one to its gather %q", gid)
		} else if e := n.out[0]; e.action != "" || e.condition != nil || e.transform != nil {
			add(n, "the edge to its gather cannot have an action, a condition or a transform")
		}
		for _, other := range p.order {
			if rest, ok := strings.CutPrefix(other.id, n.id+"["); ok && strings.HasSuffix(rest, "]") && digits(strings.TrimSuffix(rest, "]")) {
				add(n, "node %q has the id of one of its items, which share its idempotency keys", other.id)
			}
		}
		n.batch = b
	}
	for _, n := range p.order {
		if n.fallback != nil && (n.fallback.builtin == builtinScatter || n.fallback.builtin == builtinGather) {
			problems = append(problems, fmt.Sprintf("node %q: its fallback %q is a batch node, which cannot be a fallback", n.id, n.fallback.id))
		}
		if n.builtin != builtinGather {
			continue
		}
		ss := scatters[n.id]
		switch {
		case len(ss) == 0:
			add(n, "no batch-scatter node names it as its gatherNodeId")
			continue
		case len(ss) > 1:
			add(n, "several batch-scatter nodes name it as their gatherNodeId")
			continue
		}
		b := ss[0].batch
		if len(n.preds) != 1 || n.preds[0] != b.scatter.id {
			add(n, "its only predecessor must be its scatter %q", b.scatter.id)
		}
		if gid, ok := n.def.Params["gatherNodeId"]; ok && gid != n.id {
			add(n, "params.gatherNodeId %v must be its own id", gid)
		}
		b.outputKey = n.id
		for _, params := range []map[string]any{b.scatter.def.Params, n.def.Params} {
			v, ok := params["outputKey"]
			if !ok || v == nil {
				continue
			}
			k, isString := v.(string)
			if err := checkContextKey(k); !isString || err != nil || k == batchKey(b.scatter.id) {
				add(n, "outputKey %v is not a context key a node can write", v)
				continue
			}
			b.outputKey = k // the gather's wins, as in Flowcraft
		}
		n.batch = b
	}
	if len(problems) > 0 {
		return problems
	}
	return nil
}

// intParam reads an integer param: ok reports it present, valid that it is
// an integer.
func intParam(params map[string]any, key string) (v int, ok, valid bool) {
	raw, ok := params[key]
	if !ok || raw == nil {
		return 0, false, false
	}
	switch x := raw.(type) {
	case int:
		return x, true, true
	case int64:
		return int(x), true, x == int64(int(x))
	case int32:
		return int(x), true, true
	case float64:
		return int(x), true, x == float64(int64(x)) && x > -1e15 && x < 1e15
	case json.Number:
		i, err := x.Int64()
		return int(i), true, err == nil
	}
	return 0, true, false
}
