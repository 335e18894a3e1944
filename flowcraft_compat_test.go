package sqsadapter_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowcraft/sqsadapter"
)

// Flowcraft blueprints run unchanged: these tests pin the points where a
// blueprint written for Flowcraft's runtime used to behave differently
// here. Each case runs on the in-memory parts (TestFlowcraftCompat) and on
// the emulators (TestIntegrationFlowcraftCompat).

// compatRig is what a case needs of a rig: start a run, wait for it, and
// what each node was called with.
type compatRig interface {
	start(bp string, initial map[string]any, opts ...sqsadapter.RunOption) string
	wait(id string) *sqsadapter.RunStatus
	calls() *callLog
	// expressionErrors sums the workers' ExpressionErrors().
	expressionErrors() int64
}

func (r *rig) calls() *callLog   { return r.log }
func (r *itRig) calls() *callLog { return r.log }

func (r *rig) expressionErrors() int64   { return sumExpressionErrors(r.workers) }
func (r *itRig) expressionErrors() int64 { return sumExpressionErrors(r.workers) }

func sumExpressionErrors(workers []*sqsadapter.SqsAdapter) int64 {
	var n int64
	for _, w := range workers {
		n += w.ExpressionErrors()
	}
	return n
}

type compatCase struct {
	name    string
	bp      string // blueprint JSON; every node uses "n"
	nodes   map[string]sqsadapter.NodeFunc
	initial map[string]any
	check   func(t *testing.T, st *sqsadapter.RunStatus, log *callLog)
	// exprErrors is the number of expression failures the run counts.
	exprErrors int64
}

func compatCases() []compatCase {
	return []compatCase{
		{
			// Flowcraft stores each output under the bare node id too.
			name: "a condition names a node by id",
			bp: `{"id": "byid", "nodes": [{"id": "A", "uses": "n"}, {"id": "P", "uses": "n"}, {"id": "Q", "uses": "n"}],
				"edges": [{"source": "A", "target": "P", "condition": "A.ok"},
					{"source": "A", "target": "Q", "condition": "!A.ok"}]}`,
			nodes: map[string]sqsadapter.NodeFunc{"A": output(map[string]any{"ok": true}, "")},
			check: func(t *testing.T, st *sqsadapter.RunStatus, log *callLog) {
				requireStatus(t, sqsadapter.StatusCompleted, st)
				assert.Equal(t, []string{"P"}, log.ran("P", "Q"))
				assert.NotContains(t, st.Context, "A", "no second copy of the output is stored")
			},
		},
		{
			name: "an expression reads an earlier node's output by id",
			bp: `{"id": "route", "nodes": [{"id": "route", "uses": "n"}, {"id": "check", "uses": "n"},
					{"id": "cheap", "uses": "n"}, {"id": "dear", "uses": "n"}],
				"edges": [{"source": "route", "target": "check"},
					{"source": "check", "target": "cheap", "condition": "route.total < 500", "transform": "route.total + context.route.total"},
					{"source": "check", "target": "dear", "condition": "route.total >= 500"}]}`,
			nodes: map[string]sqsadapter.NodeFunc{"route": output(map[string]any{"total": 120}, "")},
			check: func(t *testing.T, st *sqsadapter.RunStatus, log *callLog) {
				requireStatus(t, sqsadapter.StatusCompleted, st)
				assert.Equal(t, []string{"cheap"}, log.ran("cheap", "dear"))
				assert.EqualValues(t, 240, log.input(t, "cheap"))
			},
		},
		{
			name: "a hyphenated node id in an expression",
			bp: `{"id": "hyphen", "nodes": [{"id": "fetch-order", "uses": "n"}, {"id": "ship", "uses": "n"}],
				"edges": [{"source": "fetch-order", "target": "ship", "condition": "fetch-order.ok === true", "transform": "'ship ' + fetch-order.sku"}]}`,
			nodes: map[string]sqsadapter.NodeFunc{"fetch-order": output(map[string]any{"ok": true, "sku": "k-1"}, "")},
			check: func(t *testing.T, st *sqsadapter.RunStatus, log *callLog) {
				requireStatus(t, sqsadapter.StatusCompleted, st)
				assert.Equal(t, "ship k-1", log.input(t, "ship"))
			},
		},
		{
			// Reference §3.6: the transform replaces the target's "inputs".
			name: "an edge transform into a node with object inputs",
			bp: `{"id": "tinputs", "nodes": [{"id": "X", "uses": "n"}, {"id": "Y", "uses": "n", "inputs": {"v": "X"}}],
				"edges": [{"source": "X", "target": "Y", "transform": "input.data"}]}`,
			nodes: map[string]sqsadapter.NodeFunc{"X": output(map[string]any{"data": 7}, "")},
			check: func(t *testing.T, st *sqsadapter.RunStatus, log *callLog) {
				requireStatus(t, sqsadapter.StatusCompleted, st)
				assert.EqualValues(t, 7, log.input(t, "Y"))
			},
		},
		{
			// With string "inputs" naming another present key, the
			// transform transforms that key's value.
			name: "an edge transform into a node with string inputs",
			bp: `{"id": "tstring", "nodes": [{"id": "start", "uses": "n"}, {"id": "X", "uses": "n"},
					{"id": "Y", "uses": "n", "inputs": "start"}, {"id": "Z", "uses": "n", "inputs": "X"}],
				"edges": [{"source": "start", "target": "X"}, {"source": "X", "target": "Y", "transform": "input.n * 10"},
					{"source": "X", "target": "Z", "transform": "input.n * 10"}]}`,
			nodes: map[string]sqsadapter.NodeFunc{
				"start": output(map[string]any{"n": 1}, ""),
				"X":     output(map[string]any{"n": 2}, ""),
			},
			check: func(t *testing.T, st *sqsadapter.RunStatus, log *callLog) {
				requireStatus(t, sqsadapter.StatusCompleted, st)
				assert.EqualValues(t, 10, log.input(t, "Y"), "the transform of start's output")
				assert.EqualValues(t, 20, log.input(t, "Z"), "inputs names the source: its output")
			},
		},
		{
			name: "JavaScript operators",
			bp: `{"id": "js", "nodes": [{"id": "a", "uses": "n"}, {"id": "ok", "uses": "n"}, {"id": "notok", "uses": "n"},
					{"id": "label", "uses": "n"}],
				"edges": [{"source": "a", "target": "ok", "condition": "result.output.status === 'OK' && result.output.n !== 0"},
					{"source": "a", "target": "notok", "condition": "result.output.status !== 'OK' || !result.output.n"},
					{"source": "a", "target": "label", "transform": "result.output.missing?.x ?? (result.output.n > 1 ? 'many' : 'one')"}]}`,
			nodes: map[string]sqsadapter.NodeFunc{"a": output(map[string]any{"status": "OK", "n": 3}, "")},
			check: func(t *testing.T, st *sqsadapter.RunStatus, log *callLog) {
				requireStatus(t, sqsadapter.StatusCompleted, st)
				assert.Equal(t, []string{"ok", "label"}, log.ran("ok", "notok", "label"))
				assert.Equal(t, "many", log.input(t, "label"))
			},
		},
		{
			// JavaScript: undefined < 500 is false, not an error; the run
			// is never failed by a condition.
			name: "comparisons with missing values",
			bp: `{"id": "missing", "nodes": [{"id": "a", "uses": "n"}, {"id": "lt", "uses": "n"}, {"id": "ge", "uses": "n"},
					{"id": "other", "uses": "n"}],
				"edges": [{"source": "a", "target": "lt", "condition": "nothere.total < 500"},
					{"source": "a", "target": "ge", "condition": "result.output.total >= 500"},
					{"source": "a", "target": "other"}]}`,
			check: func(t *testing.T, st *sqsadapter.RunStatus, log *callLog) {
				requireStatus(t, sqsadapter.StatusCompleted, st)
				assert.Equal(t, []string{"other"}, log.ran("lt", "ge", "other"))
			},
		},
		{
			// Flowcraft's evaluators return undefined on any error.
			name: "an expression that fails to evaluate",
			bp: `{"id": "fails", "nodes": [{"id": "a", "uses": "n"}, {"id": "b", "uses": "n"}, {"id": "c", "uses": "n"}],
				"edges": [{"source": "a", "target": "b", "condition": "result.output * 2 > 1"},
					{"source": "a", "target": "c", "transform": "result.output.n * result.output"}]}`,
			nodes: map[string]sqsadapter.NodeFunc{"a": output(map[string]any{"n": 1}, "")},
			check: func(t *testing.T, st *sqsadapter.RunStatus, log *callLog) {
				requireStatus(t, sqsadapter.StatusCompleted, st)
				assert.Equal(t, []string{"c"}, log.ran("b", "c"))
				assert.Nil(t, log.input(t, "c"))
			},
			exprErrors: 2,
		},
	}
}

func TestFlowcraftCompat(t *testing.T) {
	t.Parallel()
	for _, c := range compatCases() {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			bp := mustParse(t, c.bp)
			r := newRig(t, rigConfig{nodes: c.nodes}, bp)
			c.check(t, r.wait(r.start(bp.ID, c.initial)), r.calls())
			assert.Equal(t, c.exprErrors, r.expressionErrors(), "expression failures counted")
		})
	}
}

func TestIntegrationFlowcraftCompat(t *testing.T) {
	integrationEndpoints(t)
	for _, c := range compatCases() {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			bp := mustParse(t, c.bp)
			r := newItRig(t, itRigConfig{nodes: c.nodes}, bp)
			c.check(t, r.wait(r.start(bp.ID, c.initial)), r.calls())
			assert.Equal(t, c.exprErrors, r.expressionErrors(), "expression failures counted")
		})
	}
}

// ---------------------------------------------------------------------------
// LoadBlueprints

func TestLoadBlueprints(t *testing.T) {
	t.Parallel()
	const node = `"nodes": [{"id": "a", "uses": "n"}], "edges": []`
	fsys := fstest.MapFS{
		"flows/200.json":         {Data: []byte(`{` + node + `}`)},
		"flows/named.json":       {Data: []byte(`{"id": "custom", ` + node + `}`)},
		"flows/nested/300.json":  {Data: []byte(`{` + node + `}`)},
		"flows/notes.txt":        {Data: []byte(`not a blueprint`)},
		"flows/dir.json/x":       {Data: []byte(`inside a directory named like a file`)},
		"broken/bad.json":        {Data: []byte(`{"nodes": [{"id": "a"}], "edges": [{"source": "a", "target": "zz"}]}`)},
		"broken/malformed.json":  {Data: []byte(`{"nodes": [`)},
		"broken/good.json":       {Data: []byte(`{` + node + `}`)},
		"dup/one.json":           {Data: []byte(`{"id": "same", ` + node + `}`)},
		"dup/two.json":           {Data: []byte(`{"id": "same", ` + node + `}`)},
		"versions/v1.json":       {Data: []byte(`{"id": "same", "metadata": {"version": "1"}, ` + node + `}`)},
		"versions/v2.json":       {Data: []byte(`{"id": "same", "metadata": {"version": "2"}, ` + node + `}`)},
		"strict/no-id-here.json": {Data: []byte(`{` + node + `}`)},
	}

	t.Run("an id-less blueprint is named after its file", func(t *testing.T) {
		bps, err := sqsadapter.LoadBlueprints(fsys, "flows/*.json")
		require.NoError(t, err)
		var got []string
		for _, bp := range bps {
			got = append(got, bp.ID)
		}
		assert.Equal(t, []string{"200", "custom"}, got, "in path order; a directory is skipped; an id is kept")
	})
	t.Run("patterns reach nested folders", func(t *testing.T) {
		bps, err := sqsadapter.LoadBlueprints(fsys, "flows/*/*.json")
		require.NoError(t, err)
		require.Len(t, bps, 1)
		assert.Equal(t, "300", bps[0].ID)
	})
	t.Run("every bad file is named, with its error's type", func(t *testing.T) {
		_, err := sqsadapter.LoadBlueprints(fsys, "broken/*.json")
		require.ErrorIs(t, err, sqsadapter.ErrInvalidBlueprint)
		var be *sqsadapter.BlueprintError
		require.ErrorAs(t, err, &be)
		assert.Equal(t, "bad", be.BlueprintID, "named after its file")
		assert.Contains(t, err.Error(), "broken/bad.json")
		assert.Contains(t, err.Error(), `empty "uses"`)
		assert.Contains(t, err.Error(), "broken/malformed.json")
		assert.NotContains(t, err.Error(), "good.json")
	})
	t.Run("two files with one id and version", func(t *testing.T) {
		_, err := sqsadapter.LoadBlueprints(fsys, "dup/*.json")
		require.ErrorIs(t, err, sqsadapter.ErrInvalidBlueprint)
		assert.Contains(t, err.Error(), "dup/two.json")
		assert.Contains(t, err.Error(), "dup/one.json")
		bps, err := sqsadapter.LoadBlueprints(fsys, "versions/*.json")
		require.NoError(t, err, "two versions of one id are two blueprints")
		assert.Len(t, bps, 2)
	})
	t.Run("no match and a malformed pattern are errors", func(t *testing.T) {
		_, err := sqsadapter.LoadBlueprints(fsys, "nothing/*.json")
		require.ErrorIs(t, err, sqsadapter.ErrInvalidBlueprint)
		assert.Contains(t, err.Error(), "no blueprint file matches")
		_, err = sqsadapter.LoadBlueprints(fsys, "flows/[.json")
		require.ErrorIs(t, err, sqsadapter.ErrInvalidBlueprint)
	})
	t.Run("ParseBlueprint stays strict", func(t *testing.T) {
		_, err := sqsadapter.ParseBlueprint(fsys["strict/no-id-here.json"].Data)
		require.ErrorIs(t, err, sqsadapter.ErrInvalidBlueprint)
		assert.Contains(t, err.Error(), "blueprint id")
	})
}

// declarativeRegistry implements the node kinds of Flowcraft's declarative
// examples with deterministic stand-ins: each node resolves its
// params.inputs from the run context (a name maps to a node id or a context
// key; an array takes the first present), fills {{name}} in its
// promptTemplate, and outputs the text. "llm-condition" also routes on the
// context key "refundable"; "output" writes its text to params.outputKey.
func declarativeRegistry() sqsadapter.NodeRegistry {
	render := func(ctx context.Context, nc *sqsadapter.NodeContext) (string, error) {
		text, _ := nc.Params["promptTemplate"].(string)
		inputs, _ := nc.Params["inputs"].(map[string]any)
		for name, ref := range inputs {
			refs, ok := ref.([]any)
			if !ok {
				refs = []any{ref}
			}
			var val any
			for _, r := range refs {
				key, _ := r.(string)
				for _, k := range []string{"_outputs." + key, key} {
					v, found, err := nc.Get(ctx, k)
					if err != nil {
						return "", err
					}
					if found && v != nil {
						val = v
						break
					}
				}
				if val != nil {
					break
				}
			}
			text = strings.ReplaceAll(text, "{{"+name+"}}", fmt.Sprint(val))
		}
		return text, nil
	}
	process := func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
		text, err := render(ctx, nc)
		return sqsadapter.NodeResult{Output: text}, err
	}
	return sqsadapter.NodeRegistry{
		"llm-process": process,
		"llm-router":  process,
		"llm-condition": func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
			text, err := render(ctx, nc)
			if err != nil {
				return sqsadapter.NodeResult{}, err
			}
			approve, _, err := nc.Get(ctx, "refundable")
			return sqsadapter.NodeResult{Output: text, Action: fmt.Sprint(approve == true)}, err
		},
		"output": func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
			text, err := render(ctx, nc)
			if err != nil {
				return sqsadapter.NodeResult{}, err
			}
			if key, _ := nc.Params["outputKey"].(string); key != "" {
				if err := nc.Set(key, text); err != nil {
					return sqsadapter.NodeResult{}, err
				}
			}
			return sqsadapter.NodeResult{Output: text}, nil
		},
	}
}

// The id-less blueprints in testdata/flowcraft, written in the style of
// Flowcraft's declarative examples, load through LoadBlueprints and run.
func TestDeclarativeBlueprintsRun(t *testing.T) {
	t.Parallel()
	bps, err := sqsadapter.LoadBlueprints(os.DirFS("testdata/flowcraft"), "*.json")
	require.NoError(t, err)
	e := newEnv(t, envConfig{workers: 2, registry: declarativeRegistry(), blueprints: bps, visibility: rigVisibility})
	checkDeclarativeRuns(t, e.run)
}

func TestIntegrationDeclarativeBlueprintsRun(t *testing.T) {
	integrationEndpoints(t)
	bps, err := sqsadapter.LoadBlueprints(os.DirFS("testdata/flowcraft"), "*.json")
	require.NoError(t, err)
	e := newItEnv(t, itConfig{registry: declarativeRegistry(), blueprints: bps})
	checkDeclarativeRuns(t, func(bp string, initial map[string]any, opts ...sqsadapter.RunOption) *sqsadapter.RunStatus {
		return waitRun(t, e.client, startRun(t, e.client, bp, initial, opts...), 45*time.Second)
	})
}

func checkDeclarativeRuns(t *testing.T, run func(string, map[string]any, ...sqsadapter.RunOption) *sqsadapter.RunStatus) {
	t.Helper()
	initial := map[string]any{"order": "o-1", "customer": "ann", "refundable": true}
	st := run("100", initial)
	requireStatus(t, sqsadapter.StatusCompleted, st)
	assert.Equal(t, "Done: Approve Read order o-1", st.Context["final"])
	assert.NotContains(t, st.Context, "_outputs.decline")

	initial["refundable"] = false
	st = run("100", initial)
	requireStatus(t, sqsadapter.StatusCompleted, st)
	assert.Equal(t, "Done: Decline Read order o-1", st.Context["final"])

	st = run("101", initial)
	requireStatus(t, sqsadapter.StatusCompleted, st)
	assert.Equal(t, "Note for ann", st.Context["note"])

	st = run("refund-notes", initial)
	requireStatus(t, sqsadapter.StatusCompleted, st)
	assert.Equal(t, "Named ann", st.Context["_outputs.write_note"])
}
