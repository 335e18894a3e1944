package interp

import (
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"github.com/flowcraft/sqsadapter"
)

// Check compares a finished run with the prediction and returns every
// discrepancy it finds, one sentence each; none means the run is correct.
//
//   - The status must be the predicted one.
//   - A completed run's context must equal Context exactly, except for the
//     keys of Racy, which may hold any of their values, and "_catch_error",
//     which must be present exactly when a fallback ran and be one of
//     Catches.
//   - A failed run must name one of the failed nodes, in an error message
//     that contains its id; every key of its context must hold a value the
//     prediction gave that key (its initial value or a node's write, a
//     node output for "_outputs.<id>" of a node that ran): which nodes
//     committed before the failure stopped the run depends on timing.
//   - A completed run's status, when it lists nodes, must give each scatter
//     the interpreter's item count, and as many committed and failed items.
//   - A run failed by a batch node must carry the error the engine records
//     for it: the first failed item's, when the batch tolerates no failure
//     (any failed item's: whichever is recorded first), or the gather's
//     count of failures and first failed item. Timing may change two
//     things in it: the attempt count an item failed after (crashes
//     consume attempts), and the item's error, when its last attempt was
//     cut short: then it says the attempt was abandoned.
//   - A "_catch_error" value matches a catch when its node id and blueprint
//     id are the same and its message is the same, or says that the
//     attempt was abandoned: when a node's last attempt is cut short (its
//     worker died or lost the message), the engine records that instead of
//     the error of an attempt that never reported back (§4.3: a crash
//     counts as an attempt).
func (r *Result) Check(st *sqsadapter.RunStatus) []string {
	if st == nil {
		return []string{"no run status"}
	}
	var problems []string
	report := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	if st.Status != r.Status {
		report("status %q (failed node %q: %s), the interpreter expects %q (failing nodes %v)",
			st.Status, st.FailedNode, truncate(st.Error, 300), r.Status, r.failing())
		return problems
	}
	gotAny, err := Normalize(st.Context)
	if err != nil {
		return []string{fmt.Sprintf("context is not JSON-like: %v", err)}
	}
	got, _ := gotAny.(map[string]any)
	if got == nil {
		got = map[string]any{}
	}
	catch, hasCatch := got[CatchErrorKey]
	delete(got, CatchErrorKey)
	if hasCatch && !r.catchMatches(catch) {
		report("%s = %s, expected one of %s", CatchErrorKey, show(catch), show(r.Catches))
	}

	switch st.Status {
	case sqsadapter.StatusCompleted:
		if hasCatch != (len(r.Catches) > 0) {
			report("%s present: %v, but the interpreter's fallbacks wrote it %d time(s)", CatchErrorKey, hasCatch, len(r.Catches))
		}
		want := maps.Clone(r.Context)
		for k, candidates := range r.Racy {
			v, ok := got[k]
			if !ok {
				v = Absent
			}
			if !slices.ContainsFunc(candidates, func(c any) bool { return reflect.DeepEqual(c, v) }) {
				report("context key %q (written by concurrent nodes) = %s, expected one of %s", k, show(v), show(candidates))
			}
			delete(want, k)
			delete(got, k)
		}
		if d := Diff(want, got); d != "" {
			report("final context differs from the interpreter's:\n%s", d)
		}
		if st.Nodes != nil {
			for _, s := range slices.Sorted(maps.Keys(r.Items)) {
				ran, failed := 0, 0
				for _, it := range r.Items[s] {
					if it.State == Ran {
						ran++
					} else {
						failed++
					}
				}
				ns := st.Nodes[s]
				if ns.BatchItems != len(r.Items[s]) || ns.BatchCompleted != ran || ns.BatchFailed != failed {
					report("batch %q: %d items, %d committed, %d failed; the interpreter expects %d, %d, %d",
						s, ns.BatchItems, ns.BatchCompleted, ns.BatchFailed, len(r.Items[s]), ran, failed)
				}
			}
		}
	case sqsadapter.StatusFailed:
		if _, failing := r.Errors[st.FailedNode]; !failing {
			report("failed at node %q (%s), which the interpreter does not see failing; failing nodes: %v",
				st.FailedNode, truncate(st.Error, 300), r.failing())
		}
		// The error names the node as %q does: an id holding quotes,
		// backslashes or characters that are not printable is escaped.
		if st.FailedNode == "" || (!strings.Contains(st.Error, st.FailedNode) && !strings.Contains(st.Error, strconv.Quote(st.FailedNode))) {
			report("error %q does not name the failed node %q", truncate(st.Error, 300), st.FailedNode)
		}
		if want, ok := r.batchErrors[st.FailedNode]; ok && !slices.ContainsFunc(want, func(w string) bool { return sameBatchError(w, st.Error) }) {
			report("batch node %q failed the run with %q, the interpreter expects one of %s", st.FailedNode, truncate(st.Error, 300), show(want))
		}
		problems = append(problems, r.checkPrefix(got)...)
	default:
		report("run not finished: status %q", st.Status)
	}
	return problems
}

// CheckPrefix checks the context of a run that stopped before its end,
// whatever stopped it (a cancellation, or a failure Check already
// accepted): which nodes committed before it stopped depends on timing, so
// every key must hold a value the prediction gives it (its initial value or
// a node's write), "_outputs.<id>" the output of a node that ran, and
// "_catch_error" one of Catches. It returns every discrepancy found.
func (r *Result) CheckPrefix(context map[string]any) []string {
	gotAny, err := Normalize(context)
	if err != nil {
		return []string{fmt.Sprintf("context is not JSON-like: %v", err)}
	}
	got, _ := gotAny.(map[string]any)
	var problems []string
	if catch, ok := got[CatchErrorKey]; ok {
		if !r.catchMatches(catch) {
			problems = append(problems, fmt.Sprintf("%s = %s, expected one of %s", CatchErrorKey, show(catch), show(r.Catches)))
		}
		delete(got, CatchErrorKey)
	}
	return append(problems, r.checkPrefix(got)...)
}

// checkPrefix is CheckPrefix for a normalized context without
// "_catch_error".
func (r *Result) checkPrefix(got map[string]any) []string {
	var problems []string
	for _, k := range slices.Sorted(maps.Keys(got)) {
		v := got[k]
		if id, isOut := strings.CutPrefix(k, "_outputs."); isOut {
			want, ran := r.Outputs[id]
			anyPass := slices.ContainsFunc(r.passOutputs[id], func(o any) bool { return reflect.DeepEqual(o, v) })
			if !ran || !reflect.DeepEqual(want, v) && !anyPass {
				problems = append(problems, fmt.Sprintf("context key %q = %s, the interpreter has %s (node %s)", k, show(v), show(want), r.States[id]))
			}
			continue
		}
		if !slices.ContainsFunc(r.values[k], func(c any) bool { return reflect.DeepEqual(c, v) }) {
			problems = append(problems, fmt.Sprintf("context key %q = %s, which the interpreter never gives it (values: %s)", k, show(v), show(r.values[k])))
		}
	}
	return problems
}

func (r *Result) catchMatches(catch any) bool {
	m, ok := catch.(map[string]any)
	if !ok {
		return false
	}
	for _, c := range r.Catches {
		if m["nodeId"] != c["nodeId"] || m["blueprintId"] != c["blueprintId"] || len(m) != len(c) {
			continue
		}
		msg, _ := m["message"].(string)
		if msg == c["message"] || strings.Contains(msg, "abandoned") {
			return true
		}
		// A failed child's error names whichever of its nodes failed
		// first, after however many attempts: only its beginning is
		// certain.
		want, _ := c["message"].(string)
		if head, _, ok := strings.Cut(want, " Error: "); ok && strings.HasPrefix(want, "Sub-workflow '") && strings.HasPrefix(msg, head+" Error: ") {
			return true
		}
	}
	return false
}

// Diff describes how two contexts differ, one key a line, or returns "".
func Diff(want, got map[string]any) string {
	var b strings.Builder
	keys := slices.Sorted(maps.Keys(want))
	for _, k := range slices.Sorted(maps.Keys(got)) {
		if _, ok := want[k]; !ok {
			keys = append(keys, k)
		}
	}
	for _, k := range keys {
		w, wok := want[k]
		g, gok := got[k]
		switch {
		case !gok:
			fmt.Fprintf(&b, "  missing %s: want %s\n", k, show(w))
		case !wok:
			fmt.Fprintf(&b, "  extra   %s: got %s\n", k, show(g))
		case !reflect.DeepEqual(w, g):
			fmt.Fprintf(&b, "  differs %s: want %s, got %s\n", k, show(w), show(g))
		}
	}
	return b.String()
}

// show renders a value for a message: JSON, truncated.
func show(v any) string {
	if v == Absent {
		return Absent.String()
	}
	b, err := json.Marshal(v)
	if err != nil {
		return truncate(fmt.Sprintf("%#v", v), 300)
	}
	return truncate(string(b), 300)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// failing returns the ids of the nodes that fail the run, sorted.
func (r *Result) failing() []string { return slices.Sorted(maps.Keys(r.Errors)) }
