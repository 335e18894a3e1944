package interp

import (
	"fmt"
	"slices"

	"github.com/flowcraft/sqsadapter"
)

// graph is a blueprint's structure, in the form the interpreter walks.
type graph struct {
	defs  map[string]*sqsadapter.NodeDefinition
	preds map[string][]string // distinct predecessors, in edge order
	out   map[string][]sqsadapter.EdgeDefinition
	order []string // topological, blueprint order among ready nodes; fallback-only nodes excluded
	// before[id] are the nodes certainly resolved before id runs, whatever
	// the timing: every predecessor of a single-edge node or an "all" join
	// and what precedes them; for an "any" join, only what precedes every
	// one of its predecessors.
	before map[string]map[string]bool
	ids    []string // every node id, sorted: in expressions they name outputs
	// items maps the batch items that ran (ItemName) to their scatters.
	items map[string]string
}

func newGraph(bp *sqsadapter.Blueprint) (*graph, error) {
	g := &graph{
		defs:   map[string]*sqsadapter.NodeDefinition{},
		preds:  map[string][]string{},
		out:    map[string][]sqsadapter.EdgeDefinition{},
		before: map[string]map[string]bool{},
		items:  map[string]string{},
	}
	for i := range bp.Nodes {
		d := &bp.Nodes[i]
		if _, dup := g.defs[d.ID]; dup {
			return nil, fmt.Errorf("interp: blueprint %s: duplicate node %q", bp.ID, d.ID)
		}
		g.defs[d.ID] = d
		g.ids = append(g.ids, d.ID)
	}
	slices.Sort(g.ids)
	isTarget := map[string]bool{}
	for _, e := range bp.Edges {
		if g.defs[e.Source] == nil || g.defs[e.Target] == nil {
			return nil, fmt.Errorf("interp: blueprint %s: edge %s -> %s references a missing node", bp.ID, e.Source, e.Target)
		}
		isTarget[e.Target] = true
		g.out[e.Source] = append(g.out[e.Source], e)
		if !slices.Contains(g.preds[e.Target], e.Source) && !isLoopBack(g.defs, e) {
			g.preds[e.Target] = append(g.preds[e.Target], e.Source)
		}
	}
	fallbackOnly := map[string]bool{}
	for _, d := range bp.Nodes {
		if f := d.Config.Fallback; f != "" {
			if g.defs[f] == nil {
				return nil, fmt.Errorf("interp: blueprint %s: node %s has a missing fallback %q", bp.ID, d.ID, f)
			}
			if !isTarget[f] {
				fallbackOnly[f] = true
			}
		}
	}
	// Kahn's algorithm, in blueprint order among the ready nodes.
	indeg := map[string]int{}
	var ready []string
	for _, d := range bp.Nodes {
		if fallbackOnly[d.ID] {
			continue
		}
		indeg[d.ID] = len(g.preds[d.ID])
		if indeg[d.ID] == 0 {
			ready = append(ready, d.ID)
		}
	}
	for len(ready) > 0 {
		id := ready[0]
		ready = ready[1:]
		g.order = append(g.order, id)
		g.before[id] = g.certainlyBefore(id)
		var next []string
		for _, e := range g.out[id] {
			if !slices.Contains(next, e.Target) {
				next = append(next, e.Target)
			}
		}
		for _, t := range next {
			if indeg[t]--; indeg[t] == 0 {
				ready = append(ready, t)
			}
		}
	}
	if len(g.order) != len(indeg) {
		return nil, fmt.Errorf("interp: blueprint %s has a cycle", bp.ID)
	}
	return g, nil
}

// arrival decides, from its predecessors' fates, whether node id runs (Ran),
// is skipped, or is blocked behind a failure.
func (g *graph) arrival(id string, states map[string]State, taken map[string]map[string]bool) State {
	ps := g.preds[id]
	switch len(ps) {
	case 0:
		return Ran
	case 1:
		switch states[ps[0]] {
		case Ran:
			if !taken[ps[0]][id] {
				return Skipped
			}
			return Ran
		case Skipped:
			return Skipped
		default:
			return Blocked
		}
	}
	anyTaken, anyBad := false, false
	for _, p := range ps {
		anyTaken = anyTaken || (states[p] == Ran && taken[p][id])
		anyBad = anyBad || states[p] == Failed || states[p] == Blocked
	}
	if g.defs[id].Config.JoinStrategy == "any" {
		switch {
		case anyTaken:
			return Ran
		case anyBad:
			return Blocked
		}
		return Skipped
	}
	switch {
	case anyBad:
		return Blocked
	case !anyTaken:
		return Skipped
	}
	return Ran
}

// certainlyBefore computes before[id] from its predecessors' sets.
func (g *graph) certainlyBefore(id string) map[string]bool {
	ps := g.preds[id]
	upTo := func(p string) map[string]bool {
		m := map[string]bool{p: true}
		for q := range g.before[p] {
			m[q] = true
		}
		return m
	}
	if len(ps) > 1 && g.defs[id].Config.JoinStrategy == "any" {
		common := upTo(ps[0])
		for _, p := range ps[1:] {
			other := upTo(p)
			for q := range common {
				if !other[q] {
					delete(common, q)
				}
			}
		}
		return common
	}
	m := map[string]bool{}
	for _, p := range ps {
		for q := range upTo(p) {
			m[q] = true
		}
	}
	return m
}

// lastWrites returns the values a key can end with, given the writes of
// nodes that all run: those of the writers that no other writer certainly
// follows.
func (g *graph) lastWrites(ws []write) []any {
	var final []any
	for _, w := range ws {
		overwritten := false
		for _, o := range ws {
			if o.node != w.node && g.follows(o.node, w.node) {
				overwritten = true
				break
			}
		}
		if !overwritten {
			final = append(final, w.value)
		}
	}
	return final
}

// follows reports whether node or batch item a certainly runs after node
// or item b. An item of scatter S runs after S and what precedes S, and
// before S's gather, S's only successor: so before whatever certainly
// follows S. The items of one scatter are concurrent.
func (g *graph) follows(a, b string) bool {
	sa, aItem := g.items[a]
	// precedes reports whether id certainly runs before a.
	precedes := func(id string) bool {
		if aItem {
			return id == sa || g.before[sa][id]
		}
		return g.before[a][id]
	}
	if sb, bItem := g.items[b]; bItem {
		return !(aItem && sa == sb) && precedes(sb)
	}
	return precedes(b)
}
