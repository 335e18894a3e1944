package sqsadapter_test

// The differential test: a corpus of blueprints — hand-written ones covering
// the blueprint format and the edge semantics, and seeded random ones — runs
// through Flowcraft's own in-memory FlowRuntime (flowcraft@2.10.1, driven by
// testdata/differential/flowcraft-runner.mjs in one Node process) and through
// this library on its in-memory parts, with the same deterministic stub node
// in both languages. It compares the final status, which nodes ran and how
// often, every node's inputs and output and every context key, after the
// normalization rules of diffRules: the deliberate deviations, each with its
// reason, in one place.
//
//   SQSADAPTER_FLOWCRAFT   the flowcraft package folder (scripts/emulators.sh
//                          installs it and exports this in its env file)
//   SQSADAPTER_DIFF_RUNS   generated blueprints (default 250; make differential: 5000)
//   SQSADAPTER_DIFF_SEED   replays a session's generated blueprints
//   SQSADAPTER_DIFF_CASES  only these cases, by name (comma-separated)

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flowcraft/sqsadapter"
)

// ---------------------------------------------------------------------------
// The stub node, identical to stubResult in flowcraft-runner.mjs: a pure
// function of (node id, params, input, attempt).
//
//   params.id        the node id (Flowcraft's node context does not carry it)
//   params.fail      true: every attempt fails
//   params.failUntil attempts before this number fail
//   params.raw       the output, as given
//   params.out       an object whose members are merged into the output
//                    {"node": id, ...out}
//   params.pass      true: the output also holds the input as "in"
//   params.action    the action returned
//   params.set       context keys written (after the failure checks, so a
//                    failed attempt writes nothing in either runtime)

// stubResult computes the stub's result; ok is false when the attempt fails.
func stubResult(id string, params map[string]any, input any, attempt int) (res sqsadapter.NodeResult, sets map[string]any, ok bool) {
	if params["fail"] == true {
		return res, nil, false
	}
	if n, isNum := number(params["failUntil"]); isNum && float64(attempt) < n {
		return res, nil, false
	}
	if raw, has := params["raw"]; has {
		res.Output = raw
	} else {
		out := map[string]any{"node": id}
		if m, isMap := params["out"].(map[string]any); isMap {
			maps.Copy(out, m)
		}
		if params["pass"] == true && input != nil {
			out["in"] = input
		}
		res.Output = out
	}
	if a, isStr := params["action"].(string); isStr {
		res.Action = a
	}
	sets, _ = params["set"].(map[string]any)
	return res, sets, true
}

func number(v any) (float64, bool) {
	switch n := v.(type) {
	case int64:
		return float64(n), true
	case float64:
		return n, true
	case int:
		return float64(n), true
	case json.Number:
		f, err := n.Float64()
		return f, err == nil
	}
	return 0, false
}

// diffRecorder records the stub's invocations by run and node.
type diffRecorder struct {
	mu     sync.Mutex
	calls  map[string]map[string]int   // run -> node -> invocations
	inputs map[string]map[string][]any // run -> node -> input of each invocation
}

func (r *diffRecorder) stub(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
	id, _ := nc.Params["id"].(string)
	r.mu.Lock()
	if r.calls[nc.RunID] == nil {
		r.calls[nc.RunID] = map[string]int{}
		r.inputs[nc.RunID] = map[string][]any{}
	}
	r.calls[nc.RunID][id]++
	r.inputs[nc.RunID][id] = append(r.inputs[nc.RunID][id], nc.Input)
	r.mu.Unlock()
	res, sets, ok := stubResult(id, nc.Params, nc.Input, nc.Attempt)
	if !ok {
		return res, fmt.Errorf("stub %s: attempt %d fails", id, nc.Attempt)
	}
	for _, k := range slices.Sorted(maps.Keys(sets)) {
		if err := nc.Set(k, sets[k]); err != nil {
			return res, err
		}
	}
	return res, nil
}

// ---------------------------------------------------------------------------
// Cases and results.

type diffCase struct {
	Name      string               `json:"name"`
	Blueprint sqsadapter.Blueprint `json:"blueprint"`
	Initial   map[string]any       `json:"initial"`
}

// diffResult is one runtime's outcome of a case.
type diffResult struct {
	Name    string           `json:"name"`
	Status  string           `json:"status"`
	Context map[string]any   `json:"context"`
	Errors  []any            `json:"errors,omitempty"` // Flowcraft: node ids of recorded errors
	Calls   map[string]int   `json:"calls"`
	Inputs  map[string][]any `json:"inputs"`
	Taken   [][2]string      `json:"taken,omitempty"` // Flowcraft: edges selected
	Thrown  string           `json:"thrown,omitempty"`
	Failed  string           `json:"failedNode,omitempty"` // Go: the node that failed the run
	Error   string           `json:"error,omitempty"`      // Go: why the run failed, or ParseBlueprint's error
}

// ---------------------------------------------------------------------------
// Normalization: what is compared, and the rules that bring the two results
// to comparable form.

// diffView is one side, ready to compare: values are canonical JSON.
type diffView struct {
	status  string
	outputs map[string]string   // node -> output
	keys    map[string]string   // user context key -> value
	calls   map[string]int      // node -> invocations
	inputs  map[string][]string // node -> inputs
	errors  []string            // Flowcraft: failed nodes; Go: the failed node
}

// diffCheck is a case being compared: the blueprint's shape, both views, and
// what the rules exclude.
type diffCheck struct {
	c        *diffCase
	g        *diffGraph
	fc, gor  *diffResult
	f, o     *diffView         // Flowcraft, Go
	excluded map[string]string // nodes not compared at all, with the rule
	noInput  map[string]string // nodes whose inputs are not compared (or compared by a rule), with the rule
	subset   bool              // compare Go as a subset of Flowcraft (failed runs)
	notes    []string          // which rules changed something
}

func (k *diffCheck) note(rule, format string, args ...any) {
	k.notes = append(k.notes, rule+": "+fmt.Sprintf(format, args...))
}

// exclude removes node id and everything downstream of it from the comparison.
func (k *diffCheck) exclude(rule, id string) {
	for _, d := range append([]string{id}, k.g.descendants(id)...) {
		if _, done := k.excluded[d]; !done {
			k.excluded[d] = rule
		}
	}
}

// diffRule is one normalization rule.
type diffRule struct {
	name   string
	reason string
	apply  func(k *diffCheck)
}

// diffRules are the deliberate deviations and the representation differences
// between the two runtimes, applied in order. Rules never name a blueprint.
var diffRules = []diffRule{
	{
		name:   "json-undefined",
		reason: "JSON has no undefined: Flowcraft's undefined member vanishes where Go holds nil; null members and null-valued keys are dropped on both sides",
		apply:  func(k *diffCheck) {}, // applied by canonical()
	},
	{
		name: "bookkeeping-keys",
		reason: "Flowcraft in memory also writes each output under the bare node id, every staged input as _inputs.<id> and _executionId; " +
			"this library writes _catch_error when a fallback ran (Flowcraft only in its distributed path): only _outputs.* and user keys are compared",
		apply: func(k *diffCheck) {}, // applied by view()
	},
	{
		name: "fallback-inline",
		reason: "a fallback runs inline here and its output becomes the primary's output; Flowcraft in memory stores null as the primary's output " +
			"and runs the fallback as a successor (with inherited edges): Flowcraft's _outputs.<fallback> is compared as the primary's output; " +
			"a join after the primary runs there before the fallback (seeing null) and again after it (all), or never (any: the inherited edge's source is not its predecessor), " +
			"so such joins and everything downstream are not compared; " +
			"the fallback's input is the primary's here and _inputs.<fallback> (unset) there, so it is not compared unless the fallback has inputs",
		apply: func(k *diffCheck) {
			for _, p := range k.g.order {
				fb := k.g.nodes[p].Config.Fallback
				if fb == "" || k.f.calls[fb] == 0 {
					continue
				}
				if v, ok := k.f.outputs[fb]; ok {
					k.f.outputs[p] = v
					k.note("fallback-inline", "Flowcraft _outputs.%s taken as _outputs.%s", fb, p)
				} else {
					delete(k.f.outputs, p)
				}
				delete(k.f.outputs, fb)
				if k.g.nodes[fb].Inputs == nil {
					k.noInput[fb] = "fallback-inline"
				}
				for _, s := range k.g.succs[p] {
					if len(k.g.preds[s]) > 1 {
						k.exclude("fallback-inline", s)
						k.note("fallback-inline", "join %s after primary %s not compared", s, p)
					}
				}
			}
		},
	},
	{
		name: "untaken-edge-rescue",
		reason: "an action with no matching edge and no default edge takes no edge here; Flowcraft in memory then runs every successor " +
			"that has no conditional incoming edge (markNodeCompleted with no next nodes): such nodes and everything downstream are not compared",
		apply: func(k *diffCheck) {
			in := map[string]bool{}
			for _, e := range k.fc.Taken {
				in[e[1]] = true
			}
			for _, id := range k.g.order {
				if k.f.calls[id] > 0 && !in[id] && len(k.g.preds[id]) > 0 && !k.g.fallbackOnly[id] {
					k.exclude("untaken-edge-rescue", id)
					k.note("untaken-edge-rescue", "Flowcraft ran %s though no edge into it was taken", id)
				}
			}
		},
	},
	{
		name: "all-join-untaken-branch",
		reason: "an all join whose predecessor never ran (an untaken branch) is resolved here: it runs if an edge into it was taken; " +
			"Flowcraft in memory never runs it: the join and everything downstream are not compared",
		apply: func(k *diffCheck) {
			in := map[string]bool{}
			for _, e := range k.fc.Taken {
				in[e[1]] = true
			}
			for _, id := range k.g.order {
				if k.g.isAllJoin(id) && in[id] && k.f.calls[id] == 0 {
					k.exclude("all-join-untaken-branch", id)
					k.note("all-join-untaken-branch", "Flowcraft never ran all join %s", id)
				}
			}
		},
	},
	{
		name: "all-join-input",
		reason: "the default input of an all join is {predecessorId: value} here; Flowcraft's is whichever predecessor staged last: " +
			"Flowcraft's input must be one of the map's values (the generator gives such joins stubs whose output ignores the input)",
		apply: func(k *diffCheck) {
			for _, id := range k.g.order {
				if !k.g.isAllJoin(id) || k.g.nodes[id].Inputs != nil {
					continue
				}
				k.noInput[id] = "all-join-input"
				fi, gi := k.fc.Inputs[id], k.gor.Inputs[id]
				if len(fi) == 0 || len(gi) == 0 {
					continue
				}
				m, _ := gi[0].(map[string]any)
				want := canonical(fi[0])
				ok := want == "null" && len(m) < len(k.g.preds[id])
				for _, v := range m {
					ok = ok || canonical(v) == want
				}
				if !ok {
					k.noInput[id] = "" // compared after all, and will differ
				}
			}
		},
	},
	{
		name: "any-join-once",
		reason: "an any join runs once per run here, on the first taken edge; Flowcraft in memory re-runs it on each arrival: " +
			"its invocations are compared as ran / did not run, and its input (which predecessor fired it depends on timing here) is not compared; " +
			"when Flowcraft re-ran it, what follows it ran again there (an all join after it too, since Flowcraft's all join waits for completions, not edges), " +
			"so everything downstream of it is not compared",
		apply: func(k *diffCheck) {
			for _, id := range k.g.order {
				if k.g.nodes[id].Config.JoinStrategy != "any" || len(k.g.preds[id]) < 2 {
					continue
				}
				k.noInput[id] = "any-join-once"
				if k.f.calls[id] > 1 {
					for _, d := range k.g.descendants(id) {
						if _, done := k.excluded[d]; !done {
							k.excluded[d] = "any-join-once"
						}
					}
					k.note("any-join-once", "Flowcraft re-ran any join %s: what follows it is not compared", id)
				}
				for _, v := range []*diffView{k.f, k.o} {
					if v.calls[id] > 1 {
						v.calls[id] = 1
					}
				}
			}
		},
	},
	{
		name: "chained-transforms",
		reason: "Flowcraft's applyEdgeTransform rewrites the target's inputs to _inputs.<target> when an edge into it has a transform " +
			"(its weakness W30), so any later transform taken into the same target transforms what was staged before instead of its " +
			"source's output; here each edge transforms its own source's output: a target reached by two or more taken edges, " +
			"one of them with a transform, and everything downstream, are not compared",
		apply: func(k *diffCheck) {
			transforms := map[[2]string]int{} // source, target -> edges with a transform
			edges := map[[2]string]int{}
			for _, e := range k.c.Blueprint.Edges {
				pair := [2]string{e.Source, e.Target}
				edges[pair]++
				if e.Transform != "" {
					transforms[pair]++
				}
			}
			seen, taken, withTransform := map[[2]string]bool{}, map[string]int{}, map[string]int{}
			for _, e := range k.fc.Taken {
				if pair := [2]string{e[0], e[1]}; !seen[pair] {
					seen[pair] = true
					taken[e[1]] += edges[pair]
					withTransform[e[1]] += transforms[pair]
				}
			}
			for _, id := range k.g.order {
				if taken[id] > 1 && withTransform[id] > 0 {
					k.exclude("chained-transforms", id)
					k.note("chained-transforms", "%d edges taken into %s, %d with a transform", taken[id], id, withTransform[id])
				}
			}
		},
	},
	{
		name: "hyphen-in-string",
		reason: "Flowcraft's UnsafeEvaluator rewrites a hyphenated context key k to context[\"k\"] even inside a string literal, so a condition " +
			"quoting a completed hyphenated node id (context[\"step-0\"]) becomes a syntax error there, hence false; here string literals are " +
			"left alone: when a condition of a node's outgoing edges quotes a hyphenated node id, what follows that node is not compared",
		apply: func(k *diffCheck) {
			for _, e := range k.c.Blueprint.Edges {
				for _, id := range k.g.order {
					if strings.Contains(id, "-") && (strings.Contains(e.Condition, `"`+id+`"`) || strings.Contains(e.Condition, `'`+id+`'`)) {
						for _, s := range k.g.succs[e.Source] {
							k.exclude("hyphen-in-string", s)
						}
						k.note("hyphen-in-string", "a condition out of %s quotes %s", e.Source, id)
					}
				}
			}
		},
	},
	{
		name: "inputs-paths",
		reason: "a dotted inputs path (node.path) walks the node's output here and an array value takes its first present reference; " +
			"Flowcraft 2.10.1's resolveNodeInput does neither: a dotted path is undefined there, so such nodes' inputs are not compared (the generator gives them stubs whose output ignores the input); " +
			"an array value throws there (contextKey.startsWith is not a function), failing the node, so such nodes and everything downstream are not compared",
		apply: func(k *diffCheck) {
			for _, id := range k.g.order {
				if inputsArray(k.g.nodes[id]) {
					k.exclude("inputs-paths", id)
					k.note("inputs-paths", "%s has an array inputs value", id)
				} else if inputsIncomparable(k.g.nodes[id]) {
					k.noInput[id] = "inputs-paths"
				}
			}
		},
	},
	{
		name: "failed-run",
		reason: "a failure stops the run here (no more nodes start) while Flowcraft in memory keeps running the other branches, and Flowcraft " +
			"reports completed when any fallback ran even if a node failed: Flowcraft's status is failed when it recorded an error of a compared node; " +
			"when both failed (or this one failed in a node not compared), what ran here must be a subset of what ran there (equal outputs, keys and invocations of committed nodes), and the failed node one of Flowcraft's",
		apply: func(k *diffCheck) {
			failed := false
			for _, n := range k.f.errors {
				// An error of a fallback is its primary's here.
				if p := k.g.primaryOf[n]; p != "" {
					n = p
				}
				if _, ex := k.excluded[n]; !ex {
					failed = true
				}
			}
			if k.f.status == "completed" && failed {
				k.note("failed-run", "Flowcraft completed with errors %v", k.f.errors)
				k.f.status = "failed"
			}
			if k.f.status == "failed" && !failed && len(k.f.errors) > 0 {
				k.note("failed-run", "Flowcraft failed only in excluded nodes %v", k.f.errors)
				k.f.status = "completed"
			}
			if _, ex := k.excluded[k.gor.Failed]; ex && k.gor.Failed != "" {
				k.note("failed-run", "failed here in excluded node %s", k.gor.Failed)
				k.o.status = k.f.status
				k.subset = true
			}
			if k.f.status == "failed" && k.o.status == "failed" {
				k.subset = true
			}
		},
	},
}

// inputsIncomparable reports whether a node's inputs use a dotted path or an
// array value, which Flowcraft 2.10.1 does not resolve (rule inputs-paths).
func inputsIncomparable(n sqsadapter.NodeDefinition) bool {
	ref := func(v any) bool {
		s, ok := v.(string)
		return !ok || (!strings.HasPrefix(s, "_") && strings.Contains(s, "."))
	}
	switch in := n.Inputs.(type) {
	case string:
		return ref(in)
	case map[string]any:
		for _, v := range in {
			if ref(v) {
				return true
			}
		}
	}
	return false
}

// inputsArray reports whether a node's inputs map holds an array value.
func inputsArray(n sqsadapter.NodeDefinition) bool {
	m, _ := n.Inputs.(map[string]any)
	for _, v := range m {
		if _, ok := v.([]any); ok {
			return true
		}
	}
	return false
}

// canonical is v as canonical JSON: numbers as JSON writes them, object
// members sorted, null members dropped (rule json-undefined).
func canonical(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf("!%v", err)
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var x any
	if err := d.Decode(&x); err != nil {
		return fmt.Sprintf("!%v", err)
	}
	b, _ = json.Marshal(dropNulls(x))
	return string(b)
}

func dropNulls(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if e == nil {
				delete(x, k)
			} else {
				x[k] = dropNulls(e)
			}
		}
	case []any:
		for i, e := range x {
			x[i] = dropNulls(e)
		}
	}
	return v
}

// view builds one side's view (rules json-undefined and bookkeeping-keys).
func view(g *diffGraph, r *diffResult, flowcraft bool) *diffView {
	v := &diffView{status: r.Status, outputs: map[string]string{}, keys: map[string]string{}, calls: map[string]int{}, inputs: map[string][]string{}}
	for k, val := range r.Context {
		if val == nil {
			continue
		}
		switch {
		case strings.HasPrefix(k, "_outputs."):
			v.outputs[strings.TrimPrefix(k, "_outputs.")] = canonical(val)
		case flowcraft && (g.nodes[k].ID != "" || strings.HasPrefix(k, "_inputs.") && !g.initial[k] || k == "_executionId"):
		case !flowcraft && k == "_catch_error":
		default:
			v.keys[k] = canonical(val)
		}
	}
	for k, n := range r.Calls {
		if n > 0 {
			v.calls[k] = n
		}
	}
	for k, ins := range r.Inputs {
		for _, in := range ins {
			v.inputs[k] = append(v.inputs[k], canonical(in))
		}
	}
	for _, e := range r.Errors {
		if s, ok := e.(string); ok {
			v.errors = append(v.errors, s)
		}
	}
	if r.Failed != "" {
		v.errors = append(v.errors, r.Failed)
	}
	if r.Thrown != "" {
		v.status = "thrown"
	}
	return v
}

// compare applies the rules and returns the differences.
func compare(c *diffCase, fc, gor *diffResult) (diffs, notes []string) {
	g := newDiffGraph(c)
	k := &diffCheck{c: c, g: g, fc: fc, gor: gor, f: view(g, fc, true), o: view(g, gor, false),
		excluded: map[string]string{}, noInput: map[string]string{}}
	for _, r := range diffRules {
		r.apply(k)
	}
	if k.f.status != k.o.status {
		diffs = append(diffs, fmt.Sprintf("status: flowcraft %q, go %q (%s)", k.f.status, k.o.status, gor.Error))
	}
	// Which nodes' values are compared: all but the excluded ones; for
	// failed runs, the nodes committed here.
	compared := func(id string) bool {
		if _, ex := k.excluded[id]; ex {
			return false
		}
		if k.subset {
			_, committed := k.o.outputs[id]
			return committed
		}
		return true
	}
	ids := map[string]bool{}
	for _, m := range []map[string]string{k.f.outputs, k.o.outputs} {
		for id := range m {
			ids[id] = true
		}
	}
	for _, m := range []map[string]int{k.f.calls, k.o.calls} {
		for id := range m {
			ids[id] = true
		}
	}
	for _, id := range slices.Sorted(maps.Keys(ids)) {
		if !compared(id) {
			continue
		}
		if fo, gout := k.f.outputs[id], k.o.outputs[id]; fo != gout {
			diffs = append(diffs, fmt.Sprintf("_outputs.%s: flowcraft %s, go %s", id, orNone(fo), orNone(gout)))
		}
		if fcn, gn := k.f.calls[id], k.o.calls[id]; fcn != gn {
			diffs = append(diffs, fmt.Sprintf("invocations of %s: flowcraft %d, go %d", id, fcn, gn))
		}
		if rule, skip := k.noInput[id]; !skip || rule == "" {
			if fi, gi := k.f.inputs[id], k.o.inputs[id]; !slices.Equal(fi, gi) {
				diffs = append(diffs, fmt.Sprintf("inputs of %s: flowcraft %v, go %v", id, fi, gi))
			}
		}
	}
	// User keys: those written by compared nodes, and the initial ones.
	writer := g.keyWriters()
	keys := map[string]bool{}
	for _, m := range []map[string]string{k.f.keys, k.o.keys} {
		for key := range m {
			keys[key] = true
		}
	}
	for _, key := range slices.Sorted(maps.Keys(keys)) {
		if w := writer[key]; w != "" && !compared(w) {
			continue
		}
		if k.subset && k.o.keys[key] == "" {
			continue
		}
		if fv, gv := k.f.keys[key], k.o.keys[key]; fv != gv {
			diffs = append(diffs, fmt.Sprintf("context %q: flowcraft %s, go %s", key, orNone(fv), orNone(gv)))
		}
	}
	_, failedExcluded := k.excluded[gor.Failed]
	if k.subset && gor.Failed != "" && !failedExcluded && !slices.ContainsFunc(k.f.errors, func(n string) bool { return n == gor.Failed || g.primaryOf[n] == gor.Failed }) {
		diffs = append(diffs, fmt.Sprintf("failed node: go %s, flowcraft's errors %v", gor.Failed, k.f.errors))
	}
	return diffs, k.notes
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

// ---------------------------------------------------------------------------
// Blueprint shape.

type diffGraph struct {
	order        []string
	nodes        map[string]sqsadapter.NodeDefinition
	preds, succs map[string][]string // distinct
	edgesIn      map[string][]sqsadapter.EdgeDefinition
	fallbackOnly map[string]bool
	primaryOf    map[string]string // fallback -> primary
	initial      map[string]bool
}

func newDiffGraph(c *diffCase) *diffGraph {
	g := &diffGraph{nodes: map[string]sqsadapter.NodeDefinition{}, preds: map[string][]string{}, succs: map[string][]string{},
		edgesIn: map[string][]sqsadapter.EdgeDefinition{}, fallbackOnly: map[string]bool{}, primaryOf: map[string]string{}, initial: map[string]bool{}}
	for _, n := range c.Blueprint.Nodes {
		g.order = append(g.order, n.ID)
		g.nodes[n.ID] = n
	}
	for _, e := range c.Blueprint.Edges {
		g.edgesIn[e.Target] = append(g.edgesIn[e.Target], e)
		if !slices.Contains(g.preds[e.Target], e.Source) {
			g.preds[e.Target] = append(g.preds[e.Target], e.Source)
			g.succs[e.Source] = append(g.succs[e.Source], e.Target)
		}
	}
	for _, n := range c.Blueprint.Nodes {
		if fb := n.Config.Fallback; fb != "" {
			g.primaryOf[fb] = n.ID
			if len(g.preds[fb]) == 0 && len(g.succs[fb]) == 0 {
				g.fallbackOnly[fb] = true
			}
		}
	}
	for k := range c.Initial {
		g.initial[k] = true
	}
	return g
}

func (g *diffGraph) isAllJoin(id string) bool {
	return len(g.preds[id]) > 1 && g.nodes[id].Config.JoinStrategy != "any"
}

// descendants lists the nodes downstream of id, through edges and through
// fallbacks (a fallback continues its primary's routing).
func (g *diffGraph) descendants(id string) []string {
	seen := map[string]bool{id: true}
	var out []string
	stack := []string{id}
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		next := slices.Clone(g.succs[n])
		if fb := g.nodes[n].Config.Fallback; fb != "" {
			next = append(next, fb)
		}
		if p := g.primaryOf[n]; p != "" {
			next = append(next, g.succs[p]...)
		}
		for _, s := range next {
			if !seen[s] {
				seen[s] = true
				out = append(out, s)
				stack = append(stack, s)
			}
		}
	}
	return out
}

// keyWriters maps each context key a stub writes to the node whose result
// carries it (a fallback's writes are its primary's).
func (g *diffGraph) keyWriters() map[string]string {
	w := map[string]string{}
	for _, id := range g.order {
		set, _ := g.nodes[id].Params["set"].(map[string]any)
		for k := range set {
			w[k] = id
		}
	}
	return w
}

// ---------------------------------------------------------------------------
// Running both sides.

// flowcraftResults runs the cases through the Node driver in one process.
func flowcraftResults(t *testing.T, pkg string, cases []*diffCase) []*diffResult {
	t.Helper()
	in, err := json.Marshal(cases)
	require.NoError(t, err)
	driver, err := filepath.Abs(filepath.Join("testdata", "differential", "flowcraft-runner.mjs"))
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", driver, pkg)
	cmd.Stdin = bytes.NewReader(in)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	require.NoError(t, cmd.Run(), "flowcraft driver: %s", stderr.String())
	d := json.NewDecoder(&stdout)
	d.UseNumber()
	var out []*diffResult
	require.NoError(t, d.Decode(&out), "flowcraft driver output")
	require.Len(t, out, len(cases))
	return out
}

// goResults runs the cases on this library's in-memory parts: one queue and
// one set of stores, four workers, every run at once.
func goResults(t *testing.T, cases []*diffCase) []*diffResult {
	t.Helper()
	rec := &diffRecorder{calls: map[string]map[string]int{}, inputs: map[string]map[string][]any{}}
	out := make([]*diffResult, len(cases))
	var bps []*sqsadapter.Blueprint
	parsed := make([]bool, len(cases))
	for i, c := range cases {
		raw, err := json.Marshal(c.Blueprint)
		require.NoError(t, err)
		bp, err := sqsadapter.ParseBlueprint(raw)
		if err != nil {
			out[i] = &diffResult{Name: c.Name, Status: "rejected", Error: err.Error()}
			continue
		}
		parsed[i] = true
		bps = append(bps, bp)
	}
	// A long visibility timeout: this test compares semantics, not
	// redeliveries, and a lease lost on a starved machine would count an
	// attempt the stub never failed.
	e := newEnv(t, envConfig{workers: 4, registry: sqsadapter.NodeRegistry{"stub": rec.stub}, blueprints: bps,
		visibility: 150 * unit, opts: []sqsadapter.Option{sqsadapter.WithConcurrency(16)}})
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for i, c := range cases {
		if !parsed[i] {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			out[i] = goRun(t, e, rec, c)
		}()
	}
	wg.Wait()
	return out
}

func goRun(t *testing.T, e *env, rec *diffRecorder, c *diffCase) *diffResult {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	r := &diffResult{Name: c.Name}
	id, err := e.client.StartRun(ctx, c.Blueprint.ID, c.Initial)
	if err != nil {
		r.Status, r.Error = "start-failed", err.Error()
		return r
	}
	st, err := e.client.WaitForRun(ctx, id)
	if err != nil {
		r.Status, r.Error = "unfinished", err.Error()
		return r
	}
	r.Status, r.Context, r.Error, r.Failed = string(st.Status), st.Context, st.Error, st.FailedNode
	rec.mu.Lock()
	r.Calls, r.Inputs = rec.calls[id], rec.inputs[id]
	rec.mu.Unlock()
	return r
}

// ---------------------------------------------------------------------------
// The test.

func TestDifferentialFlowcraft(t *testing.T) {
	pkg := os.Getenv("SQSADAPTER_FLOWCRAFT")
	if pkg == "" {
		if os.Getenv("SQSADAPTER_EMULATOR_STATE") != "" {
			t.Fatal("SQSADAPTER_FLOWCRAFT is not set though the emulators' env is: scripts/emulators.sh exports it")
		}
		t.Skip("SQSADAPTER_FLOWCRAFT is not set: run under make test, or: state=$(scripts/emulators.sh start) && . $state/env")
	}
	if _, err := os.Stat(filepath.Join(pkg, "dist", "index.mjs")); err != nil {
		t.Fatalf("SQSADAPTER_FLOWCRAFT=%s: no flowcraft package there: %v", pkg, err)
	}
	if _, err := exec.LookPath("node"); err != nil {
		t.Fatalf("SQSADAPTER_FLOWCRAFT is set but node is missing: %v", err)
	}
	runs := 250
	if s := os.Getenv("SQSADAPTER_DIFF_RUNS"); s != "" {
		n, err := strconv.Atoi(s)
		require.NoError(t, err, "SQSADAPTER_DIFF_RUNS")
		runs = n
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("SQSADAPTER_DIFF_SEED"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		require.NoError(t, err, "SQSADAPTER_DIFF_SEED")
		seed = n
	}
	t.Logf("differential: seed %d (SQSADAPTER_DIFF_SEED=%d replays)", seed, seed)

	hand := handWrittenCases(t)
	cases := slices.Clone(hand)
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	for i := range runs {
		cases = append(cases, generateCase(rng, fmt.Sprintf("gen-%d", i)))
	}
	if only := os.Getenv("SQSADAPTER_DIFF_CASES"); only != "" {
		names := strings.Split(only, ",")
		cases = slices.DeleteFunc(cases, func(c *diffCase) bool { return !slices.Contains(names, c.Name) })
	}
	for _, c := range cases {
		c.Blueprint.ID = c.Name
		for i := range c.Blueprint.Nodes {
			n := &c.Blueprint.Nodes[i]
			if n.Params == nil {
				n.Params = map[string]any{}
			}
			n.Params["id"] = n.ID
		}
	}

	fc := flowcraftResults(t, pkg, cases)
	gor := goResults(t, cases)

	differ, shown := 0, 0
	byRule := map[string]int{}
	for i, c := range cases {
		diffs, notes := compare(c, fc[i], gor[i])
		for _, n := range notes {
			byRule[strings.SplitN(n, ":", 2)[0]]++
		}
		if len(diffs) == 0 {
			continue
		}
		differ++
		if shown < 8 || os.Getenv("SQSADAPTER_DIFF_VERBOSE") != "" {
			shown++
			cj, _ := json.Marshal(c)
			fj, _ := json.Marshal(fc[i])
			gj, _ := json.Marshal(gor[i])
			t.Errorf("case %s differs:\n  %s\ncase: %s\nflowcraft: %s\ngo: %s\nrules applied: %v", c.Name, strings.Join(diffs, "\n  "), cj, fj, gj, notes)
		} else {
			t.Errorf("case %s differs: %s", c.Name, diffs[0])
		}
	}
	t.Logf("differential: rules applied: %v", byRule)
	t.Logf("differential: %d blueprints (%d hand-written, %d generated), %d agree, %d differ",
		len(cases), countHand(cases, hand), len(cases)-countHand(cases, hand), len(cases)-differ, differ)
}

func countHand(cases, hand []*diffCase) int {
	n := 0
	for _, c := range cases {
		if slices.Contains(hand, c) {
			n++
		}
	}
	return n
}

// ---------------------------------------------------------------------------
// Hand-written cases.

func handWrittenCases(t *testing.T) []*diffCase {
	t.Helper()
	var cases []*diffCase
	require.NoError(t, json.Unmarshal([]byte(handWrittenJSON), &cases))
	return cases
}

// handWrittenJSON covers every field of the blueprint format (§1) and the
// node and edge semantics (§2, §3).
const handWrittenJSON = `[
{"name": "order-fulfilment",
 "initial": {"_inputs.fetch-order": {"orderId": "o-1"}, "region": "eu"},
 "blueprint": {"metadata": {"version": "2.1.0", "owner": "payments-team"},
  "nodes": [
   {"id": "fetch-order", "uses": "stub", "params": {"pass": true, "out": {"lineItems": [1, 2], "score": 7}},
    "config": {"maxRetries": 3, "retryDelay": 1, "timeout": 10000}, "_sourceLocation": {"file": "order.ts", "line": 3, "column": 1}},
   {"id": "check-inventory", "uses": "stub", "params": {"pass": true, "out": {"inStock": true}}},
   {"id": "check-fraud", "uses": "stub", "params": {"failUntil": 2, "out": {"score": 3}}, "config": {"maxRetries": 2}},
   {"id": "price-quote", "uses": "stub", "params": {"fail": true}, "config": {"fallback": "list-price"}},
   {"id": "list-price", "uses": "stub", "params": {"out": {"price": 10}, "set": {"priced": "list"}}},
   {"id": "decide", "uses": "stub", "params": {"pass": true, "action": "approve", "set": {"decided": true}},
    "inputs": {"stock": "check-inventory", "fraud": "check-fraud", "quote": "price-quote", "region": "region"}},
   {"id": "charge-card", "uses": "stub", "params": {"pass": true, "out": {"customer": {"isVip": true}, "total": 250}}, "config": {"maxRetries": 3, "retryDelay": 1}},
   {"id": "manual-review", "uses": "stub", "params": {}},
   {"id": "reject-order", "uses": "stub", "params": {}},
   {"id": "send-vip-gift", "uses": "stub", "params": {"pass": true}},
   {"id": "notify-customer", "uses": "stub", "params": {"out": {"sent": 1}}, "config": {"joinStrategy": "any"}}
  ],
  "edges": [
   {"source": "fetch-order", "target": "check-inventory"},
   {"source": "fetch-order", "target": "check-fraud"},
   {"source": "fetch-order", "target": "price-quote", "transform": "input.lineItems", "_sourceLocation": {"file": "order.ts", "line": 9, "column": 1}},
   {"source": "check-inventory", "target": "decide"},
   {"source": "check-fraud", "target": "decide"},
   {"source": "price-quote", "target": "decide"},
   {"source": "decide", "target": "charge-card", "action": "approve"},
   {"source": "decide", "target": "manual-review", "action": "review"},
   {"source": "decide", "target": "reject-order"},
   {"source": "charge-card", "target": "send-vip-gift", "condition": "result.output.customer.isVip", "transform": "({vip: input.customer.isVip, total: input.total})"},
   {"source": "charge-card", "target": "notify-customer"},
   {"source": "manual-review", "target": "notify-customer"},
   {"source": "reject-order", "target": "notify-customer"}
  ]}},
{"name": "expressions",
 "initial": {"_inputs.route": {"total": 420, "tag": "b"}, "limit": 500, "mode": "a"},
 "blueprint": {"nodes": [
   {"id": "route", "uses": "stub", "params": {"raw": {"total": 420, "tag": "b", "ok": true}, "set": {"seen": 1}}},
   {"id": "fetch-order", "uses": "stub", "params": {"out": {"ok": true, "n": 0}}},
   {"id": "t1", "uses": "stub", "params": {"pass": true}},
   {"id": "t2", "uses": "stub", "params": {"pass": true}},
   {"id": "t3", "uses": "stub", "params": {"pass": true}},
   {"id": "t4", "uses": "stub", "params": {"pass": true}},
   {"id": "t5", "uses": "stub", "params": {"pass": true}},
   {"id": "t6", "uses": "stub", "params": {"pass": true}},
   {"id": "t7", "uses": "stub", "params": {"pass": true}},
   {"id": "f1", "uses": "stub", "params": {}},
   {"id": "f2", "uses": "stub", "params": {}},
   {"id": "f3", "uses": "stub", "params": {}}
  ],
  "edges": [
   {"source": "route", "target": "fetch-order"},
   {"source": "fetch-order", "target": "t1", "condition": "route.total < 500 && result.output.ok === true", "transform": "context.route.total >= 400 ? 'big' : 'small'"},
   {"source": "fetch-order", "target": "t2", "condition": "context.route.tag !== 'a' || false", "transform": "({n: input.n ?? 5, m: input.missing?.deep ?? 'none', both: input.ok && context.route.tag})"},
   {"source": "fetch-order", "target": "t3", "condition": "context[\"route\"].ok && !(limit < 100)", "transform": "context.limit - context.route.total"},
   {"source": "fetch-order", "target": "t4", "condition": "result.output.n || mode", "transform": "input.n || 'zero'"},
   {"source": "fetch-order", "target": "t5", "condition": "fetch-order.ok === true && seen >= 1"},
   {"source": "fetch-order", "target": "t6", "condition": "(result.output.nothing?.x ?? 'none') === 'none'", "transform": "!input.ok"},
   {"source": "fetch-order", "target": "t7", "condition": "(result.output.n > 0 ? 'yes' : '') === ''"},
   {"source": "fetch-order", "target": "f1", "condition": "result.output.ok !== true"},
   {"source": "fetch-order", "target": "f2", "condition": "result.output.missing.deep === 1"},
   {"source": "fetch-order", "target": "f3", "condition": "nosuchkey > 1"}
  ]}},
{"name": "actions",
 "initial": {},
 "blueprint": {"nodes": [
   {"id": "a", "uses": "stub", "params": {"action": "left", "out": {"v": 1}}},
   {"id": "l1", "uses": "stub", "params": {"pass": true}},
   {"id": "l2", "uses": "stub", "params": {"pass": true}},
   {"id": "r", "uses": "stub", "params": {}},
   {"id": "d", "uses": "stub", "params": {}},
   {"id": "b", "uses": "stub", "params": {"action": "nomatch"}},
   {"id": "bd", "uses": "stub", "params": {}},
   {"id": "bx", "uses": "stub", "params": {}}
  ],
  "edges": [
   {"source": "a", "target": "l1", "action": "left"},
   {"source": "a", "target": "l2", "action": "left", "condition": "result.output.v === 1"},
   {"source": "a", "target": "r", "action": "right"},
   {"source": "a", "target": "d"},
   {"source": "l1", "target": "b"},
   {"source": "b", "target": "bd"},
   {"source": "b", "target": "bx", "action": "other"}
  ]}},
{"name": "joins",
 "initial": {"_inputs.s": "go"},
 "blueprint": {"nodes": [
   {"id": "s", "uses": "stub", "params": {"pass": true}},
   {"id": "p1", "uses": "stub", "params": {"out": {"k": 1}}},
   {"id": "p2", "uses": "stub", "params": {"out": {"k": 2}}},
   {"id": "p3", "uses": "stub", "params": {"out": {"k": 3}}},
   {"id": "all", "uses": "stub", "params": {}},
   {"id": "allmap", "uses": "stub", "params": {"pass": true}, "inputs": {"one": "p1", "two": "_outputs.p2", "seed": "_inputs.s"}},
   {"id": "any", "uses": "stub", "params": {"out": {"first": true}}, "config": {"joinStrategy": "any"}},
   {"id": "after", "uses": "stub", "params": {"pass": true}}
  ],
  "edges": [
   {"source": "s", "target": "p1"}, {"source": "s", "target": "p2"}, {"source": "s", "target": "p3"},
   {"source": "p1", "target": "all"}, {"source": "p2", "target": "all", "transform": "input.k * 10"}, {"source": "p3", "target": "all"},
   {"source": "p1", "target": "allmap"}, {"source": "p2", "target": "allmap"},
   {"source": "p1", "target": "any"}, {"source": "p3", "target": "any"},
   {"source": "any", "target": "after"}
  ]}},
{"name": "untaken-branch-joins",
 "initial": {},
 "blueprint": {"nodes": [
   {"id": "s", "uses": "stub", "params": {"action": "yes"}},
   {"id": "y", "uses": "stub", "params": {}},
   {"id": "n", "uses": "stub", "params": {}},
   {"id": "merge-any", "uses": "stub", "params": {}, "config": {"joinStrategy": "any"}},
   {"id": "merge-all", "uses": "stub", "params": {}},
   {"id": "after-all", "uses": "stub", "params": {}}
  ],
  "edges": [
   {"source": "s", "target": "y", "action": "yes"}, {"source": "s", "target": "n", "action": "no"},
   {"source": "y", "target": "merge-any"}, {"source": "n", "target": "merge-any"},
   {"source": "y", "target": "merge-all"}, {"source": "n", "target": "merge-all"},
   {"source": "merge-all", "target": "after-all"}
  ]}},
{"name": "inputs-resolution",
 "initial": {"_inputs.a": {"deep": {"x": 1}}, "plain": "p", "_inputs.other": "staged"},
 "blueprint": {"nodes": [
   {"id": "a", "uses": "stub", "params": {"pass": true, "out": {"x": {"y": 2}}}},
   {"id": "str-node", "uses": "stub", "params": {"pass": true}, "inputs": "a"},
   {"id": "str-key", "uses": "stub", "params": {"pass": true}, "inputs": "plain"},
   {"id": "str-raw", "uses": "stub", "params": {"pass": true}, "inputs": "_inputs.other"},
   {"id": "str-missing", "uses": "stub", "params": {"pass": true}, "inputs": "nothing"},
   {"id": "map", "uses": "stub", "params": {"pass": true}, "inputs": {"node": "a", "key": "plain", "raw": "_outputs.a", "none": "missing"}},
   {"id": "path", "uses": "stub", "params": {}, "inputs": "a.x.y"},
   {"id": "arr", "uses": "stub", "params": {}, "inputs": {"first": ["missing", "a"]}},
   {"id": "tr-str", "uses": "stub", "params": {"pass": true}, "inputs": "plain"},
   {"id": "tr-self", "uses": "stub", "params": {"pass": true}, "inputs": "a"},
   {"id": "tr-map", "uses": "stub", "params": {"pass": true}, "inputs": {"k": "plain"}}
  ],
  "edges": [
   {"source": "a", "target": "str-node"}, {"source": "a", "target": "str-key"}, {"source": "a", "target": "str-raw"},
   {"source": "a", "target": "str-missing"}, {"source": "a", "target": "map"}, {"source": "a", "target": "path"}, {"source": "a", "target": "arr"},
   {"source": "a", "target": "tr-str", "transform": "({seen: input, from: 'edge'})"},
   {"source": "a", "target": "tr-self", "transform": "input.x"},
   {"source": "a", "target": "tr-map", "transform": "input.in"}
  ]}},
{"name": "retries-and-fallbacks",
 "initial": {},
 "blueprint": {"nodes": [
   {"id": "s", "uses": "stub", "params": {"out": {"v": 1}}},
   {"id": "flaky", "uses": "stub", "params": {"failUntil": 3, "pass": true}, "config": {"maxRetries": 3}},
   {"id": "primary", "uses": "stub", "params": {"fail": true, "pass": true}, "config": {"maxRetries": 2, "fallback": "backup"}},
   {"id": "backup", "uses": "stub", "params": {"action": "fb", "out": {"from": "backup"}, "set": {"usedBackup": true}}},
   {"id": "via-action", "uses": "stub", "params": {"pass": true}},
   {"id": "via-default", "uses": "stub", "params": {"pass": true}},
   {"id": "primary2", "uses": "stub", "params": {"failUntil": 2}, "config": {"maxRetries": 1, "fallback": "backup2"}},
   {"id": "backup2", "uses": "stub", "params": {"pass": true, "out": {"from": "backup2"}}, "inputs": {"s": "s"}},
   {"id": "after2", "uses": "stub", "params": {"pass": true}}
  ],
  "edges": [
   {"source": "s", "target": "flaky"}, {"source": "s", "target": "primary"}, {"source": "s", "target": "primary2"},
   {"source": "primary", "target": "via-action", "action": "fb", "condition": "result.output.from === 'backup'"},
   {"source": "primary", "target": "via-default"},
   {"source": "primary2", "target": "after2", "transform": "({got: input.from})"}
  ]}},
{"name": "failure",
 "initial": {},
 "blueprint": {"nodes": [
   {"id": "s", "uses": "stub", "params": {}},
   {"id": "bad", "uses": "stub", "params": {"failUntil": 5}, "config": {"maxRetries": 2}},
   {"id": "never", "uses": "stub", "params": {}}
  ],
  "edges": [{"source": "s", "target": "bad"}, {"source": "bad", "target": "never"}]}},
{"name": "fallback-fails",
 "initial": {},
 "blueprint": {"nodes": [
   {"id": "p", "uses": "stub", "params": {"fail": true}, "config": {"fallback": "fb"}},
   {"id": "fb", "uses": "stub", "params": {"fail": true}, "config": {"maxRetries": 2}},
   {"id": "next", "uses": "stub", "params": {}}
  ],
  "edges": [{"source": "p", "target": "next"}]}},
{"name": "max-retries-zero",
 "initial": {"_inputs.z": 1},
 "blueprint": {"nodes": [{"id": "z", "uses": "stub", "params": {"pass": true}, "config": {"maxRetries": 0}}], "edges": []}},
{"name": "duplicate-edges",
 "initial": {},
 "blueprint": {"nodes": [
   {"id": "a", "uses": "stub", "params": {"out": {"n": 1}}},
   {"id": "b", "uses": "stub", "params": {"pass": true}}
  ],
  "edges": [{"source": "a", "target": "b", "transform": "input.n + 1"}, {"source": "a", "target": "b", "condition": "result.output.n === 1", "transform": "input.n + 2"}]}},
{"name": "context-writes",
 "initial": {"counter": 1, "_inputs.w": {"q": 1}},
 "blueprint": {"nodes": [
   {"id": "w", "uses": "stub", "params": {"set": {"counter": 2, "obj": {"a": [1, 2.5, "x"], "b": null}}, "pass": true}},
   {"id": "r", "uses": "stub", "params": {"pass": true}, "inputs": {"c": "counter", "o": "obj"}},
   {"id": "c", "uses": "stub", "params": {}}
  ],
  "edges": [{"source": "w", "target": "r", "condition": "counter === 2 && obj.a[1] > 2"}, {"source": "r", "target": "c", "condition": "!context.obj.b && context.obj.a.length === 3"}]}},
{"name": "loop-while",
 "initial": {},
 "blueprint": {"nodes": [
   {"id": "init", "uses": "stub", "params": {}},
   {"id": "body", "uses": "stub", "params": {"pass": true, "set": {"touched": true}}},
   {"id": "check", "uses": "stub", "params": {"pass": true}},
   {"id": "loop", "uses": "loop-controller", "params": {"condition": "!(context.check && context.check.in.in && context.check.in.in.in)"}, "config": {"joinStrategy": "any"}},
   {"id": "fin", "uses": "stub", "params": {"pass": true}}
  ],
  "edges": [{"source": "init", "target": "loop"}, {"source": "body", "target": "check"}, {"source": "check", "target": "loop"},
   {"source": "loop", "target": "body", "action": "continue", "transform": "context[\"check\"]"},
   {"source": "loop", "target": "fin", "action": "break", "transform": "context[\"check\"]"}]}},
{"name": "loop-from-the-body",
 "initial": {"_inputs.body": {"seed": 1}},
 "blueprint": {"nodes": [
   {"id": "body", "uses": "stub", "params": {"pass": true}},
   {"id": "loop", "uses": "loop-controller", "params": {"condition": "!body.in.in.in"}},
   {"id": "fin", "uses": "stub", "params": {"pass": true}},
   {"id": "alarm", "uses": "stub", "params": {}}
  ],
  "edges": [{"source": "body", "target": "loop"},
   {"source": "loop", "target": "body", "action": "continue", "transform": "context[\"body\"]"},
   {"source": "loop", "target": "fin", "action": "break", "transform": "context[\"body\"]"},
   {"source": "loop", "target": "alarm", "action": "break", "condition": "body.in.seed === 2"}]}}
]`

// ---------------------------------------------------------------------------
// The generator: DAGs of 1-10 nodes over the stub, whose expressions are
// JavaScript valid in both runtimes and which read only what is settled when
// they are evaluated in both (a node's own result, nodes and context keys
// that certainly ran before it, the initial context): what a concurrent
// branch writes is visible to Flowcraft and, by timing, maybe not here.

type diffGenNode struct {
	id       string
	preds    []int
	any      bool
	raw      bool
	must     map[int]bool // nodes certainly completed when this one runs, itself included
	key      string       // the context key it writes, if any
	primary  bool         // has a fallback: its output is not referenced
	def      sqsadapter.NodeDefinition
	outEdges []int // indexes into edges
}

func diffPick[T any](rng *rand.Rand, xs ...T) T { return xs[rng.IntN(len(xs))] }

// jsRef is how an expression names node id's output as a bare identifier,
// and as a member of context.
func jsRef(id string) (bare, ctx string) {
	if strings.Contains(id, "-") {
		return id, `context["` + id + `"]`
	}
	return id, "context." + id
}

func generateCase(rng *rand.Rand, name string) *diffCase {
	n := 1 + rng.IntN(10)
	nodes := make([]*diffGenNode, n)
	var edges []sqsadapter.EdgeDefinition
	initial := map[string]any{"seed": int64(1 + rng.IntN(9)), "mode": diffPick(rng, "a", "b")}
	for i := range n {
		g := &diffGenNode{id: fmt.Sprintf("N%d", i), must: map[int]bool{i: true}}
		if rng.IntN(5) == 0 {
			g.id = fmt.Sprintf("step-%d", i)
		}
		nodes[i] = g
		if i > 0 && rng.IntN(6) != 0 {
			k := 1
			if r := rng.IntN(10); r >= 6 && i >= 2 {
				k = 2 + rng.IntN(min(2, i-1))
				g.any = r >= 8
			}
			g.preds = rng.Perm(i)[:k]
			sort.Ints(g.preds)
			// Certainly completed: for one predecessor its set; for a join,
			// what every predecessor has in common (which one fires an any
			// join, and which edges of an all join are taken, varies).
			common := maps.Clone(nodes[g.preds[0]].must)
			for _, p := range g.preds[1:] {
				maps.DeleteFunc(common, func(x int, _ bool) bool { return !nodes[p].must[x] })
			}
			maps.Copy(g.must, common)
		}
		g.raw = rng.IntN(10) == 0
		params := map[string]any{}
		if g.raw {
			params["raw"] = int64(100 * rng.IntN(8))
		} else {
			out := map[string]any{"x": diffPick(rng, "a", "b"), "n": int64(rng.IntN(10))}
			if rng.IntN(3) == 0 {
				out["total"] = int64(100 * rng.IntN(8))
			}
			params["out"] = out
		}
		if rng.IntN(10) < 3 {
			g.key = "k" + strconv.Itoa(i)
			params["set"] = map[string]any{g.key: int64(rng.IntN(5))}
		}
		cfg := sqsadapter.NodeConfig{}
		if g.any {
			cfg.JoinStrategy = "any"
		} else if len(g.preds) > 1 && rng.IntN(2) == 0 {
			cfg.JoinStrategy = "all"
		}
		if !g.any {
			switch r := rng.IntN(100); {
			case r < 4:
				params["fail"] = true
				cfg.MaxRetries = 1 + rng.IntN(2)
			case r < 20:
				cfg.MaxRetries = 1 + rng.IntN(3)
				params["failUntil"] = int64(1 + rng.IntN(4))
			}
		}
		if len(g.preds) == 0 && rng.IntN(10) < 6 {
			initial["_inputs."+g.id] = map[string]any{"x": diffPick(rng, "a", "b"), "n": int64(rng.IntN(10))}
		}
		g.def = sqsadapter.NodeDefinition{ID: g.id, Uses: "stub", Params: params, Config: cfg}
	}
	// refs lists the nodes whose output an expression or inputs may name
	// from node i: certainly completed, not failed over to a fallback.
	refs := func(i int, self bool) []int {
		var out []int
		for _, x := range slices.Sorted(maps.Keys(nodes[i].must)) {
			if (self || x != i) && !nodes[x].primary {
				out = append(out, x)
			}
		}
		return out
	}
	keys := func(i int, self bool) []string {
		var out []string
		for _, x := range slices.Sorted(maps.Keys(nodes[i].must)) {
			if (self || x != i) && nodes[x].key != "" && !nodes[x].primary {
				out = append(out, nodes[x].key)
			}
		}
		return out
	}
	// Fallbacks: decided before expressions, which must not name a primary.
	var fallbacks []sqsadapter.NodeDefinition
	for i, g := range nodes {
		if g.any || rng.IntN(100) >= 12 {
			continue
		}
		g.primary = true
		g.def.Params["fail"] = true
		delete(g.def.Params, "failUntil")
		fb := sqsadapter.NodeDefinition{ID: "fb" + strconv.Itoa(i), Uses: "stub",
			Params: map[string]any{"out": map[string]any{"x": diffPick(rng, "a", "b"), "n": int64(rng.IntN(10)), "fallback": true}}}
		if rng.IntN(3) == 0 {
			fb.Inputs = map[string]any{"s": "seed"}
			fb.Params["pass"] = true
		}
		if rng.IntN(8) == 0 {
			fb.Params["fail"] = true
		}
		if rng.IntN(4) == 0 {
			fb.Params["set"] = map[string]any{"kfb" + strconv.Itoa(i): int64(rng.IntN(5))}
		}
		g.def.Config.Fallback = fb.ID
		fallbacks = append(fallbacks, fb)
	}
	cond := func(src int) string {
		s := nodes[src]
		var opts []string
		if s.raw {
			opts = append(opts, "result.output >= 300", "result.output < 200 || mode === 'a'", "!(result.output > 400)")
		} else if !s.primary || rng.IntN(2) == 0 {
			opts = append(opts,
				"result.output.x === 'a'", "result.output.x !== 'a'", "result.output.n >= 5",
				"result.output.n < 3 || result.output.x === 'b'", "!(result.output.n > 4) && result.output.x === 'a'",
				"(result.output.missing?.deep ?? 2) < result.output.n", "result.output.n > 5 ? seed > 3 : mode === 'a'",
				"result.output.total >= 300", "result.output.n && result.output.x")
		}
		opts = append(opts, "seed > 4", "mode === 'b' && seed <= 6", "context.seed !== 3")
		for _, r := range refs(src, true) {
			bare, ctx := jsRef(nodes[r].id)
			if strings.Contains(bare, "-") {
				ctx = bare // see the rule hyphen-in-string
			}
			if nodes[r].raw {
				opts = append(opts, bare+" < 500", ctx+" >= 200")
			} else {
				opts = append(opts, bare+".x === 'b'", bare+".n >= 4", ctx+".n < 5 && "+bare+".x === 'a'", bare+".total < 500")
			}
		}
		for _, k := range keys(src, true) {
			opts = append(opts, k+" >= 2", k+" === 0 || seed < 5")
		}
		return diffPick(rng, opts...)
	}
	transform := func(src int) string {
		s := nodes[src]
		var opts []string
		if s.raw {
			opts = append(opts, "input * 2", "input >= 300 ? 'hi' : 'lo'")
		} else {
			opts = append(opts, "input.x", "({v: input.n * 2, w: input.x})", "input.n > 4 ? 'big' : 'small'",
				"input.in ?? 'none'", "context.seed * 10 + input.n", "[input.x, input.n]", "input.n === 3 && input.x", "!input.x")
		}
		for _, r := range refs(src, false) {
			_, ctx := jsRef(nodes[r].id)
			if !nodes[r].raw {
				opts = append(opts, ctx+".n", "({from: "+ctx+".x, mode: context.mode})")
			}
		}
		return diffPick(rng, opts...)
	}
	for i, g := range nodes {
		for _, p := range g.preds {
			e := sqsadapter.EdgeDefinition{Source: nodes[p].id, Target: g.id}
			switch r := rng.IntN(10); {
			case r < 5:
			case r < 7:
				e.Action = diffPick(rng, "go", "stop")
				if rng.IntN(3) == 0 {
					e.Condition = cond(p)
				}
			default:
				e.Condition = cond(p)
			}
			if rng.IntN(4) == 0 && !(len(g.preds) > 1 && g.def.Inputs != nil) {
				e.Transform = transform(p)
			}
			nodes[p].outEdges = append(nodes[p].outEdges, len(edges))
			edges = append(edges, e)
		}
		_ = i
	}
	// Inputs: references to what is settled when the node starts.
	for i, g := range nodes {
		if rng.IntN(5) != 0 {
			continue
		}
		hasTransformIn := slices.ContainsFunc(edges, func(e sqsadapter.EdgeDefinition) bool { return e.Target == g.id && e.Transform != "" })
		if len(g.preds) > 1 && hasTransformIn {
			continue
		}
		var choices []any
		for _, r := range refs(i, false) {
			choices = append(choices, nodes[r].id)
			if !nodes[r].raw && rng.IntN(4) == 0 {
				choices = append(choices, nodes[r].id+".x")
			}
		}
		choices = append(choices, "seed", "missing")
		for _, k := range keys(i, false) {
			choices = append(choices, k)
		}
		for k := range initial {
			if strings.HasPrefix(k, "_inputs.") {
				choices = append(choices, k)
			}
		}
		slices.SortFunc(choices, func(a, b any) int { return strings.Compare(a.(string), b.(string)) })
		if rng.IntN(2) == 0 {
			g.def.Inputs = diffPick(rng, choices...)
		} else {
			m := map[string]any{}
			for j := range 1 + rng.IntN(3) {
				m["v"+strconv.Itoa(j)] = diffPick(rng, choices...)
			}
			if rng.IntN(8) == 0 {
				m["first"] = []any{"missing", diffPick(rng, choices...)}
			}
			g.def.Inputs = m
		}
	}
	// Actions: a node with action edges usually returns one of them, or
	// another; sometimes none.
	for _, g := range nodes {
		var acts []string
		for _, ei := range g.outEdges {
			if a := edges[ei].Action; a != "" && !slices.Contains(acts, a) {
				acts = append(acts, a)
			}
		}
		if len(acts) > 0 && rng.IntN(10) < 8 {
			g.def.Params["action"] = diffPick(rng, append(acts, "other")...)
		} else if rng.IntN(10) == 0 {
			g.def.Params["action"] = "go"
		}
	}
	for _, fb := range fallbacks {
		if rng.IntN(3) == 0 {
			fb.Params["action"] = diffPick(rng, "go", "stop")
		}
	}
	// Stubs whose input a rule does not compare do not echo it.
	c := &diffCase{Name: name, Initial: initial, Blueprint: sqsadapter.Blueprint{Edges: edges}}
	for _, g := range nodes {
		c.Blueprint.Nodes = append(c.Blueprint.Nodes, g.def)
	}
	c.Blueprint.Nodes = append(c.Blueprint.Nodes, fallbacks...)
	gr := newDiffGraph(c)
	for i := range c.Blueprint.Nodes {
		d := &c.Blueprint.Nodes[i]
		if _, has := d.Params["raw"]; has || d.Params["pass"] != nil {
			continue
		}
		comparable := !(gr.isAllJoin(d.ID) && d.Inputs == nil) && !(d.Config.JoinStrategy == "any" && len(gr.preds[d.ID]) > 1) &&
			!inputsIncomparable(*d) && !(gr.fallbackOnly[d.ID] && d.Inputs == nil)
		if comparable && rng.IntN(5) != 0 {
			d.Params["pass"] = true
		}
	}
	return c
}
