// Package interp is a sequential interpreter of the blueprint semantics of
// SPEC §4: it executes a blueprint in one goroutine, one node at a time in
// topological order, with a deterministic model of the node functions, and
// predicts what a distributed run of it must end with — the final status,
// the final context, which nodes run, which are skipped and which fail.
//
// It is the reference the distributed engine is checked against: a
// randomized or chaos test runs the same blueprint and initial context on
// real workers, under faults, and compares the run with Run's Result using
// Result.Check.
//
// # What it models
//
//   - Start nodes are the nodes without incoming edges, except fallback-only
//     nodes. Input resolution follows §4.2: "inputs" (a key, a map of
//     references, arrays taking the first present value), else
//     "_inputs.<id>" for a start node, else what the single incoming edge's
//     transform staged (or the predecessor's output), else, for an "all"
//     join, the map {predecessorId: staged value} of its taken edges, and
//     for an "any" join what its firing edge staged — here the first taken
//     edge in blueprint order; a distributed run may fire on any taken
//     edge, so a model must not depend on an "any" join's input when more
//     than one of its edges can be taken.
//   - Batches (docs/protocol.md, "Batches"): a "batch-scatter" node S and
//     its "batch-gather" node G, and a "map" node m, which is expanded as
//     the engine does into the scatter "m_scatter" and the gather "m".
//     S's input must be an array (null is empty; anything else fails S).
//     S commits {"gatherNodeId": G, "count": N} and writes the items under
//     "_batch.S"; then every item runs through the worker (the scatter's
//     params.workerUsesKey, or the map's params.worker) with S's retries:
//     the model is called with NodeID "S[i]" (ItemName), the item as its
//     input, and a definition with that id, the worker's "uses" and no
//     params, as the engine's function sees it. A committed item's writes
//     join the context; its output does not (the engine keeps it on the
//     item's record). Items are concurrent with one another, after S and
//     before G. An item that fails for good fails the run at S, unless
//     S's params.toleratedFailures is above zero; then G fails the run if
//     more items failed than it tolerates, else it commits the outputs of
//     the committed items in input order as its output and under
//     outputKey (the gather's param, else the scatter's, else G's id),
//     deletes "_batch.S", and routes like any node. Result.Items gives
//     each item's fate; States gives it too, under the item's record id
//     (ItemRecord), so that a test can count the engine's commits of each
//     item against it.
//   - Attempts (§4.3): the model is called with attempt 1, 2, …, up to
//     max(maxRetries, 1), until it succeeds; an error wrapped with
//     sqsadapter.Permanent stops the attempts and skips the fallback.
//     Timeouts and retry delays are not modelled: the model decides.
//   - Fallback (§4.4): when a node fails for good with a fallback, the
//     fallback runs with the node's input (or its own "inputs"), its output
//     becomes the node's output, routing continues from the node, and
//     "_catch_error" {message, nodeId, blueprintId} is written with it.
//   - Routing (§4.5): edges whose action equals the result's action, else
//     the edges without an action; each candidate's condition must be
//     truthy. Conditions and transforms are evaluated by the engine's
//     expression package, with the context as the node sees it: what was
//     committed before it plus its own writes. A condition that fails to
//     evaluate is false and a transform that fails stages nil, as in the
//     engine (and Flowcraft). A transform on the edge that fires a node
//     with "inputs" (its only edge, or an "any" join's firing edge) gives
//     the node's input instead of "inputs"; it transforms the value of the
//     key a string "inputs" names, when present, else the source's output.
//   - Joins (§4.6): an "all" join runs when at least one incoming edge was
//     taken and is skipped when none was; an "any" join runs once if any
//     edge was taken. Dead paths are eliminated: a skipped node's edges are
//     all dead.
//   - Loops (loop.go): a "loop-controller" node and its body run pass
//     after pass, as in the engine; Call.Iteration is the pass, and
//     Result.Passes lists the passes each node ran in.
//   - Built-in nodes (docs/protocol.md, "Waiting"): a node whose "uses" is
//     "wait", "webhook" or "sleep" is run by the engine, not by the model
//     (the interpreter treats these names as built-ins always; Registry
//     leaves them out). A sleep outputs its input. A wait node whose
//     params.eventName is "webhook:<id>" of a webhook predecessor (the
//     engine's pairing) outputs its input: the webhook already waited.
//     Any other wait or webhook node is resumed from outside: the model
//     is called once for it with Call.Resume set, and answers with the
//     resume's output and action (a webhook's action must be empty: a
//     delivery carries none), without context writes or an error; routing
//     then follows as for any node. Result.Resumes lists those answers,
//     for a test to resume the engine's nodes with. Built-in nodes never
//     fail, so their fallbacks never run.
//   - Failure (§4.7): a node that fails for good (without a fallback that
//     succeeds), or a batch item that fails beyond its batch's tolerance,
//     fails the run. The interpreter keeps going past it, blocking
//     only what depends on it, so that Result.Failed is the set of every
//     node that could fail the run: in a distributed run, whichever of them
//     fails first names the failure.
//
// # What the model must respect
//
// The prediction is exact only for blueprints and models whose outcome does
// not depend on timing:
//
//   - The model is a pure function of the node definition, input and
//     attempt. A node function that succeeds must return the same output,
//     action and writes whatever the attempt that succeeded: in a
//     distributed run, crashes and retried requests consume attempts, so
//     the attempt that succeeds is not always the first one the model
//     allows to succeed.
//   - Inputs and conditions read only keys written by nodes certainly
//     resolved before the reader (its ancestors through "all" joins and
//     single edges), and an "any" join's output must not depend on which
//     of its edges fired.
//   - Concurrent branches (nodes neither of which is an ancestor of the
//     other) writing the same key make the final value order-dependent
//     (§4.8: last commit wins); Result.Racy lists such keys with every
//     value they can end with, and Check accepts any of them.
//
// The package is for tests and tools; it has no dependencies beyond the
// sqsadapter package and its expression language.
package interp

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/flowcraft/sqsadapter"
)

// Call is one attempt of a node function, as the model sees it.
type Call struct {
	BlueprintID string
	// NodeID is the id of the definition executed: a fallback's own id
	// when it runs in place of a failed node, as the engine's
	// NodeContext.NodeID.
	NodeID string
	Def    *sqsadapter.NodeDefinition
	// Input is the resolved input in JSON-like form (map[string]any, []any,
	// string, bool, nil, int64, float64).
	Input any
	// Attempt is 1 on the first attempt.
	Attempt int
	// Resume marks the call for a wait or webhook node: the model answers
	// with the output and action the node is resumed with.
	Resume bool
	// Iteration is the pass of a loop's body the call runs in (loop.go), as
	// the engine's NodeContext.Iteration; 0 outside loops.
	Iteration int
}

// A batch item's call has NodeID ItemName(S, i) and a Def with that id,
// the worker's "uses" and no params: the item's behaviour can depend only
// on its input (and its id and attempt), as in the engine.

// Outcome is what one attempt of a node function does.
type Outcome struct {
	Output any
	Action string
	// Sets are the context keys the attempt writes; Deletes those it
	// removes. They take effect only if the attempt succeeds.
	Sets    map[string]any
	Deletes []string
	// Err fails the attempt; sqsadapter.Permanent(err) fails the node at
	// once, without its fallback.
	Err error
}

// Model is a deterministic model of a blueprint's node functions.
type Model func(Call) Outcome

// State is what became of a node in the interpreter's run.
type State string

// Node states.
const (
	Ran     State = "ran"     // executed (or its fallback did) and committed
	Skipped State = "skipped" // every incoming edge dead
	Failed  State = "failed"  // failed for good, fallback included
	Blocked State = "blocked" // never resolved: behind a failed node
)

// CatchErrorKey is the context key a successful fallback writes.
const CatchErrorKey = "_catch_error"

// Result is the interpreter's prediction for one run.
type Result struct {
	BlueprintID string
	// Status is sqsadapter.StatusCompleted or sqsadapter.StatusFailed.
	Status sqsadapter.RunState
	// Initial is the initial context, normalized.
	Initial map[string]any
	// Context is the final context of a completed run, without
	// "_catch_error" (see Catches); nil for a failed run.
	Context map[string]any
	// Catches are the "_catch_error" values the fallbacks wrote, in
	// execution order; the last commit wins.
	Catches []map[string]any
	// Outputs are the outputs of the nodes that ran, by node id.
	Outputs map[string]any
	// Writes are the last value each context key was given by a node
	// ("_catch_error" excluded); a deleted key maps to nil and is listed in
	// Deleted.
	Writes  map[string]any
	Deleted map[string]bool
	// Racy lists the keys written by concurrent nodes, with every value
	// they can end with (Absent for a delete).
	Racy map[string][]any
	// States gives every node's fate; fallback-only nodes are absent.
	// It gives every batch item's too (Ran or Failed), under the item's
	// record id (ItemRecord). A failed item fails the run only through its
	// scatter or gather: Errors lists the nodes that fail the run.
	States map[string]State
	// Errors gives the last error of every node that fails the run: every
	// failed node, and every scatter whose items fail the run (which is
	// Ran: it committed before its items failed).
	Errors map[string]string
	// ExpressionErrors gives, for the nodes some condition or transform of
	// whose outgoing edges failed to evaluate, those errors. A failed
	// condition counts as false and a failed transform stages nil; neither
	// fails the node.
	ExpressionErrors map[string][]string
	// Attempts counts the model calls per node definition id.
	Attempts map[string]int
	// Resumes gives, for every wait and webhook node that ran and was
	// resumed from outside (paired wait nodes are not), the output and
	// action the model resumed it with.
	Resumes map[string]Outcome
	// Order is the execution order (topological, blueprint order among
	// ready nodes).
	Order []string
	// Children gives, for every subflow node that ran, the interpreter's
	// result for the child run of each of its attempts, in order.
	Children map[string][]*Result
	// Items gives, for every batch-scatter node that committed, its items
	// in input order. A scatter whose items fail the run has its output in
	// Outputs too: it committed before its items ran.
	Items map[string][]Item
	// Passes gives, for the body nodes and controllers of loops, the passes
	// they ran in, in order (loop.go).
	Passes map[string][]int

	// values holds every value each key was given (initial included), for
	// checking failed runs, whose commits depend on timing.
	values map[string][]any
	// batchErrors gives, for each batch node that fails the run, the errors
	// a distributed run may record for it.
	batchErrors map[string][]string
	// passOutputs are the outputs of each pass in Passes; iter is the pass
	// of the node running.
	passOutputs map[string][]any
	iter        int
}

// Absent stands for a deleted key among Racy values.
var Absent = absent{}

type absent struct{}

func (absent) String() string { return "<absent>" }

func (absent) MarshalJSON() ([]byte, error) { return []byte(`"<absent>"`), nil }

// Is reports whether node id ended in state s.
func (r *Result) Is(id string, s State) bool { return r.States[id] == s }

// Nodes returns the ids of the nodes in state s, sorted.
func (r *Result) Nodes(s State) []string {
	var ids []string
	for id, st := range r.States {
		if st == s {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

// Run interprets bp from the initial context with model. It returns an
// error only for a blueprint it cannot interpret (a cycle, a dangling
// reference, an initial context that is not JSON-like); failures of the
// run are in the Result.
func Run(bp *sqsadapter.Blueprint, initial map[string]any, model Model, opts ...Option) (*Result, error) {
	if bp == nil || model == nil {
		return nil, errors.New("interp: nil blueprint or model")
	}
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	var err error
	if bp, err = expandMaps(bp); err != nil {
		return nil, err
	}
	g, err := newGraph(bp)
	if err != nil {
		return nil, err
	}
	bs, err := compileBatches(bp)
	if err != nil {
		return nil, err
	}
	loops, err := newLoops(bp, g)
	if err != nil {
		return nil, err
	}
	normInitial, err := Normalize(initial)
	if err != nil {
		return nil, fmt.Errorf("interp: initial context: %w", err)
	}
	initMap, _ := normInitial.(map[string]any)
	if initMap == nil {
		initMap = map[string]any{}
	}

	x := &Result{
		BlueprintID:      bp.ID,
		Initial:          maps.Clone(initMap),
		Outputs:          map[string]any{},
		Writes:           map[string]any{},
		Deleted:          map[string]bool{},
		States:           map[string]State{},
		Errors:           map[string]string{},
		ExpressionErrors: map[string][]string{},
		Attempts:         map[string]int{},
		Resumes:          map[string]Outcome{},
		Children:         map[string][]*Result{},
		Items:            map[string][]Item{},
		batchErrors:      map[string][]string{},
		Passes:           map[string][]int{},
		Order:            g.order,
		values:           map[string][]any{},
		passOutputs:      map[string][]any{},
	}
	for k, v := range initMap {
		x.values[k] = append(x.values[k], v)
	}
	view := maps.Clone(initMap) // the context: keys and "_outputs.<id>"
	taken := map[string]map[string]bool{}
	staged := map[string]map[string]any{}
	writers := map[string][]write{} // key → the nodes' writes to it, in order
	stagedOr := func(p, t string) any {
		if v, ok := staged[p][t]; ok {
			return v
		}
		return x.Outputs[p]
	}

	st := &runState{g: g, view: view, taken: taken, staged: staged, writers: writers}
	order := slices.Clone(g.order)
	for i := 0; i < len(order); i++ {
		id := order[i]
		next, skip := loops.visit(x, id, st)
		order = slices.Insert(order, i+1, next...)
		if skip {
			continue
		}
		def := g.defs[id]
		ps := g.preds[id]
		if st := g.arrival(id, x.States, taken); st != Ran {
			x.States[id] = st
			continue
		}

		// firing is the predecessor whose edge fires the node, when it is
		// not an "all" join: the single one, or an "any" join's first
		// taken edge.
		firing := ""
		if len(ps) == 1 || len(ps) > 1 && def.Config.JoinStrategy == "any" {
			for _, p := range ps {
				if x.States[p] == Ran && taken[p][id] {
					firing = p
					break
				}
			}
		}
		var in any
		_, transformed := staged[firing][id]
		switch {
		case def.Inputs != nil && transformed:
			// The transform replaces "inputs" (reference §3.6).
			in = staged[firing][id]
		case def.Inputs != nil:
			in = resolveInputs(def.Inputs, view)
		case len(ps) == 0:
			in = view["_inputs."+id]
		case len(ps) == 1:
			in = stagedOr(ps[0], id)
		case def.Config.JoinStrategy == "any":
			for _, p := range ps {
				if x.States[p] == Ran && taken[p][id] {
					in = stagedOr(p, id)
					break
				}
			}
		default:
			m := map[string]any{}
			for _, p := range ps {
				if x.States[p] == Ran && taken[p][id] {
					m[p] = stagedOr(p, id)
				}
			}
			in = m
		}
		if in, err = Normalize(in); err != nil {
			return nil, fmt.Errorf("interp: input of node %s: %w", id, err)
		}

		if b := bs.byScatter[id]; b != nil {
			x.scatter(model, bp.ID, g, b, def, in, view, taken, staged, writers)
			continue
		}
		if b := bs.byGather[id]; b != nil {
			x.gather(g, b, def, in, view, taken, staged, writers)
			continue
		}
		if k := Builtin(def.Uses); k != "" && k != BuiltinSubflow {
			res, err := x.builtin(model, bp.ID, g, def, in)
			if err != nil {
				return nil, err
			}
			x.commit(g, id, res, in, view, taken, staged, writers)
			continue
		}
		var res Outcome
		if def.Uses == BuiltinSubflow {
			var fatal error
			if res, err, fatal = x.subflow(model, def, in, view, o); fatal != nil {
				return nil, fatal
			}
		} else {
			res, err = x.execute(model, bp.ID, def, in)
		}
		if err != nil && def.Config.Fallback != "" && !sqsadapter.IsPermanent(err) {
			fb := g.defs[def.Config.Fallback]
			fin := in
			if fb.Inputs != nil {
				if fin, err = Normalize(resolveInputs(fb.Inputs, view)); err != nil {
					return nil, fmt.Errorf("interp: input of fallback %s: %w", fb.ID, err)
				}
			}
			cause := err
			res, err = x.execute(model, bp.ID, fb, fin)
			if err == nil {
				catch := map[string]any{"message": cause.Error(), "nodeId": id, "blueprintId": bp.ID}
				res.Sets = maps.Clone(res.Sets)
				if res.Sets == nil {
					res.Sets = map[string]any{}
				}
				res.Sets[CatchErrorKey] = catch
				res.Deletes = slices.DeleteFunc(slices.Clone(res.Deletes), func(k string) bool { return k == CatchErrorKey })
				x.Catches = append(x.Catches, catch)
			} else {
				err = fmt.Errorf("fallback %q failed: %w (after: %v)", fb.ID, err, cause)
			}
		}
		if err != nil {
			x.States[id] = Failed
			x.Errors[id] = err.Error()
			continue
		}

		x.commit(g, id, res, in, view, taken, staged, writers)
	}

	// Keys written by nodes that may commit in either order.
	for k, ws := range writers {
		if final := g.lastWrites(ws); len(final) > 1 {
			if x.Racy == nil {
				x.Racy = map[string][]any{}
			}
			x.Racy[k] = final
		}
	}

	if len(x.Errors) > 0 {
		x.Status = sqsadapter.StatusFailed
	} else {
		x.Status = sqsadapter.StatusCompleted
		x.Context = maps.Clone(view)
		delete(x.Context, CatchErrorKey)
		loops.finalOutputs(x)
	}
	return x, nil
}

// commit routes from node id's successful outcome res, in the context as
// the node sees it (what precedes it and its own writes), and applies it:
// the node's output, its writes, and the edges it takes.
func (x *Result) commit(g *graph, id string, res Outcome, in any, view map[string]any,
	taken map[string]map[string]bool, staged map[string]map[string]any, writers map[string][]write) {
	// Routing, in the context as the node sees it: what precedes it
	// and its own writes.
	ctxView := maps.Clone(view)
	ctxView["_outputs."+id] = res.Output // expressions may name the node itself
	maps.Copy(ctxView, res.Sets)
	for _, k := range res.Deletes {
		delete(ctxView, k)
	}
	transformInput := func(e sqsadapter.EdgeDefinition) any {
		ref, ok := g.defs[e.Target].Inputs.(string)
		if !ok || ref == id {
			return res.Output
		}
		key := ref
		if !strings.HasPrefix(ref, "_") {
			key = "_outputs." + ref
		}
		if v, ok := ctxView[key]; ok && key != "_outputs."+id {
			return v
		}
		return res.Output
	}
	took, stagedHere, exprErrs := route(g.out[id], g.ids, res, in, ctxView, transformInput)
	if len(exprErrs) > 0 {
		x.ExpressionErrors[id] = exprErrs
	}
	taken[id] = took
	staged[id] = stagedHere
	x.States[id] = Ran
	x.Outputs[id] = res.Output
	view["_outputs."+id] = res.Output
	x.apply(id, res, view, writers)
}

// apply applies the context writes of node (or batch item) id's
// successful outcome res.
func (x *Result) apply(id string, res Outcome, view map[string]any, writers map[string][]write) {
	for k, v := range res.Sets {
		view[k] = v
		x.values[k] = append(x.values[k], v)
		if k != CatchErrorKey {
			x.Writes[k] = v
			delete(x.Deleted, k)
			writers[k] = append(writers[k], write{id, v})
		}
	}
	for _, k := range res.Deletes {
		delete(view, k)
		x.values[k] = append(x.values[k], Absent)
		x.Writes[k] = nil
		x.Deleted[k] = true
		writers[k] = append(writers[k], write{id, Absent})
	}
}

// write is one node's write to a context key (Absent for a delete).
type write struct {
	node  string
	value any
}

// execute runs a node's attempts: max(maxRetries, 1) of them, fewer after a
// permanent error. It returns the successful outcome (normalized), or the
// last error.
func (x *Result) execute(model Model, bpID string, def *sqsadapter.NodeDefinition, in any) (Outcome, error) {
	return x.attempts(model, bpID, def, in, max(def.Config.MaxRetries, 1))
}

// attempts is execute with n attempts at most.
func (x *Result) attempts(model Model, bpID string, def *sqsadapter.NodeDefinition, in any, n int) (Outcome, error) {
	var last error
	for attempt := 1; attempt <= n; attempt++ {
		x.Attempts[def.ID]++
		o := callModel(model, Call{BlueprintID: bpID, NodeID: def.ID, Def: def, Input: in, Attempt: attempt, Iteration: x.iter})
		if o.Err == nil {
			out, err := Normalize(o.Output)
			if err != nil {
				// The engine fails such a node at once, without its fallback.
				return Outcome{}, sqsadapter.Permanent(fmt.Errorf("output: %w", err))
			}
			var sets map[string]any
			if o.Sets != nil {
				n, err := Normalize(o.Sets)
				if err != nil {
					return Outcome{}, sqsadapter.Permanent(fmt.Errorf("context writes: %w", err))
				}
				sets = n.(map[string]any)
			}
			return Outcome{Output: out, Action: o.Action, Sets: sets, Deletes: slices.Clone(o.Deletes)}, nil
		}
		last = o.Err
		if sqsadapter.IsPermanent(o.Err) {
			break
		}
	}
	return Outcome{}, last
}

// callModel calls the model with a copy of the input, so that it cannot
// alter the interpreter's state, and turns a panic into a failed attempt,
// as the engine recovers panicking nodes.
func callModel(model Model, c Call) (o Outcome) {
	defer func() {
		if p := recover(); p != nil {
			o = Outcome{Err: fmt.Errorf("node %q panicked: %v", c.NodeID, p)}
		}
	}()
	c.Input, _ = Normalize(c.Input)
	return model(c)
}
