package chaos

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"sort"
	"time"

	"github.com/flowcraft/sqsadapter"
	"github.com/flowcraft/sqsadapter/internal/interp"
)

// blueprintJSON is the workflow every chaos run executes (see
// blueprint.json and the package documentation for its shape).
//
//go:embed blueprint.json
var blueprintJSON []byte

// archiveJSON is the blueprint that the chaos blueprint's "archive" node
// runs as a subflow: a child run of its own.
//
//go:embed archive.json
var archiveJSON []byte

// BlueprintID is the id of the chaos blueprint.
const BlueprintID = "chaos"

// Blueprint parses the chaos blueprint.
func Blueprint() (*sqsadapter.Blueprint, error) {
	bp, err := sqsadapter.ParseBlueprint(blueprintJSON)
	if err != nil {
		return nil, fmt.Errorf("chaos: blueprint: %w", err)
	}
	return bp, nil
}

// Blueprints parses the chaos blueprint and the blueprints its subflow
// nodes start; every process registers them all.
func Blueprints() ([]*sqsadapter.Blueprint, error) {
	bp, err := Blueprint()
	if err != nil {
		return nil, err
	}
	child, err := sqsadapter.ParseBlueprint(archiveJSON)
	if err != nil {
		return nil, fmt.Errorf("chaos: archive blueprint: %w", err)
	}
	return []*sqsadapter.Blueprint{bp, child}, nil
}

// Tiers of the cases the runs process; the tier and the amount decide the
// branches a run takes.
var tiers = []string{"gold", "silver", "bronze"}

// Initial returns the initial context of run i of a seed: one case with
// an id, an amount and a tier, so that runs take different branches, and
// the case's lines, which the "lines" map node prices one by one: none,
// one, a few or up to 30; some fail their first attempts, a few are
// discontinued (their pricing fails for good).
func Initial(seed uint64, i int) map[string]any {
	r := rand.New(rand.NewPCG(seed, uint64(i)))
	c := map[string]any{"case": map[string]any{
		"id":     fmt.Sprintf("c-%05d", i),
		"amount": int64(1 + r.IntN(1000)),
		"tier":   tiers[r.IntN(len(tiers))],
	}}
	var n int
	switch k := r.IntN(20); {
	case k < 2:
		n = 0
	case k < 5:
		n = 1
	case k < 17:
		n = 2 + r.IntN(7)
	default:
		n = 9 + r.IntN(22)
	}
	lines := make([]any, n)
	for j := range lines {
		line := map[string]any{"sku": fmt.Sprintf("sku-%d", r.IntN(500)), "qty": int64(1 + r.IntN(5))}
		switch k := r.IntN(100); {
		case k < 3:
			line["discontinued"] = true
		case k < 40:
			line["flaky"] = int64(1 + r.IntN(2))
		}
		lines[j] = line
	}
	c["lines"] = lines
	return c
}

// Model is the deterministic model of the chaos blueprint's node
// functions, shared by the worker processes (Registry) and the sequential
// interpreter. Each node's output depends only on its params and input, not
// on the attempt that succeeds: attempts consumed by crashes and retried
// requests change nothing but the attempt count.
//
//	intake   the case, with a score; writes "caseId"
//	score    {part, v}: v a hash of the part and the input; writes params["set"]
//	flaky    fails attempts 1..params["k"], then as score
//	slow     as score (the worker sleeps before it: Registry)
//	fail     always fails, with a message that does not name the attempt
//	decide   sums the scores and routes: "approve" (gold, or a sum ≡ 0 mod 3),
//	         "review" (silver, or ≡ 1), else no action (the default edge)
//	review   fails permanently for a bronze case with an odd amount
//	notify   reports which branch reached the "any" join
//	finish   lists the branches that reached the final "all" join
//	priceLine the worker of the "lines" map node: prices one line of the
//	         case (its input, as an item function has no params): fails its
//	         first "flaky" attempts, and for good (a permanent error) for a
//	         discontinued line
//
// The built-in nodes are run by the engine, not by Registry; for a wait or
// webhook node the model is the resume the harness's driver sends (the
// interpreter calls it with Call.Resume; a sleep it models itself):
//
//	wait     a manual review: {reviewer, verdict}, with the action "accept"
//	         or "escalate", by a hash of the input
//	webhook  a payment callback: {status, ref, amount}, status "declined"
//	         for amounts that are multiples of 5, else "paid"; no action
func Model(c interp.Call) interp.Outcome {
	p := c.Def.Params
	part, _ := p["part"].(string)
	switch c.Def.Uses {
	case "wait":
		h := hash("manual", c.Input)
		verdict := "accept"
		if h%3 == 0 {
			verdict = "escalate"
		}
		return interp.Outcome{Output: map[string]any{"reviewer": fmt.Sprintf("r-%d", h%7), "verdict": verdict}, Action: verdict}
	case "webhook":
		m, _ := c.Input.(map[string]any)
		amount, _ := m["amount"].(int64)
		status := "paid"
		if amount%5 == 0 {
			status = "declined"
		}
		return interp.Outcome{Output: map[string]any{"status": status, "ref": fmt.Sprintf("pay-%d", hash("payment", c.Input)%100000), "amount": amount}}
	case "intake":
		m, _ := c.Input.(map[string]any)
		id, _ := m["id"].(string)
		amount, _ := m["amount"].(int64)
		tier, _ := m["tier"].(string)
		if id == "" {
			return interp.Outcome{Err: sqsadapter.Permanent(errors.New("intake: a case needs an id"))}
		}
		return interp.Outcome{
			Output: map[string]any{"id": id, "amount": amount, "tier": tier, "score": int64(hash("intake", c.Input) % 100)},
			Sets:   map[string]any{"caseId": id},
		}
	case "flaky":
		if k, _ := p["k"].(int64); int64(c.Attempt) <= k {
			return interp.Outcome{Err: fmt.Errorf("%s: transient failure on attempt %d", c.NodeID, c.Attempt)}
		}
	case "fail":
		return interp.Outcome{Err: fmt.Errorf("%s: the scoring service is down", c.NodeID)}
	case "decide":
		m, _ := c.Input.(map[string]any)
		total := int64(0)
		for _, k := range []string{"a", "b", "c"} {
			s, _ := m[k].(map[string]any)
			v, _ := s["v"].(int64)
			total += v
		}
		tier, _ := m["tier"].(string)
		amount, _ := m["amount"].(int64)
		out := map[string]any{"total": total, "tier": tier, "amount": amount}
		var action string
		switch {
		case tier == "gold" || total%3 == 0:
			action = "approve"
		case tier == "silver" || total%3 == 1:
			action = "review"
		}
		out["decision"] = action
		return interp.Outcome{Output: out, Action: action, Sets: map[string]any{"decision": map[string]any{"action": action, "total": total}}}
	case "review":
		m, _ := c.Input.(map[string]any)
		tier, _ := m["tier"].(string)
		amount, _ := m["amount"].(int64)
		if tier == "bronze" && amount%2 == 1 {
			return interp.Outcome{Err: sqsadapter.Permanent(fmt.Errorf("%s: a bronze case with an odd amount cannot be reviewed", c.NodeID))}
		}
		return interp.Outcome{Output: map[string]any{"ticket": fmt.Sprintf("rev-%d", hash("review", c.Input)%10000)}}
	case "notify":
		m, _ := c.Input.(map[string]any)
		about := make([]string, 0, len(m))
		for k := range m {
			about = append(about, k)
		}
		sort.Strings(about)
		return interp.Outcome{Output: map[string]any{"sent": true, "about": about}}
	case "priceLine":
		m, _ := c.Input.(map[string]any)
		sku, _ := m["sku"].(string)
		qty, _ := m["qty"].(int64)
		if m["discontinued"] == true {
			return interp.Outcome{Err: sqsadapter.Permanent(fmt.Errorf("%s: %s is discontinued", c.NodeID, sku))}
		}
		if k, _ := m["flaky"].(int64); int64(c.Attempt) <= k {
			return interp.Outcome{Err: fmt.Errorf("%s: the price service timed out on attempt %d", c.NodeID, c.Attempt)}
		}
		price := int64(1 + hash("price", sku)%100)
		return interp.Outcome{Output: map[string]any{"sku": sku, "qty": qty, "total": qty * price}}
	case "finish":
		m, _ := c.Input.(map[string]any)
		branches := make([]string, 0, len(m))
		for k := range m {
			branches = append(branches, k)
		}
		sort.Strings(branches)
		return interp.Outcome{Output: map[string]any{"branches": branches}, Sets: map[string]any{"finished": true}}
	}
	// score, and flaky and slow once they succeed.
	o := interp.Outcome{Output: map[string]any{"part": part, "v": int64(hash(part, c.Input) % 100)}}
	if set, ok := p["set"].(map[string]any); ok {
		o.Sets = set
	}
	return o
}

// hash is a stable hash of a label and a JSON-like value.
func hash(label string, v any) uint64 {
	h := fnv.New64a()
	h.Write([]byte(label))
	h.Write([]byte{0})
	b, _ := json.Marshal(v) // JSON-like values always marshal; map keys are sorted
	h.Write(b)
	return h.Sum64()
}

// Builtin reports whether a node kind is one the engine runs itself: a
// registered function of that name would replace it.
func Builtin(uses string) bool { return interp.Builtin(uses) != "" || uses == interp.LoopController }

// Expect interprets one run of the chaos blueprint and returns, besides
// the interpreter's result, the resume of every wait and webhook node the
// run reaches (interp.Result.Resumes): the output and action the driver
// resumes it with, as the model gives them.
func Expect(bp *sqsadapter.Blueprint, initial map[string]any) (*interp.Result, map[string]interp.Outcome, error) {
	all, err := Blueprints()
	if err != nil {
		return nil, nil, err
	}
	res, err := interp.Run(bp, initial, Model, interp.WithBlueprints(all[1:]...))
	if err != nil {
		return nil, nil, err
	}
	return res, res.Resumes, nil
}

// Registry returns the node registry of the chaos workers: Model for every
// node but the built-ins, and for "slow" nodes a sleep of slow first, which
// honours ctx (a lost message or a hard shutdown cancels it); and Model
// for the workers of map nodes, whose items it calls with the definition
// the interpreter gives them (interp.ItemName: the item's id, the worker's
// "uses", no params).
func Registry(bp *sqsadapter.Blueprint, slow time.Duration) sqsadapter.NodeRegistry {
	defs := map[[2]string]*sqsadapter.NodeDefinition{}
	reg := sqsadapter.NodeRegistry{}
	bps := []*sqsadapter.Blueprint{bp}
	if all, err := Blueprints(); err == nil {
		bps = append(bps, all[1:]...) // the subflows' blueprints
	}
	for _, b := range bps {
		for i := range b.Nodes {
			d := &b.Nodes[i]
			if !Builtin(d.Uses) {
				defs[[2]string{b.ID, d.ID}] = d
			}
		}
	}
	for _, b := range bps {
		for _, d := range b.Nodes {
			if w, _ := d.Params["worker"].(string); d.Uses == interp.BuiltinMap && w != "" {
				reg[w] = func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
					o := interp.ApplyModel(Model, &sqsadapter.NodeDefinition{ID: nc.NodeID, Uses: w}, nc)
					return sqsadapter.NodeResult{Output: o.Output, Action: o.Action}, o.Err
				}
			}
		}
	}
	for _, d := range defs {
		reg[d.Uses] = func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
			def := defs[[2]string{nc.BlueprintID, nc.NodeID}]
			if def == nil {
				return sqsadapter.NodeResult{}, sqsadapter.Permanent(fmt.Errorf("chaos: unknown node %s/%s", nc.BlueprintID, nc.NodeID))
			}
			if def.Uses == "slow" {
				t := time.NewTimer(slow)
				select {
				case <-ctx.Done():
					t.Stop()
					return sqsadapter.NodeResult{}, context.Cause(ctx)
				case <-t.C:
				}
			}
			o := interp.ApplyModel(Model, def, nc)
			return sqsadapter.NodeResult{Output: o.Output, Action: o.Action}, o.Err
		}
	}
	return reg
}
