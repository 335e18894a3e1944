package sqsadapter_test

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flowcraft/sqsadapter"
	"github.com/flowcraft/sqsadapter/internal/interp"
)

// Loops in the randomized protocol test. The generator adds one or two
// loops to a blueprint of genProtoCase (a few of its nodes waiting): a
// controller "L<j>" whose body of 1–4 nodes "b<j>_<i>" has branches (edge
// conditions and actions, some depending on the pass) and "all" joins
// inside, entered at its first node (do-while: from nodes of the
// blueprint, or none) or at the controller (while), with or without exits
// "x<j>_<i>" (some of which feed an "all" join "y<j>" with a node of the
// blueprint, reading a body node's output after the loop). Conditions give
// 0–5 passes through the pass in the end node's output or in a key it
// writes; some are always true against a small params.maxIterations, some
// fail to evaluate; some body nodes fail in one pass, some of those with a
// fallback.
//
// Each run is compared with the interpreter under the chaos of
// TestProtocolRandom, and checkLoopCommits checks exactly once per pass:
// no record — a node's, or pass k's "<id>␟@k" — is committed twice, every
// committed record is of a pass the interpreter runs the node in, and in a
// completed run every such pass is committed.

// TestProtocolRandomLoops runs blueprints with loops under faults,
// duplicates and crashes, a share of the runs cancelled.
func TestProtocolRandomLoops(t *testing.T) {
	runProtoLoopSession(t, protocolSeed(t), protoLoopClass(protoRuns(64, 24)))
}

// TestProtocolRandomLoopsReconcile runs blueprints with loops in rounds,
// purging the queue at a random moment of each and running one reconcile
// pass (as TestProtocolRandomReconcile): the reconciler finds the passes
// whose jobs were lost.
func TestProtocolRandomLoopsReconcile(t *testing.T) {
	runProtoLoopSession(t, protocolSeed(t), protoLoopReconcileClass(protoRuns(24, 12)))
}

func protoLoopReconcileClass(n int) protoClass {
	cls := protoReconcileClass(n)
	cls.name = "loops-reconcile"
	return cls
}

func protoLoopClass(n int) protoClass {
	weights := maps.Clone(protoCrashWeights)
	weights["committed"], weights["advanced"], weights["arrived"] = 5, 8, 4
	return protoClass{name: "loops", runs: n, cancel: 0.1,
		chaos: protoChaos{faultRate: 0.05, crashRate: 0.10, duplicateRate: 0.10, crashWeights: weights}}
}

// protoPassParams adapts a node's params to the pass of a loop it runs in:
// with "iter", the pass is its output's and write's "s" and is mixed into
// its hash; with "failAt", it fails in that pass. Other params are
// returned as they are.
func protoPassParams(params map[string]any, pass int) map[string]any {
	at, failing := params["failAt"]
	if params["iter"] != true && !failing {
		return params
	}
	p := maps.Clone(params)
	if params["iter"] == true {
		p["echo"] = int64(pass)
		p["salt"] = protoInt(params["salt"])*31 + int64(pass)
	}
	if failing && protoInt(at) == int64(pass) {
		p["kind"] = "fail"
	}
	return p
}

// protoLoopCase is a generated case and its loops' nodes.
type protoLoopCase struct {
	*protoCase
	loopNodes map[string]bool // controllers and body nodes
}

// genProtoLoopCase generates case index of seed: genProtoCase's blueprint
// (two thirds of its failing nodes made to pass, a few nodes waiting) with
// one or two loops added.
func genProtoLoopCase(seed uint64, index int) (*protoLoopCase, error) {
	c, err := genProtoCase(seed, index)
	if err != nil {
		return nil, err
	}
	r := rand.New(rand.NewPCG(seed^0x100b, uint64(index)))
	bp := c.bp
	for i := range bp.Nodes {
		if d := &bp.Nodes[i]; (d.Uses == "fail" || d.Uses == "fatal") && r.IntN(3) != 0 {
			p := maps.Clone(d.Params)
			p["kind"] = "ok"
			d.Uses, d.Params = "pass", p
			d.Config.MaxRetries = 1 + 8 // the slack of nodes that must succeed (genParams)
		}
	}
	protoWaiting(c, r, 0.08, protoSleepMax)
	// The loops are entered from nodes of the blueprint, mostly from nodes
	// that run (a dead entry skips the whole loop).
	pre, err := interp.Run(bp, c.initial, protoModel)
	if err != nil {
		return nil, err
	}
	fbOnly := protoFallbackOnly(bp)
	var base, running []string
	for _, d := range bp.Nodes {
		if !fbOnly[d.ID] {
			base = append(base, d.ID)
			if pre.Is(d.ID, interp.Ran) {
				running = append(running, d.ID)
			}
		}
	}
	if len(running) == 0 {
		running = base
	}
	lc := &protoLoopCase{protoCase: c, loopNodes: map[string]bool{}}
	for j := range 1 + r.IntN(4)/3 {
		from := base
		if r.IntN(5) != 0 {
			from = running
		}
		protoAddLoop(lc, r, j, from)
	}
	r.Shuffle(len(bp.Nodes), func(i, j int) { bp.Nodes[i], bp.Nodes[j] = bp.Nodes[j], bp.Nodes[i] })
	r.Shuffle(len(bp.Edges), func(i, j int) { bp.Edges[i], bp.Edges[j] = bp.Edges[j], bp.Edges[i] })
	return lc, c.rebuild()
}

// protoAddLoop adds loop j to the case.
func protoAddLoop(lc *protoLoopCase, r *rand.Rand, j int, base []string) {
	bp := lc.bp
	ctl := fmt.Sprintf("L%d", j)
	m := 1 + r.IntN(4)
	body := make([]string, m)
	for i := range body {
		body[i] = fmt.Sprintf("b%d_%d", j, i)
	}
	start, end := body[0], body[m-1]
	lc.loopNodes[ctl] = true
	for _, id := range body {
		lc.loopNodes[id] = true
	}

	// The body: each node after the first follows one or two earlier
	// ones; a node nothing follows leads to the end node.
	preds := make([][]int, m)
	for i := 1; i < m; i++ {
		preds[i] = []int{i - 1 - r.IntN(min(i, 2))}
		if i > 1 && r.IntN(3) == 0 {
			if q := r.IntN(i); !slices.Contains(preds[i], q) {
				preds[i] = append(preds[i], q)
			}
		}
	}
	for i := range m - 1 {
		followed := false
		for _, ps := range preds[i+1:] {
			followed = followed || slices.Contains(ps, i)
		}
		if !followed {
			preds[m-1] = append(preds[m-1], i)
		}
	}
	// before[i]: the body nodes certainly resolved before node i in a pass.
	before := make([]map[int]bool, m)
	for i := range m {
		before[i] = map[int]bool{}
		for _, p := range preds[i] {
			before[i][p] = true
			maps.Copy(before[i], before[p])
		}
	}
	failAt := -1
	if r.IntN(4) == 0 {
		failAt = r.IntN(m)
	}
	actions := make([][]string, m)
	writers := make([]bool, m)
	for i, id := range body {
		flavor := protoPick(r, []string{"pass", "router", "writer", "flaky"}, []int{40, 25, 20, 15})
		params, maxRetries, retryDelay := genParams(r, flavor, false)
		params["iter"] = true
		delete(params, "shape")
		if i == m-1 {
			params["write"] = true // the end node's key may drive the condition
		}
		if a, ok := params["actions"].([]any); ok {
			for _, x := range a {
				actions[i] = append(actions[i], x.(string))
			}
		}
		writers[i] = params["write"] == true
		cfg := sqsadapter.NodeConfig{MaxRetries: maxRetries, RetryDelay: retryDelay}
		if len(preds[i]) > 1 && r.IntN(2) == 0 {
			cfg.JoinStrategy = "all"
		}
		uses := flavor
		if i == failAt {
			// Its other passes must succeed: it keeps its slack of attempts.
			params["failAt"] = int64(r.IntN(4))
			if r.IntN(3) == 0 {
				fid := "f" + id
				cfg.Fallback = fid
				fp, fmax, _ := genParams(r, "pass", false)
				fp["iter"] = true
				bp.Nodes = append(bp.Nodes, sqsadapter.NodeDefinition{ID: fid, Uses: "pass", Params: fp,
					Config: sqsadapter.NodeConfig{MaxRetries: fmax}})
			}
		}
		bp.Nodes = append(bp.Nodes, sqsadapter.NodeDefinition{ID: id, Uses: uses, Params: params, Config: cfg})
	}
	for i := 1; i < m; i++ {
		for _, p := range preds[i] {
			bp.Edges = append(bp.Edges, protoBodyEdge(r, body, actions, writers, before, p, i))
		}
	}

	// The controller and its condition.
	whileLoop := r.IntN(5) < 2
	n := r.IntN(5)
	var cond string
	switch k := r.IntN(12); {
	case k < 5:
		cond = fmt.Sprintf("(%s.s ?? 0) < %d", end, n)
	case k < 8:
		cond = fmt.Sprintf("(k_%s.s ?? 0) < %d", end, n)
	case k < 10:
		cond = fmt.Sprintf("input.s < %d", n)
	case k < 11:
		cond = "1 == 1 || flag" // always: the iteration limit ends it
	default:
		cond = "input.s * input > 1" // fails to evaluate: breaks
	}
	params := map[string]any{"condition": cond}
	if strings.HasPrefix(cond, "1 == 1") || r.IntN(4) == 0 {
		params["maxIterations"] = int64(1 + r.IntN(5))
	}
	bp.Nodes = append(bp.Nodes, sqsadapter.NodeDefinition{ID: ctl, Uses: interp.LoopController, Params: params})
	bp.Edges = append(bp.Edges, sqsadapter.EdgeDefinition{Source: end, Target: ctl})
	back := sqsadapter.EdgeDefinition{Source: ctl, Target: start, Action: interp.ActionContinue}
	switch r.IntN(6) {
	case 0, 1, 2, 3:
		back.Transform = fmt.Sprintf("context[%q]", end)
	case 4:
		back.Transform = fmt.Sprintf("{p: context[%q].s, seed: _seed}", end)
	}
	bp.Edges = append(bp.Edges, back)

	// The entries.
	entries := 0
	if whileLoop {
		entries = 1 + r.IntN(2)
	} else if r.IntN(3) != 0 {
		entries = 1 + r.IntN(4)/3
	}
	target := start
	if whileLoop {
		target = ctl
	}
	var from []string
	for range entries {
		if b := base[r.IntN(len(base))]; !slices.Contains(from, b) {
			from = append(from, b)
		}
	}
	for _, b := range from {
		e := sqsadapter.EdgeDefinition{Source: b, Target: target}
		if r.IntN(8) == 0 {
			e.Condition = "result.output.v % 3 != 0"
		}
		bp.Edges = append(bp.Edges, e)
	}
	if len(from) == 0 && r.IntN(2) == 0 {
		lc.initial["_inputs."+start] = map[string]any{"v": int64(r.IntN(100))}
	}

	// The exits.
	for i := range r.IntN(3) {
		x := fmt.Sprintf("x%d_%d", j, i)
		params, maxRetries, _ := genParams(r, protoPick(r, []string{"pass", "writer"}, []int{2, 1}), false)
		d := sqsadapter.NodeDefinition{ID: x, Uses: "pass", Params: params, Config: sqsadapter.NodeConfig{MaxRetries: maxRetries}}
		if params["write"] == true {
			d.Uses = "writer"
		}
		if r.IntN(3) == 0 {
			// Read after the loop: the body's last pass.
			d.Inputs = map[string]any{"first": start, "s": body[r.IntN(m)] + ".s", "k": "k_" + end}
		}
		bp.Nodes = append(bp.Nodes, d)
		e := sqsadapter.EdgeDefinition{Source: ctl, Target: x}
		if r.IntN(2) == 0 {
			e.Action = interp.ActionBreak
		}
		switch r.IntN(4) {
		case 0, 1:
			e.Transform = fmt.Sprintf("context[%q]", end)
		case 2:
			e.Condition = fmt.Sprintf("context[%q].v %% 2 == 0", end)
		}
		bp.Edges = append(bp.Edges, e)
		if i == 0 && r.IntN(2) == 0 {
			// An "all" join of the exit and a node of the blueprint: it
			// runs even when the loop's exits are dead.
			y := fmt.Sprintf("y%d", j)
			yp, ymax, _ := genParams(r, "pass", false)
			yd := sqsadapter.NodeDefinition{ID: y, Uses: "pass", Params: yp, Config: sqsadapter.NodeConfig{MaxRetries: ymax, JoinStrategy: "all"}}
			if r.IntN(2) == 0 {
				yd.Inputs = map[string]any{"last": end, "first": start + ".s"}
			}
			bp.Nodes = append(bp.Nodes, yd)
			bp.Edges = append(bp.Edges, sqsadapter.EdgeDefinition{Source: x, Target: y},
				sqsadapter.EdgeDefinition{Source: base[r.IntN(len(base))], Target: y})
		}
	}
}

// protoBodyEdge is the edge from body node p to body node i: by action,
// by condition (on the pass, the output, the initial context, a body node
// certainly resolved before in the same pass, or a key written by one of
// those or by the end node, whose last write is then of the pass before),
// or plain.
func protoBodyEdge(r *rand.Rand, body []string, actions [][]string, writers []bool, before []map[int]bool, p, i int) sqsadapter.EdgeDefinition {
	e := sqsadapter.EdgeDefinition{Source: body[p], Target: body[i]}
	var named []string
	for _, a := range actions[p] {
		if a != "" {
			named = append(named, a)
		}
	}
	if len(named) > 0 && r.IntN(3) == 0 {
		e.Action = named[r.IntN(len(named))]
	}
	if r.IntN(4) == 0 {
		var earlier []string
		for q := range before[p] {
			earlier = append(earlier, body[q])
		}
		slices.Sort(earlier)
		switch k := r.IntN(7); {
		case k == 0:
			e.Condition = "result.output.s % 2 == 0"
		case k == 1:
			e.Condition = "result.output.s != 1"
		case k == 2:
			e.Condition = fmt.Sprintf("result.output.v %% 3 != %d", r.IntN(3))
		case k == 3:
			e.Condition = "!result.output.flag || flag"
		case k == 4 && len(earlier) > 0:
			e.Condition = fmt.Sprintf("%s.v > 300 || %s.s == nil", earlier[r.IntN(len(earlier))], earlier[0])
		case k == 5:
			keys := []string{body[len(body)-1]} // the end node always writes
			for q := range before[p] {
				if writers[q] {
					keys = append(keys, body[q])
				}
			}
			if writers[p] {
				keys = append(keys, body[p])
			}
			slices.Sort(keys)
			e.Condition = fmt.Sprintf("(k_%s.s ?? 9) %% 3 != 1", keys[r.IntN(len(keys))])
		default:
			e.Condition = "context._seed % 2 == 0 || result.output.s < 2"
		}
	}
	if r.IntN(8) == 0 {
		e.Transform = "{v: input.v, s: result.output.s}"
	}
	return e
}

// runProtoLoopSession runs one session of blueprints with loops, as
// runProtoSession does, with the model of protoPassParams and the
// per-pass checks of checkLoopCommits.
func runProtoLoopSession(t *testing.T, seed uint64, cls protoClass) protoStats {
	start := time.Now()
	s := &protoSession{t: t, seed: seed, cls: cls}
	only := protoOnly(t)
	cancels := rand.New(rand.NewPCG(seed, 0x100bca9))
	loopNodes := map[string]map[string]bool{}
	var bps []*sqsadapter.Blueprint
	for i := range cls.runs {
		if only != nil && !only[i] {
			continue
		}
		c, err := genProtoLoopCase(seed, i)
		require.NoError(t, err, "seed %d", seed)
		c.bp.ID = fmt.Sprintf("loop-%03d", i)
		c.runID = fmt.Sprintf("loop-run-%03d", i)
		require.NoError(t, c.rebuild())
		exp, err := interp.Run(c.bp, c.initial, protoModel)
		require.NoError(t, err, "seed %d blueprint #%d: interpreter: %s", seed, c.index, c.json)
		require.Empty(t, exp.Racy, "seed %d blueprint #%d: interpreter: %s", seed, c.index, c.json)
		r := &protoRun{c: c.protoCase, exp: exp, runID: c.runID, done: make(chan struct{}), cancelAt: -1, waits: newProtoWaits()}
		if cls.cancel > 0 && cancels.Float64() < cls.cancel {
			r.cancelAt = cancels.IntN(len(exp.Nodes(interp.Ran)) + 1)
		}
		loopNodes[r.runID] = c.loopNodes
		s.runs = append(s.runs, r)
		bps = append(bps, c.bp)
	}
	s.e = newProtoEnv(t, seed, cls.chaos, bps)
	for _, r := range s.runs {
		s.e.obs.expect(r.runID, r.c.bp)
	}
	rounds := max(min(cls.rounds, len(s.runs)), 1)
	for k := range rounds {
		var round []*protoRun
		for i, r := range s.runs {
			if i*rounds/max(len(s.runs), 1) == k {
				round = append(round, r)
			}
		}
		s.runRound(k, round)
	}
	s.finishLoops(loopNodes)
	s.summary(time.Since(start))
	// How many times each loop's body ran, and how each loop ended.
	runs := map[int]int{}
	ended := map[string]int{}
	for _, r := range s.runs {
		for id := range loopNodes[r.runID] {
			if !strings.HasPrefix(id, "L") {
				continue
			}
			runs[len(r.exp.Passes["b"+strings.TrimPrefix(id, "L")+"_0"])]++
			switch st := r.exp.States[id]; {
			case st == interp.Ran:
				ended["break"]++
			case st == interp.Failed:
				ended["limit"]++
			default:
				ended[string(st)]++
			}
		}
	}
	t.Logf("loops: body runs %v; ended %v", runs, ended)
	return s.stats
}

// finishLoops is protoSession.finish for runs with loops: the queue
// drains, nothing is dead-lettered, the life-cycle rules held, and
// checkLoopCommits holds for every finished run.
func (s *protoSession) finishLoops(loopNodes map[string]map[string]bool) {
	e := s.e
	stalled := 0
	for _, r := range s.runs {
		if r.stalled {
			stalled++
		}
	}
	if stalled > 0 {
		s.fail("%d run(s) stalled", stalled)
	}
	deadline := time.Now().Add(30 * time.Second)
	for stalled == 0 && e.queues.left(false) > 0 {
		if time.Now().After(deadline) {
			s.fail("the queue did not drain: %s", e.queues.describe(false))
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := e.queues.left(true); n > 0 {
		s.fail("%d message(s) dead-lettered: %s", n, e.queues.describe(true))
	}
	for _, r := range s.runs {
		for _, p := range e.obs.check(r.runID, r.st != nil) {
			s.report(r, "%s", p)
		}
		if r.st != nil {
			s.checkLoopCommits(r, loopNodes[r.runID])
		}
	}
}

// checkLoopCommits checks that run r committed each node at most once per
// pass, only in the passes the interpreter runs it in, and, if it
// completed, in every one of them.
func (s *protoSession) checkLoopCommits(r *protoRun, loopNodes map[string]bool) {
	ran := func(id string, pass int) bool {
		if loopNodes[id] {
			return slices.Contains(r.exp.Passes[id], pass)
		}
		return pass == 0 && r.exp.Is(id, interp.Ran)
	}
	got := s.e.counted.commitsOf(r.runID)
	committed := map[string]map[int]bool{}
	for _, rid := range slices.Sorted(maps.Keys(got)) {
		if k := got[rid]; k > 1 {
			s.report(r, "record %q committed %d times", rid, k)
		}
		if id, ok := strings.CutSuffix(rid, "\x1floop"); ok && loopNodes[id] {
			continue // the loop's done record
		}
		id, pass := protoSplitPass(rid)
		if !ran(id, pass) {
			s.report(r, "node %s committed in pass %d, which the interpreter does not run it in (passes %v, state %q)",
				id, pass, r.exp.Passes[id], r.exp.States[id])
		}
		if committed[id] == nil {
			committed[id] = map[int]bool{}
		}
		committed[id][pass] = true
	}
	if r.st.Status != sqsadapter.StatusCompleted || r.cancelled {
		return
	}
	unknown := s.e.counted.unknownOf(r.runID)
	for id, ps := range r.exp.Passes {
		for _, pass := range ps {
			if !committed[id][pass] && !(s.e.lostResponses && unknown[protoPassRecord(id, pass)] > 0) {
				s.report(r, "node %s ran in pass %d, but that pass was never committed", id, pass)
			}
		}
	}
	for _, id := range r.exp.Nodes(interp.Ran) {
		if !loopNodes[id] && !committed[id][0] && !(s.e.lostResponses && unknown[id] > 0) {
			s.report(r, "node %s ran, but its output was never committed", id)
		}
	}
}

// protoPassRecord is the id of the record of node id's pass: the
// observer matches a node function's call with the acquisition of that
// record.
func protoPassRecord(id string, pass int) string {
	if pass == 0 {
		return id
	}
	return id + "\x1f@" + strconv.Itoa(pass)
}

// protoSplitPass splits a record id into its node id and pass.
func protoSplitPass(rid string) (string, int) {
	id, n, ok := strings.Cut(rid, "\x1f@")
	if !ok {
		return rid, 0
	}
	k, err := strconv.Atoi(n)
	if err != nil {
		return rid, -1
	}
	return id, k
}
