package expr

import (
	"fmt"

	"github.com/expr-lang/expr/ast"
)

// patcher rewrites an expr-lang syntax tree to this package's semantics and
// records what the expression reads. expr-lang walks the tree depth-first,
// children before parents, calling Visit once per node.
//
//   - A name other than result, input and context becomes context["name"].
//   - Every member access (a.b, a["b"], a[0]) becomes optional, a?.b, and is
//     wrapped in a chain so that a nil anywhere yields nil.
//   - The names declared with `let` stay variables.
type patcher struct {
	// free maps the nodes that stand for a bare name (context["name"]) to
	// the name, until a let declaration claims them as variable uses.
	free map[ast.Node]string
	// keyed lists the keys of context.X and context["X"].
	keyed []string
	// contextUses counts uses of the name context; keyedUses those as the
	// base of context.X or context["X"]. Any other use can read every key.
	contextUses, keyedUses int
	input                  bool
	err                    error
}

func newPatcher() *patcher { return &patcher{free: make(map[ast.Node]string)} }

// Visit implements ast.Visitor.
func (p *patcher) Visit(node *ast.Node) {
	switch n := (*node).(type) {
	case *ast.IdentifierNode:
		switch n.Value {
		case "result":
		case "input":
			p.input = true
		case "context":
			p.contextUses++
		case "$env":
			p.fail("$env is not supported; use context")
		default:
			chain := &ast.ChainNode{Node: &ast.MemberNode{
				Node:     &ast.IdentifierNode{Value: "context"},
				Property: &ast.StringNode{Value: n.Value},
				Optional: true,
			}}
			p.free[chain] = n.Value
			ast.Patch(node, chain)
		}
	case *ast.MemberNode:
		if id, ok := n.Node.(*ast.IdentifierNode); ok && id.Value == "context" {
			if key, ok := n.Property.(*ast.StringNode); ok {
				p.keyedUses++
				p.keyed = append(p.keyed, key.Value)
			}
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

func (p *patcher) fail(format string, args ...any) {
	if p.err == nil {
		p.err = fmt.Errorf(format, args...)
	}
}

// contextKeys returns the context keys found and whether the context is
// also used in a way that can read any key.
func (p *patcher) contextKeys() (keys []string, all bool) {
	set := make(map[string]bool, len(p.free)+len(p.keyed))
	for _, name := range p.free {
		set[name] = true
	}
	for _, k := range p.keyed {
		set[k] = true
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
