package expr

import (
	"fmt"

	"github.com/expr-lang/expr/ast"
)

// patcher rewrites an expr-lang syntax tree to this package's semantics and
// records what the expression reads. expr-lang walks the tree depth-first,
// children before parents, calling Visit once per node; a node shared by
// two parents (the middle operand of a < b < c, the condition of a ?: b) is
// visited once per parent, so Visit leaves alone what it has already
// rewritten.
//
//   - A name other than result, input and context becomes context["name"],
//     or, for a node id, a call that reads the node's output or else the
//     context key; null and undefined become nil.
//   - context.X and context["X"] with X a node id become that call too.
//   - Every member access (a.b, a["b"], a[0]) becomes optional, a?.b, and is
//     wrapped in a chain so that a nil anywhere yields nil.
//   - &&, ||, !, the ternary's condition, the relational operators and the
//     predicates of filter and its kin get JavaScript semantics through the
//     functions of js.go.
//   - The names declared with `let` stay variables.
type patcher struct {
	nodes map[string]bool // the blueprint's node ids
	// free maps the nodes that stand for a bare name to the name, until a
	// let declaration claims them as variable uses.
	free map[ast.Node]string
	// own holds the identifiers the patcher made or adopted, which a second
	// visit must not rewrite.
	own map[ast.Node]bool
	// keyed lists the keys of context.X and context["X"].
	keyed []string
	// contextUses counts uses of the name context; keyedUses those as the
	// base of context.X or context["X"]. Any other use can read every key.
	contextUses, keyedUses int
	input                  bool
	err                    error
}

func newPatcher(nodes map[string]bool) *patcher {
	return &patcher{nodes: nodes, free: make(map[ast.Node]string), own: make(map[ast.Node]bool)}
}

// predicates lists the builtins whose predicate decides, so it is truthy.
var predicates = map[string]bool{
	"all": true, "none": true, "any": true, "one": true, "filter": true, "count": true,
	"find": true, "findLast": true, "findIndex": true, "findLastIndex": true,
}

// Visit implements ast.Visitor.
func (p *patcher) Visit(node *ast.Node) {
	switch n := (*node).(type) {
	case *ast.IdentifierNode:
		if p.own[n] {
			return
		}
		switch n.Value {
		case "result":
		case "input":
			p.input = true
		case "context":
			p.contextUses++
		case "$env":
			p.fail("$env is not supported; use context")
		case "null", "undefined":
			p.bare(node, n.Value, &ast.NilNode{})
		default:
			if p.nodes[n.Value] {
				ctx := &ast.IdentifierNode{Value: "context"}
				p.own[ctx] = true
				p.bare(node, n.Value, p.call(fnNode, ctx, &ast.StringNode{Value: n.Value}))
				break
			}
			p.bare(node, n.Value, &ast.ChainNode{Node: &ast.MemberNode{
				Node:     &ast.IdentifierNode{Value: "context"},
				Property: &ast.StringNode{Value: n.Value},
				Optional: true,
			}})
		}
	case *ast.MemberNode:
		if id, ok := n.Node.(*ast.IdentifierNode); ok && id.Value == "context" {
			if key, ok := n.Property.(*ast.StringNode); ok {
				if !p.own[id] { // not counted yet
					p.keyedUses++
					p.keyed = append(p.keyed, key.Value)
				}
				if p.nodes[key.Value] && !n.Method {
					p.own[id] = true
					ast.Patch(node, p.call(fnNode, id, key))
					return
				}
			}
		}
		// x.length is JavaScript's: the length of an array or a string
		// (in UTF-16 code units), else the member named "length".
		if key, ok := n.Property.(*ast.StringNode); ok && key.Value == "length" && !n.Method {
			ast.Patch(node, p.call(fnLength, n.Node))
			return
		}
		// Method calls keep their shape; JSON-like values have no methods
		// and fail anyway. A member that is already optional is already
		// inside a chain.
		if !n.Method && !n.Optional {
			n.Optional = true
			ast.Patch(node, &ast.ChainNode{Node: n})
		}
	case *ast.CallNode:
		// expr-lang calls only its builtins, which parse as BuiltinNode.
		if name, ok := p.free[n.Callee]; ok {
			p.fail("unknown function %s", name)
		}
	case *ast.UnaryNode:
		if n.Operator == "!" || n.Operator == "not" {
			ast.Patch(node, p.call(fnNot, n.Node))
		}
	case *ast.BinaryNode:
		p.binary(node, n)
	case *ast.ConditionalNode:
		p.truthy(&n.Cond)
	case *ast.BuiltinNode:
		if pred, ok := lastPredicate(n); ok && predicates[n.Name] {
			p.truthy(&pred.Node)
		}
	case *ast.VariableDeclaratorNode:
		switch n.Name {
		case "result", "input", "context":
			p.fail("cannot redeclare %s", n.Name)
		}
		// expr-lang forbids redeclaring a variable in scope, so every
		// remaining use of the name in the body is this variable.
		ast.Walk(&n.Expr, bindVariable{p: p, name: n.Name})
	}
}

// bare replaces the bare name at node with repl, which a let declaration of
// name may still turn back into the variable.
func (p *patcher) bare(node *ast.Node, name string, repl ast.Node) {
	p.free[repl] = name
	ast.Patch(node, repl)
}

// binary gives the logical and relational operators JavaScript semantics.
// `a || b` becomes `js.or(a) ?? b` and `a && b` becomes
// `js.unbox(js.and(a) ?? b)`, so the right operand is evaluated only when
// JavaScript would evaluate it.
func (p *patcher) binary(node *ast.Node, n *ast.BinaryNode) {
	switch n.Operator {
	case "||", "or":
		ast.Patch(node, &ast.BinaryNode{Operator: "??", Left: p.call(fnOr, n.Left), Right: n.Right})
	case "&&", "and":
		// expr-lang parses a < b < c as a < b && b < c, with the && at the
		// second comparison's place; JavaScript compares (a < b) < c.
		if cmp, ok := p.relationalCall(n.Right); ok && n.Location() == cmp.Location() {
			ast.Patch(node, p.call(cmp.Callee.(*ast.IdentifierNode).Value, n.Left, cmp.Arguments[1]))
			return
		}
		ast.Patch(node, p.call(fnUnbox, &ast.BinaryNode{Operator: "??", Left: p.call(fnAnd, n.Left), Right: n.Right}))
	case "<", "<=", ">", ">=":
		ast.Patch(node, p.call(relational[n.Operator], n.Left, n.Right))
	}
}

// relationalCall returns node as a call of a relational operator's function.
func (p *patcher) relationalCall(node ast.Node) (*ast.CallNode, bool) {
	c, ok := node.(*ast.CallNode)
	if !ok || !p.own[c.Callee] {
		return nil, false
	}
	switch c.Callee.(*ast.IdentifierNode).Value {
	case fnLess, fnLessEq, fnMore, fnMoreEq:
		return c, true
	}
	return nil, false
}

// truthy wraps the condition at node in js.truthy, once.
func (p *patcher) truthy(node *ast.Node) {
	if c, ok := (*node).(*ast.CallNode); ok && p.own[c.Callee] {
		if id := c.Callee.(*ast.IdentifierNode); id.Value == fnTruthy {
			return
		}
	}
	ast.Patch(node, p.call(fnTruthy, *node))
}

// call returns a call of one of the functions of js.go.
func (p *patcher) call(name string, args ...ast.Node) *ast.CallNode {
	callee := &ast.IdentifierNode{Value: name}
	p.own[callee] = true
	return &ast.CallNode{Callee: callee, Arguments: args}
}

// lastPredicate returns the predicate argument of a builtin call, if any.
func lastPredicate(n *ast.BuiltinNode) (*ast.PredicateNode, bool) {
	if len(n.Arguments) == 0 {
		return nil, false
	}
	pred, ok := n.Arguments[len(n.Arguments)-1].(*ast.PredicateNode)
	return pred, ok
}

func (p *patcher) fail(format string, args ...any) {
	if p.err == nil {
		p.err = fmt.Errorf(format, args...)
	}
}

// contextKeys returns the context keys found and whether the context is
// also used in a way that can read any key. A node id X reads the keys
// "_outputs.X" and X.
func (p *patcher) contextKeys() (keys []string, all bool) {
	set := make(map[string]bool, len(p.free)+len(p.keyed))
	add := func(k string) {
		set[k] = true
		if p.nodes[k] {
			set[outputsPrefix+k] = true
		}
	}
	for n, name := range p.free {
		if _, isNil := n.(*ast.NilNode); !isNil {
			add(name)
		}
	}
	for _, k := range p.keyed {
		add(k)
	}
	return sortedKeys(set), p.contextUses > p.keyedUses
}

// bindVariable turns the uses of a let variable, which the patcher took for
// context keys, back into the variable.
type bindVariable struct {
	p    *patcher
	name string
}

// Visit implements ast.Visitor.
func (b bindVariable) Visit(node *ast.Node) {
	if name, ok := b.p.free[*node]; ok && name == b.name {
		delete(b.p.free, *node)
		ast.Patch(node, &ast.IdentifierNode{Value: name})
	}
}
