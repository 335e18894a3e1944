package sqsadapter

import (
	"context"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/flowcraft/sqsadapter/internal/expr"
	"github.com/flowcraft/sqsadapter/internal/jsonvalue"
	"github.com/flowcraft/sqsadapter/store"
)

// Loops: the loop-controller built-in (reference §4.6), as Flowcraft's
// builder wires it: the controller L has one edge with action "continue" to
// the first node S of the loop's body, the body's last node E has an edge to
// L, and L's other edges (action "break" by default) leave the loop. L
// evaluates params.condition against the run context: true continues (the
// body runs again, S getting what the continue edge stages), false breaks.
//
// Each pass of the loop is its own set of nodes: iteration k of body node B
// and pass k of L have the records "B␟@k" and "L␟@k" (k = 0 is the node's
// own record "B"), their join records are keyed the same way, and their jobs
// carry k (Job.Iter). A pass is thereby an ordinary stretch of the graph —
// the same acquire, commit, replay and reconcile steps, exactly once per
// iteration — with two differences in how it advances: while L continues,
// its other edges are neither taken nor dead (they wait for the pass that
// breaks), and when it breaks, the continue edge leads nowhere (there is no
// next iteration to skip). The pass that breaks (or a skip of L) writes the
// loop's done record "L␟loop", a copy of its commit naming the pass, which
// later readers of the body's outputs, and the completion of a loop without
// exits, read. docs/protocol.md has the crash analysis.
//
// The loop's shape is checked when the blueprint is validated: cycles are
// allowed only through a controller's continue edge; the body (the nodes on
// a path from S back to L) is entered only at S (do-while) or at L (while),
// left only through L, ends in one node, and holds plain nodes, fallbacks
// and "all" joins (dead branches inside an iteration are eliminated as
// anywhere else); an "any" join, a waiting node, a subflow, a batch or
// another loop inside a body is refused with the reason.

const (
	builtinLoop    = "loop-controller"
	actionContinue = "continue"
	// defaultMaxIterations bounds how many times a loop's body runs, as
	// Flowcraft's runtime does; params.maxIterations changes it.
	defaultMaxIterations = 10000
	// iterSep separates a node id from its iteration in a record id.
	iterSep = "\x1f@"
	// loopDoneSuffix ends the id of a loop's done record.
	loopDoneSuffix = "\x1floop"
)

// iterID is the record id of iteration k of node id.
func iterID(id string, k int) string {
	if k == 0 {
		return id
	}
	return id + iterSep + strconv.Itoa(k)
}

// parseIterID splits a record id made by iterID with k > 0; ok is false
// for any other id.
func parseIterID(rid string) (id string, k int, ok bool) {
	id, n, found := strings.Cut(rid, iterSep)
	if !found || !digits(n) || len(n) > 9 || n[0] == '0' {
		return "", 0, false
	}
	k, _ = strconv.Atoi(n)
	return id, k, true
}

// loopDone names loop id's done record.
func loopDone(id string) string { return id + loopDoneSuffix }

// loopShape is one loop of a blueprint.
type loopShape struct {
	id     string          // the controller
	start  string          // the continue edge's target: the body's first node
	end    string          // the body node with the edge into the controller
	body   []string        // the body's nodes, blueprint order
	inBody map[string]bool // the same, as a set
	// entryAtStart: edges from outside lead into start (the body runs
	// first), not into the controller (the condition is checked first).
	entryAtStart bool
	exits        bool // the controller has edges other than its continue edge
	condition    *expr.Program
	maxIter      int
}

// isLoopBack reports whether e is a loop controller's continue edge, the
// one edge a cycle may take.
func isLoopBack(uses map[string]string, e EdgeDefinition) bool {
	return uses[e.Source] == builtinLoop && e.Action == actionContinue
}

// loopShapes finds the blueprint's loops and what is wrong with them.
func (b *Blueprint) loopShapes(nodeIDs expr.Option) (map[string]*loopShape, []string) {
	uses := make(map[string]string, len(b.Nodes))
	join := make(map[string]string, len(b.Nodes))
	for _, n := range b.Nodes {
		uses[n.ID], join[n.ID] = n.Uses, n.Config.JoinStrategy
	}
	next, prev := map[string][]string{}, map[string][]string{}
	for _, e := range b.Edges {
		if !isLoopBack(uses, e) {
			next[e.Source] = append(next[e.Source], e.Target)
			prev[e.Target] = append(prev[e.Target], e.Source)
		}
	}
	var problems []string
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	shapes := make(map[string]*loopShape)
	for _, n := range b.Nodes {
		if n.Uses != builtinLoop {
			continue
		}
		l := n.ID
		var backs []string
		for _, e := range b.Edges {
			if e.Source == l && e.Action == actionContinue {
				backs = append(backs, e.Target)
			}
		}
		if len(backs) != 1 {
			add("loop %q has %d edges with action \"continue\": a loop controller needs exactly one, to its body's first node", l, len(backs))
			continue
		}
		sh := &loopShape{id: l, start: backs[0], inBody: map[string]bool{}, maxIter: defaultMaxIterations}
		if sh.start == l {
			add("loop %q: its continue edge leads to itself", l)
			continue
		}
		if c, ok := n.Params["condition"].(string); !ok || strings.TrimSpace(c) == "" {
			add("loop %q: params.condition must be an expression (true continues the loop)", l)
		} else if prog, err := expr.Compile(c, nodeIDs); err != nil {
			add("loop %q: condition: %v", l, err)
		} else {
			sh.condition = prog
		}
		if v, ok := n.Params["maxIterations"]; ok {
			if m, ok := jsonvalue.WholeNumber(v); ok && m >= 1 && m <= math.MaxInt32 {
				sh.maxIter = int(m)
			} else {
				add("loop %q: params.maxIterations must be a whole number from 1, not %v", l, v)
			}
		}
		fwd := reach(sh.start, next, l)
		bwd := reach(l, prev, l)
		for _, m := range b.Nodes {
			if m.ID != l && fwd[m.ID] && bwd[m.ID] {
				sh.body = append(sh.body, m.ID)
				sh.inBody[m.ID] = true
			}
		}
		if !sh.inBody[sh.start] {
			add("loop %q: its continue edge to %q does not lead back to it", l, sh.start)
			continue
		}
		ends, entriesAtStart, entriesAtLoop := 0, false, false
		for i, e := range b.Edges {
			name := fmt.Sprintf("edge #%d (%s -> %s)", i, e.Source, e.Target)
			switch {
			case isLoopBack(uses, e):
			case sh.inBody[e.Source] && e.Target == l:
				if sh.end != e.Source {
					ends++
					sh.end = e.Source
				}
			case sh.inBody[e.Source] && !sh.inBody[e.Target]:
				add("%s leaves the body of loop %q: a loop is left only through its controller's edges (action \"break\")", name, l)
			case !sh.inBody[e.Source] && e.Target == sh.start:
				entriesAtStart = true
			case !sh.inBody[e.Source] && sh.inBody[e.Target]:
				add("%s enters the body of loop %q other than at its first node %q", name, l, sh.start)
			case e.Source == l:
				sh.exits = true
			case e.Target == l:
				entriesAtLoop = true
			}
		}
		if ends != 1 {
			add("loop %q: %d body nodes lead to the controller: a loop's body ends in one node", l, ends)
		}
		if entriesAtStart && entriesAtLoop {
			add("loop %q is entered both at its controller and at its first node %q: enter it at one", l, sh.start)
		}
		sh.entryAtStart = !entriesAtLoop
		for _, id := range sh.body {
			switch u := uses[id]; {
			case u == builtinLoop:
				add("loop %q holds loop %q: nested loops are not supported; run the inner loop in a subflow's blueprint", l, id)
			case u == builtinWait || u == builtinWebhook || u == builtinSleep || u == builtinSubflow ||
				u == builtinScatter || u == builtinGather || u == builtinMap:
				add("loop %q: node %q uses %q, which a loop's body cannot hold (plain nodes, fallbacks and \"all\" joins)", l, id, u)
			case join[id] == "any" && len(prev[id]) > 1:
				add("loop %q: node %q joins with \"any\": an iteration ends only once its whole body is resolved; use \"all\" (dead branches are eliminated)", l, id)
			}
		}
		shapes[l] = sh
	}
	return shapes, problems
}

// reach is the set of nodes reachable from id along next, not expanding
// stop (which is included when reached).
func reach(id string, next map[string][]string, stop string) map[string]bool {
	seen := map[string]bool{id: true}
	stack := []string{id}
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if n == stop && n != id {
			continue
		}
		for _, t := range next[n] {
			if !seen[t] {
				seen[t] = true
				stack = append(stack, t)
			}
		}
	}
	return seen
}

// addLoops wires the plan's loops: the controllers become built-ins, the
// continue edge leaves the static graph (iteration 0) for iteration 1's
// first node, and predecessors lose the edges that only later passes take.
// It runs before the plan's joins, starts and leaves are derived.
func (p *plan) addLoops(shapes map[string]*loopShape) {
	for _, id := range slices.Sorted(maps.Keys(shapes)) {
		sh := shapes[id]
		l, s := p.nodes[sh.id], p.nodes[sh.start]
		l.loop, l.builtin = sh, builtinLoop
		for _, b := range sh.body {
			p.nodes[b].loop = sh
		}
		if sh.entryAtStart {
			s.preds = slices.DeleteFunc(s.preds, func(src string) bool { return src == sh.id })
		} else {
			// Entered at the controller, the loop has no iteration 0 of
			// its body: the first pass's continue edge starts iteration 1,
			// and the body's own nodes (with the controller as their first
			// node's predecessor) never run.
			l.preds = slices.DeleteFunc(l.preds, func(src string) bool { return src == sh.end })
		}
		next := p.nextStart(sh, 0)
		for _, e := range l.out {
			if e.target == s && e.action == actionContinue {
				e.target = next
			}
		}
		for i, t := range l.targets {
			if t == s {
				l.targets[i] = next
			}
		}
		keys, all := sh.condition.ContextKeys()
		l.exprAll = l.exprAll || all
		for _, k := range keys {
			if !slices.Contains(l.exprKeys, k) {
				l.exprKeys = append(l.exprKeys, k)
			}
		}
		p.loops = append(p.loops, sh)
		p.closeIDs = append(p.closeIDs, loopDone(sh.id))
		if !sh.exits {
			// Nothing follows the loop: its end decides completion.
			p.leaves = append(p.leaves, &planNode{id: loopDone(sh.id), def: l.def, leaf: true})
		}
	}
}

// nextStart is the first node of the iteration after pass k of loop sh, as
// pass k's continue edge names it: a node without edges, whose own
// iteration is built when its job runs (iterNode).
func (p *plan) nextStart(sh *loopShape, k int) *planNode {
	c := *p.nodes[sh.start]
	c.id, c.iter = iterID(sh.start, k+1), k+1
	c.preds, c.join, c.out, c.targets, c.start, c.leaf = []string{iterID(sh.id, k)}, "", nil, nil, false, false
	c.transformedIn = c.def.Inputs != nil && p.continueEdge(sh).transform != nil
	return &c
}

// continueEdge is loop sh's continue edge in the static plan.
func (p *plan) continueEdge(sh *loopShape) *planEdge {
	for _, e := range p.nodes[sh.id].out {
		if e.action == actionContinue && e.target.def.ID == sh.start {
			return e
		}
	}
	panic("sqsadapter: loop " + sh.id + " lost its continue edge")
}

// iterNode is node id in iteration k (k = 0: the node itself); nil if the
// node is not in a loop, or not a node.
func (p *plan) iterNode(id string, k int) *planNode {
	n := p.nodes[id]
	if k == 0 || n == nil {
		return n
	}
	if n.loop == nil || k < 0 {
		return nil
	}
	return p.iteration(n.loop, k)[id]
}

// recordNode is the node, in its iteration, whose record rid is; nil for
// an internal record that is no node's (a fallback's, an item's, a loop's
// done record).
func (p *plan) recordNode(rid string) *planNode {
	if id, k, ok := parseIterID(rid); ok {
		return p.iterNode(id, k)
	}
	return p.nodes[rid]
}

// iteration builds pass k > 0 of loop sh: a copy of each body node and of
// the controller, with record ids, predecessors and edges of that pass.
func (p *plan) iteration(sh *loopShape, k int) map[string]*planNode {
	ids := append(slices.Clone(sh.body), sh.id)
	m := make(map[string]*planNode, len(ids))
	for _, id := range ids {
		c := *p.nodes[id]
		c.id, c.iter, c.start, c.leaf = iterID(id, k), k, false, false
		m[id] = &c
	}
	next := p.nextStart(sh, k)
	for _, id := range ids {
		c, orig := m[id], p.nodes[id]
		c.out, c.targets = make([]*planEdge, 0, len(orig.out)), nil
		for _, e := range orig.out {
			t := e.target
			switch {
			case id == sh.id && e.action == actionContinue && t.def.ID == sh.start:
				t = next
			case m[t.def.ID] != nil:
				t = m[t.def.ID]
			}
			c.out = append(c.out, &planEdge{target: t, action: e.action, condition: e.condition, transform: e.transform, index: e.index})
			if !slices.Contains(c.targets, t) {
				c.targets = append(c.targets, t)
			}
		}
		switch id {
		case sh.start:
			c.preds, c.join = []string{iterID(sh.id, k-1)}, ""
			c.transformedIn = c.def.Inputs != nil && p.continueEdge(sh).transform != nil
		case sh.id:
			c.preds, c.join = []string{iterID(sh.end, k)}, ""
		default:
			c.preds = make([]string, len(orig.preds))
			for i, src := range orig.preds {
				c.preds[i] = iterID(src, k)
			}
		}
	}
	return m
}

// isContinue reports whether e's target is the next iteration's first node.
func (n *planNode) isContinue(t *planNode) bool {
	return n.builtin == builtinLoop && t.loop == n.loop && t.def.ID == n.loop.start
}

// ---------------------------------------------------------------------------
// The controller's pass.

// loopPass runs pass k of a loop controller: its condition decides, and the
// decision is committed like any node's output ("continue" with no output,
// "break" with null, as Flowcraft's controller returns). Continuing past
// the iteration limit fails the run.
func (x *jobRun) loopPass(ctx context.Context, rec *store.NodeRecord, in any, vals map[string]any) outcome {
	sh := x.n.loop
	v, err := sh.condition.Eval(expr.Env{Input: in, Context: vals})
	res := NodeResult{Action: "break"}
	if err == nil && expr.Truthy(v) {
		res.Action = actionContinue
	} else if err != nil {
		x.a.expressionErrors.Add(1)
		x.log.WarnContext(ctx, "sqsadapter: a loop condition failed to evaluate and counts as false: the loop ends",
			"loop", sh.id, "expression", sh.condition.String(), "err", err)
	}
	if res.Action == actionContinue {
		// Body runs so far, counting the one to come.
		runs := x.n.iter + 1
		if sh.entryAtStart {
			runs++
		}
		if runs > sh.maxIter {
			return x.failRun(ctx, x.n.id, fmt.Sprintf("loop %q exceeded %d iterations (params.maxIterations)", sh.id, sh.maxIter))
		}
	}
	nc := &NodeContext{RunID: x.job.RunID, BlueprintID: x.p.id, NodeID: sh.id, Input: in, Params: x.n.def.Params, Attempt: rec.Attempts}
	return x.commit(ctx, res, nc, in, vals, "")
}

// loopEnded writes loop sh's done record from rec, the committed pass that
// broke: the same decision, the pass named in its token.
func (x *jobRun) loopEnded(ctx context.Context, rec *store.NodeRecord) error {
	c := store.NodeCommit{NodeID: loopDone(x.n.loop.id), Output: rec.Output, Action: rec.Action, Taken: rec.Taken, Staged: rec.Staged,
		Token: "pass:" + strconv.Itoa(x.n.iter)}
	return x.idempotent(ctx, func() error {
		_, err := x.a.cfg.contexts.CommitNode(ctx, x.job.RunID, c)
		if err != nil && (isDecision(err)) {
			return nil // closed with its run, or committed: either way decided
		}
		return err
	})
}

// lastPass reads the pass that ended each of loops, by controller id: the
// pass named by its done record if it broke, else its controller's latest
// pass (0 for a loop that has not passed its first).
func (a *SqsAdapter) lastPass(ctx context.Context, runID string, loops []*loopShape) (map[string]int, error) {
	ids := make([]string, len(loops))
	for i, sh := range loops {
		ids[i] = loopDone(sh.id)
	}
	recs, err := a.cfg.contexts.GetNodes(ctx, runID, ids)
	if err != nil {
		return nil, err
	}
	out := make(map[string]int, len(loops))
	var others []*loopShape
	for _, sh := range loops {
		if r := recs[loopDone(sh.id)]; r != nil && r.State == store.NodeCommitted {
			out[sh.id], _ = strconv.Atoi(strings.TrimPrefix(r.Token, "pass:"))
		} else {
			others = append(others, sh)
		}
	}
	if len(others) == 0 {
		return out, nil
	}
	// A loop that a skipped pass ended has a skipped done record, which
	// names no pass (and is written with the skips, after the arrivals
	// that may already have started a reader): its last pass is its
	// controller's latest.
	all, err := a.cfg.contexts.ListNodes(ctx, runID)
	if err != nil {
		return nil, err
	}
	for rid, r := range all {
		id, k, ok := parseIterID(rid)
		if !ok || r.State == store.NodeClosed {
			continue
		}
		for _, sh := range others {
			if id == sh.id {
				out[id] = max(out[id], k)
			}
		}
	}
	return out, nil
}

// ---------------------------------------------------------------------------
// Reading outputs across iterations.

// readKeys maps the context keys a job of x.n reads to the keys to read:
// inside a loop's body (iteration k), a body node's output is that
// iteration's record; outside, it is the record of the iteration that ran
// last once the loop has ended (read from its done record).
func (x *jobRun) readKeys(ctx context.Context, keys []string) (map[string]string, error) {
	var m map[string]string
	var outside []*loopShape
	for _, k := range keys {
		id, ok := strings.CutPrefix(k, outputsPrefix)
		n := x.p.nodes[id]
		if !ok || n == nil || n.loop == nil {
			continue
		}
		switch {
		case x.n.loop == n.loop:
			if x.n.iter > 0 && id != n.loop.id {
				if m == nil {
					m = map[string]string{}
				}
				m[k] = outputsPrefix + iterID(id, x.n.iter)
			}
		case !slices.Contains(outside, n.loop):
			outside = append(outside, n.loop)
		}
	}
	if len(outside) == 0 {
		return m, nil
	}
	last, err := x.a.lastPass(ctx, x.job.RunID, outside)
	if err != nil {
		return nil, err
	}
	for _, k := range keys {
		id, _ := strings.CutPrefix(k, outputsPrefix)
		if n := x.p.nodes[id]; n != nil && n.loop != nil && n.loop != x.n.loop && last[n.loop.id] > 0 {
			if m == nil {
				m = map[string]string{}
			}
			m[k] = outputsPrefix + iterID(id, last[n.loop.id])
		}
	}
	return m, nil
}

// getMany reads keys for x.n (see readKeys), returning them under the
// names asked for.
func (x *jobRun) getMany(ctx context.Context, keys []string) (map[string]any, error) {
	if len(x.p.loops) == 0 {
		return x.a.cfg.contexts.GetMany(ctx, x.job.RunID, keys)
	}
	m, err := x.readKeys(ctx, keys)
	if err != nil {
		return nil, err
	}
	if len(m) == 0 {
		return x.a.cfg.contexts.GetMany(ctx, x.job.RunID, keys)
	}
	read := make([]string, len(keys))
	for i, k := range keys {
		read[i] = k
		if r, ok := m[k]; ok {
			read[i] = r
		}
	}
	got, err := x.a.cfg.contexts.GetMany(ctx, x.job.RunID, read)
	if err != nil {
		return nil, err
	}
	out := make(map[string]any, len(got))
	for i, k := range keys {
		if v, ok := got[read[i]]; ok {
			out[k] = v
		}
	}
	return out, nil
}

// collapseIterations makes a context snapshot show each loop node's output
// of the iteration that ran last, as "_outputs.<id>", and drops the other
// iterations' and the done records' keys.
func collapseIterations(vals map[string]any) {
	latest := map[string]int{}
	for k := range vals {
		rid, ok := strings.CutPrefix(k, outputsPrefix)
		if !ok {
			continue
		}
		if id, n, ok := parseIterID(rid); ok && n > latest[id] {
			latest[id] = n
		}
	}
	for id, n := range latest {
		if v, ok := vals[outputsPrefix+iterID(id, n)]; ok {
			vals[outputsPrefix+id] = v
		}
	}
	maps.DeleteFunc(vals, func(k string, _ any) bool {
		rid, ok := strings.CutPrefix(k, outputsPrefix)
		if !ok {
			return false
		}
		_, _, iter := parseIterID(rid)
		return iter || strings.HasSuffix(rid, loopDoneSuffix)
	})
}

// ---------------------------------------------------------------------------
// Closing a finished run's iterations.

// closeLoops closes the records of the iterations a failed or cancelled
// run's loops may still start: for each loop, the latest pass found and the
// one after it. A pass that commits meanwhile can start one more, so it
// reads again until nothing new is found.
func (a *SqsAdapter) closeLoops(ctx context.Context, p *plan, runID string, call func(func() error) error) error {
	if len(p.loops) == 0 {
		return nil
	}
	closed := map[string]int{} // loop -> passes closed up to
	for range 100 {
		var recs map[string]*store.NodeRecord
		if err := call(func() (err error) {
			recs, err = a.cfg.contexts.ListNodes(ctx, runID)
			return err
		}); err != nil {
			return err
		}
		latest := map[string]int{}
		for rid, r := range recs {
			if r.State == store.NodeClosed {
				continue // closed here: it starts nothing
			}
			if id, k, ok := parseIterID(rid); ok && p.nodes[id] != nil && p.nodes[id].loop != nil {
				l := p.nodes[id].loop.id
				latest[l] = max(latest[l], k)
			}
		}
		var ids []string
		for _, sh := range p.loops {
			to := latest[sh.id] + 1
			if done, ok := closed[sh.id]; ok && to <= done {
				continue
			}
			for k := max(latest[sh.id], 1); k <= to; k++ {
				for _, b := range sh.body {
					ids = append(ids, iterID(b, k))
					if f := p.nodes[b].fallback; f != nil {
						ids = append(ids, fallbackRecord(iterID(b, k)))
					}
				}
				ids = append(ids, iterID(sh.id, k))
			}
			closed[sh.id] = to
		}
		if len(ids) == 0 {
			return nil
		}
		if err := call(func() error { return a.cfg.contexts.CloseNodes(ctx, runID, ids) }); err != nil {
			return err
		}
	}
	return fmt.Errorf("sqsadapter: run %q: its loops kept starting passes while it was being closed", runID)
}

// nodeName is the node id of record id rid: rid itself but for a loop
// iteration's record.
func nodeName(rid string) string {
	if id, _, ok := parseIterID(rid); ok {
		return id
	}
	return rid
}

// label names node n in errors: its id, and its iteration in a loop's
// later passes.
func (n *planNode) label() string {
	if n.iter == 0 {
		return n.id
	}
	return fmt.Sprintf("%s (iteration %d)", n.def.ID, n.iter)
}

// followers are the targets whose resolution follows from n's committed
// record r: all of n's targets, but for a loop pass only the next
// iteration's first node if it continued, else its exits.
func (n *planNode) followers(r *store.NodeRecord) []*planNode {
	if n.builtin != builtinLoop {
		return n.targets
	}
	var next, exits []*planNode
	for _, t := range n.targets {
		if n.isContinue(t) {
			next = append(next, t)
		} else {
			exits = append(exits, t)
		}
	}
	if len(next) > 0 && slices.Contains(r.Taken, next[0].id) {
		return next
	}
	return exits
}
