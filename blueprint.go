package sqsadapter

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/flowcraft/sqsadapter/internal/expr"
	"github.com/flowcraft/sqsadapter/internal/jsonvalue"
	"github.com/flowcraft/sqsadapter/internal/limits"
)

// Blueprint is a Flowcraft workflow definition: a DAG of nodes joined by edges.
// It is the unchanged Flowcraft JSON format; see ParseBlueprint.
type Blueprint struct {
	ID       string           `json:"id"`
	Nodes    []NodeDefinition `json:"nodes"`
	Edges    []EdgeDefinition `json:"edges"`
	Metadata map[string]any   `json:"metadata,omitempty"` // "version" is the blueprint version
}

// NodeDefinition is one step of a blueprint.
type NodeDefinition struct {
	ID string `json:"id"`
	// Uses is the NodeRegistry key of the node's implementation.
	Uses string `json:"uses"`
	// Params are passed to the node as given (NodeContext.Params).
	Params map[string]any `json:"params,omitempty"`
	// Inputs says how the node's input is resolved: a string (one key) or a
	// map of names to keys (see the package documentation, "Input resolution").
	Inputs any        `json:"inputs,omitempty"`
	Config NodeConfig `json:"config,omitempty"`
	// SourceLocation is Flowcraft's optional debugging metadata; it is kept but unused.
	SourceLocation map[string]any `json:"_sourceLocation,omitempty"`
}

// NodeConfig holds a node's execution policy.
type NodeConfig struct {
	// MaxRetries is the total number of attempts (Flowcraft semantics); values < 1 mean 1.
	MaxRetries int `json:"maxRetries,omitempty"`
	// RetryDelay is the delay before a retry, in milliseconds.
	RetryDelay int64 `json:"retryDelay,omitempty"`
	// Timeout bounds each attempt, in milliseconds; 0 means the adapter's
	// default (WithNodeTimeout: 5 minutes unless set). At the timeout the
	// attempt's ctx is cancelled and the attempt ends within 50 ms, even if
	// the function ignores its ctx: it gets 20 ms to return, then it is
	// abandoned and its late result discarded.
	Timeout int64 `json:"timeout,omitempty"`
	// Fallback is the id of a node run in this node's place when it fails for good.
	Fallback string `json:"fallback,omitempty"`
	// JoinStrategy is "all" (default) or "any" for a node with several predecessors.
	JoinStrategy string `json:"joinStrategy,omitempty"`
}

// EdgeDefinition connects two nodes.
type EdgeDefinition struct {
	Source string `json:"source"`
	Target string `json:"target"`
	// Action makes the edge eligible only when the source's result has this action.
	Action string `json:"action,omitempty"`
	// Condition is an expression that must be truthy for the edge to be taken.
	Condition string `json:"condition,omitempty"`
	// Transform is an expression computing the target's input.
	Transform string `json:"transform,omitempty"`
	// SourceLocation is Flowcraft's optional debugging metadata; it is kept but unused.
	SourceLocation map[string]any `json:"_sourceLocation,omitempty"`
}

// Version returns the blueprint version, metadata["version"], or "" when absent.
func (b *Blueprint) Version() string {
	if b == nil || b.Metadata == nil {
		return ""
	}
	switch v := b.Metadata["version"].(type) {
	case string:
		return v
	case nil:
		return ""
	default:
		return jsonvalue.String(v)
	}
}

// ParseBlueprint decodes a blueprint from Flowcraft JSON and validates it.
//
// Every Flowcraft field is accepted, including "_sourceLocation" on nodes
// and edges and open-ended metadata; unknown fields are ignored. "nodes" and
// "edges" may be arrays or, as Flowcraft also allows, objects whose values
// are the definitions, taken in the order of their keys. Integers in params,
// inputs and metadata decode as int64, like run-context values.
//
// Malformed JSON returns the JSON error wrapped with ErrInvalidBlueprint; a
// blueprint that decodes but is invalid returns a *BlueprintError listing
// every problem (see Validate). ParseBlueprint is safe for concurrent use.
func ParseBlueprint(data []byte) (*Blueprint, error) {
	var b Blueprint
	if err := json.Unmarshal(data, &b); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidBlueprint, err)
	}
	if err := b.Validate(); err != nil {
		return nil, err
	}
	return &b, nil
}

// UnmarshalJSON decodes a blueprint as ParseBlueprint does, without
// validating it.
func (b *Blueprint) UnmarshalJSON(data []byte) error {
	data = bytes.TrimSpace(data)
	if string(data) == "null" {
		return nil
	}
	if len(data) == 0 || data[0] != '{' {
		return errors.New("a blueprint must be a JSON object")
	}
	var raw struct {
		ID       string          `json:"id"`
		Nodes    json.RawMessage `json:"nodes"`
		Edges    json.RawMessage `json:"edges"`
		Metadata json.RawMessage `json:"metadata"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return err
	}
	nodes, err := unmarshalDefinitions[NodeDefinition]("nodes", raw.Nodes)
	if err != nil {
		return err
	}
	for i := range nodes {
		n := &nodes[i]
		var errs [3]error
		n.Params, errs[0] = exactJSON(n.Params)
		n.Inputs, errs[1] = exactJSON(n.Inputs)
		n.SourceLocation, errs[2] = exactJSON(n.SourceLocation)
		if err := errors.Join(errs[:]...); err != nil {
			return fmt.Errorf("nodes[%d]: %w", i, err)
		}
	}
	edges, err := unmarshalDefinitions[EdgeDefinition]("edges", raw.Edges)
	if err != nil {
		return err
	}
	for i := range edges {
		if edges[i].SourceLocation, err = exactJSON(edges[i].SourceLocation); err != nil {
			return fmt.Errorf("edges[%d]: %w", i, err)
		}
	}
	var metadata map[string]any
	if len(raw.Metadata) > 0 {
		if err := unmarshalUseNumber(raw.Metadata, &metadata); err != nil {
			return fmt.Errorf("metadata: %w", err)
		}
		if metadata, err = exactJSON(metadata); err != nil {
			return fmt.Errorf("metadata: %w", err)
		}
	}
	*b = Blueprint{ID: raw.ID, Nodes: nodes, Edges: edges, Metadata: metadata}
	return nil
}

// unmarshalDefinitions decodes the definitions of field: an array, an
// object whose values are taken in key order, or null.
func unmarshalDefinitions[T any](field string, data json.RawMessage) ([]T, error) {
	if len(data) == 0 || string(data) == "null" {
		return nil, nil
	}
	var raws []json.RawMessage
	var names []string // the object keys, for errors
	switch data[0] {
	case '[':
		if err := json.Unmarshal(data, &raws); err != nil {
			return nil, fmt.Errorf("%s: %w", field, err)
		}
	case '{':
		var m map[string]json.RawMessage
		if err := json.Unmarshal(data, &m); err != nil {
			return nil, fmt.Errorf("%s: %w", field, err)
		}
		names = slices.Sorted(maps.Keys(m))
		for _, k := range names {
			raws = append(raws, m[k])
		}
	default:
		return nil, fmt.Errorf("%s must be an array or an object", field)
	}
	defs := make([]T, len(raws))
	for i, raw := range raws {
		if err := unmarshalUseNumber(raw, &defs[i]); err != nil {
			if names != nil {
				return nil, fmt.Errorf("%s[%q]: %w", field, names[i], err)
			}
			return nil, fmt.Errorf("%s[%d]: %w", field, i, err)
		}
	}
	return defs, nil
}

// unmarshalUseNumber decodes data into v, numbers in untyped values as json.Number.
func unmarshalUseNumber(data []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	return d.Decode(v)
}

// exactJSON converts the json.Number values in v, decoded with UseNumber,
// to int64 or float64 as run-context values are (see jsonvalue.Decode).
func exactJSON[T any](v T) (T, error) {
	var zero T
	n, err := jsonvalue.Normalize(v)
	if err != nil {
		return zero, err
	}
	out, _ := n.(T) // nil for a nil map
	return out, nil
}

// Validate checks the blueprint and returns a *BlueprintError listing every
// problem found, or nil. It checks that the blueprint has nodes; the
// blueprint id and node ids are valid ids (1 to 256 bytes of UTF-8, not only
// white space, no control characters) and node ids are unique; every node
// has "uses"; "inputs" has a
// supported form; config values are valid (fallback names another node,
// joinStrategy is "all" or "any", durations and retries are not negative);
// edges connect existing nodes; conditions and transforms compile; the graph
// has no cycle except through a loop controller's "continue" edge, each loop
// has the shape loop.go describes, and the graph has a start node; and a
// fallback-only node (see fallbackOnly) has no outgoing edges, since routing
// continues from the node that failed, so those edges could never be taken.
//
// Edges are named "edge #i (source -> target)", i counting from 0 in Edges.
// Validate does not check that "uses" is in a registry; NewSqsAdapter does.
// It does not modify b and is safe for concurrent use.
func (b *Blueprint) Validate() error {
	if b == nil {
		return &BlueprintError{Problems: []string{"blueprint is nil"}}
	}
	var problems []string
	add := func(format string, args ...any) {
		problems = append(problems, fmt.Sprintf(format, args...))
	}
	if err := limits.CheckID("blueprint id", b.ID); err != nil {
		add("%v", err)
	}
	if len(b.Nodes) == 0 {
		add("blueprint has no nodes")
	}
	ids := make(map[string]int, len(b.Nodes)) // id -> number of definitions
	for i, n := range b.Nodes {
		if n.ID == "" {
			add("node #%d has an empty id", i)
			continue
		}
		if err := limits.CheckID("node id", n.ID); err != nil {
			add("node #%d: %v", i, err)
		}
		if ids[n.ID]++; ids[n.ID] == 2 {
			add("node %q is defined more than once", n.ID)
		}
	}
	for i, n := range b.Nodes {
		name := fmt.Sprintf("node %q", n.ID)
		if n.ID == "" {
			name = fmt.Sprintf("node #%d", i)
		}
		if n.Uses == "" {
			add("%s has an empty \"uses\"", name)
		}
		if p := inputsProblem(n.Inputs); p != "" {
			add("%s: %s", name, p)
		}
		c := n.Config
		switch {
		case c.Fallback == "":
		case c.Fallback == n.ID:
			add("%s: fallback names the node itself", name)
		case ids[c.Fallback] == 0:
			add("%s: fallback %q is not a node", name, c.Fallback)
		}
		if c.JoinStrategy != "" && c.JoinStrategy != "all" && c.JoinStrategy != "any" {
			add("%s: joinStrategy %q is not \"all\" or \"any\"", name, c.JoinStrategy)
		}
		if c.MaxRetries < 0 {
			add("%s: maxRetries is negative (%d)", name, c.MaxRetries)
		}
		if c.RetryDelay < 0 {
			add("%s: retryDelay is negative (%d)", name, c.RetryDelay)
		}
		if c.Timeout < 0 {
			add("%s: timeout is negative (%d)", name, c.Timeout)
		}
		if n.Uses == builtinSleep {
			if _, err := sleepDuration(n.Params); err != nil {
				add("%s: sleep: %v", name, err)
			}
		}
		if n.Uses == builtinSubflow {
			if _, err := parseSubflow(n.Params); err != nil {
				add("%s: subflow: %v", name, err)
			}
		}
	}
	nodeIDs := expr.NodeIDs(slices.Collect(maps.Keys(ids))...)
	for i, e := range b.Edges {
		name := fmt.Sprintf("edge #%d (%s -> %s)", i, e.Source, e.Target)
		if ids[e.Source] == 0 {
			add("%s: source %q is not a node", name, e.Source)
		}
		if ids[e.Target] == 0 {
			add("%s: target %q is not a node", name, e.Target)
		}
		if e.Condition != "" {
			if _, err := expr.Compile(e.Condition, nodeIDs); err != nil {
				add("%s: condition: %v", name, err)
			}
		}
		if e.Transform != "" {
			if _, err := expr.Compile(e.Transform, nodeIDs); err != nil {
				add("%s: transform: %v", name, err)
			}
		}
	}
	cycles := b.cycles()
	for _, c := range cycles {
		add("cycle: %s (a cycle must go through a loop controller's \"continue\" edge)", strings.Join(c, " -> "))
	}
	if len(cycles) == 0 {
		_, loopProblems := b.loopShapes(nodeIDs)
		problems = append(problems, loopProblems...)
	}
	fbOnly := b.fallbackOnly()
	reported := make(map[string]bool)
	for _, e := range b.Edges {
		if fbOnly[e.Source] && !reported[e.Source] {
			reported[e.Source] = true
			add("node %q is only a fallback (no edge leads to it), so its outgoing edges could never be taken: "+
				"routing continues from the node that failed", e.Source)
		}
	}
	if len(cycles) == 0 && len(b.Nodes) > 0 && !b.hasStartNode(fbOnly) {
		add("blueprint has no start node: every node without incoming edges is only a fallback")
	}
	if len(problems) > 0 {
		return &BlueprintError{BlueprintID: b.ID, Problems: problems}
	}
	return nil
}

// inputsProblem describes what is wrong with a node's "inputs", or returns
// "": it must be absent, a non-empty string, or an object whose values are
// non-empty strings or non-empty arrays of them (the first present wins).
func inputsProblem(inputs any) string {
	switch in := inputs.(type) {
	case nil:
		return ""
	case string:
		if in == "" {
			return "inputs is an empty string"
		}
		return ""
	case map[string]any:
		for _, k := range slices.Sorted(maps.Keys(in)) {
			ok := false
			switch v := in[k].(type) {
			case string:
				ok = v != ""
			case []any:
				ok = len(v) > 0
				for _, e := range v {
					s, isString := e.(string)
					ok = ok && isString && s != ""
				}
			}
			if !ok {
				return fmt.Sprintf("inputs[%q] must be a non-empty string or a non-empty array of them", k)
			}
		}
		return ""
	}
	return fmt.Sprintf("inputs must be a string or an object, not %T", inputs)
}

// uses maps each node id to its "uses".
func (b *Blueprint) uses() map[string]string {
	m := make(map[string]string, len(b.Nodes))
	for _, n := range b.Nodes {
		m[n.ID] = n.Uses
	}
	return m
}

// cycles returns one cycle, as a path of node ids from a node back to
// itself, for each back edge a depth-first search finds, in a deterministic
// order. Edges to or from unknown nodes are ignored, and so are loop
// controllers' continue edges (loop.go checks the loops).
func (b *Blueprint) cycles() [][]string {
	uses := b.uses()
	next := make(map[string][]string)
	for _, e := range b.Edges {
		if !isLoopBack(uses, e) && !slices.Contains(next[e.Source], e.Target) {
			next[e.Source] = append(next[e.Source], e.Target)
		}
	}
	const (
		unvisited = iota
		onPath
		done
	)
	state := make(map[string]int, len(b.Nodes))
	for _, n := range b.Nodes {
		state[n.ID] = unvisited
	}
	var path []string
	var found [][]string
	var visit func(id string)
	visit = func(id string) {
		state[id] = onPath
		path = append(path, id)
		for _, t := range next[id] {
			s, isNode := state[t]
			switch {
			case !isNode:
			case s == unvisited:
				visit(t)
			case s == onPath:
				cycle := slices.Clone(path[slices.Index(path, t):])
				found = append(found, append(cycle, t))
			}
		}
		path = path[:len(path)-1]
		state[id] = done
	}
	for _, n := range b.Nodes {
		if state[n.ID] == unvisited {
			visit(n.ID)
		}
	}
	return found
}

// fallbackOnly returns the ids of the fallback-only nodes: nodes named by
// some config.fallback that no edge leads to. They run only in place of a
// failed node, never on their own, so they are not start nodes.
func (b *Blueprint) fallbackOnly() map[string]bool {
	targets := make(map[string]bool, len(b.Edges))
	for _, e := range b.Edges {
		targets[e.Target] = true
	}
	nodes := make(map[string]bool, len(b.Nodes))
	for _, n := range b.Nodes {
		nodes[n.ID] = true
	}
	only := make(map[string]bool)
	for _, n := range b.Nodes {
		if f := n.Config.Fallback; f != "" && f != n.ID && nodes[f] && !targets[f] {
			only[f] = true
		}
	}
	return only
}

// hasStartNode reports whether some node has no incoming edge and is not
// fallback-only.
func (b *Blueprint) hasStartNode(fallbackOnly map[string]bool) bool {
	uses := b.uses()
	targets := make(map[string]bool, len(b.Edges))
	for _, e := range b.Edges {
		targets[e.Target] = targets[e.Target] || !isLoopBack(uses, e)
	}
	for _, n := range b.Nodes {
		if !targets[n.ID] && !fallbackOnly[n.ID] {
			return true
		}
	}
	return false
}
