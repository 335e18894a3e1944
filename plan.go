package sqsadapter

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf16"

	"github.com/flowcraft/sqsadapter/internal/expr"
)

// plan is a validated blueprint compiled for execution: graph facts derived
// once, expressions compiled once, and the keys each node reads.
type plan struct {
	bp      *Blueprint
	id      string
	version string
	nodes   map[string]*planNode
	order   []*planNode // blueprint order, fallback-only nodes included
	starts  []*planNode
	// leaves and anyJoins are where completion can be decided: a run is
	// complete when every leaf is resolved and every "any" join has heard
	// from all its predecessors (see docs/protocol.md).
	leaves   []*planNode
	anyJoins []*planNode
	allIDs   []string // every schedulable node
	// closeIDs are the records closed when a run fails or is cancelled:
	// every schedulable node's, and the attempt record of every fallback,
	// so that no node or fallback of a finished run starts.
	closeIDs []string
	loops    []*loopShape // loop.go
}

type planNode struct {
	def          *NodeDefinition
	id           string
	fn           NodeFunc
	builtin      string // "wait", "webhook", "sleep" or "subflow": run by the engine (waiting.go, subflow.go)
	subflow      *subflowSpec
	preds        []string // distinct sources of incoming edges, blueprint order
	out          []*planEdge
	targets      []*planNode // distinct targets of out, blueprint order
	join         string      // "" (at most one predecessor), "all" or "any"
	start        bool
	leaf         bool
	fallbackOnly bool
	fallback     *planNode
	batch        *batchSpec // a batch's scatter or gather (batchmap.go)
	loop         *loopShape // the loop whose body or controller this is (loop.go)
	iter         int        // the iteration of a loop node; its record is iterID(def.ID, iter)

	maxAttempts int
	retryDelay  time.Duration
	timeout     time.Duration

	// inputKeys are the context keys read to resolve the node's "inputs".
	inputKeys []string
	// transformedIn: the node has "inputs", is not an "all" join, and an
	// incoming edge has a transform, whose result, when that edge fires
	// the node, is the node's input instead (reference §3.6).
	transformedIn bool
	// exprKeys are the context keys read by the conditions and transforms of
	// the node's outgoing edges; exprAll means they need the whole context.
	exprKeys []string
	exprAll  bool
	// exprContext: some outgoing expression reads the context at all.
	exprContext bool
	// exprSelf: some outgoing expression reads the node's own output by
	// its id; it is added to what they see, not loaded.
	exprSelf bool
}

type planEdge struct {
	target    *planNode
	action    string
	condition *expr.Program
	transform *expr.Program
	index     int // position in Blueprint.Edges
	// warned is set once a failure of the edge's expressions was logged.
	warned atomic.Bool
}

// transformKey is the context key whose value an edge from source
// transforms instead of source's output, when present (reference §3.6): the
// key named by the target's string "inputs" ("_…" as written, else that
// node's output), unless "inputs" names source itself; "" when none.
func transformKey(target *planNode, source string) string {
	ref, ok := target.def.Inputs.(string)
	switch {
	case !ok || ref == "" || ref == source:
		return ""
	case strings.HasPrefix(ref, "_"):
		return ref
	default:
		return outputsPrefix + ref
	}
}

func (n *planNode) isJoin() bool { return n.join != "" }

// isPred reports whether the node id is a predecessor of n.
func (p *plan) isPred(id string, n *planNode) bool { return slices.Contains(n.preds, id) }

// compilePlan validates bp and compiles it against reg (nil reg: functions
// are not resolved, for tests of the graph alone).
func compilePlan(bp *Blueprint, reg NodeRegistry) (*plan, error) {
	if err := bp.Validate(); err != nil {
		return nil, err
	}
	bp, mapNames, err := expandMaps(bp, reg)
	if err != nil {
		return nil, err
	}
	p := &plan{bp: bp, id: bp.ID, version: bp.Version(), nodes: make(map[string]*planNode, len(bp.Nodes))}
	var problems []string
	fbOnly := bp.fallbackOnly()
	for i := range bp.Nodes {
		def := &bp.Nodes[i]
		n := &planNode{
			def:          def,
			id:           def.ID,
			fallbackOnly: fbOnly[def.ID],
			maxAttempts:  max(def.Config.MaxRetries, 1),
			retryDelay:   time.Duration(def.Config.RetryDelay) * time.Millisecond,
			timeout:      time.Duration(def.Config.Timeout) * time.Millisecond,
		}
		if reg != nil {
			fn, ok := reg[def.Uses]
			switch {
			case def.Uses == builtinLoop:
				n.builtin = def.Uses // the engine's alone: it shapes the graph (loop.go)
			case ok && fn != nil:
				n.fn = fn
			case def.Uses == builtinWait || def.Uses == builtinWebhook || def.Uses == builtinSleep:
				n.builtin = def.Uses // a registered function of that name overrides it
			case def.Uses == builtinSubflow:
				n.builtin = def.Uses
				n.subflow, _ = parseSubflow(def.Params) // valid: Validate parsed it
			case def.Uses == builtinScatter || def.Uses == builtinGather:
				n.builtin = def.Uses // likewise (batchmap.go)
			default:
				problems = append(problems, fmt.Sprintf("node %q uses %q, which is not in the registry", def.ID, def.Uses))
			}
		}
		p.nodes[def.ID] = n
		p.order = append(p.order, n)
	}
	nodeIDs := expr.NodeIDs(slices.Collect(maps.Keys(p.nodes))...)
	for i, e := range bp.Edges {
		src, dst := p.nodes[e.Source], p.nodes[e.Target]
		pe := &planEdge{target: dst, action: e.Action, index: i}
		var err error
		if e.Condition != "" {
			if pe.condition, err = expr.Compile(e.Condition, nodeIDs); err != nil {
				return nil, err // Validate compiled it already
			}
		}
		if e.Transform != "" {
			if pe.transform, err = expr.Compile(e.Transform, nodeIDs); err != nil {
				return nil, err
			}
		}
		src.out = append(src.out, pe)
		if !slices.Contains(dst.preds, src.id) {
			dst.preds = append(dst.preds, src.id)
		}
		if !slices.Contains(src.targets, dst) {
			src.targets = append(src.targets, dst)
		}
	}
	shapes, _ := bp.loopShapes(nodeIDs) // valid: Validate checked them
	p.addLoops(shapes)
	for _, n := range p.order {
		if f := n.def.Config.Fallback; f != "" {
			n.fallback = p.nodes[f]
		}
		if len(n.preds) > 1 {
			n.join = n.def.Config.JoinStrategy
			if n.join == "" {
				n.join = "all"
			}
		}
		n.inputKeys = inputKeys(n.def.Inputs) // a fallback reads its own "inputs" too
		if n.def.Inputs != nil && n.join != "all" {
			for _, src := range n.preds {
				for _, e := range p.nodes[src].out {
					n.transformedIn = n.transformedIn || (e.target == n && e.transform != nil)
				}
			}
		}
		if n.fallbackOnly {
			continue
		}
		p.allIDs = append(p.allIDs, n.id)
		p.closeIDs = append(p.closeIDs, n.id)
		if n.fallback != nil {
			p.closeIDs = append(p.closeIDs, fallbackRecord(n.id))
		}
		n.start = len(n.preds) == 0
		n.leaf = len(n.out) == 0
		if n.start {
			p.starts = append(p.starts, n)
		}
		if n.leaf {
			p.leaves = append(p.leaves, n)
		}
		if n.join == "any" {
			p.anyJoins = append(p.anyJoins, n)
		}
		if n.subflow != nil {
			// Read at load, with the expressions' keys: what seeds the child.
			for _, k := range n.subflow.parentKeys() {
				if !slices.Contains(n.exprKeys, k) {
					n.exprKeys = append(n.exprKeys, k)
				}
			}
		}
		for _, e := range n.out {
			if k := transformKey(e.target, n.id); e.transform != nil && k != "" && !slices.Contains(n.exprKeys, k) {
				n.exprKeys = append(n.exprKeys, k)
			}
			for _, prog := range []*expr.Program{e.condition, e.transform} {
				if prog == nil {
					continue
				}
				keys, all := prog.ContextKeys()
				n.exprAll = n.exprAll || all
				n.exprContext = n.exprContext || all || len(keys) > 0
				for _, k := range keys {
					if k == outputsPrefix+n.id {
						n.exprSelf = true
						continue
					}
					if !slices.Contains(n.exprKeys, k) {
						n.exprKeys = append(n.exprKeys, k)
					}
				}
			}
		}
	}
	if reg != nil {
		problems = append(problems, compileBatches(p, reg, mapNames)...)
	}
	if len(problems) > 0 {
		return nil, &BlueprintError{BlueprintID: bp.ID, Problems: problems}
	}
	return p, nil
}

// inputKeys lists the context keys that resolving inputs may read.
func inputKeys(inputs any) []string {
	var keys []string
	add := func(ref string) {
		for _, k := range refKeys(ref) {
			if !slices.Contains(keys, k) {
				keys = append(keys, k)
			}
		}
	}
	switch in := inputs.(type) {
	case string:
		add(in)
	case map[string]any:
		for _, v := range in {
			switch r := v.(type) {
			case string:
				add(r)
			case []any:
				for _, e := range r {
					if s, ok := e.(string); ok {
						add(s)
					}
				}
			}
		}
	}
	return keys
}

// refKeys lists the keys an input reference reads (reference §2.4): a raw
// key for "_…", the base node's output for "node.path", else the node output
// of that name and, failing it, the context key.
func refKeys(ref string) []string {
	switch {
	case strings.HasPrefix(ref, "_"):
		return []string{ref}
	case strings.Contains(ref, "."):
		base, _, _ := strings.Cut(ref, ".")
		return []string{outputsPrefix + base}
	default:
		return []string{outputsPrefix + ref, ref}
	}
}

// resolveRef resolves one input reference against values read by refKeys.
func resolveRef(ref string, vals map[string]any) any {
	switch {
	case strings.HasPrefix(ref, "_"):
		return vals[ref]
	case strings.Contains(ref, "."):
		base, path, _ := strings.Cut(ref, ".")
		v, ok := vals[outputsPrefix+base]
		if !ok || v == nil {
			return nil
		}
		return walkPath(v, strings.Split(path, "."))
	default:
		if v, ok := vals[outputsPrefix+ref]; ok {
			return v
		}
		return vals[ref]
	}
}

// resolveInputs builds a node's input from its "inputs" definition.
func resolveInputs(inputs any, vals map[string]any) any {
	switch in := inputs.(type) {
	case string:
		return resolveRef(in, vals)
	case map[string]any:
		out := make(map[string]any, len(in))
		for name, v := range in {
			switch r := v.(type) {
			case string:
				out[name] = resolveRef(r, vals)
			case []any: // first present
				out[name] = nil
				for _, e := range r {
					s, _ := e.(string)
					if got := resolveRef(s, vals); got != nil {
						out[name] = got
						break
					}
				}
			}
		}
		return out
	}
	return nil
}

func walkPath(v any, path []string) any {
	for _, seg := range path {
		switch x := v.(type) {
		case map[string]any:
			v = x[seg]
		case []any:
			if seg == "length" {
				v = int64(len(x))
				break
			}
			i, err := parseIndex(seg)
			if err != nil || i >= len(x) {
				return nil
			}
			v = x[i]
		case string:
			if seg != "length" {
				return nil
			}
			v = int64(len(utf16.Encode([]rune(x)))) // JavaScript counts UTF-16 code units
		default:
			return nil
		}
		if v == nil {
			return nil
		}
	}
	return v
}

func parseIndex(s string) (int, error) {
	if s == "" || len(s) > 9 {
		return 0, fmt.Errorf("bad index")
	}
	n := 0
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("bad index")
		}
		n = n*10 + int(c-'0')
	}
	return n, nil
}
