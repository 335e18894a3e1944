package sqsadapter_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"maps"
	"math/rand/v2"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/flowcraft/sqsadapter"
	"github.com/flowcraft/sqsadapter/internal/interp"
	"github.com/flowcraft/sqsadapter/otelsqsadapter"
	"github.com/flowcraft/sqsadapter/sqsadaptertest"
	"github.com/flowcraft/sqsadapter/store"
)

// The randomized protocol test generates random DAG blueprints, runs each
// once on four workers sharing an in-memory SQS and in-memory stores while
// the queue duplicates deliveries, workers "crash" at random protocol steps
// and store and queue calls fail, and compares every run with the
// sequential interpreter of the blueprint semantics, internal/interp.
// A share of the nodes are wait, webhook or sleep nodes, which a resumer
// per run resumes (protocol_wait_test.go).
//
// Every session also checks the life-cycle rules (protocol_observe_test.go:
// the final status is written once; nothing of a run is acquired, committed
// or run after it) and reports a run whose records stop changing state for
// 20s as stalled (protocol_session_test.go). Other classes change the
// blueprints or what happens to the runs (protocol_classes_test.go): every
// node at the defaults, hostile ids and values, failures and cancellations,
// stray jobs once a run finished, a purged queue and one reconcile pass.
// make protocol-long runs them all at length.
//
// The blueprints are reproducible from the seed: SQSADAPTER_SEED=<seed>
// reruns the same ones (the interleaving of the workers and the fault
// decisions are not reproducible), SQSADAPTER_CASES=3,17 only some of
// them. The seed is logged and repeated in every failure message.

// TestProtocolRandom is the randomized protocol test under faults.
func TestProtocolRandom(t *testing.T) {
	seed := protocolSeed(t)
	runs := 200
	if testing.Short() {
		runs = 50
	}
	runProtocolRandom(t, seed, runs, protoChaos{faultRate: 0.05, crashRate: 0.10, duplicateRate: 0.10})
}

// TestProtocolRandomNoFaults runs the first blueprints of the same seed
// without any fault: the interpreter and the engine must agree on plain
// runs too, including the exact messages recorded by fallbacks.
func TestProtocolRandomNoFaults(t *testing.T) {
	seed := protocolSeed(t)
	runs := 60
	if testing.Short() {
		runs = 20
	}
	runProtocolRandom(t, seed, runs, protoChaos{})
}

// protoOnly returns the blueprint indexes listed in SQSADAPTER_CASES
// ("3,17"), to rerun only those of a seed; nil means all.
func protoOnly(t *testing.T) map[int]bool {
	env := os.Getenv("SQSADAPTER_CASES")
	if env == "" {
		return nil
	}
	only := map[int]bool{}
	for _, f := range strings.Split(env, ",") {
		i, err := strconv.Atoi(strings.TrimSpace(f))
		require.NoError(t, err, "SQSADAPTER_CASES must list blueprint indexes")
		only[i] = true
	}
	t.Logf("only blueprints %v", slices.Sorted(maps.Keys(only)))
	return only
}

// protocolSeed returns SQSADAPTER_SEED, or a time-based seed.
func protocolSeed(t *testing.T) uint64 {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("SQSADAPTER_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		require.NoError(t, err, "SQSADAPTER_SEED must be an unsigned integer")
		seed = v
	}
	repro := fmt.Sprintf("SQSADAPTER_SEED=%d go test -race -count=1 -run '^%s$' .", seed, t.Name())
	t.Logf("seed %d (reproduce: %s)", seed, repro)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("FAILED with seed %d; reproduce: %s", seed, repro)
		}
	})
	return seed
}

// protoChaos sets the fault rates of a randomized run.
type protoChaos struct {
	faultRate     float64 // store and queue calls that fail, half before and half after their effect
	crashRate     float64 // job deliveries abandoned at a random step
	duplicateRate float64 // deliveries that the queue duplicates
	// opRates overrides faultRate for the calls it names (the method names
	// of the stores and of SQSClient, "CoordGet" and "CoordDelete" for
	// the coordination store's Get and Delete).
	opRates map[string]float64
	// crashWeights, if set, replaces the weights of the steps a delivery
	// may die at (protoCrashWeights); a step it leaves out is never
	// crashed at.
	crashWeights map[string]int
	// visibility is the workers' visibility timeout, which is also the
	// length of a node lease: an abandoned job comes back after it. Zero
	// means 10 units.
	visibility time.Duration
}

// ---------------------------------------------------------------------------
// Node functions
//
// Every node of the generated blueprints uses one deterministic function
// whose behaviour its params select: the same node id, params, input and
// attempt give the same result.
//
//	kind         "ok", "flaky" (fails attempts 1..k), "fail" (always fails),
//	             "fatal" (fails with a permanent error)
//	k            for "flaky"
//	actions      the result's action is one of these (by hash)
//	write        the node writes the context key "k_<nodeId>"
//	ignoreInput  the output does not depend on the input
//	salt         mixed into the hash
//	echo         a value copied into the output ("s") and the written key
//	shape        "empty" ({}), "emptyString", "null" or "echo": the
//	             output is that instead of the usual object

var protoUses = []string{"pass", "router", "writer", "flaky", "fail", "fatal"}

func protoBehave(id string, params map[string]any, input any, attempt int) (output any, action string, writes map[string]any, err error) {
	switch params["kind"] {
	case "fail":
		return nil, "", nil, fmt.Errorf("boom: %s", id)
	case "fatal":
		return nil, "", nil, sqsadapter.Permanent(fmt.Errorf("fatal: %s", id))
	case "flaky":
		if int64(attempt) <= protoInt(params["k"]) {
			return nil, "", nil, fmt.Errorf("flaky: %s attempt %d", id, attempt)
		}
	}
	h := fnv.New64a()
	fmt.Fprintf(h, "%s|%v|", id, params["salt"])
	if params["ignoreInput"] != true {
		b, err := json.Marshal(input)
		if err != nil {
			return nil, "", nil, sqsadapter.Permanent(fmt.Errorf("input of %s: %w", id, err))
		}
		h.Write(b)
	}
	sum := h.Sum64()
	v := int64(sum % 1000)
	out := map[string]any{"v": v, "flag": (sum>>17)&1 == 1, "by": id}
	echo, hasEcho := params["echo"]
	if hasEcho {
		out["s"] = echo
	}
	if acts, ok := params["actions"].([]any); ok && len(acts) > 0 {
		action, _ = acts[(sum>>32)%uint64(len(acts))].(string)
	}
	if params["write"] == true {
		w := map[string]any{"v": v, "by": id}
		if hasEcho {
			w["s"] = echo
		}
		writes = map[string]any{"k_" + id: w}
	}
	output = out
	switch params["shape"] {
	case "empty":
		output = map[string]any{}
	case "emptyString":
		output = ""
	case "null":
		output = nil
	case "echo":
		output = echo
	}
	return output, action, writes, nil
}

// protoModel is protoBehave as the interpreter's model of the node
// functions (in a loop's pass, with the params protoPassParams gives), and
// the resume oracle of wait and webhook nodes (protoResume).
func protoModel(c interp.Call) interp.Outcome {
	if c.Resume {
		return protoResume(c)
	}
	params := c.Def.Params
	if params == nil {
		params = protoItemParams(c.Input) // a batch item (protocol_batch_test.go)
	}
	out, action, writes, err := protoBehave(c.NodeID, protoPassParams(params, c.Iteration), c.Input, c.Attempt)
	if err != nil {
		return interp.Outcome{Err: err}
	}
	return interp.Outcome{Output: out, Action: action, Sets: writes}
}

func protoInt(v any) int64 {
	switch x := v.(type) {
	case int64:
		return x
	case int:
		return int64(x)
	case float64:
		return int64(x)
	}
	return 0
}

// protoCalls counts node function invocations by run and node, for
// diagnostics.
type protoCalls struct {
	mu  sync.Mutex
	n   map[string]int // "runId/nodeId"
	obs *protoObserver // nil: not observed
}

func (c *protoCalls) fn(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
	c.mu.Lock()
	c.n[nc.RunID+"/"+nc.NodeID]++
	c.mu.Unlock()
	c.obs.entered(nc.RunID, protoPassRecord(protoRecordID(nc), nc.Iteration), nc.Attempt)
	o := interp.ApplyModel(protoModel, &sqsadapter.NodeDefinition{ID: nc.NodeID, Params: nc.Params}, nc)
	return sqsadapter.NodeResult{Output: o.Output, Action: o.Action}, o.Err
}

func (c *protoCalls) registry() sqsadapter.NodeRegistry {
	reg := sqsadapter.NodeRegistry{}
	for _, u := range protoUses {
		reg[u] = c.fn
	}
	return reg
}

func (c *protoCalls) forRun(runID string) map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]int{}
	for k, n := range c.n {
		if id, ok := strings.CutPrefix(k, runID+"/"); ok {
			out[id] = n
		}
	}
	return out
}

func (c *protoCalls) total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, v := range c.n {
		n += v
	}
	return n
}

// ---------------------------------------------------------------------------
// Generator

type protoCase struct {
	index   int
	bp      *sqsadapter.Blueprint
	json    []byte
	initial map[string]any
	runID   string
	// after is the index of a case whose run must finish before this
	// one's starts, or -1.
	after int
	// crashAt makes the first delivery of a node die at a step.
	crashAt map[string]string
	// children are the blueprints the subflow nodes start, nested ones
	// included (protocol_subflow_test.go).
	children []*sqsadapter.Blueprint
}

// genNode is a main (non-fallback) node under construction.
type genNode struct {
	id      string
	preds   []int
	anyJoin bool
	writer  bool
	actions []string
	// guaranteed lists the nodes certainly resolved (run or skipped) before
	// this node runs, whatever the timing: its inputs, and the context keys
	// read by the conditions of its outgoing edges, refer only to those, so
	// the engine's results cannot depend on the interleaving.
	guaranteed map[int]bool
}

func genProtoCase(seed uint64, index int) (*protoCase, error) {
	r := rand.New(rand.NewPCG(seed, uint64(index)))
	budget := 1 + r.IntN(30) // nodes, fallbacks included
	hardFail := r.IntN(2) == 0
	var mains []*genNode
	var defs []sqsadapter.NodeDefinition
	var edges []sqsadapter.EdgeDefinition
	used := 0
	for used < budget {
		i := len(mains)
		g := &genNode{id: fmt.Sprintf("n%d", i), guaranteed: map[int]bool{}}
		used++
		if i > 0 && r.Float64() >= 0.12 {
			np := 1
			if r.Float64() < 0.4 {
				np = 2 + r.IntN(3)
			}
			np = min(np, i)
			for len(g.preds) < np {
				j := r.IntN(i)
				if r.Float64() < 0.7 {
					j = i - 1 - r.IntN(min(i, 5))
				}
				if !slices.Contains(g.preds, j) {
					g.preds = append(g.preds, j)
				}
			}
		}
		var cfg sqsadapter.NodeConfig
		if len(g.preds) > 1 {
			switch r.IntN(5) {
			case 0, 1:
				cfg.JoinStrategy, g.anyJoin = "any", true
			case 2, 3:
				cfg.JoinStrategy = "all"
			}
		}
		if !g.anyJoin {
			for _, p := range g.preds {
				g.guaranteed[p] = true
				for q := range mains[p].guaranteed {
					g.guaranteed[q] = true
				}
			}
		}

		flavor := protoPick(r, []string{"pass", "router", "writer", "flaky", "fail", "fatal"}, []int{30, 22, 15, 12, 9, 3})
		wantFallback := false
		switch flavor {
		case "fail":
			wantFallback = !hardFail || r.IntN(4) != 0
		case "fatal":
			wantFallback = r.IntN(3) == 0
		default:
			wantFallback = r.IntN(10) == 0
		}
		if wantFallback && used >= budget {
			wantFallback = false
		}
		if !hardFail && (flavor == "fatal" || (flavor == "fail" && !wantFallback)) {
			flavor = "pass"
		}
		params, maxRetries, retryDelay := genParams(r, flavor, g.anyJoin)
		cfg.MaxRetries, cfg.RetryDelay = maxRetries, retryDelay
		g.writer = params["write"] == true
		if acts, ok := params["actions"].([]any); ok {
			for _, a := range acts {
				g.actions = append(g.actions, a.(string))
			}
		}
		if wantFallback {
			used++
			fid := fmt.Sprintf("f%d", i)
			fflavor := protoPick(r, []string{"pass", "writer", "router", "fail"}, []int{50, 20, 15, 15})
			if !hardFail && fflavor == "fail" {
				fflavor = "pass"
			}
			// A fallback gets its node's input: if the node ignores its
			// input (an "any" join's input depends on timing), so must it.
			fparams, fmax, fdelay := genParams(r, fflavor, params["ignoreInput"] == true)
			defs = append(defs, sqsadapter.NodeDefinition{ID: fid, Uses: fflavor, Params: fparams,
				Config: sqsadapter.NodeConfig{MaxRetries: fmax, RetryDelay: fdelay}})
			cfg.Fallback = fid
		}
		def := sqsadapter.NodeDefinition{ID: g.id, Uses: flavor, Params: params, Config: cfg}
		if r.IntN(4) == 0 {
			def.Inputs = genInputs(r, mains, g)
		}
		defs = append(defs, def)
		for _, p := range g.preds {
			edges = append(edges, genEdge(r, mains, p, g))
		}
		mains = append(mains, g)
	}
	// Blueprint order is not execution order.
	r.Shuffle(len(defs), func(i, j int) { defs[i], defs[j] = defs[j], defs[i] })
	r.Shuffle(len(edges), func(i, j int) { edges[i], edges[j] = edges[j], edges[i] })
	bp := sqsadapter.Blueprint{ID: fmt.Sprintf("rand-%03d", index), Nodes: defs, Edges: edges}

	initial := map[string]any{"_seed": int64(r.IntN(1000)), "limit": int64(r.IntN(1000)), "flag": r.IntN(2) == 0}
	for _, g := range mains {
		if len(g.preds) == 0 && r.IntN(5) < 3 {
			if r.IntN(3) == 0 {
				initial["_inputs."+g.id] = "hello " + g.id
			} else {
				initial["_inputs."+g.id] = map[string]any{"v": int64(r.IntN(100))}
			}
		}
	}
	data, err := json.Marshal(bp)
	if err != nil {
		return nil, err
	}
	parsed, err := sqsadapter.ParseBlueprint(data)
	if err != nil {
		return nil, fmt.Errorf("generated blueprint #%d is invalid: %w\n%s", index, err, data)
	}
	return &protoCase{index: index, bp: parsed, json: data, initial: initial, runID: fmt.Sprintf("run-%03d", index), after: -1}, nil
}

func protoPick(r *rand.Rand, names []string, weights []int) string {
	total := 0
	for _, w := range weights {
		total += w
	}
	n := r.IntN(total)
	for i, w := range weights {
		if n < w {
			return names[i]
		}
		n -= w
	}
	return names[len(names)-1]
}

// genParams returns the params and retry policy of a node of a flavor.
// Nodes that must succeed get 8 attempts of slack, so that attempts
// consumed by crashes and lost responses cannot change their outcome.
func genParams(r *rand.Rand, flavor string, ignoreInput bool) (params map[string]any, maxRetries int, retryDelay int64) {
	params = map[string]any{"kind": "ok", "salt": int64(r.IntN(1000))}
	maxRetries = 1 + 8
	switch flavor {
	case "router":
		params["actions"] = genActions(r)
	case "writer":
		params["write"] = true
	case "flaky":
		k := 1 + r.IntN(3)
		params["kind"], params["k"] = "flaky", int64(k)
		maxRetries = k + 1 + 8
		if r.IntN(3) == 0 {
			retryDelay = int64(1 + r.IntN(3))
		}
	case "fail":
		params["kind"] = "fail"
		maxRetries = 1 + r.IntN(3)
		if r.IntN(3) == 0 {
			retryDelay = 1
		}
	case "fatal":
		params["kind"] = "fatal"
	}
	if flavor != "writer" && r.IntN(10) == 0 {
		params["write"] = true
	}
	if flavor != "router" && r.IntN(10) == 0 {
		params["actions"] = genActions(r)
	}
	if ignoreInput || r.IntN(10) == 0 {
		params["ignoreInput"] = true
	}
	return params, maxRetries, retryDelay
}

func genActions(r *rand.Rand) []any {
	acts := []any{}
	for _, a := range []string{"a", "b", "c"} {
		if r.IntN(3) != 0 {
			acts = append(acts, a)
		}
	}
	if len(acts) == 0 || r.IntN(3) == 0 {
		acts = append(acts, "") // no action: default edges
	}
	return acts
}

func genEdge(r *rand.Rand, mains []*genNode, p int, target *genNode) sqsadapter.EdgeDefinition {
	src := mains[p]
	e := sqsadapter.EdgeDefinition{Source: src.id, Target: target.id}
	var named []string
	for _, a := range src.actions {
		if a != "" {
			named = append(named, a)
		}
	}
	switch {
	case len(named) > 0 && r.Float64() < 0.55:
		choices := append(named, "z") // "z" is never returned: a dead edge
		e.Action = choices[r.IntN(len(choices))]
	case r.IntN(20) == 0:
		e.Action = "z"
	}
	if r.Float64() < 0.35 {
		e.Condition = genCondition(r, mains, p)
	}
	if r.Float64() < 0.12 {
		e.Transform = []string{"input.v + 1", `{w: input.v * 2, s: "t"}`, "input.flag", "limit - input.v", "result.output.v % 7",
			src.id + ".v > 500 ? 'hi' : 'lo'", "input.v * input"}[r.IntN(7)]
	}
	return e
}

func genCondition(r *rand.Rand, mains []*genNode, p int) string {
	src := mains[p]
	for {
		switch r.IntN(15) {
		case 0, 1:
			m := 2 + r.IntN(4)
			return fmt.Sprintf("result.output.v %% %d != %d", m, r.IntN(m))
		case 2:
			return "result.output.flag" // a bare property path
		case 3:
			return "!result.output.flag"
		case 4:
			return fmt.Sprintf("result.output.v > %d", r.IntN(1000))
		case 5:
			return "result.output.v < limit"
		case 6:
			return "flag" // a bare path into the initial context
		case 7:
			// A key written by the source itself or by a node certainly
			// resolved before it.
			var writers []string
			if src.writer {
				writers = append(writers, src.id)
			}
			for q := range src.guaranteed {
				if mains[q].writer {
					writers = append(writers, mains[q].id)
				}
			}
			if len(writers) == 0 {
				continue
			}
			sort.Strings(writers)
			return fmt.Sprintf("(k_%s.v ?? 1) %% 2 == 0", writers[r.IntN(len(writers))])
		case 8:
			if src.anyJoin { // an "any" join's input depends on timing
				continue
			}
			return "input != nil"
		case 9:
			if len(src.actions) > 0 {
				return `result.action == "a"`
			}
			return "result.output.missing"
		case 10:
			return "context._seed % 2 == 0"
		case 11:
			// The source by its id: its output, as in Flowcraft.
			return fmt.Sprintf("%s.v %% 2 === 0", src.id)
		case 12:
			// A node certainly resolved before: its output if it ran, else
			// nothing (and a comparison with nothing is false).
			var before []string
			for q := range src.guaranteed {
				before = append(before, mains[q].id)
			}
			if len(before) == 0 {
				continue
			}
			sort.Strings(before)
			return fmt.Sprintf("%s.v > %d || !flag", before[r.IntN(len(before))], r.IntN(100))
		case 13:
			return fmt.Sprintf("result.output.flag !== true && result.output.v >= %d", r.IntN(1000))
		case 14:
			// Fails to evaluate: counts as false.
			return "result.output.v * result.output > 1"
		}
	}
}

// genInputs returns an "inputs" definition that refers only to initial
// keys and to nodes certainly resolved before g runs.
func genInputs(r *rand.Rand, mains []*genNode, g *genNode) any {
	var before, writers []string
	for q := range g.guaranteed {
		before = append(before, mains[q].id)
		if mains[q].writer {
			writers = append(writers, mains[q].id)
		}
	}
	sort.Strings(before)
	sort.Strings(writers)
	ref := func() string {
		for {
			switch r.IntN(8) {
			case 0, 1:
				if len(before) > 0 {
					return before[r.IntN(len(before))]
				}
			case 2:
				if len(before) > 0 {
					return before[r.IntN(len(before))] + ".v"
				}
			case 3:
				if len(before) > 0 {
					return before[r.IntN(len(before))] + ".flag"
				}
			case 4:
				if len(writers) > 0 {
					return "k_" + writers[r.IntN(len(writers))]
				}
			case 5:
				return []string{"_seed", "limit", "_inputs.n0"}[r.IntN(3)]
			case 6:
				return "missing"
			case 7:
				if len(before) > 0 {
					return before[r.IntN(len(before))] + ".nothing.deeper"
				}
			}
		}
	}
	if r.IntN(3) == 0 {
		return ref()
	}
	m := map[string]any{}
	for _, name := range []string{"a", "b", "c"}[:1+r.IntN(3)] {
		if r.IntN(5) == 0 {
			arr := []any{}
			for range 2 + r.IntN(2) {
				arr = append(arr, ref())
			}
			m[name] = arr
		} else {
			m[name] = ref()
		}
	}
	return m
}

// ---------------------------------------------------------------------------
// Faults

// protoFaults fails a share of calls, half before their effect and half
// after it (a lost response).
type protoFaults struct {
	rate          float64
	opRates       map[string]float64
	mu            sync.Mutex
	byRun         map[string][]string // injected faults, by run
	r             *rand.Rand
	calls         atomic.Int64
	before, after atomic.Int64
}

var errProtoInjected = errors.New("injected fault")

func (f *protoFaults) float() float64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.r.Float64()
}

// protoOp names a call on a run's records, for protoCall: the fault log
// of the run records the faults injected into it.
func protoOp(name, runID, detail string) string {
	return name + "\x00" + runID + "\x00" + detail
}

func protoCall[T any](f *protoFaults, op string, call func() (T, error)) (T, error) {
	f.calls.Add(1)
	var zero T
	op, runID, detail := protoSplitOp(op)
	rate := f.rate
	if r, ok := f.opRates[op]; ok {
		rate = r
	}
	if detail != "" {
		op += "(" + detail + ")"
	}
	var u float64 = 1
	if rate > 0 {
		u = f.float()
	}
	if u < rate/2 {
		f.before.Add(1)
		f.note(runID, op+" before")
		return zero, fmt.Errorf("%s: %w before the call", op, errProtoInjected)
	}
	v, err := call()
	if err == nil && u < rate {
		f.after.Add(1)
		f.note(runID, op+" after")
		return zero, fmt.Errorf("%s: %w after the call took effect", op, errProtoInjected)
	}
	return v, err
}

func protoSplitOp(op string) (name, runID, detail string) {
	name, rest, ok := strings.Cut(op, "\x00")
	if !ok {
		return op, "", ""
	}
	runID, detail, _ = strings.Cut(rest, "\x00")
	return name, runID, detail
}

// note records a fault injected into a call on a run's records.
func (f *protoFaults) note(runID, what string) {
	if runID == "" {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.byRun == nil {
		f.byRun = map[string][]string{}
	}
	f.byRun[runID] = append(f.byRun[runID], what)
}

// of returns the faults injected into calls on a run's records.
func (f *protoFaults) of(runID string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.byRun[runID])
}

func protoCall0(f *protoFaults, op string, call func() error) error {
	_, err := protoCall(f, op, func() (struct{}, error) { return struct{}{}, call() })
	return err
}

// protoContexts is the workers' ContextStore: it injects faults and counts
// the node commits that took effect.
type protoContexts struct {
	inner sqsadapter.ContextStore
	f     *protoFaults
	obs   *protoObserver // nil: not observed

	mu      sync.Mutex
	commits map[string]int // "runId/nodeId"
	// versions holds, by "runId/nodeId", the UpdatedAt of each commit
	// counted: a commit identical to the existing one succeeds and returns
	// the existing record (ContextStore.CommitNode), so it is not a second
	// commit.
	versions map[string]map[int64]bool
	// unknown counts, by "runId/nodeId", the commits whose caller got an
	// error that leaves their outcome open (see protoEnv.lostResponses).
	unknown map[string]int
}

var _ sqsadapter.ContextStore = (*protoContexts)(nil)

func (s *protoContexts) commitsOf(runID string) map[string]int {
	return s.byNode(s.commits, runID)
}

func (s *protoContexts) unknownOf(runID string) map[string]int {
	return s.byNode(s.unknown, runID)
}

func (s *protoContexts) byNode(counts map[string]int, runID string) map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]int{}
	for k, n := range counts {
		if id, ok := strings.CutPrefix(k, runID+"/"); ok {
			out[id] = n
		}
	}
	return out
}

func (s *protoContexts) CreateRun(ctx context.Context, run store.RunRecord, initial map[string]any) error {
	return protoCall0(s.f, protoOp("CreateRun", run.RunID, ""), func() error { return s.inner.CreateRun(ctx, run, initial) })
}

func (s *protoContexts) GetRun(ctx context.Context, runID string) (*store.RunRecord, error) {
	return protoCall(s.f, protoOp("GetRun", runID, ""), func() (*store.RunRecord, error) { return s.inner.GetRun(ctx, runID) })
}

// FinishRun reports to the observer each status write that took effect.
func (s *protoContexts) FinishRun(ctx context.Context, runID string, status sqsadapter.RunState, reason, failedNode string, at time.Time) error {
	return protoCall0(s.f, protoOp("FinishRun", runID, ""), func() error {
		start := s.obs.tick()
		err := s.inner.FinishRun(ctx, runID, status, reason, failedNode, at)
		if err == nil {
			s.obs.finished(runID, string(status), start)
		} else if !errors.Is(err, sqsadapter.ErrRunNotFound) {
			s.obs.finishUnsure(runID, string(status), start)
		}
		return err
	})
}

// AcquireNode reports to the observer each acquisition that took effect.
func (s *protoContexts) AcquireNode(ctx context.Context, runID, nodeID, owner string, until, now time.Time) (*store.NodeRecord, error) {
	return protoCall(s.f, protoOp("AcquireNode", runID, nodeID), func() (*store.NodeRecord, error) {
		start := s.obs.tick()
		rec, err := s.inner.AcquireNode(ctx, runID, nodeID, owner, until, now)
		if err == nil {
			s.obs.acquired(runID, nodeID, rec.Attempts, start)
		}
		return rec, err
	})
}

func (s *protoContexts) ExtendLease(ctx context.Context, runID, nodeID, owner string, until time.Time) error {
	return protoCall0(s.f, protoOp("ExtendLease", runID, nodeID), func() error { return s.inner.ExtendLease(ctx, runID, nodeID, owner, until) })
}

func (s *protoContexts) ReleaseLease(ctx context.Context, runID, nodeID, owner string) error {
	return protoCall0(s.f, protoOp("ReleaseLease", runID, nodeID), func() error { return s.inner.ReleaseLease(ctx, runID, nodeID, owner) })
}

// CommitNode counts the commits that took effect, including those whose
// response is then lost to an injected fault.
func (s *protoContexts) CommitNode(ctx context.Context, runID string, c store.NodeCommit) (*store.NodeRecord, error) {
	return protoCall(s.f, protoOp("CommitNode", runID, c.NodeID), func() (*store.NodeRecord, error) {
		start := s.obs.tick()
		rec, err := s.inner.CommitNode(ctx, runID, c)
		s.mu.Lock()
		switch {
		case err == nil:
			if s.countCommit(runID+"/"+c.NodeID, rec) {
				s.obs.committed(runID, c.NodeID, start)
			}
		case !errors.Is(err, store.ErrNodeClosed) && !errors.Is(err, sqsadapter.ErrValueTooLarge) && !errors.Is(err, sqsadapter.ErrInvalidKey):
			if s.unknown == nil {
				s.unknown = map[string]int{}
			}
			s.unknown[runID+"/"+c.NodeID]++
		}
		s.mu.Unlock()
		return rec, err
	})
}

// countCommit counts a successful commit unless it returned the record of
// a commit already counted, and says whether it did. Called with s.mu held.
func (s *protoContexts) countCommit(key string, rec *store.NodeRecord) bool {
	if rec != nil && !rec.UpdatedAt.IsZero() {
		at := rec.UpdatedAt.UnixNano()
		if s.versions[key][at] {
			return false
		}
		if s.versions == nil {
			s.versions = map[string]map[int64]bool{}
		}
		if s.versions[key] == nil {
			s.versions[key] = map[int64]bool{}
		}
		s.versions[key][at] = true
	}
	if s.commits == nil {
		s.commits = map[string]int{}
	}
	s.commits[key]++
	return true
}

// SuspendNode passes through with faults.
func (s *protoContexts) SuspendNode(ctx context.Context, runID, nodeID, owner string, w store.Wait) (*store.NodeRecord, error) {
	return protoCall(s.f, protoOp("SuspendNode", runID, nodeID), func() (*store.NodeRecord, error) {
		return s.inner.SuspendNode(ctx, runID, nodeID, owner, w)
	})
}

// WakeNode passes through with faults.
func (s *protoContexts) WakeNode(ctx context.Context, runID, nodeID, owner string, attempts int, until time.Time) (*store.NodeRecord, error) {
	return protoCall(s.f, protoOp("WakeNode", runID, nodeID), func() (*store.NodeRecord, error) {
		return s.inner.WakeNode(ctx, runID, nodeID, owner, attempts, until)
	})
}

// ResumeNode counts the resumes that took effect as commits, as
// CommitNode does: a waiting node's output is committed once, by its
// resume. A repeated identical resume (a retry, a sleep's duplicate timer
// job) returns the record already counted.
func (s *protoContexts) ResumeNode(ctx context.Context, runID string, c store.NodeCommit) (*store.NodeRecord, error) {
	return protoCall(s.f, protoOp("ResumeNode", runID, c.NodeID), func() (*store.NodeRecord, error) {
		start := s.obs.tick()
		rec, err := s.inner.ResumeNode(ctx, runID, c)
		s.mu.Lock()
		switch {
		case err == nil:
			if s.countCommit(runID+"/"+c.NodeID, rec) {
				s.obs.committed(runID, c.NodeID, start)
			}
		case !errors.Is(err, store.ErrNotWaiting) && !errors.Is(err, store.ErrNodeCommitted) && !errors.Is(err, store.ErrNodeClosed) &&
			!errors.Is(err, store.ErrNodeFailed) && !errors.Is(err, sqsadapter.ErrValueTooLarge) && !errors.Is(err, sqsadapter.ErrInvalidKey):
			if s.unknown == nil {
				s.unknown = map[string]int{}
			}
			s.unknown[runID+"/"+c.NodeID]++
		}
		s.mu.Unlock()
		return rec, err
	})
}

func (s *protoContexts) FailNode(ctx context.Context, runID, nodeID, reason string) (*store.NodeRecord, error) {
	return protoCall(s.f, protoOp("FailNode", runID, nodeID), func() (*store.NodeRecord, error) { return s.inner.FailNode(ctx, runID, nodeID, reason) })
}

func (s *protoContexts) SkipNodes(ctx context.Context, runID string, nodeIDs []string) error {
	return protoCall0(s.f, protoOp("SkipNodes", runID, ""), func() error { return s.inner.SkipNodes(ctx, runID, nodeIDs) })
}

func (s *protoContexts) CloseNodes(ctx context.Context, runID string, nodeIDs []string) error {
	return protoCall0(s.f, protoOp("CloseNodes", runID, ""), func() error { return s.inner.CloseNodes(ctx, runID, nodeIDs) })
}

func (s *protoContexts) GetNodes(ctx context.Context, runID string, nodeIDs []string) (map[string]*store.NodeRecord, error) {
	return protoCall(s.f, protoOp("GetNodes", runID, ""), func() (map[string]*store.NodeRecord, error) { return s.inner.GetNodes(ctx, runID, nodeIDs) })
}

func (s *protoContexts) ListNodes(ctx context.Context, runID string) (map[string]*store.NodeRecord, error) {
	return s.inner.ListNodes(ctx, runID)
}

func (s *protoContexts) ListRunning(ctx context.Context, createdBefore time.Time, cursor string, limit int) ([]store.RunRecord, string, error) {
	return s.inner.ListRunning(ctx, createdBefore, cursor, limit)
}

func (s *protoContexts) Get(ctx context.Context, runID, key string) (any, bool, error) {
	type got struct {
		v  any
		ok bool
	}
	g, err := protoCall(s.f, protoOp("Get", runID, key), func() (got, error) {
		v, ok, err := s.inner.Get(ctx, runID, key)
		return got{v, ok}, err
	})
	return g.v, g.ok, err
}

func (s *protoContexts) GetMany(ctx context.Context, runID string, keys []string) (map[string]any, error) {
	return protoCall(s.f, protoOp("GetMany", runID, ""), func() (map[string]any, error) { return s.inner.GetMany(ctx, runID, keys) })
}

func (s *protoContexts) Set(ctx context.Context, runID, key string, value any) error {
	return protoCall0(s.f, protoOp("Set", runID, key), func() error { return s.inner.Set(ctx, runID, key, value) })
}

func (s *protoContexts) Delete(ctx context.Context, runID, key string) (bool, error) {
	return protoCall(s.f, protoOp("Delete", runID, key), func() (bool, error) { return s.inner.Delete(ctx, runID, key) })
}

func (s *protoContexts) Patch(ctx context.Context, runID string, sets map[string]any, deletes []string) error {
	return protoCall0(s.f, protoOp("Patch", runID, ""), func() error { return s.inner.Patch(ctx, runID, sets, deletes) })
}

func (s *protoContexts) ExpireRun(ctx context.Context, runID string, at time.Time) error {
	return protoCall0(s.f, protoOp("ExpireRun", runID, ""), func() error { return s.inner.ExpireRun(ctx, runID, at) })
}

func (s *protoContexts) DeleteRun(ctx context.Context, runID string, until time.Time) error {
	return protoCall0(s.f, protoOp("DeleteRun", runID, ""), func() error { return s.inner.DeleteRun(ctx, runID, until) })
}

func (s *protoContexts) Snapshot(ctx context.Context, runID string) (map[string]any, error) {
	return protoCall(s.f, protoOp("Snapshot", runID, ""), func() (map[string]any, error) { return s.inner.Snapshot(ctx, runID) })
}

// protoCoord is the workers' CoordinationStore, with faults.
type protoCoord struct {
	inner    sqsadapter.CoordinationStore
	f        *protoFaults
	arrivals atomic.Int64
}

var _ sqsadapter.CoordinationStore = (*protoCoord)(nil)

func (s *protoCoord) Increment(ctx context.Context, key string, delta int64, ttl time.Duration) (int64, error) {
	return protoCall(s.f, "Increment", func() (int64, error) { return s.inner.Increment(ctx, key, delta, ttl) })
}

func (s *protoCoord) SetIfNotExist(ctx context.Context, key, value string, ttl time.Duration) (bool, error) {
	return protoCall(s.f, "SetIfNotExist", func() (bool, error) { return s.inner.SetIfNotExist(ctx, key, value, ttl) })
}

func (s *protoCoord) ExtendTTL(ctx context.Context, key string, ttl time.Duration) (bool, error) {
	return protoCall(s.f, "ExtendTTL", func() (bool, error) { return s.inner.ExtendTTL(ctx, key, ttl) })
}

func (s *protoCoord) Delete(ctx context.Context, key string) error {
	return protoCall0(s.f, "CoordDelete", func() error { return s.inner.Delete(ctx, key) })
}

func (s *protoCoord) Get(ctx context.Context, key string) (string, bool, error) {
	type got struct {
		v  string
		ok bool
	}
	g, err := protoCall(s.f, "CoordGet", func() (got, error) {
		v, ok, err := s.inner.Get(ctx, key)
		return got{v, ok}, err
	})
	return g.v, g.ok, err
}

func (s *protoCoord) Arrive(ctx context.Context, key string, a store.Arrival, ttl time.Duration) (*store.JoinState, error) {
	s.arrivals.Add(1)
	return protoCall(s.f, "Arrive", func() (*store.JoinState, error) { return s.inner.Arrive(ctx, key, a, ttl) })
}

func (s *protoCoord) GetJoins(ctx context.Context, keys []string) (map[string]*store.JoinState, error) {
	return protoCall(s.f, "GetJoins", func() (map[string]*store.JoinState, error) { return s.inner.GetJoins(ctx, keys) })
}

// protoSQS is the workers' SQS client, with faults.
type protoSQS struct {
	inner sqsadapter.SQSClient
	f     *protoFaults
}

var _ sqsadapter.SQSClient = (*protoSQS)(nil)

func (s *protoSQS) SendMessageBatch(ctx context.Context, in *sqs.SendMessageBatchInput, o ...func(*sqs.Options)) (*sqs.SendMessageBatchOutput, error) {
	return protoCall(s.f, "SendMessageBatch", func() (*sqs.SendMessageBatchOutput, error) { return s.inner.SendMessageBatch(ctx, in, o...) })
}

func (s *protoSQS) ReceiveMessage(ctx context.Context, in *sqs.ReceiveMessageInput, o ...func(*sqs.Options)) (*sqs.ReceiveMessageOutput, error) {
	return protoCall(s.f, "ReceiveMessage", func() (*sqs.ReceiveMessageOutput, error) { return s.inner.ReceiveMessage(ctx, in, o...) })
}

func (s *protoSQS) DeleteMessageBatch(ctx context.Context, in *sqs.DeleteMessageBatchInput, o ...func(*sqs.Options)) (*sqs.DeleteMessageBatchOutput, error) {
	return protoCall(s.f, "DeleteMessageBatch", func() (*sqs.DeleteMessageBatchOutput, error) { return s.inner.DeleteMessageBatch(ctx, in, o...) })
}

func (s *protoSQS) ChangeMessageVisibility(ctx context.Context, in *sqs.ChangeMessageVisibilityInput, o ...func(*sqs.Options)) (*sqs.ChangeMessageVisibilityOutput, error) {
	return protoCall(s.f, "ChangeMessageVisibility", func() (*sqs.ChangeMessageVisibilityOutput, error) {
		return s.inner.ChangeMessageVisibility(ctx, in, o...)
	})
}

// protoCrasher decides, when a delivery starts ("receive"), whether the
// worker dies during it and at which step.
type protoCrasher struct {
	rate       float64
	steps      []string // the steps it may crash at, and their weights
	weights    []int
	mu         sync.Mutex
	r          *rand.Rand
	plans      map[string]string // "runId/nodeId" → step
	deliveries int
	crashes    map[string]int    // by step
	forced     map[string]string // "runId/nodeId" → step: every delivery of that job dies there, until unforce
	onCrash    func(step string, job sqsadapter.Job)
}

// force makes every delivery of a job die at step, until unforce.
func (c *protoCrasher) force(job sqsadapter.Job, step string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.forced[job.RunID+"/"+job.NodeID] = step
}

// unforce ends every forced crash.
func (c *protoCrasher) unforce() {
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.forced)
}

// The steps a delivery may die at, weighted. Not every delivery reaches
// every step (a replay skips most of them), so more deliveries are planned
// to crash than actually do: protoCrashPlan scales the planning rate so
// that about crashRate of the deliveries are abandoned.
var protoCrashWeights = map[string]int{
	"receive": 4, "acquired": 3, "retry-wait": 1, "commit": 3, "committed": 3, "arrived": 2,
	"advanced": 5, "complete": 1, "failing": 1, "closed": 1, "failed": 1,
	"suspend": 2, "resume": 2, // waiting nodes only: before SuspendNode, before a sleep's ResumeNode
	"expire": 1, // after a run's final status, before its expiry (Tuning.Retention)
}

// protoRetention is the Tuning.Retention of the in-memory sessions.
const protoRetention = 3 * time.Hour

// protoOutsideAttempts are the crash steps at which no attempt is under
// way (before the lease is taken, after the commit, or after the node's
// failure is recorded): a crash there must not cost the node an attempt.
var protoOutsideAttempts = map[string]int{
	"receive": 4, "committed": 3, "arrived": 2, "advanced": 5, "complete": 2, "failing": 1, "closed": 1, "failed": 1,
	"suspend": 2, "resume": 2, // a built-in node has no attempts to lose
	"expire": 1,
}

// protoSteps returns the crash steps of weights and their weights, in a
// fixed order.
func protoSteps(weights map[string]int) ([]string, []int) {
	steps := slices.Sorted(maps.Keys(weights))
	ws := make([]int, len(steps))
	for i, s := range steps {
		ws[i] = weights[s]
	}
	return steps, ws
}

const protoCrashPlan = 2.0

func (c *protoCrasher) hook(step string, job sqsadapter.Job) bool {
	key := job.RunID + "/" + job.NodeID
	c.mu.Lock()
	defer c.mu.Unlock()
	if step == "receive" {
		c.deliveries++
		delete(c.plans, key)
		s, forced := c.forced[key]
		if !forced {
			if len(c.steps) == 0 || c.r.Float64() >= c.rate*protoCrashPlan {
				return false
			}
			s = protoPick(c.r, c.steps, c.weights)
		}
		if s != "receive" {
			c.plans[key] = s
			return false
		}
	} else if c.plans[key] != step {
		return false
	}
	delete(c.plans, key)
	c.crashes[step]++
	if c.onCrash != nil {
		c.onCrash(step, job)
	}
	return true
}

func (c *protoCrasher) stats() (deliveries, crashes int, byStep map[string]int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range c.crashes {
		crashes += n
	}
	return c.deliveries, crashes, maps.Clone(c.crashes)
}

// ---------------------------------------------------------------------------
// Environment and driver

// protoEnv is the workers and the client of a randomized run, on some
// queue and stores (newProtoEnv: the in-memory ones).
type protoEnv struct {
	queues   protoQueues
	contexts sqsadapter.ContextStore // undisturbed, as the client sees it
	counted  *protoContexts          // the workers' view
	faults   *protoFaults
	crasher  *protoCrasher
	calls    *protoCalls
	client   *sqsadapter.SqsAdapter
	// lostResponses says that a commit can take effect while its caller
	// gets an error (a real network, a client that retries a request whose
	// response was lost): a node none of whose commits succeeded, but some
	// of which ended with an error other than a refusal, then counts as
	// committed once. Its output is in the final context, which is checked
	// against the interpreter's.
	lostResponses bool
	// obs sees every status write, node acquisition, commit and node
	// function call of the workers and the client; nil where the
	// environment does not observe them.
	obs *protoObserver
	// stopWorkers shuts the workers down (gracefully: running jobs
	// finish) and startWorkers starts a new set; nil where the
	// environment cannot.
	stopWorkers, startWorkers func()
	// mem is the in-memory SQS, nil on the emulators.
	mem *protoMemQueues
	// spans records the spans of the client and of half the workers,
	// which carry telemetry (checkTraces); nil where none do.
	spans *tracetest.SpanRecorder
	// coordinations is the undecorated coordination store.
	coordinations sqsadapter.CoordinationStore
	// visibility is the workers' visibility timeout.
	visibility time.Duration
	// retention is the Tuning.Retention of the workers and the client (0:
	// none); with one, the session checks that every item of a finished
	// run expires (protoSession.checkRetention).
	retention time.Duration
	// resumer resumes waiting nodes and delivers webhooks: an adapter on
	// the workers' faulty stores, which dies now and then in ResumeRun. Nil: the client does, and its resumes are
	// not counted as commits.
	resumer *sqsadapter.SqsAdapter
}

// protoEnvFunc builds the environment of a randomized run: workers that
// handle the jobs of bps under chaos, and a client.
type protoEnvFunc func(t *testing.T, seed uint64, chaos protoChaos, bps []*sqsadapter.Blueprint) *protoEnv

// protoQueues is what the driver sees of the job queue and its dead-letter
// queue.
type protoQueues interface {
	// left returns how many messages the job queue (dlq: the dead-letter
	// queue) holds, in any state.
	left(dlq bool) int
	// describe describes what the job queue (or the dead-letter queue) holds.
	describe(dlq bool) string
	// queued describes the run's messages in the job queue.
	queued(runID string) []string
	// deliveries returns how many messages the workers received, and how
	// many deliveries were duplicated.
	deliveries() (received, duplicated int)
}

// newProtoBase returns an environment with the chaos of seed (faults,
// crashes, call counts) and no queue, stores or adapters yet, and the
// random source of the rest of its chaos.
func newProtoBase(seed uint64, chaos protoChaos) (*protoEnv, *rand.Rand) {
	chaosRand := rand.New(rand.NewPCG(seed, 0xc4a05))
	weights := chaos.crashWeights
	if weights == nil {
		weights = protoCrashWeights
	}
	steps, ws := protoSteps(weights)
	obs := newProtoObserver()
	e := &protoEnv{
		faults: &protoFaults{rate: chaos.faultRate, opRates: chaos.opRates, r: rand.New(rand.NewPCG(chaosRand.Uint64(), 1))},
		crasher: &protoCrasher{rate: chaos.crashRate, steps: steps, weights: ws, r: rand.New(rand.NewPCG(chaosRand.Uint64(), 2)),
			plans: map[string]string{}, crashes: map[string]int{}, forced: map[string]string{}},
		calls: &protoCalls{n: map[string]int{}, obs: obs},
		obs:   obs,
	}
	return e, chaosRand
}

// protoMemQueues is the in-memory SQS's job queue and dead-letter queue.
type protoMemQueues struct {
	sqs        *sqsadaptertest.SQS
	queue, dlq string
}

func (q protoMemQueues) url(dlq bool) string {
	if dlq {
		return q.dlq
	}
	return q.queue
}

func (q protoMemQueues) left(dlq bool) int {
	v, f, d := q.sqs.Len(q.url(dlq))
	return v + f + d
}

func (q protoMemQueues) describe(dlq bool) string {
	msgs := protoBodies(q.sqs.Messages(q.url(dlq)))
	if dlq {
		return fmt.Sprint(msgs)
	}
	v, f, d := q.sqs.Len(q.queue)
	return fmt.Sprintf("%d visible, %d in flight, %d delayed: %v", v, f, d, msgs)
}

func (q protoMemQueues) queued(runID string) []string {
	var queued []string
	quoted, _ := json.Marshal(runID)
	for _, m := range q.sqs.Messages(q.queue) {
		if strings.Contains(m.Body, `"runId":`+string(quoted)) {
			queued = append(queued, fmt.Sprintf("%s (received %d, %s)", m.Body, m.ReceiveCount, m.State))
		}
	}
	return queued
}

func (q protoMemQueues) deliveries() (received, duplicated int) {
	st := q.sqs.Stats()
	return st.Received, st.Duplicated
}

// newProtoEnv starts four workers on the in-memory SQS and stores. The
// workers reach the queue and the stores through fault-injecting
// decorators; the client that starts runs and waits for them uses the
// undecorated ones.
func newProtoEnv(t *testing.T, seed uint64, chaos protoChaos, bps []*sqsadapter.Blueprint) *protoEnv {
	t.Helper()
	e, chaosRand := newProtoBase(seed, chaos)
	var dupMu sync.Mutex
	memSQS := sqsadaptertest.NewSQS()
	contexts := sqsadaptertest.NewContextStore()
	e.contexts = contexts
	coord := sqsadaptertest.NewCoordinationStore()
	e.coordinations = coord
	e.counted = &protoContexts{inner: contexts, f: e.faults, obs: e.obs, commits: map[string]int{}}
	visibility := chaos.visibility
	if visibility == 0 {
		visibility = 10 * unit
	}
	e.visibility = visibility
	e.retention = protoRetention
	dlq := memSQS.CreateQueue("proto-jobs-dlq", sqsadaptertest.QueueOptions{VisibilityUnit: unit})
	queue := memSQS.CreateQueue("proto-jobs", sqsadaptertest.QueueOptions{
		VisibilityTimeout: visibility, VisibilityUnit: unit,
		MaxReceiveCount: 100, DeadLetterQueueURL: dlq,
	})
	e.mem = &protoMemQueues{sqs: memSQS, queue: queue, dlq: dlq}
	e.queues = *e.mem
	if chaos.duplicateRate > 0 {
		dupRand := rand.New(rand.NewPCG(chaosRand.Uint64(), 3))
		// A job is duplicated at most twice: copies of copies add nothing,
		// and would multiply without end around a job that never succeeds.
		dups := map[string]int{}
		memSQS.DuplicateDelivery = func(body string) bool {
			dupMu.Lock()
			defer dupMu.Unlock()
			if dups[body] >= 2 || dupRand.Float64() >= chaos.duplicateRate {
				return false
			}
			dups[body]++
			return true
		}
	}
	common := []sqsadapter.Option{
		sqsadapter.WithQueueURL(queue),
		sqsadapter.WithRegistry(e.calls.registry()),
		sqsadapter.WithBlueprints(bps...),
		sqsadapter.WithLogger(testLogger()),
		sqsadapter.WithSQSTimeUnit(unit),
		sqsadapter.WithVisibilityTimeout(visibility),
		sqsadapter.WithWaitTime(5 * unit),
		sqsadapter.WithTuning(sqsadapter.Tuning{PollBackoffMin: unit, PollBackoffMax: 5 * unit}),
		// Every finished run expires: the status write, then the expiry
		// (crash point "expire" between them).
		sqsadapter.WithTuning(sqsadapter.Tuning{Retention: e.retention}),
	}
	// The client and half the workers carry telemetry: their job messages
	// carry trace context through crashes, duplicates and redeliveries,
	// and workers without it drop it (checkTraces).
	e.spans = tracetest.NewSpanRecorder()
	tel, err := otelsqsadapter.New(otelsqsadapter.WithTracerProvider(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(e.spans))))
	require.NoError(t, err)
	// The client's status writes (CancelRun) are observed too; its calls
	// never fail.
	e.client, err = sqsadapter.NewSqsAdapter(append(slices.Clone(common),
		tel.Option(),
		sqsadapter.WithSQSClient(memSQS),
		sqsadapter.WithContextStore(&protoContexts{inner: contexts, f: &protoFaults{}, obs: e.obs}),
		sqsadapter.WithCoordinationStore(coord),
	)...)
	require.NoError(t, err)
	resumeCrashes := rand.New(rand.NewPCG(chaosRand.Uint64(), 4))
	var resumeMu sync.Mutex
	e.resumer, err = sqsadapter.NewSqsAdapter(append(slices.Clone(common),
		sqsadapter.WithWorkerID("resumer"),
		// Its sends do not fail: a resume whose sends all fail leaves the
		// run to the reconciler, which most sessions do not run
		// (TestProtocolWaitResumeWithoutSendsLeftToReconciler).
		sqsadapter.WithSQSClient(memSQS),
		sqsadapter.WithContextStore(e.counted),
		sqsadapter.WithCoordinationStore(&protoCoord{inner: coord, f: e.faults}),
		// ResumeRun dies now and then: before its commit (the caller sees
		// an error, and must resume again) or after it.
		sqsadapter.WithCrashHook(func(step string, job sqsadapter.Job) bool {
			switch {
			case chaos.crashRate == 0:
				return false
			case step == "resume":
			case step == "committed" || step == "advanced":
				// After the commit: ResumeRun hands the rest to the node's job.
			default:
				return false
			}
			resumeMu.Lock()
			crash := resumeCrashes.Float64() < chaos.crashRate
			resumeMu.Unlock()
			if crash {
				e.crasher.mu.Lock()
				e.crasher.crashes["ResumeRun:"+step]++
				e.crasher.mu.Unlock()
			}
			return crash
		}),
	)...)
	require.NoError(t, err)
	var (
		mu      sync.Mutex
		running []func()
		started int
	)
	e.startWorkers = func() {
		mu.Lock()
		defer mu.Unlock()
		for range 4 {
			opts := append(slices.Clone(common),
				sqsadapter.WithWorkerID(fmt.Sprintf("w%d", started)),
				sqsadapter.WithSQSClient(&protoSQS{inner: memSQS, f: e.faults}),
				sqsadapter.WithContextStore(e.counted),
				sqsadapter.WithCoordinationStore(&protoCoord{inner: coord, f: e.faults}),
				sqsadapter.WithCrashHook(e.crasher.hook), // also counts handled jobs
				// Workers differ in how far they run chains inline, so that
				// a chain one ran is replayed by another with other
				// settings (docs/protocol.md, "Inline chains").
				protoChainTunings[started%len(protoChainTunings)],
			)
			if started%2 == 1 {
				opts = append(opts, tel.Option())
			}
			started++
			w, err := sqsadapter.NewSqsAdapter(opts...)
			require.NoError(t, err)
			errc := make(chan error, 1)
			go func() { errc <- w.Run(context.Background()) }()
			running = append(running, func() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				assert.NoError(t, w.Shutdown(ctx))
				// A worker whose goroutine had not called Run yet reports
				// ErrAdapterClosed: it never ran.
				if err := <-errc; !errors.Is(err, sqsadapter.ErrAdapterClosed) {
					assert.NoError(t, err)
				}
			})
		}
	}
	e.stopWorkers = func() {
		mu.Lock()
		stops := running
		running = nil
		mu.Unlock()
		var wg sync.WaitGroup
		for _, stop := range stops {
			wg.Go(stop)
		}
		wg.Wait()
	}
	t.Cleanup(e.stopWorkers)
	e.startWorkers()
	return e
}

// protoChainTunings are the workers' chain settings, in turn: the
// defaults, no chains, chains of two, and the longest chains without a
// time bound.
var protoChainTunings = []sqsadapter.Option{
	sqsadapter.WithTuning(sqsadapter.Tuning{}),
	sqsadapter.WithTuning(sqsadapter.Tuning{ChainNodes: -1}),
	sqsadapter.WithTuning(sqsadapter.Tuning{ChainNodes: 2}),
	sqsadapter.WithTuning(sqsadapter.Tuning{ChainNodes: 64, ChainTime: time.Hour}),
}

// protoBodies describes the first queued messages.
func protoBodies(msgs []sqsadaptertest.Message) []string {
	out := make([]string, 0, min(len(msgs), 11))
	for i, m := range msgs {
		if i == 10 {
			out = append(out, fmt.Sprintf("... and %d more", len(msgs)-i))
			break
		}
		out = append(out, fmt.Sprintf("%s (received %d, %s)", m.Body, m.ReceiveCount, m.State))
	}
	return out
}

// diagnose describes a run for a failure message: the blueprint, the
// initial context, the interpreter's view, the node records, the node
// function invocations and the run's messages still queued.
func (e *protoEnv) diagnose(r *protoRun) string {
	var b strings.Builder
	fmt.Fprintf(&b, "  blueprint: %s\n", r.c.json)
	initial, _ := json.Marshal(r.c.initial)
	fmt.Fprintf(&b, "  initial: %s\n", initial)
	fmt.Fprintf(&b, "  interpreter: status %s; ran %v; skipped %v; failed %v; blocked %v\n", r.exp.Status,
		r.exp.Nodes(interp.Ran), r.exp.Nodes(interp.Skipped), r.exp.Nodes(interp.Failed), r.exp.Nodes(interp.Blocked))
	if r.st != nil {
		fmt.Fprintf(&b, "  engine: status %s; failed node %q; error %q\n", r.st.Status, r.st.FailedNode, r.st.Error)
	}
	if r.cancelAt >= 0 {
		fmt.Fprintf(&b, "  cancelled after %d commit(s): %v\n", r.cancelAt, r.cancelled)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if rec, err := e.contexts.GetRun(ctx, r.runID); err == nil {
		fmt.Fprintf(&b, "  run record: %+v\n", *rec)
	}
	ids := make([]string, 0, len(r.c.bp.Nodes))
	for _, d := range r.c.bp.Nodes {
		ids = append(ids, d.ID)
	}
	sort.Strings(ids)
	if recs, err := e.contexts.GetNodes(ctx, r.runID, ids); err == nil {
		for _, id := range ids {
			if rec := recs[id]; rec != nil {
				fmt.Fprintf(&b, "  node %s: %s attempts=%d taken=%v fallback=%q lease=%q", id, rec.State, rec.Attempts, rec.Taken, rec.Fallback, rec.LeaseOwner)
				if rec.Wait != nil {
					fmt.Fprintf(&b, " wait=%+v token=%q", *rec.Wait, rec.Token)
					if child, _ := rec.Wait.Details["runId"].(string); rec.Wait.Reason == "subflow" {
						for a := 1; a <= rec.Attempts; a++ {
							id := protoChildRunID(r.runID, rec.NodeID, a)
							if crec, err := e.contexts.GetRun(ctx, id); err == nil {
								fmt.Fprintf(&b, "\n    child %s (waited for: %v): %s %q; queued: %v", id, id == child, crec.Status, crec.Error, e.queues.queued(id))
								if crecs, err := e.contexts.ListNodes(ctx, id); err == nil && crec.Status == sqsadapter.StatusRunning {
									for _, cid := range slices.Sorted(maps.Keys(crecs)) {
										cr := crecs[cid]
										fmt.Fprintf(&b, "\n      %s: %s attempts=%d taken=%v lease=%q until=%v wait=%+v", cid, cr.State, cr.Attempts, cr.Taken, cr.LeaseOwner, cr.LeaseUntil.Format("15:04:05.000"), cr.Wait)
									}
								}
							}
						}
					}
				}
				b.WriteString("\n")
			}
		}
	}
	fmt.Fprintf(&b, "  invocations: %v\n  commits: %v\n", e.calls.forRun(r.runID), e.counted.commitsOf(r.runID))
	fmt.Fprintf(&b, "  faults injected into its records' calls: %v\n", e.faults.of(r.runID))
	if e.obs != nil {
		fmt.Fprintf(&b, "  observed: %s\n", e.obs.describe(r.runID))
	}
	fmt.Fprintf(&b, "  queued: %v", e.queues.queued(r.runID))
	return b.String()
}

// ---------------------------------------------------------------------------
// Minimal reproductions of what the randomized test found, driven job by
// job with HandleJob (no poller, no faults).

// protoSingle is one adapter over in-memory stores, for HandleJob.
type protoSingle struct {
	a     *sqsadapter.SqsAdapter
	ctx   *sqsadaptertest.ContextStore
	coord *protoCoord
}

func newProtoSingle(t *testing.T, bp *sqsadapter.Blueprint) *protoSingle {
	t.Helper()
	q := sqsadaptertest.NewSQS()
	url := q.CreateQueue("jobs", sqsadaptertest.QueueOptions{VisibilityUnit: unit})
	p := &protoSingle{ctx: sqsadaptertest.NewContextStore(),
		coord: &protoCoord{inner: sqsadaptertest.NewCoordinationStore(), f: &protoFaults{}}}
	calls := &protoCalls{n: map[string]int{}}
	var err error
	p.a, err = sqsadapter.NewSqsAdapter(
		sqsadapter.WithSQSClient(q), sqsadapter.WithQueueURL(url),
		sqsadapter.WithContextStore(p.ctx), sqsadapter.WithCoordinationStore(p.coord),
		sqsadapter.WithRegistry(calls.registry()), sqsadapter.WithBlueprints(bp),
		sqsadapter.WithLogger(testLogger()), sqsadapter.WithSQSTimeUnit(unit),
	)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, p.a.Shutdown(context.Background())) })
	return p
}

func (p *protoSingle) handle(t *testing.T, runID, bpID, nodeID string) {
	t.Helper()
	require.NoError(t, p.a.HandleJob(t.Context(), sqsadapter.Job{RunID: runID, BlueprintID: bpID, NodeID: nodeID}), "job %s", nodeID)
}

// An "any" join that is a leaf must run before its run completes. Here a's
// edge into j is dead and b's is taken: b's arrival fires j and, as every
// predecessor has now arrived, also counts j as resolved, so the run
// completes although j never ran.
func TestProtocolAnyJoinLeafRunsBeforeCompletion(t *testing.T) {
	bp := mustParse(t, `{"id":"anyleaf","nodes":[{"id":"a","uses":"pass"},{"id":"b","uses":"pass"},
	 {"id":"j","uses":"pass","config":{"joinStrategy":"any"}}],
	 "edges":[{"source":"a","target":"j","action":"z"},{"source":"b","target":"j"}]}`)
	p := newProtoSingle(t, bp)
	id, err := p.a.StartRun(t.Context(), "anyleaf", nil)
	require.NoError(t, err)
	p.handle(t, id, "anyleaf", "a")
	p.handle(t, id, "anyleaf", "b")
	st, err := p.a.GetRun(t.Context(), id)
	require.NoError(t, err)
	require.Equal(t, sqsadapter.StatusRunning, st.Status, "j has not run yet; context: %v", st.Context)
	p.handle(t, id, "anyleaf", "j")
	st, err = p.a.GetRun(t.Context(), id)
	require.NoError(t, err)
	require.Equal(t, sqsadapter.StatusCompleted, st.Status)
	assert.Contains(t, st.Context, "_outputs.j")
}

// Replaying a committed node (a redelivery, a duplicate, or a retry after a
// failed call) must not cost more than handling it the first time. Here s's
// only edge is dead, and below it lie k diamonds x→a1,b1→j1→a2,b2→j2…: the
// first handling records 2k arrivals, but on a replay every arrival finds
// its join complete and skips the join's subgraph again, 2^(k+1)-2 arrivals
// in all. With store calls that fail now and then, such a replay never
// succeeds, so its message is never deleted.
func TestProtocolReplayOfDeadPathsIsLinear(t *testing.T) {
	const k = 8
	nodes := []string{`{"id":"s","uses":"pass"}`, `{"id":"x","uses":"pass"}`}
	edges := []string{`{"source":"s","target":"x","action":"z"}`}
	prev := "x"
	for i := 1; i <= k; i++ {
		a, b, j := fmt.Sprintf("a%d", i), fmt.Sprintf("b%d", i), fmt.Sprintf("j%d", i)
		for _, n := range []string{a, b, j} {
			nodes = append(nodes, fmt.Sprintf(`{"id":%q,"uses":"pass"}`, n))
		}
		edges = append(edges,
			fmt.Sprintf(`{"source":%q,"target":%q}`, prev, a), fmt.Sprintf(`{"source":%q,"target":%q}`, prev, b),
			fmt.Sprintf(`{"source":%q,"target":%q}`, a, j), fmt.Sprintf(`{"source":%q,"target":%q}`, b, j))
		prev = j
	}
	bp := mustParse(t, `{"id":"diamonds","nodes":[`+strings.Join(nodes, ",")+`],"edges":[`+strings.Join(edges, ",")+`]}`)
	p := newProtoSingle(t, bp)
	id, err := p.a.StartRun(t.Context(), "diamonds", nil)
	require.NoError(t, err)
	p.handle(t, id, "diamonds", "s")
	first := p.coord.arrivals.Load()
	assert.EqualValues(t, 2*k, first, "arrivals of the first handling")
	st, err := p.a.GetRun(t.Context(), id)
	require.NoError(t, err)
	assert.Equal(t, sqsadapter.StatusCompleted, st.Status)
	p.handle(t, id, "diamonds", "s") // a redelivery of s's message
	replay := p.coord.arrivals.Load() - first
	assert.LessOrEqual(t, replay, first, "arrivals of a replay (the first handling made %d)", first)
}

// A store call that fails now and then must not stop a run. Here s's edges
// are all dead and s reaches 20 joins both directly and through x, so its
// advance records 40 arrivals; the coordination store fails one Arrive in
// 20 (a 5% failure rate). Each delivery stops at its first failure and the
// next one starts the advance over, so no delivery ever gets through.
func TestProtocolAdvanceSurvivesSparseStoreFaults(t *testing.T) {
	const joins = 20
	nodes := []string{`{"id":"s","uses":"pass"}`, `{"id":"x","uses":"pass"}`}
	edges := []string{`{"source":"s","target":"x","action":"z"}`}
	for i := range joins {
		j := fmt.Sprintf("j%d", i)
		nodes = append(nodes, fmt.Sprintf(`{"id":%q,"uses":"pass"}`, j))
		edges = append(edges, fmt.Sprintf(`{"source":"s","target":%q,"action":"z"}`, j), fmt.Sprintf(`{"source":"x","target":%q}`, j))
	}
	bp := mustParse(t, `{"id":"wide","nodes":[`+strings.Join(nodes, ",")+`],"edges":[`+strings.Join(edges, ",")+`]}`)
	p := newProtoSingle(t, bp)
	var n atomic.Int64
	p.coord.inner = &protoEveryNth{CoordinationStore: p.coord.inner, n: &n, every: 20}
	id, err := p.a.StartRun(t.Context(), "wide", nil)
	require.NoError(t, err)
	job := sqsadapter.Job{RunID: id, BlueprintID: "wide", NodeID: "s"}
	var errs []error
	for range 30 { // deliveries of s's message
		err := p.a.HandleJob(t.Context(), job)
		if err == nil {
			break
		}
		errs = append(errs, err)
	}
	if len(errs) == 30 {
		t.Fatalf("s was never advanced: 30 deliveries made %d arrivals; last error: %v", p.coord.arrivals.Load(), errs[len(errs)-1])
	}
	st, err := p.a.GetRun(t.Context(), id)
	require.NoError(t, err)
	assert.Equal(t, sqsadapter.StatusCompleted, st.Status)
}

// protoEveryNth fails every nth Arrive, before it has any effect.
type protoEveryNth struct {
	sqsadapter.CoordinationStore
	n     *atomic.Int64
	every int64
}

func (s *protoEveryNth) Arrive(ctx context.Context, key string, a store.Arrival, ttl time.Duration) (*store.JoinState, error) {
	if s.n.Add(1)%s.every == 0 {
		return nil, fmt.Errorf("Arrive: %w", errProtoInjected)
	}
	return s.CoordinationStore.Arrive(ctx, key, a, ttl)
}
