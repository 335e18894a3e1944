package sqsadapter_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flowcraft/sqsadapter"
	"github.com/flowcraft/sqsadapter/internal/interp"
	"github.com/flowcraft/sqsadapter/store"
)

// Subflows in the randomized protocol test. The generator makes a share of
// the main nodes subflow nodes (protoSubflows), each starting a child
// blueprint generated like the others — whose own nodes may start
// grandchildren — with or without params.inputs and params.outputs. The
// interpreter runs the children itself (interp.WithBlueprints); the runs'
// checks compare the parent with it as usual, and checkChildren compares
// the child runs too: each finished, none of its nodes committed twice,
// nothing of it ran after it finished, and the last child of each subflow
// node ended as the interpreter's.

// TestProtocolRandomSubflows runs blueprints a quarter of whose nodes are
// subflows, nested two deep, under the chaos of TestProtocolRandom, a share
// of the runs cancelled (which cancels their children).
func TestProtocolRandomSubflows(t *testing.T) {
	runProtoSession(t, protocolSeed(t), protoSubflowClass(protoRuns(30, 12)), newProtoEnv)
}

func protoSubflowClass(n int) protoClass {
	weights := maps.Clone(protoCrashWeights)
	weights["suspend"], weights["subflow-started"] = 8, 8
	return protoClass{name: "subflows", runs: n, cancel: 0.2, shape: protoShape{subflows: 0.25, waits: 0.1},
		chaos: protoChaos{faultRate: 0.05, crashRate: 0.10, duplicateRate: 0.10, crashWeights: weights}}
}

// protoSubflows makes about share of c's main nodes (not "any" joins, not
// built-ins) subflow nodes, each with a child blueprint of its own, and
// recurses into the children down to depth levels. A child has no
// fallbacks (the output of a subflow node with params.outputs is the
// child's whole context, which a fallback's "_catch_error" would make
// depend on the error text), no waiting nodes (nobody resumes a child's)
// and keeps its failing nodes: a child that fails fails its node's
// attempt, every attempt alike.
func protoSubflows(c *protoCase, r *rand.Rand, seed uint64, share float64, depth int) error {
	if depth <= 0 {
		return nil
	}
	bp := c.bp
	fbOnly := protoFallbackOnly(bp)
	preds := map[string][]string{}
	for _, e := range bp.Edges {
		if !slices.Contains(preds[e.Target], e.Source) {
			preds[e.Target] = append(preds[e.Target], e.Source)
		}
	}
	k := 0
	for i := range bp.Nodes {
		d := &bp.Nodes[i]
		anyJoin := d.Config.JoinStrategy == "any" && len(preds[d.ID]) > 1
		if fbOnly[d.ID] || anyJoin || interp.Builtin(d.Uses) != "" || r.Float64() >= share {
			continue
		}
		k++
		child, err := genProtoCase(seed^0x50b, c.index*64+k)
		if err != nil {
			return err
		}
		child.bp.ID = fmt.Sprintf("%s-s%d", bp.ID, k)
		protoNoFallbacks(child.bp)
		for j := range child.bp.Nodes {
			// Without fallbacks most failing nodes would fail their child:
			// keep a third of them.
			if cd := &child.bp.Nodes[j]; (cd.Uses == "fail" || cd.Uses == "fatal") && r.IntN(3) != 0 {
				p := maps.Clone(cd.Params)
				p["kind"] = "ok"
				// A passing node's attempts as genParams gives them: a
				// crash costs an attempt, and a failing node's one to
				// three would let crashes fail the child by chance.
				cd.Uses, cd.Params, cd.Config.MaxRetries = "pass", p, 1+8
			}
		}
		child.index = c.index
		if err := protoSubflows(child, r, seed^uint64(k), share, depth-1); err != nil {
			return err
		}
		if err := child.rebuild(); err != nil {
			return err
		}
		c.children = append(c.children, child.bp)
		c.children = append(c.children, child.children...)

		params := map[string]any{"blueprintId": child.bp.ID}
		if r.IntN(3) == 0 || d.Params["ignoreInput"] == true {
			in := map[string]any{"seed": "_seed", "lim": "limit"}
			if ps := preds[d.ID]; len(ps) > 0 {
				in["up"] = ps[0]
			}
			params["inputs"] = in
		}
		if r.IntN(3) == 0 {
			ids := make([]string, len(child.bp.Nodes))
			for j, n := range child.bp.Nodes {
				ids[j] = n.ID
			}
			pick := ids[r.IntN(len(ids))]
			params["outputs"] = map[string]any{"sub_" + d.ID: pick, "subk_" + d.ID: "k_" + ids[r.IntN(len(ids))]}
		}
		d.Uses = interp.BuiltinSubflow
		d.Params = params
		d.Config.MaxRetries = 1 + r.IntN(2)
		d.Config.RetryDelay = 0
	}
	return nil
}

// protoNoFallbacks removes bp's fallbacks and its fallback-only nodes.
func protoNoFallbacks(bp *sqsadapter.Blueprint) {
	only := protoFallbackOnly(bp)
	bp.Nodes = slices.DeleteFunc(bp.Nodes, func(d sqsadapter.NodeDefinition) bool { return only[d.ID] })
	for i := range bp.Nodes {
		bp.Nodes[i].Config.Fallback = ""
	}
}

// protoChildRunID is the engine's id of the child run that attempt of node
// nodeID of run runID starts.
func protoChildRunID(runID, nodeID string, attempt int) string {
	esc := strings.NewReplacer("%", "%25", ":", "%3A")
	return "subflow:" + esc.Replace(runID) + ":" + esc.Replace(nodeID) + ":" + strconv.Itoa(attempt)
}

// checkChildren checks the child runs of a finished run, recursively.
func (s *protoSession) checkChildren(ctx context.Context, r *protoRun) {
	s.checkChildRuns(ctx, r, r.runID, r.c.bp, r.exp, r.st.Status == sqsadapter.StatusCompleted && !r.cancelled)
}

// checkChildRuns checks the children of run runID (of blueprint bp, whose
// prediction is exp): every child run that a subflow node's attempts
// created finishes (a cancelled or failed parent cancels its children); its
// life cycle is clean and no node of it committed twice; if exact, the
// parent completed, and the last child of each subflow node that ran ended
// as the interpreter predicts.
func (s *protoSession) checkChildRuns(ctx context.Context, r *protoRun, runID string, bp *sqsadapter.Blueprint, exp *interp.Result, exact bool) {
	e := s.e
	var subs []string
	for _, d := range bp.Nodes {
		if d.Uses == interp.BuiltinSubflow {
			subs = append(subs, d.ID)
		}
	}
	if len(subs) == 0 {
		return
	}
	recs, err := e.contexts.GetNodes(ctx, runID, subs)
	if err != nil {
		s.report(r, "read subflow nodes of %s: %v", runID, err)
		return
	}
	children := map[string]*sqsadapter.Blueprint{}
	for _, c := range r.c.children {
		children[c.ID] = c
	}
	for _, id := range subs {
		rec := recs[id]
		if rec == nil {
			continue
		}
		var last *sqsadapter.RunStatus
		lastAttempt := 0
		for a := 1; a <= rec.Attempts; a++ {
			child := protoChildRunID(runID, id, a)
			st, err := s.awaitChild(ctx, child)
			if errors.Is(err, sqsadapter.ErrRunNotFound) {
				continue // that attempt stopped before it created its child
			}
			if err != nil {
				s.report(r, "child run %s of node %s (run %s): %v", child, id, runID, err)
				continue
			}
			for _, p := range e.obs.check(child, true) {
				s.report(r, "child run %s: %s", child, p)
			}
			for node, n := range e.counted.commitsOf(child) {
				if n > 1 {
					s.report(r, "child run %s: node %s committed %d times", child, node, n)
				}
			}
			last, lastAttempt = st, a
			var def *sqsadapter.NodeDefinition
			for i := range bp.Nodes {
				if bp.Nodes[i].ID == id {
					def = &bp.Nodes[i]
				}
			}
			cbp := children[def.Params["blueprintId"].(string)]
			var cexp *interp.Result
			if rs := exp.Children[id]; len(rs) > 0 {
				cexp = rs[len(rs)-1]
			}
			if cbp != nil && cexp != nil {
				s.checkChildRuns(ctx, r, child, cbp, cexp, exact && st.Status == sqsadapter.StatusCompleted)
			}
		}
		rs := exp.Children[id]
		if !exact || !exp.Is(id, interp.Ran) || len(rs) == 0 || last == nil || rec.State != store.NodeCommitted {
			continue
		}
		want := rs[len(rs)-1]
		if want.Status != sqsadapter.StatusCompleted && rec.Fallback != "" {
			continue // the fallback ran after the last child failed
		}
		for _, p := range want.Check(last) {
			s.report(r, "child run %s (attempt %d of node %s of run %s): %s", last.RunID, lastAttempt, id, runID, p)
		}
	}
}

// awaitChild waits (up to 20 s) for a child run to finish: a failed or
// cancelled parent cancels its children right after its own status is
// written.
func (s *protoSession) awaitChild(ctx context.Context, id string) (*sqsadapter.RunStatus, error) {
	deadline := time.Now().Add(20 * time.Second)
	for {
		st, err := s.e.client.GetRun(ctx, id)
		if err != nil || st.Finished() {
			return st, err
		}
		if time.Now().After(deadline) {
			return st, fmt.Errorf("still %s 20s after its parent finished", st.Status)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
