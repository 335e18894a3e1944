// Package expr compiles and evaluates the expressions of blueprint edges:
// the condition that decides whether an edge is taken and the transform that
// computes the target's input.
//
// An expression has one of two forms:
//
//   - A bare property path, a string made only of letters, digits, '_', '$'
//     and '.', such as "result.output.customer.isVip". It keeps the meaning of
//     Flowcraft's default PropertyEvaluator: the first segment names a value
//     in scope, the others walk maps and arrays (a numeric segment indexes an
//     array, "length" is the length of an array or a string), and any missing
//     step yields nil. So "true", "1", "null" or "count" are paths too: they
//     read the context keys of those names.
//   - Anything else is an expr-lang expression (https://expr-lang.org), such
//     as `result.output.total > 100 && approved`, with the JavaScript
//     semantics below, so that expressions written for Flowcraft's
//     UnsafeEvaluator keep their meaning. Member access is nil-safe like
//     JavaScript's optional chaining: a.b.c is nil when a or a.b is nil or
//     missing.
//
// In both forms the scope is the same: `result` is the result of the node
// that just ran, `input` its input (or, in a transform, the value being
// transformed), `context` the map of run-context keys, and any other name is
// the run-context key of that name, so `approved` is `context.approved`.
// Keys that are not identifiers are reached with `context["order-id"]`.
//
// # Node ids
//
// Flowcraft stores a node's output under "_outputs.<id>" and again under the
// bare id. Given the blueprint's node ids (NodeIDs), a bare name X that is a
// node id, context.X and context["X"] read Env.Context["_outputs.X"] when
// that key is present, else Env.Context["X"]: the output shadows a context
// key of the same name. A path's first segment (and its second after
// "context") resolves the same way. ContextKeys lists both keys. A program
// that reads the context whole sees, in a copy, each present output under
// its id as well. As in the UnsafeEvaluator, a node id k containing '-'
// that is neither preceded by [A-Za-z0-9_$] nor followed by [A-Za-z0-9_$-]
// is read as context["k"], so `fetch-order.ok` is that node's output's ok;
// string literals and comments are left as they are.
//
// # JavaScript semantics
//
//   - `===` and `!==` are `==` and `!=`, which never convert between types:
//     "1" == 1 is false, while an int64 and a float64 compare by value. `==`
//     is strict too, unlike JavaScript's. Maps and arrays compare by content,
//     not by reference as in JavaScript; arrays element by element with
//     `==`, maps with reflect.DeepEqual, so a map holding int64(1) differs
//     from the literal {"a": 1}, which holds an int. Comparing two literals
//     of different types ('1' == 1) fails to compile.
//   - `&&`, `||` (and `and`, `or`) short-circuit on JavaScript truthiness
//     (Truthy) and return an operand: `a || b` is a when a is truthy, else
//     b; `a && b` is a when a is falsy, else b. `!x` (and `not x`) is
//     !Truthy(x). The condition of `c ? a : b` (and of `if`, and the
//     predicate of filter, all, any, none, one, count, find, findIndex,
//     findLast and findLastIndex) is truthy rather than a bool. `??` picks
//     the first non-nil operand.
//   - `<`, `<=`, `>` and `>=` never fail: two strings compare by UTF-16 code
//     units; otherwise both sides convert to numbers as JavaScript's ToNumber
//     does (a bool is 1 or 0; a string is parsed, blank is 0, anything that
//     is not a number is NaN) and compare numerically. Any comparison with
//     NaN, nil, a map or an array is false. a < b < c compares (a < b) with
//     c, as in JavaScript.
//   - `null` and `undefined` are nil, unless declared with `let`.
//   - `x.length` is the length of an array, or of a string in UTF-16 code
//     units; on a map it is the member "length"; otherwise nil.
//
// Deliberate differences from JavaScript: a value is nil both for JSON null
// and when missing, so nil compares as undefined: `x < 1` is false for a nil
// x (JavaScript gives true for null). Operators other than those above keep
// expr-lang's semantics: `+` does not concatenate a string and a number,
// arithmetic on a map fails, and so does indexing past the end of an array.
// Such errors are evaluation errors (*Error); the UnsafeEvaluator would
// give undefined, and the caller decides what an error means. Operator
// precedence is expr-lang's, which puts `<` and `==` on one level.
//
// In expression mode, `let` variables shadow context keys and node ids,
// builtins such as len or filter are called as functions, and calling any
// other name fails to compile. A comparison with a missing key is false:
// without count, both `count < 5` and `count >= 5` are false.
//
// Values are expected in their JSON-like form (see internal/jsonvalue):
// map[string]any, []any, string, bool, nil, int64 and float64. Expressions
// come from blueprints and are trusted like code: expr-lang has no I/O and
// bounds the syntax tree and most allocations, but not string concatenation,
// so an expression can still exhaust memory.
package expr

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"unicode/utf8"

	exprlang "github.com/expr-lang/expr"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/vm"
)

// maxNodes bounds the size of an expression's syntax tree. Edge conditions
// and transforms are short; the bound keeps compilation and evaluation cheap.
// expr-lang also bounds the memory an evaluation may allocate.
const maxNodes = 1000

// Env is the scope an expression is evaluated in.
type Env struct {
	Result  map[string]any // the node's result: "output" and "action"
	Input   any            // the node's input, or the value a transform transforms
	Context map[string]any // run-context keys (those ContextKeys lists suffice); nil means none
}

// Program is a compiled expression. It is immutable and safe for concurrent use.
type Program struct {
	src   string
	path  []string    // the segments of a bare property path, or nil
	prog  *vm.Program // the expr-lang program when path is nil
	pos   *posMap     // how the source was rewritten before parsing, or nil
	nodes map[string]bool
	keys  []string
	all   bool
	input bool
}

// Option configures Compile.
type Option func(*options)

type options struct {
	nodes map[string]bool
}

// NodeIDs tells Compile the node ids of the blueprint, whose outputs the
// expression reads by id (see the package documentation).
func NodeIDs(ids ...string) Option {
	return func(o *options) {
		for _, id := range ids {
			if id != "" {
				o.nodes[id] = true
			}
		}
	}
}

// Compile compiles src, either a bare property path or an expr-lang
// expression (see the package documentation). The error is an *Error.
func Compile(src string, opts ...Option) (*Program, error) {
	o := options{nodes: make(map[string]bool)}
	for _, opt := range opts {
		opt(&o)
	}
	if isPropertyPath(src) {
		return compilePath(src, o.nodes), nil
	}
	if strings.TrimSpace(src) == "" {
		return nil, &Error{Op: "compile", Source: src, Err: errors.New("empty expression")}
	}
	var hyphenated []string
	for id := range o.nodes {
		// An id that is not UTF-8 cannot be written in JavaScript or in a
		// string literal.
		if strings.Contains(id, "-") && utf8.ValidString(id) {
			hyphenated = append(hyphenated, id)
		}
	}
	text, pos := rewrite(src, hyphenated)
	pt := newPatcher(o.nodes)
	prog, err := exprlang.Compile(text, append([]exprlang.Option{
		exprlang.AllowUndefinedVariables(),
		exprlang.MaxNodes(maxNodes),
		exprlang.Patch(pt),
	}, jsFunctions...)...)
	if err == nil {
		err = pt.err
	}
	if err != nil {
		pos.fix(err)
		return nil, &Error{Op: "compile", Source: src, Err: err}
	}
	keys, all := pt.contextKeys()
	p := &Program{src: src, prog: prog, pos: pos, keys: keys, all: all, input: pt.input}
	if all {
		p.nodes = o.nodes
	}
	return p, nil
}

// Eval evaluates the program in env and returns its value. A bare property
// path never fails; an expr-lang expression can fail at run time (a type
// error, an index out of range, ...), with an *Error.
func (p *Program) Eval(env Env) (any, error) {
	if p.prog == nil {
		return p.evalPath(env), nil
	}
	scope := map[string]any{
		"result":  untypedNil(env.Result),
		"input":   env.Input,
		"context": p.contextMap(env.Context),
	}
	v, err := exprlang.Run(p.prog, scope)
	if err != nil {
		p.pos.fix(err)
		return nil, &Error{Op: "evaluate", Source: p.src, Err: err}
	}
	return v, nil
}

// contextMap returns the context the program sees: for a program that reads
// the context whole, a copy with each node output present under its node id
// too; otherwise the context itself (see contextMap).
func (p *Program) contextMap(m map[string]any) map[string]any {
	var overlay map[string]any
	for id := range p.nodes {
		if v, ok := m[outputsPrefix+id]; ok {
			if overlay == nil {
				overlay = maps.Clone(m)
			}
			overlay[id] = v
		}
	}
	if overlay != nil {
		return overlay
	}
	return contextMap(m)
}

// untypedNil turns a nil map into an untyped nil, so that `result == nil`
// holds when there is no result.
func untypedNil(m map[string]any) any {
	if m == nil {
		return nil
	}
	return m
}

// contextMap returns the context as a map, empty rather than nil: a run
// always has a context, even when no key was loaded.
func contextMap(m map[string]any) map[string]any {
	if m == nil {
		return map[string]any{}
	}
	return m
}

// ContextKeys returns the run-context keys the program can read, found
// statically, sorted. all is true when the program uses the context in a way
// that can read any key (passing `context` whole, indexing it with a
// computed key, ...): the caller must then provide the whole context.
func (p *Program) ContextKeys() (keys []string, all bool) {
	return slices.Clone(p.keys), p.all
}

// UsesInput reports whether the program reads `input`.
func (p *Program) UsesInput() bool { return p.input }

// String returns the source text of the program.
func (p *Program) String() string { return p.src }

// Error reports an expression that does not compile or fails to evaluate.
type Error struct {
	Op     string // "compile" or "evaluate"
	Source string // the expression
	Err    error  // the cause, often an expr-lang *file.Error
}

func (e *Error) Error() string {
	msg := e.Err.Error()
	var fe *file.Error
	if errors.As(e.Err, &fe) {
		msg = fe.Message
		if fe.Snippet != "" { // the location is known
			msg = fmt.Sprintf("%s (at %d:%d)", msg, fe.Line, fe.Column+1)
		}
	}
	return fmt.Sprintf("%s expression %q: %s", e.Op, e.Source, msg)
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// sortedKeys returns the non-empty keys of set, sorted. Context keys are
// never empty, so an empty key can never be read.
func sortedKeys(set map[string]bool) []string {
	keys := make([]string, 0, len(set))
	for k := range set {
		if k != "" {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys
}
