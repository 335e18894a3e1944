package sqsadapter_test

import (
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flowcraft/sqsadapter"
)

// The classes of the randomized protocol test beyond TestProtocolRandom.
// Each is bounded to a few seconds here; TestProtocolLong (make
// protocol-long) runs them all at length. SQSADAPTER_SEED replays a seed's
// blueprints, SQSADAPTER_CASES some of them.

// TestProtocolRandomDefaults runs blueprints at the defaults — every node
// one attempt, no fallback — while store and queue calls fail (before or
// after their effect), deliveries are duplicated and workers die at steps
// where no attempt is under way. Infrastructure faults must never change a
// run's result: every run ends as the interpreter, which has no faults,
// says.
func TestProtocolRandomDefaults(t *testing.T) {
	runProtoSession(t, protocolSeed(t), protoDefaultsClass(protoRuns(60, 20)), newProtoEnv)
}

// TestProtocolRandomHostile runs blueprints whose node, blueprint and run
// ids and whose values (outputs, context values, actions, start inputs)
// come from a hostile alphabet (protocol_hostile_test.go), plus crafted
// runs whose ids collide with the engine's internal names, under the chaos
// of TestProtocolRandom.
func TestProtocolRandomHostile(t *testing.T) {
	runProtoSession(t, protocolSeed(t), protoHostileClass(protoRuns(40, 15)), newProtoEnv)
}

// TestProtocolRandomLifecycle runs blueprints with many failing nodes
// (with and without fallbacks, some failing with a permanent error, often
// two of a run at once) and cancels a share of the runs at random moments,
// while FailNode fails often. Besides each run's result, it checks the
// life-cycle rules of protoObserver: once the final status is written, it
// is never written again, no node or fallback of the run starts, and
// nothing more is committed.
func TestProtocolRandomLifecycle(t *testing.T) {
	runProtoSession(t, protocolSeed(t), protoLifecycleClass(protoRuns(60, 20)), newProtoEnv)
}

// TestProtocolRandomStrays sends, for every run once it finished, jobs for
// each node of its blueprint (run, skipped or never reached), for its
// fallback-only nodes, for nodes of other blueprints, and with wrong
// blueprint ids and versions (protocol_strays_test.go): none may run a
// node function, panic, or change the run, and each ends as docs/semantics.md's
// bad-input table says.
func TestProtocolRandomStrays(t *testing.T) {
	runProtoSession(t, protocolSeed(t), protoStraysClass(protoRuns(30, 10)), newProtoEnv)
}

// TestProtocolRandomReconcile purges the queue at a random moment of each
// round of runs (some workers dying at random steps meanwhile), then stops
// the workers and runs one reconcile pass: with new workers, every run
// must end as the interpreter says, each node committed exactly once.
func TestProtocolRandomReconcile(t *testing.T) {
	runProtoSession(t, protocolSeed(t), protoReconcileClass(protoRuns(48, 20)), newProtoEnv)
}

// TestProtocolLong runs every class at length and prints one summary line.
// SQSADAPTER_PROTOCOL_LONG sets the number of runs per class (make
// protocol-long).
func TestProtocolLong(t *testing.T) {
	env := os.Getenv("SQSADAPTER_PROTOCOL_LONG")
	if env == "" {
		t.Skip("the long randomized protocol test runs with SQSADAPTER_PROTOCOL_LONG=<runs per class> (make protocol-long)")
	}
	n, err := strconv.Atoi(env)
	require.NoError(t, err, "SQSADAPTER_PROTOCOL_LONG must be a number of runs")
	seed := protocolSeed(t)
	hostileDefaults := protoHostileClass(n)
	hostileDefaults.name, hostileDefaults.shape.defaults, hostileDefaults.chaos = "hostile-defaults", true, protoDefaultsClass(n).chaos
	// Sleeps of up to 5 s, under crashes and faults.
	longSleeps := protoWaitingClass(n, 5*time.Second)
	longSleeps.name = "waiting-sleeps"
	classes := []protoClass{
		{name: "random", runs: n, chaos: protoChaos{faultRate: 0.05, crashRate: 0.10, duplicateRate: 0.10}},
		protoDefaultsClass(n), protoHostileClass(n), hostileDefaults,
		protoLifecycleClass(n), protoStraysClass(n), protoReconcileClass(n),
		protoWaitingClass(n, protoSleepMax), longSleeps, protoSubflowClass(n), protoBatchClass(n),
	}
	var total protoStats
	for _, cls := range classes {
		t.Run(cls.name, func(t *testing.T) { total.add(runProtoSession(t, seed, cls, newProtoEnv)) })
	}
	t.Run("loops", func(t *testing.T) { total.add(runProtoLoopSession(t, seed, protoLoopClass(n))) })
	t.Run("loops-reconcile", func(t *testing.T) { total.add(runProtoLoopSession(t, seed, protoLoopReconcileClass(n))) })
	verdict := "PASS"
	if t.Failed() {
		verdict = "FAIL"
	}
	line := fmt.Sprintf("protocol-long: seed=%d runs=%d completed=%d failed=%d cancelled=%d stalled=%d duplicates=%d crashes=%d faults=%d strays=%d purges=%d violations=%d verdict=%s",
		seed, total.runs, total.completed, total.failed, total.cancelled, total.stalled, total.duplicates, total.crashes,
		total.faults, total.strays, total.purges, total.violations, verdict)
	t.Log(line)
	fmt.Println(line)
}

// protoRuns returns n, or short under -short.
func protoRuns(n, short int) int {
	if testing.Short() {
		return short
	}
	return n
}

func protoDefaultsClass(n int) protoClass {
	return protoClass{name: "defaults", runs: n, shape: protoShape{defaults: true},
		chaos: protoChaos{faultRate: 0.05, duplicateRate: 0.10, crashRate: 0.05, crashWeights: protoOutsideAttempts,
			// One attempt leaves no slack for a lease that expires under a
			// slow heartbeat (a loaded machine): leases are long here.
			visibility: 50 * unit}}
}

func protoHostileClass(n int) protoClass {
	return protoClass{name: "hostile", runs: n, shape: protoShape{hostile: true},
		chaos: protoChaos{faultRate: 0.05, crashRate: 0.10, duplicateRate: 0.10}}
}

func protoLifecycleClass(n int) protoClass {
	// Fatal nodes have one attempt and a fallback: a worker that dies during
	// that attempt, or whose lease expires under a slow heartbeat, leaves an
	// abandoned attempt, which runs the fallback (the failure was never
	// reported) where the interpreter skips it. So, as at the defaults,
	// workers die only outside attempts, and leases are long.
	return protoClass{name: "lifecycle", runs: n, shape: protoShape{failHeavy: true}, cancel: 0.4,
		chaos: protoChaos{faultRate: 0.05, crashRate: 0.10, duplicateRate: 0.10, opRates: map[string]float64{"FailNode": 0.3},
			crashWeights: protoOutsideAttempts, visibility: 50 * unit}}
}

func protoStraysClass(n int) protoClass {
	return protoClass{name: "strays", runs: n, strays: true, cancel: 0.2,
		chaos: protoChaos{faultRate: 0.05, crashRate: 0.10, duplicateRate: 0.10}}
}

func protoReconcileClass(n int) protoClass {
	// Crashes after a commit leave work only the reconciler can find once
	// the queue is purged.
	weights := maps.Clone(protoCrashWeights)
	weights["advanced"], weights["complete"], weights["arrived"], weights["committed"] = 8, 6, 4, 4
	return protoClass{name: "reconcile", runs: n, rounds: max(n/12, 1),
		chaos: protoChaos{faultRate: 0.02, crashRate: 0.10, duplicateRate: 0.05, crashWeights: weights}}
}

// genProtoCaseShaped generates blueprint index of seed (genProtoCase) and
// reshapes it as shape says. Each reshaping draws from its own random
// source, so the structure is that of genProtoCase's for the same seed.
func genProtoCaseShaped(seed uint64, index int, shape protoShape) (*protoCase, error) {
	c, err := genProtoCase(seed, index)
	if err != nil {
		return c, err
	}
	protoWaiting(c, rand.New(rand.NewPCG(seed^0x3a17, uint64(index))), shape.waitShare(), shape.sleepBound())
	if shape.failHeavy {
		protoFailHeavy(c, rand.New(rand.NewPCG(seed^0xfa11, uint64(index))))
	}
	if shape.defaults {
		protoAtDefaults(c, rand.New(rand.NewPCG(seed^0xdefa, uint64(index))))
	}
	if shape.hostile {
		protoHostile(c, rand.New(rand.NewPCG(seed^0x4057113e, uint64(index))))
	}
	if shape.batches > 0 {
		protoBatches(c, rand.New(rand.NewPCG(seed^0xba7c4, uint64(index))), shape.batches)
	}
	if shape.subflows > 0 {
		if err := protoSubflows(c, rand.New(rand.NewPCG(seed^0x50bf10, uint64(index))), seed, shape.subflows, 2); err != nil {
			return nil, err
		}
	}
	return c, c.rebuild()
}

// rebuild re-encodes and re-parses a reshaped blueprint.
func (c *protoCase) rebuild() error {
	data, err := json.Marshal(c.bp)
	if err != nil {
		return err
	}
	parsed, err := sqsadapter.ParseBlueprint(data)
	if err != nil {
		return fmt.Errorf("reshaped blueprint #%d is invalid: %w\n%s", c.index, err, data)
	}
	c.bp, c.json = parsed, data
	return nil
}

// protoFallbackOnly returns the ids of bp's fallback-only nodes.
func protoFallbackOnly(bp *sqsadapter.Blueprint) map[string]bool {
	targets := map[string]bool{}
	for _, e := range bp.Edges {
		targets[e.Target] = true
	}
	only := map[string]bool{}
	for _, d := range bp.Nodes {
		if f := d.Config.Fallback; f != "" && !targets[f] {
			only[f] = true
		}
	}
	return only
}

// protoAtDefaults puts every node at the defaults: one attempt, no retry
// delay, no fallback (fallback-only nodes are removed). In half the
// blueprints, no node fails at all.
func protoAtDefaults(c *protoCase, r *rand.Rand) {
	soft := r.IntN(2) == 0
	fbOnly := protoFallbackOnly(c.bp)
	var nodes []sqsadapter.NodeDefinition
	for _, d := range c.bp.Nodes {
		if fbOnly[d.ID] {
			continue
		}
		d.Config = sqsadapter.NodeConfig{JoinStrategy: d.Config.JoinStrategy}
		if k := d.Params["kind"]; soft && k != "ok" {
			d.Params = maps.Clone(d.Params)
			d.Params["kind"] = "ok"
			delete(d.Params, "k")
		}
		nodes = append(nodes, d)
	}
	c.bp.Nodes = nodes
}

// protoFailHeavy makes more nodes fail: a fifth of the main nodes always
// fail (one or two attempts; half of them get a fallback), some fail with
// a permanent error, and a third of the nodes that have a fallback fail at
// once with a permanent error on their only attempt, which must fail the
// run without running the fallback.
func protoFailHeavy(c *protoCase, r *rand.Rand) {
	fbOnly := protoFallbackOnly(c.bp)
	var added []sqsadapter.NodeDefinition
	for i := range c.bp.Nodes {
		d := &c.bp.Nodes[i]
		if fbOnly[d.ID] {
			continue
		}
		p := maps.Clone(d.Params)
		switch {
		case d.Config.Fallback != "" && r.IntN(3) == 0:
			p["kind"], d.Config.MaxRetries = "fatal", 1
		case r.IntN(5) == 0:
			p["kind"], d.Config.MaxRetries, d.Config.RetryDelay = "fail", 1+r.IntN(2), 0
			if d.Config.Fallback == "" && r.IntN(2) == 0 {
				fb := sqsadapter.NodeDefinition{ID: "h" + d.ID, Uses: "pass",
					Params: map[string]any{"kind": "ok", "salt": int64(r.IntN(1000))}}
				if p["ignoreInput"] == true {
					fb.Params["ignoreInput"] = true // see genProtoCase
				}
				if r.IntN(4) == 0 {
					fb.Params["kind"] = "fail"
				}
				d.Config.Fallback = fb.ID
				added = append(added, fb)
			}
		case r.IntN(12) == 0:
			p["kind"] = "fatal"
		}
		d.Params = p
	}
	c.bp.Nodes = append(c.bp.Nodes, added...)
}

// protoCraftedLeafSkip returns a case whose only leaf is skipped, and
// whose start node's first delivery dies right after the skip is durable,
// before the run is completed: once that message is purged, only the
// reconciler can complete the run.
func protoCraftedLeafSkip(t *testing.T, index int) *protoCase {
	t.Helper()
	c := &protoCase{index: index, initial: map[string]any{}, runID: fmt.Sprintf("run-%03d-leafskip", index), after: -1,
		crashAt: map[string]string{"a": "advanced"},
		bp: &sqsadapter.Blueprint{ID: "leafskip",
			Nodes: []sqsadapter.NodeDefinition{
				{ID: "a", Uses: "pass", Params: map[string]any{"kind": "ok", "salt": int64(1)}, Config: sqsadapter.NodeConfig{MaxRetries: 9}},
				{ID: "leaf", Uses: "pass", Params: map[string]any{"kind": "ok", "salt": int64(2)}},
			},
			Edges: []sqsadapter.EdgeDefinition{{Source: "a", Target: "leaf", Action: "never"}},
		}}
	require.NoError(t, c.rebuild())
	return c
}
