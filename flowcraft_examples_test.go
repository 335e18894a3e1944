package sqsadapter_test

// The examples check: a folder of Flowcraft-format blueprints laid out as
// <folder>/*/*.json — such as Flowcraft's declarative examples that use
// subflows, each parent beside its sub-blueprints — runs through Flowcraft's
// own in-memory FlowRuntime (driven by
// testdata/differential/examples-runner.mjs, which registers every blueprint
// where Flowcraft's subflow node finds it) and through this library on its
// in-memory parts, with the same stand-in nodes in both languages, once per
// branch choice. It compares each run's status, every executed node's output
// and invocations, the context keys (the subflow outputs mapped into the
// parent among them), and each child run the same way, after the rules of
// exampleRules. The blueprints are loaded unchanged, with LoadBlueprints.
//
//   SQSADAPTER_FLOWCRAFT_EXAMPLES  the folder (the test skips without it)
//   SQSADAPTER_FLOWCRAFT           the flowcraft package folder
//                                  (scripts/emulators.sh exports it)
//
// The initial context of every run is <folder>/initial.json if there is
// one, else exampleInitial. make flowcraft-examples FLOWCRAFT_EXAMPLES=<dir>
// runs it.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flowcraft/sqsadapter"
)

// exampleInitial is the initial context when the folder has no
// initial.json: the inputs Flowcraft's subflow examples read.
var exampleInitial = map[string]any{
	"applicantName":  "Ann",
	"resume":         "Go, SQL",
	"coverLetter":    "Dear team",
	"initial_review": "great product",
	"userPost":       "hi there",
	"userId":         int64(7),
}

// ---------------------------------------------------------------------------
// The stand-in nodes, identical to the registry of examples-runner.mjs:
//
//   llm-process    output: params.promptTemplate with each {{name}} replaced
//                  by the value of params.inputs[name] (renderPrompt)
//   llm-condition  the same output, and the run's condition action
//   llm-router     the same output, and the run's router action
//   output         the same output, also written to params.outputKey if set

// exampleText is how a value appears in a rendered prompt: a string as it
// is, anything else as JSON with object members sorted, a missing value as
// null (JSON.stringify's form: no HTML escaping).
func exampleText(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return fmt.Sprintf("!%v", err)
	}
	return strings.TrimSuffix(b.String(), "\n")
}

// renderPrompt fills params.promptTemplate: each {{name}} of params.inputs
// takes the first of its references (a string, or an array tried in order)
// that has a value, read as "_outputs.<ref>" and failing that as "<ref>".
func renderPrompt(params map[string]any, get func(key string) (any, error)) (string, error) {
	out, _ := params["promptTemplate"].(string)
	inputs, _ := params["inputs"].(map[string]any)
	for _, name := range slices.Sorted(maps.Keys(inputs)) {
		refs, ok := inputs[name].([]any)
		if !ok {
			refs = []any{inputs[name]}
		}
		var val any
	refs:
		for _, ref := range refs {
			for _, key := range []string{"_outputs." + fmt.Sprint(ref), fmt.Sprint(ref)} {
				v, err := get(key)
				if err != nil {
					return "", err
				}
				if v != nil {
					val = v
					break refs
				}
			}
		}
		out = strings.ReplaceAll(out, "{{"+name+"}}", exampleText(val))
	}
	return out, nil
}

// exampleChoice is a run's branch choice: the action every llm-condition
// returns, and every llm-router ("": none).
type exampleChoice struct{ cond, route string }

// exampleRecorder holds the current run's choice (runs go one at a time)
// and records the stand-ins' invocations by blueprint and node.
type exampleRecorder struct {
	mu     sync.Mutex
	choice exampleChoice
	calls  map[string]map[string]int
	inputs map[string]map[string][]any
}

func (r *exampleRecorder) reset(c exampleChoice) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.choice, r.calls, r.inputs = c, map[string]map[string]int{}, map[string]map[string][]any{}
}

func (r *exampleRecorder) registry() sqsadapter.NodeRegistry {
	node := func(kind string) sqsadapter.NodeFunc {
		return func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
			r.mu.Lock()
			if r.calls[nc.BlueprintID] == nil {
				r.calls[nc.BlueprintID], r.inputs[nc.BlueprintID] = map[string]int{}, map[string][]any{}
			}
			r.calls[nc.BlueprintID][nc.NodeID]++
			r.inputs[nc.BlueprintID][nc.NodeID] = append(r.inputs[nc.BlueprintID][nc.NodeID], nc.Input)
			choice := r.choice
			r.mu.Unlock()
			out, err := renderPrompt(nc.Params, func(key string) (any, error) {
				v, _, err := nc.Get(ctx, key)
				return v, err
			})
			if err != nil {
				return sqsadapter.NodeResult{}, err
			}
			res := sqsadapter.NodeResult{Output: out}
			switch kind {
			case "llm-condition":
				res.Action = choice.cond
			case "llm-router":
				res.Action = choice.route
			case "output":
				if k, _ := nc.Params["outputKey"].(string); k != "" {
					if err := nc.Set(k, out); err != nil {
						return res, err
					}
				}
			}
			return res, nil
		}
	}
	return sqsadapter.NodeRegistry{"llm-process": node("llm-process"), "llm-condition": node("llm-condition"),
		"llm-router": node("llm-router"), "output": node("output")}
}

// ---------------------------------------------------------------------------
// Results: examples-runner.mjs prints these; the Go side builds the same.

type exampleRun struct {
	Name      string                      `json:"name"`
	Blueprint string                      `json:"blueprint"`
	Cond      string                      `json:"cond"`
	Route     string                      `json:"route"`
	Status    string                      `json:"status"`
	Errors    []string                    `json:"errors,omitempty"`
	Context   map[string]any              `json:"context"`
	Calls     map[string]map[string]int   `json:"calls"`  // blueprint -> node -> invocations
	Inputs    map[string]map[string][]any `json:"inputs"` // blueprint -> node -> input of each invocation
	Children  []exampleChild              `json:"children"`
	Thrown    string                      `json:"thrown,omitempty"`
}

// exampleChild is a child run: the subflow node (of blueprint Parent) that
// ran it, its blueprint, final status and context.
type exampleChild struct {
	Node        string         `json:"node"`
	Parent      string         `json:"parent"`
	BlueprintID string         `json:"blueprintId"`
	Status      string         `json:"status"`
	Context     map[string]any `json:"context"`
}

func (c exampleChild) key() string { return c.Parent + "/" + c.Node }

// ---------------------------------------------------------------------------
// The rules: what differs between the two runtimes on these blueprints, each
// with its reason. Rules never name a blueprint.

var exampleRules = []struct{ name, reason string }{
	{"bookkeeping-keys", "Flowcraft in memory also writes each output under the bare node id, every staged input as _inputs.<id> (of a node with a " +
		"predecessor) and _executionId, in a child run's context too, which a subflow node with params.outputs returns as its output: these " +
		"keys are dropped from Flowcraft's contexts and from such outputs (and from the inputs that carry them); a context key that is also " +
		"a node id is not compared on either side (Flowcraft's bare-id write hides a subflow output mapped to that key)"},
	{"json-undefined", "JSON has no undefined: null members and null-valued keys are dropped on both sides (canonical)"},
	{"all-join-input", "the default input of an all join is {predecessorId: output} here; Flowcraft's is whichever predecessor staged last: " +
		"Flowcraft's input must be one of the map's values"},
	{"all-join-untaken-branch", "an all join whose predecessor is on an untaken branch (a condition or router chose another action) never " +
		"runs in Flowcraft 2.10.1, which still reports completed: its traverser waits for every predecessor to complete, and the untaken " +
		"one never does; here the untaken edge is dead, so the join runs once the taken ones are in: such a join (an edge into it taken " +
		"in Flowcraft, _inputs.<id> staged, but not run there) and what follows it are not compared with Flowcraft; instead it must have " +
		"run here once, with the input {predecessor: Flowcraft's output} of the predecessors that ran, and an output (and outputKey write) " +
		"equal to its stand-in rendered from Flowcraft's final context"},
}

// exampleView is one blueprint run of one side, comparable: values are
// canonical JSON.
type exampleView struct {
	status  string
	outputs map[string]string   // node -> output
	raw     map[string]any      // node -> output, normalized, as a value
	keys    map[string]string   // user key -> value
	calls   map[string]int      // node -> invocations
	inputs  map[string][]string // node -> inputs, normalized
}

// exampleCompare compares runs of the blueprints bps.
type exampleCompare struct {
	graphs map[string]*diffGraph
	diffs  []string
	notes  []string
}

func (x *exampleCompare) diff(format string, args ...any) {
	x.diffs = append(x.diffs, fmt.Sprintf(format, args...))
}
func (x *exampleCompare) note(rule, format string, args ...any) {
	x.notes = append(x.notes, rule+": "+fmt.Sprintf(format, args...))
}

// normalize drops Flowcraft's bookkeeping keys from a context of blueprint
// bp (rule bookkeeping-keys) and normalizes the outputs in it; Go contexts
// only have their outputs normalized. It returns a copy.
func (x *exampleCompare) normalize(bp string, ctx map[string]any, flowcraft bool) map[string]any {
	g := x.graphs[bp]
	out := make(map[string]any, len(ctx))
	for k, v := range ctx {
		if flowcraft && g != nil {
			_, isNode := g.nodes[k]
			in, staged := strings.CutPrefix(k, "_inputs.")
			if isNode || k == "_executionId" || staged && len(g.preds[in]) > 0 {
				continue
			}
		}
		if id, ok := strings.CutPrefix(k, "_outputs."); ok {
			v = x.normalizeOutput(bp, id, v, flowcraft)
		}
		out[k] = v
	}
	return out
}

// normalizeOutput normalizes the output of node id of blueprint bp: a
// subflow node with params.outputs returns its child's whole context.
func (x *exampleCompare) normalizeOutput(bp, id string, v any, flowcraft bool) any {
	g := x.graphs[bp]
	if g == nil {
		return v
	}
	n := g.nodes[id]
	m, isMap := v.(map[string]any)
	if n.Uses != "subflow" || !isMap || n.Params["outputs"] == nil {
		return v
	}
	child, _ := n.Params["blueprintId"].(string)
	return x.normalize(child, m, flowcraft)
}

// view builds one side's view of a run of blueprint bp.
func (x *exampleCompare) view(bp, status string, ctx map[string]any, calls map[string]int, inputs map[string][]any, flowcraft bool) *exampleView {
	g := x.graphs[bp]
	v := &exampleView{status: status, outputs: map[string]string{}, raw: map[string]any{}, keys: map[string]string{},
		calls: map[string]int{}, inputs: map[string][]string{}}
	for k, val := range x.normalize(bp, ctx, flowcraft) {
		if val == nil {
			continue
		}
		if id, ok := strings.CutPrefix(k, "_outputs."); ok {
			v.outputs[id], v.raw[id] = canonical(val), val
			continue
		}
		if _, isNode := g.nodes[k]; isNode {
			continue // rule bookkeeping-keys (the Go side)
		}
		v.keys[k] = canonical(val)
	}
	for id, n := range calls {
		if n > 0 {
			v.calls[id] = n
		}
	}
	for id, ins := range inputs {
		for _, in := range ins {
			// An input that is a predecessor's output is normalized as
			// that output is.
			for _, p := range g.preds[id] {
				if out, ok := ctx["_outputs."+p]; ok && canonical(out) == canonical(in) {
					in = x.normalizeOutput(bp, p, in, flowcraft)
					break
				}
			}
			v.inputs[id] = append(v.inputs[id], canonical(in))
		}
	}
	return v
}

// compareRun compares one run of blueprint bp: where says which (the run,
// or a child run); fcCtx is Flowcraft's final context, raw.
func (x *exampleCompare) compareRun(where, bp string, f, o *exampleView, fcCtx map[string]any) {
	g := x.graphs[bp]
	if f.status != o.status {
		x.diff("%s: status: flowcraft %q, go %q", where, f.status, o.status)
	}
	excluded := map[string]string{}
	noInput := map[string]bool{}
	for _, id := range slices.Sorted(maps.Keys(g.nodes)) {
		if !g.isAllJoin(id) {
			continue
		}
		// Rule all-join-input.
		noInput[id] = true
		if fi, oi := f.inputs[id], o.inputs[id]; len(fi) == 1 && len(oi) == 1 {
			var m map[string]any
			if err := json.Unmarshal([]byte(oi[0]), &m); err != nil || !slices.ContainsFunc(slices.Collect(maps.Values(m)), func(v any) bool { return canonical(v) == fi[0] }) {
				x.diff("%s: input of all join %s: flowcraft %s is none of go's %s", where, id, fi[0], oi[0])
			}
		}
		// Rule all-join-untaken-branch.
		if _, staged := fcCtx["_inputs."+id]; !staged || f.calls[id] > 0 || o.calls[id] == 0 {
			continue
		}
		var missing []string
		ran := map[string]any{}
		for _, p := range g.preds[id] {
			if f.calls[p] == 0 {
				missing = append(missing, p)
			} else if v, ok := f.raw[p]; ok {
				ran[p] = v
			}
		}
		if len(missing) == 0 {
			continue
		}
		for _, d := range append([]string{id}, g.descendants(id)...) {
			excluded[d] = "all-join-untaken-branch"
		}
		x.note("all-join-untaken-branch", "%s: Flowcraft never ran %s (%s untaken); here it ran once, output %s: checked against Flowcraft's state",
			where, id, strings.Join(missing, ", "), orNone(o.outputs[id]))
		if o.calls[id] != 1 {
			x.diff("%s: %s ran %d times here, want once", where, id, o.calls[id])
		}
		if want := canonical(ran); len(o.inputs[id]) != 1 || o.inputs[id][0] != want {
			x.diff("%s: input of %s: go %v, want %s", where, id, o.inputs[id], want)
		}
		// What the join's stand-in renders from Flowcraft's final state.
		state := map[string]any{}
		for k, v := range x.normalize(bp, fcCtx, true) {
			state[k] = v
		}
		want, _ := renderPrompt(g.nodes[id].Params, func(key string) (any, error) { return state[key], nil })
		if o.outputs[id] != canonical(want) {
			x.diff("%s: _outputs.%s: go %s, want %s (rendered from Flowcraft's state)", where, id, orNone(o.outputs[id]), canonical(want))
		}
		if k, _ := g.nodes[id].Params["outputKey"].(string); k != "" && g.nodes[id].Uses == "output" && o.keys[k] != canonical(want) {
			x.diff("%s: context %q written by %s: go %s, want %s", where, k, id, orNone(o.keys[k]), canonical(want))
		}
	}
	ids := map[string]bool{}
	for _, m := range []map[string]int{f.calls, o.calls} {
		for id := range m {
			ids[id] = true
		}
	}
	for id := range f.outputs {
		ids[id] = true
	}
	for id := range o.outputs {
		ids[id] = true
	}
	for _, id := range slices.Sorted(maps.Keys(ids)) {
		if _, ex := excluded[id]; ex {
			continue
		}
		if fo, oo := f.outputs[id], o.outputs[id]; fo != oo {
			x.diff("%s: _outputs.%s: flowcraft %s, go %s", where, id, orNone(fo), orNone(oo))
		}
		if fc, oc := f.calls[id], o.calls[id]; fc != oc {
			x.diff("%s: invocations of %s: flowcraft %d, go %d", where, id, fc, oc)
		}
		// Inputs: of the stand-ins (a subflow node's is not recorded here).
		if _, stub := o.inputs[id]; stub && !noInput[id] && !slices.Equal(f.inputs[id], o.inputs[id]) {
			x.diff("%s: inputs of %s: flowcraft %v, go %v", where, id, f.inputs[id], o.inputs[id])
		}
	}
	writers := map[string]string{} // outputKey -> node
	for _, id := range g.order {
		n := g.nodes[id]
		if k, _ := n.Params["outputKey"].(string); k != "" && n.Uses == "output" {
			writers[k] = n.ID
		}
	}
	keys := map[string]bool{}
	for _, m := range []map[string]string{f.keys, o.keys} {
		for k := range m {
			keys[k] = true
		}
	}
	for _, k := range slices.Sorted(maps.Keys(keys)) {
		if _, ex := excluded[writers[k]]; ex && writers[k] != "" {
			continue
		}
		if fv, ov := f.keys[k], o.keys[k]; fv != ov {
			x.diff("%s: context %q: flowcraft %s, go %s", where, k, orNone(fv), orNone(ov))
		}
	}
}

// compareExample compares a whole run: the parent, then each child run,
// matched by the subflow node that ran it.
func (x *exampleCompare) compareExample(fc, gor *exampleRun) {
	if fc.Thrown != "" {
		x.diff("flowcraft threw: %s", fc.Thrown)
		return
	}
	x.compareRun(fc.Blueprint, fc.Blueprint,
		x.view(fc.Blueprint, fc.Status, fc.Context, fc.Calls[fc.Blueprint], fc.Inputs[fc.Blueprint], true),
		x.view(gor.Blueprint, gor.Status, gor.Context, gor.Calls[gor.Blueprint], gor.Inputs[gor.Blueprint], false), fc.Context)
	goChildren := map[string]exampleChild{}
	for _, c := range gor.Children {
		goChildren[c.key()] = c
	}
	for _, c := range fc.Children {
		gc, ok := goChildren[c.key()]
		delete(goChildren, c.key())
		where := fmt.Sprintf("child %s of %s (blueprint %s)", c.Node, c.Parent, c.BlueprintID)
		if !ok {
			x.diff("%s: ran in flowcraft only", where)
			continue
		}
		if gc.BlueprintID != c.BlueprintID {
			x.diff("%s: blueprint: flowcraft %s, go %s", where, c.BlueprintID, gc.BlueprintID)
			continue
		}
		// A child's calls: its blueprint's, in this run (each blueprint is
		// the child of one subflow node per run in these folders; both
		// sides count them the same way).
		x.compareRun(where, c.BlueprintID,
			x.view(c.BlueprintID, c.Status, c.Context, fc.Calls[c.BlueprintID], fc.Inputs[c.BlueprintID], true),
			x.view(c.BlueprintID, gc.Status, gc.Context, gor.Calls[c.BlueprintID], gor.Inputs[c.BlueprintID], false), c.Context)
	}
	for _, k := range slices.Sorted(maps.Keys(goChildren)) {
		x.diff("child %s: ran here only", k)
	}
}

// ---------------------------------------------------------------------------
// Running both sides.

func flowcraftExamples(t *testing.T, pkg, folder string, initial map[string]any) []*exampleRun {
	t.Helper()
	driver, err := filepath.Abs(filepath.Join("testdata", "differential", "examples-runner.mjs"))
	require.NoError(t, err)
	in, err := json.Marshal(initial)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", driver, pkg, folder, string(in))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	require.NoError(t, cmd.Run(), "examples runner: %s", stderr.String())
	d := json.NewDecoder(&stdout)
	d.UseNumber()
	var out []*exampleRun
	require.NoError(t, d.Decode(&out), "examples runner output")
	return out
}

// goExample runs one parent with one choice on e, one run at a time.
func goExample(t *testing.T, e *env, rec *exampleRecorder, bp string, choice exampleChoice, initial map[string]any) *exampleRun {
	t.Helper()
	rec.reset(choice)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	id, err := e.client.StartRun(ctx, bp, maps.Clone(initial))
	require.NoError(t, err)
	st, err := e.client.WaitForRun(ctx, id)
	require.NoError(t, err, "run %s of %s did not finish", id, bp)
	r := &exampleRun{Blueprint: bp, Cond: choice.cond, Route: choice.route, Status: string(st.Status), Context: st.Context}
	if st.Error != "" {
		r.Errors = []string{st.Error}
	}
	rec.mu.Lock()
	r.Calls, r.Inputs = rec.calls, rec.inputs
	rec.mu.Unlock()
	// Subflow nodes are built in: count their attempts from the run records.
	addBuiltins := func(bp string, nodes map[string]sqsadapter.NodeStatus) {
		for id, ns := range nodes {
			if _, stub := r.Calls[bp][id]; stub || ns.Attempts == 0 || ns.State != "completed" && ns.State != "failed" {
				continue
			}
			if r.Calls[bp] == nil {
				r.Calls[bp] = map[string]int{}
			}
			r.Calls[bp][id] = ns.Attempts
		}
	}
	addBuiltins(bp, st.Nodes)
	// Child runs, and theirs, depth first.
	var children func(ids []string) error
	children = func(ids []string) error {
		for _, cid := range ids {
			cst, err := e.client.GetRun(ctx, cid)
			if err != nil {
				return err
			}
			if cst.Parent == nil {
				return fmt.Errorf("child run %s has no parent", cid)
			}
			r.Children = append(r.Children, exampleChild{Node: cst.Parent.NodeID, Parent: cst.Parent.BlueprintID,
				BlueprintID: cst.BlueprintID, Status: string(cst.Status), Context: cst.Context})
			addBuiltins(cst.BlueprintID, cst.Nodes)
			if err := children(cst.Children); err != nil {
				return err
			}
		}
		return nil
	}
	require.NoError(t, children(st.Children))
	return r
}

// exampleChoices lists a parent's branch choices, as examples-runner.mjs
// does: every action on an edge out of an llm-condition node of the parent
// or of a blueprint it reaches through subflows, times every such action of
// an llm-router node.
func exampleChoices(bps map[string]*sqsadapter.Blueprint, parent string) []exampleChoice {
	actions := func(uses string) []string {
		var out []string
		seen := map[string]bool{}
		var walk func(id string)
		walk = func(id string) {
			bp := bps[id]
			if bp == nil || seen[id] {
				return
			}
			seen[id] = true
			kind := map[string]bool{}
			for _, n := range bp.Nodes {
				kind[n.ID] = n.Uses == uses
			}
			for _, e := range bp.Edges {
				if kind[e.Source] && e.Action != "" && !slices.Contains(out, e.Action) {
					out = append(out, e.Action)
				}
			}
			for _, n := range bp.Nodes {
				if n.Uses == "subflow" {
					child, _ := n.Params["blueprintId"].(string)
					walk(child)
				}
			}
		}
		walk(parent)
		slices.Sort(out)
		if len(out) == 0 {
			out = []string{""}
		}
		return out
	}
	var out []exampleChoice
	for _, c := range actions("llm-condition") {
		for _, r := range actions("llm-router") {
			out = append(out, exampleChoice{c, r})
		}
	}
	return out
}

// ---------------------------------------------------------------------------
// The test.

func TestFlowcraftExamplesSideBySide(t *testing.T) {
	folder := os.Getenv("SQSADAPTER_FLOWCRAFT_EXAMPLES")
	if folder == "" {
		t.Skip("SQSADAPTER_FLOWCRAFT_EXAMPLES is not set: make flowcraft-examples FLOWCRAFT_EXAMPLES=<folder of */*.json blueprints>")
	}
	pkg := os.Getenv("SQSADAPTER_FLOWCRAFT")
	if pkg == "" {
		t.Skip("SQSADAPTER_FLOWCRAFT is not set: make flowcraft-examples sets it, or: state=$(scripts/emulators.sh start) && . $state/env")
	}
	if _, err := os.Stat(filepath.Join(pkg, "dist", "index.mjs")); err != nil {
		t.Fatalf("SQSADAPTER_FLOWCRAFT=%s: no flowcraft package there: %v", pkg, err)
	}
	if _, err := exec.LookPath("node"); err != nil {
		t.Fatalf("SQSADAPTER_FLOWCRAFT is set but node is missing: %v", err)
	}
	folder, err := filepath.Abs(folder)
	require.NoError(t, err)
	initial := exampleInitial
	if b, err := os.ReadFile(filepath.Join(folder, "initial.json")); err == nil {
		require.NoError(t, json.Unmarshal(b, &initial), "initial.json")
	} else if !errors.Is(err, fs.ErrNotExist) {
		require.NoError(t, err)
	}

	loaded, err := sqsadapter.LoadBlueprints(os.DirFS(folder), "*/*.json")
	require.NoError(t, err, "the blueprints must load unchanged")
	bps := map[string]*sqsadapter.Blueprint{}
	named := map[string]bool{}
	x := &exampleCompare{graphs: map[string]*diffGraph{}}
	for _, bp := range loaded {
		bps[bp.ID] = bp
		x.graphs[bp.ID] = newDiffGraph(&diffCase{Blueprint: *bp}) // the differential test's graph facts
		for _, n := range bp.Nodes {
			if n.Uses == "subflow" {
				id, _ := n.Params["blueprintId"].(string)
				named[id] = true
			}
		}
	}
	var parents []string
	for _, id := range slices.Sorted(maps.Keys(bps)) {
		if !named[id] {
			parents = append(parents, id)
		}
	}

	fc := flowcraftExamples(t, pkg, folder, initial)
	rec := &exampleRecorder{}
	// A long visibility timeout: this compares semantics, not redeliveries.
	e := newEnv(t, envConfig{workers: 2, registry: rec.registry(), blueprints: loaded, visibility: 150 * unit})

	var want []string
	for _, p := range parents {
		for _, c := range exampleChoices(bps, p) {
			want = append(want, fmt.Sprintf("%s cond=%s route=%s", p, c.cond, c.route))
		}
	}
	var got []string
	for _, r := range fc {
		got = append(got, r.Name)
	}
	require.Equal(t, want, got, "the runs of examples-runner.mjs")

	// Every branch out of a condition or router is taken in some run.
	taken := map[string]bool{} // blueprint/target
	differ := 0
	for _, f := range fc {
		t.Run(f.Name, func(t *testing.T) {
			o := goExample(t, e, rec, f.Blueprint, exampleChoice{f.Cond, f.Route}, initial)
			for bp, calls := range o.Calls {
				for id := range calls {
					taken[bp+"/"+id] = true
				}
			}
			x.diffs, x.notes = nil, nil
			x.compareExample(f, o)
			nodes := 0
			for _, c := range o.Calls {
				nodes += len(c)
			}
			t.Logf("%s: flowcraft %s, go %s; %d node runs, %d child runs compared", f.Name, f.Status, o.Status, nodes, len(o.Children))
			for _, n := range x.notes {
				t.Logf("  rule %s", n)
			}
			if len(x.diffs) > 0 {
				differ++
				fj, _ := json.Marshal(f)
				oj, _ := json.Marshal(o)
				t.Errorf("%s differs:\n  %s\nflowcraft: %s\ngo: %s", f.Name, strings.Join(x.diffs, "\n  "), fj, oj)
			}
		})
	}
	for _, id := range slices.Sorted(maps.Keys(bps)) {
		bp := bps[id]
		kind := map[string]string{}
		for _, n := range bp.Nodes {
			kind[n.ID] = n.Uses
		}
		for _, ed := range bp.Edges {
			if (kind[ed.Source] == "llm-condition" || kind[ed.Source] == "llm-router") && ed.Action != "" && !taken[id+"/"+ed.Target] {
				t.Errorf("blueprint %s: the branch %s -[%s]-> %s ran in no run", id, ed.Source, ed.Action, ed.Target)
			}
		}
	}
	t.Logf("flowcraft examples: %d blueprints (%d parents), %d runs, %d agree, %d differ; rules: %s",
		len(bps), len(parents), len(fc), len(fc)-differ, differ, strings.Join(exampleRuleNames(), ", "))
}

func exampleRuleNames() []string {
	var out []string
	for _, r := range exampleRules {
		out = append(out, r.name)
	}
	return out
}
