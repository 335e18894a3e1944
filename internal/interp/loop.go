package interp

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"

	"github.com/flowcraft/sqsadapter"
	"github.com/flowcraft/sqsadapter/internal/expr"
	"github.com/flowcraft/sqsadapter/internal/jsonvalue"
)

// Loops (docs/protocol.md, "Loops"). A loop controller L — a node whose
// "uses" is "loop-controller" — has one edge with action "continue" to the
// first node S of its body; the body is the nodes on a path from S back to
// L, and its one end node E has the edge into L. The blueprint must have
// the shape the engine accepts (the engine validates it; Run refuses what it
// cannot run).
//
// The interpreter runs a loop as the engine does, one pass after the other:
//
//   - Entered at S (a do-while loop, or S without incoming edges), pass 0 of
//     the body runs where the body sits in the graph, then L's pass 0 (after
//     E's). Entered at L (a while loop), L's pass 0 runs first, from its
//     entries, and the first pass of the body is pass 1.
//   - A pass of the body is an ordinary stretch of the graph: routing,
//     conditions, dead paths, fallbacks, retries and "all" joins as
//     anywhere. Inside pass k, "_outputs.<id>" of a body node is its output
//     of pass k, absent if it did not run in pass k. Call.Iteration is k.
//   - L's pass k follows E's: its input is what E's edge stages (the
//     entries' for pass 0 of a while loop); params.condition is evaluated
//     with the input and the context as of then. Truthy continues: L's
//     output is null, its "continue" edge is routed (S's next input is what
//     it stages), and pass k+1 runs — unless the body would then have run
//     more than params.maxIterations (default 10000) times, which fails L
//     and the run. Otherwise, or when the condition fails to evaluate, L
//     breaks: its output is null and its other edges are routed with
//     action "break". A skipped E (or a failure before it) skips (or
//     blocks) L: the loop ends and its exits are dead (or blocked).
//   - After the loop, "_outputs.<id>" of a body node is its output of the
//     last pass (absent if it did not run in it); in the final context it
//     is its output of the last pass it ran in. Context writes accumulate
//     over the passes: the last write wins.
//
// Result.Passes lists the passes each body node and controller ran in, and
// Result.States gives a body node's state in the last pass that reached it.

// Loop names of the engine.
const (
	LoopController = "loop-controller"
	ActionContinue = "continue"
	ActionBreak    = "break"
	// DefaultMaxIterations is the number of body runs allowed without
	// params.maxIterations.
	DefaultMaxIterations = 10000
)

// loop is one loop of a blueprint, and where its run stands.
type loop struct {
	id, start, end string
	body           []string // in the graph's order
	inBody         map[string]bool
	doWhile        bool     // entered at its first node: pass 0 is the body's
	entries        []string // a while loop's predecessors of the controller
	cond           string
	maxIter        int
	// outside is what certainly precedes every pass of the body.
	outside map[string]bool

	pass    int  // the pass running
	visited bool // the controller's place in the graph's order is past
	labels  []string
}

// loops is the loops of a blueprint by node id: body nodes and controllers.
type loops map[string]*loop

// runState is the interpreter's state that a loop's passes change.
type runState struct {
	g       *graph
	view    map[string]any
	taken   map[string]map[string]bool
	staged  map[string]map[string]any
	writers map[string][]write
}

// newLoops finds bp's loops in g (whose preds and order leave continue
// edges out). It returns an error for a loop whose shape it cannot run.
func newLoops(bp *sqsadapter.Blueprint, g *graph) (loops, error) {
	ls := loops{}
	for _, d := range bp.Nodes {
		if d.Uses != LoopController {
			continue
		}
		l := &loop{id: d.ID, inBody: map[string]bool{}, maxIter: DefaultMaxIterations}
		for _, e := range g.out[d.ID] {
			if e.Action == ActionContinue {
				if l.start != "" {
					return nil, fmt.Errorf("interp: loop %s has more than one continue edge", d.ID)
				}
				l.start = e.Target
			}
		}
		if l.start == "" || l.start == d.ID {
			return nil, fmt.Errorf("interp: loop %s has no continue edge to a body", d.ID)
		}
		l.cond, _ = d.Params["condition"].(string)
		if v, ok := d.Params["maxIterations"]; ok {
			m, ok := jsonvalue.WholeNumber(v)
			if !ok || m < 1 {
				return nil, fmt.Errorf("interp: loop %s: params.maxIterations %v", d.ID, v)
			}
			l.maxIter = int(min(m, math.MaxInt32))
		}
		// The body: the nodes on a path from S to L.
		fwd := g.reach(l.start, d.ID, func(id string) []string {
			var ts []string
			for _, e := range g.out[id] {
				ts = append(ts, e.Target)
			}
			return ts
		})
		bwd := g.reach(d.ID, d.ID, func(id string) []string { return g.preds[id] })
		for _, id := range g.order {
			if id != d.ID && fwd[id] && bwd[id] {
				l.body = append(l.body, id)
				l.inBody[id] = true
			}
		}
		for _, p := range g.preds[d.ID] {
			if l.inBody[p] {
				if l.end != "" {
					return nil, fmt.Errorf("interp: loop %s: its body has more than one end", d.ID)
				}
				l.end = p
			} else {
				l.entries = append(l.entries, p)
			}
		}
		if !l.inBody[l.start] || l.end == "" {
			return nil, fmt.Errorf("interp: loop %s: its continue edge does not lead back to it", d.ID)
		}
		l.doWhile = len(l.entries) == 0
		for _, id := range l.body {
			if ls[id] != nil || g.defs[id].Uses == LoopController || Builtin(g.defs[id].Uses) != "" {
				return nil, fmt.Errorf("interp: loop %s: node %s cannot be in a loop's body", d.ID, id)
			}
			for _, p := range g.preds[id] {
				if !l.inBody[p] && (id != l.start || !l.doWhile) {
					return nil, fmt.Errorf("interp: loop %s: node %s enters its body at %s", d.ID, p, id)
				}
			}
			ls[id] = l
		}
		if l.doWhile {
			l.outside = g.before[l.start]
		} else {
			// What precedes the controller's first pass; the body runs after
			// that pass only.
			static := g.preds[d.ID]
			g.preds[d.ID] = l.entries
			l.outside = g.certainlyBefore(d.ID)
			g.preds[d.ID] = static
			g.preds[l.start] = []string{l.id}
		}
		ls[d.ID] = l
	}
	return ls, nil
}

// visit is called for each node of the run's order before it runs. It
// says whether the main loop should skip the node (a loop's controller,
// which it ran, or a body node outside a pass), and which nodes to run
// next: the next pass of a loop that continues.
func (ls loops) visit(x *Result, id string, st *runState) (next []string, skip bool) {
	x.iter = 0
	l := ls[id]
	if l == nil {
		return nil, false
	}
	if id != l.id {
		if !l.visited && !l.doWhile {
			return nil, true // a while loop's body runs after its controller
		}
		x.iter = l.pass
		return nil, false
	}
	return l.controller(x, st), true
}

// controller runs pass l.pass of the loop's controller.
func (l *loop) controller(x *Result, st *runState) []string {
	g := st.g
	l.visited = true
	ps := []string{l.end}
	if !l.doWhile && l.pass == 0 {
		ps = l.entries
	}
	static := g.preds[l.id]
	g.preds[l.id] = ps
	state := g.arrival(l.id, x.States, st.taken)
	g.preds[l.id] = static
	if state != Ran {
		x.States[l.id] = state
		l.passDone(x, st)
		l.ended(st)
		return nil
	}
	in := l.input(x, st, ps)
	v, err := eval(l.cond, g.ids, expr.Env{Input: in, Context: st.view})
	if err != nil {
		x.ExpressionErrors[l.id] = append(x.ExpressionErrors[l.id], fmt.Sprintf("condition of loop %s: %v", l.id, err))
	}
	if err != nil || !expr.Truthy(v) {
		x.commit(g, l.id, Outcome{Action: ActionBreak}, in, st.view, st.taken, st.staged, st.writers)
		l.passDone(x, st)
		l.ended(st)
		return nil
	}
	runs := l.pass + 1 // body runs, the next one included
	if l.doWhile {
		runs++
	}
	if runs > l.maxIter {
		x.States[l.id] = Failed
		x.Errors[l.id] = fmt.Sprintf("loop %q exceeded %d iterations (params.maxIterations)", l.id, l.maxIter)
		l.passDone(x, st)
		l.ended(st)
		return nil
	}
	x.commit(g, l.id, Outcome{Action: ActionContinue}, in, st.view, st.taken, st.staged, st.writers)
	l.passDone(x, st)
	// The next pass: its first node follows the continue edge, and the
	// body's outputs of this pass are no longer its own.
	l.pass++
	g.preds[l.start] = []string{l.id}
	for _, id := range l.body {
		delete(x.States, id)
		delete(st.taken, id)
		delete(st.staged, id)
		delete(st.view, "_outputs."+id)
	}
	return append(slices.Clone(l.body), l.id)
}

// input resolves the controller's input from its predecessors ps.
func (l *loop) input(x *Result, st *runState, ps []string) any {
	def := st.g.defs[l.id]
	stagedOr := func(p string) any {
		if v, ok := st.staged[p][l.id]; ok {
			return v
		}
		return x.Outputs[p]
	}
	var in any
	switch {
	case def.Inputs != nil:
		in = resolveInputs(def.Inputs, st.view)
	case len(ps) == 1:
		in = stagedOr(ps[0])
	default:
		m := map[string]any{}
		for _, p := range ps {
			if x.States[p] == Ran && st.taken[p][l.id] {
				if def.Config.JoinStrategy == "any" {
					return stagedOr(p)
				}
				m[p] = stagedOr(p)
			}
		}
		in = m
	}
	in, _ = Normalize(in)
	return in
}

// passDone records the pass that ended: which of the body's nodes ran in
// it and with what output, and the labels of their writes ("<id>@<pass>")
// with what certainly precedes each.
func (l *loop) passDone(x *Result, st *runState) {
	record := func(id string) {
		x.Passes[id] = append(x.Passes[id], l.pass)
		x.passOutputs[id] = append(x.passOutputs[id], x.Outputs[id])
	}
	if x.States[l.id] == Ran {
		record(l.id)
	}
	if l.pass == 0 && !l.doWhile {
		return // no body pass
	}
	var labels []string
	for _, id := range l.body {
		if x.States[id] == Ran {
			record(id)
		}
		// A write of pass k follows what precedes the loop, every earlier
		// pass, and what precedes its node in pass k.
		label := id + "@" + strconv.Itoa(l.pass)
		before := maps.Clone(l.outside)
		for _, q := range l.labels {
			before[q] = true
		}
		for q := range st.g.before[id] {
			if l.inBody[q] {
				before[q+"@"+strconv.Itoa(l.pass)] = true
			}
		}
		st.g.before[label] = before
		for _, ws := range st.writers {
			for i := range ws {
				if ws[i].node == id {
					ws[i].node = label
				}
			}
		}
		labels = append(labels, label)
	}
	l.labels = append(l.labels, labels...)
}

// ended closes the loop: what follows its controller follows every pass.
func (l *loop) ended(st *runState) {
	for id, before := range st.g.before {
		if before[l.id] && id != l.id && !l.inBody[id] {
			for _, q := range l.labels {
				before[q] = true
			}
		}
	}
}

// finalOutputs gives the final context each body node's output of the last
// pass it ran in.
func (ls loops) finalOutputs(x *Result) {
	if x.Context == nil {
		return
	}
	for id, l := range ls {
		if id != l.id && len(x.Passes[id]) > 0 {
			x.Context["_outputs."+id] = x.Outputs[id]
		}
	}
}

// reach is the set of nodes reachable from id along next, not expanding
// stop (which is included when reached).
func (g *graph) reach(id, stop string, next func(string) []string) map[string]bool {
	seen := map[string]bool{id: true}
	stack := []string{id}
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if n == stop && n != id {
			continue
		}
		for _, t := range next(n) {
			if !seen[t] {
				seen[t] = true
				stack = append(stack, t)
			}
		}
	}
	return seen
}

// isLoopBack reports whether e is a loop controller's continue edge, which
// the graph's order leaves out.
func isLoopBack(defs map[string]*sqsadapter.NodeDefinition, e sqsadapter.EdgeDefinition) bool {
	return e.Action == ActionContinue && defs[e.Source] != nil && defs[e.Source].Uses == LoopController
}
