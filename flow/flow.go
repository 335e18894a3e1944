// Package flow builds sqsadapter blueprints in Go, the way Flowcraft's
// createFlow builds them in TypeScript: the same calls give the same
// Blueprint as createFlow(...).toBlueprint() — node ids, uses, inputs,
// params, config, and edges in the same order after the rewiring of batch
// and loop edges.
//
//	bp, err := flow.New("order").
//		Node("fetch", "fetchOrder", flow.WithInputs("orderId")).
//		Node("charge", "charge").
//		Edge("fetch", "charge", flow.WithCondition("fetch.total < 500")).
//		Build()
//
// Where Flowcraft derives a node's "uses" from a function or class, the
// caller names the registry key (sqsadapter.NodeRegistry). A Builder records
// every problem it meets and Build reports them all at once; each matches
// sqsadapter.ErrInvalidBlueprint with errors.Is.
package flow

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/flowcraft/sqsadapter"
	"github.com/flowcraft/sqsadapter/internal/jsonvalue"
)

// The "uses" keys of Flowcraft's built-in nodes that the Builder emits.
const (
	usesBatchScatter   = "batch-scatter"
	usesBatchGather    = "batch-gather"
	usesLoopController = "loop-controller"
	usesSubflow        = "subflow"
	usesSleep          = "sleep"
	usesWait           = "wait"
)

// Builder assembles a blueprint. Its methods return the Builder, for
// chaining, and never fail: problems are reported by Build. A Builder is not
// safe for concurrent use.
type Builder struct {
	id       string
	nodes    []sqsadapter.NodeDefinition
	edges    []sqsadapter.EdgeDefinition
	loops    []LoopOptions // in order of Loop calls; loopIDs[i] is the id of loops[i]
	loopIDs  []string
	batches  []string // batch ids, in order of Batch calls
	problems []string
}

// New returns a Builder for a blueprint with this id.
func New(id string) *Builder {
	return &Builder{id: id}
}

func (b *Builder) fail(format string, args ...any) {
	b.problems = append(b.problems, fmt.Sprintf(format, args...))
}

// add appends a node after applying opts, converting its params and inputs
// to their JSON form (a copy).
func (b *Builder) add(n sqsadapter.NodeDefinition, opts ...NodeOption) {
	for _, o := range opts {
		o(&n)
	}
	if n.ID == "" {
		b.fail("a node using %q has an empty id", n.Uses)
		return
	}
	var err error
	if n.Params, err = normalize(n.Params); err != nil {
		b.fail("node %q: params: %v", n.ID, err)
	}
	if n.Inputs, err = normalize(n.Inputs); err != nil {
		b.fail("node %q: inputs: %v", n.ID, err)
	}
	b.nodes = append(b.nodes, n)
}

// normalize returns a copy of v in the form sqsadapter.ParseBlueprint
// decodes JSON to.
func normalize[T any](v T) (T, error) {
	var zero T
	n, err := jsonvalue.Normalize(v)
	if err != nil {
		return zero, err
	}
	out, _ := n.(T) // nil for a nil map
	return out, nil
}

// Node adds a node running the registry's uses key.
func (b *Builder) Node(id, uses string, opts ...NodeOption) *Builder {
	b.add(sqsadapter.NodeDefinition{ID: id, Uses: uses}, opts...)
	return b
}

// Edge adds an edge from source to target. Source or target may name a
// batch (see Batch); an edge leaving a loop controller is rewired by Build
// (see Loop).
func (b *Builder) Edge(source, target string, opts ...EdgeOption) *Builder {
	e := sqsadapter.EdgeDefinition{Source: source, Target: target}
	for _, o := range opts {
		o(&e)
	}
	b.edges = append(b.edges, e)
	return b
}

// Batch adds a scatter-gather over the array at o.InputKey: node
// "<id>_scatter" (uses "batch-scatter") runs workerUses on each item, and
// node "<id>_gather" (uses "batch-gather", joinStrategy "all") writes the
// results to o.OutputKey, with an edge between them. The id itself is not a
// node: at Build, edges into id lead to the scatter node and edges out of id
// leave the gather node.
func (b *Builder) Batch(id, workerUses string, o BatchOptions) *Builder {
	if id == "" {
		b.fail("a batch of %q has an empty id", workerUses)
		return b
	}
	for _, f := range [...]struct{ name, v string }{{"worker uses", workerUses}, {"InputKey", o.InputKey}, {"OutputKey", o.OutputKey}} {
		if f.v == "" {
			b.fail("batch %q: %s is empty", id, f.name)
		}
	}
	if o.ChunkSize < 0 {
		b.fail("batch %q: ChunkSize is negative (%d)", id, o.ChunkSize)
	}
	scatter, gather := id+"_scatter", id+"_gather"
	params := map[string]any{"workerUsesKey": workerUses, "outputKey": o.OutputKey, "gatherNodeId": gather}
	if o.ChunkSize != 0 {
		params["chunkSize"] = o.ChunkSize
	}
	b.batches = append(b.batches, id)
	b.add(sqsadapter.NodeDefinition{ID: scatter, Uses: usesBatchScatter, Inputs: o.InputKey, Params: params})
	b.add(sqsadapter.NodeDefinition{
		ID: gather, Uses: usesBatchGather,
		Params: map[string]any{"outputKey": o.OutputKey, "gatherNodeId": gather},
		Config: sqsadapter.NodeConfig{JoinStrategy: "all"},
	})
	return b.Edge(scatter, gather)
}

// Loop adds node id (uses "loop-controller", joinStrategy "any") that runs
// the body from o.StartNodeID to o.EndNodeID again while o.Condition holds:
// an edge from the end node to id, and an edge from id to the start node
// with action "continue" and transform context["<EndNodeID>"]. At Build,
// every edge from id to a node other than the start node (an exit) gets
// that transform and, if it has none, action "break". Both body nodes must
// exist by Build. Build's validation checks the loop's shape (see the
// sqsadapter README's Loops section): its body is entered at the start
// node or at id, and left only through id's exits.
func (b *Builder) Loop(id string, o LoopOptions) *Builder {
	if id == "" {
		b.fail("a loop from %q to %q has an empty id", o.StartNodeID, o.EndNodeID)
		return b
	}
	if o.Condition == "" {
		b.fail("loop %q: Condition is empty", id)
	}
	b.loops, b.loopIDs = append(b.loops, o), append(b.loopIDs, id)
	b.add(sqsadapter.NodeDefinition{
		ID: id, Uses: usesLoopController,
		Params: map[string]any{"condition": o.Condition},
		Config: sqsadapter.NodeConfig{JoinStrategy: "any"},
	})
	b.Edge(o.EndNodeID, id)
	return b.Edge(id, o.StartNodeID, WithAction("continue"), WithTransform(loopTransform(o)))
}

// loopTransform is the transform of the edges leaving a loop controller: the
// loop body's last output.
func loopTransform(o LoopOptions) string {
	return `context["` + o.EndNodeID + `"]`
}

// Subflow adds a node (uses "subflow") running the blueprint blueprintID as
// a child workflow, with params {blueprintId, inputs, outputs}; empty maps
// are left out. opts may set inputs, config and further params.
func (b *Builder) Subflow(id, blueprintID string, o SubflowOptions, opts ...NodeOption) *Builder {
	opts = append(slices.Clip(opts), func(n *sqsadapter.NodeDefinition) {
		n.Params = maps.Clone(n.Params)
		if n.Params == nil {
			n.Params = make(map[string]any, 3)
		}
		n.Params["blueprintId"] = blueprintID
		if len(o.Inputs) > 0 {
			n.Params["inputs"] = o.Inputs
		}
		if len(o.Outputs) > 0 {
			n.Params["outputs"] = o.Outputs
		}
	})
	b.add(sqsadapter.NodeDefinition{ID: id, Uses: usesSubflow}, opts...)
	return b
}

// Sleep adds a node (uses "sleep") that pauses the run for duration:
// milliseconds (an integer), a string such as "15m" (s, m, h or d), or a
// time.Duration, stored as whole milliseconds.
func (b *Builder) Sleep(id string, duration any) *Builder {
	if d, ok := duration.(time.Duration); ok {
		duration = d.Milliseconds()
	}
	b.add(sqsadapter.NodeDefinition{ID: id, Uses: usesSleep, Params: map[string]any{"duration": duration}})
	return b
}

// Wait adds a node (uses "wait") that pauses the run until it is resumed
// with external input.
func (b *Builder) Wait(id string, opts ...NodeOption) *Builder {
	b.add(sqsadapter.NodeDefinition{ID: id, Uses: usesWait}, opts...)
	return b
}

// Build returns the blueprint, or every problem the Builder recorded, joined
// (each a *sqsadapter.BlueprintError). With no such problem it returns what
// the blueprint's Validate returns. Build does not change the Builder, may
// be called again, and shares no map or slice with the Builder or with
// blueprints it returned before.
//
// Edges come out as Flowcraft's toBlueprint orders them: first the exits of
// each loop, then each batch's edges in and out, then the rest, each group
// in the order of the Edge calls. One deviation: an edge from a batch or a
// loop into a batch is rewired once, at both ends (for example
// "<a>_gather" -> "<b>_scatter"), where Flowcraft makes it two edges, each
// with an end that is not a node.
func (b *Builder) Build() (*sqsadapter.Blueprint, error) {
	bp, err := b.assemble()
	if err != nil {
		return nil, err
	}
	if err := bp.Validate(); err != nil {
		return nil, err
	}
	return bp, nil
}

// assemble checks what the Builder recorded and returns the blueprint,
// unvalidated, with the edges of batches and loops rewired as Flowcraft's
// toBlueprint does.
func (b *Builder) assemble() (*sqsadapter.Blueprint, error) {
	problems := slices.Clone(b.problems)
	fail := func(format string, args ...any) {
		problems = append(problems, fmt.Sprintf(format, args...))
	}
	if len(b.nodes) == 0 {
		fail("blueprint has no nodes")
	}
	nodes := make(map[string]int, len(b.nodes))
	for _, n := range b.nodes {
		if nodes[n.ID]++; nodes[n.ID] == 2 {
			fail("node %q is defined more than once", n.ID)
		}
	}
	batches := make(map[string]int, len(b.batches))
	for i, id := range b.batches {
		if _, dup := batches[id]; dup {
			fail("batch %q is defined more than once", id)
			continue
		}
		batches[id] = i
		if nodes[id] > 0 {
			fail("batch %q has the id of a node", id)
		}
	}
	loops := make(map[string]int, len(b.loops))
	for i, o := range b.loops {
		id := b.loopIDs[i]
		if _, dup := loops[id]; !dup {
			loops[id] = i
		}
		if nodes[o.StartNodeID] == 0 {
			fail("loop %q: start node %q is not a node", id, o.StartNodeID)
		}
		if nodes[o.EndNodeID] == 0 {
			fail("loop %q: end node %q is not a node", id, o.EndNodeID)
		}
	}
	if len(problems) > 0 {
		errs := make([]error, len(problems))
		for i, p := range problems {
			errs[i] = &sqsadapter.BlueprintError{BlueprintID: b.id, Problems: []string{p}}
		}
		return nil, errors.Join(errs...)
	}

	bp := &sqsadapter.Blueprint{ID: b.id, Nodes: make([]sqsadapter.NodeDefinition, len(b.nodes))}
	for i, n := range b.nodes {
		n.Params, _ = normalize(n.Params) // a copy; add made sure it converts
		n.Inputs, _ = normalize(n.Inputs)
		bp.Nodes[i] = n
	}
	bp.Edges = b.rewire(loops, batches)
	return bp, nil
}

// rewire returns the edges as Flowcraft's toBlueprint orders and rewrites
// them: first the edges leaving each loop controller (other than to its
// start node), loop by loop, given the loop's transform and by default
// action "break"; then, batch by batch, the edges into the batch, led to its
// scatter node, and the edges out of it, leaving its gather node; then every
// other edge, each group in the order the edges were added.
//
// Flowcraft rewrites an edge that two of these rules match — from a loop or
// a batch into a batch — twice, into two edges, each with one end that is
// not a node. Here the rules compose into one edge, placed where Flowcraft
// places the first.
func (b *Builder) rewire(loops, batches map[string]int) []sqsadapter.EdgeDefinition {
	type ranked struct {
		rank int
		e    sqsadapter.EdgeDefinition
	}
	others := len(b.loops) + 2*len(b.batches) // the rank of an edge no rule matches
	out := make([]ranked, len(b.edges))
	for i, e := range b.edges {
		rank := others
		if l, ok := loops[e.Source]; ok && e.Target != b.loops[l].StartNodeID {
			rank = l
			if e.Action == "" {
				e.Action = "break"
			}
			e.Transform = loopTransform(b.loops[l])
		}
		if j, ok := batches[e.Target]; ok {
			rank = min(rank, len(b.loops)+2*j)
			e.Target = b.batches[j] + "_scatter"
		}
		if j, ok := batches[e.Source]; ok {
			rank = min(rank, len(b.loops)+2*j+1)
			e.Source = b.batches[j] + "_gather"
		}
		out[i] = ranked{rank, e}
	}
	slices.SortStableFunc(out, func(x, y ranked) int { return x.rank - y.rank })
	edges := make([]sqsadapter.EdgeDefinition, len(out))
	for i, r := range out {
		edges[i] = r.e
	}
	return edges
}
