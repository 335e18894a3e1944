package expr

import (
	"encoding/json"
	"math"
	"reflect"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"

	exprlang "github.com/expr-lang/expr"
)

// The functions the patcher calls to give operators JavaScript semantics.
// Their names are not identifiers, so no expression can name them: a call
// to them exists only where the patcher put it.
const (
	fnTruthy = "js.truthy" // Truthy(x)
	fnNot    = "js.not"    // !Truthy(x)
	fnOr     = "js.or"     // x when truthy, else nil: `a || b` is `js.or(a) ?? b`
	fnAnd    = "js.and"    // x boxed when falsy, else nil: `a && b` is `js.unbox(js.and(a) ?? b)`
	fnUnbox  = "js.unbox"  // the value of a box from js.and, or x
	fnLess   = "js.<"
	fnLessEq = "js.<="
	fnMore   = "js.>"
	fnMoreEq = "js.>="
	fnNode   = "js.node" // a node's output or the context key of its id
	fnLength = "js.length"
)

// outputsPrefix prefixes the context key that holds a node's output.
const outputsPrefix = "_outputs."

// relational maps a relational operator to its function.
var relational = map[string]string{"<": fnLess, "<=": fnLessEq, ">": fnMore, ">=": fnMoreEq}

// jsFunctions are the compile options that register the functions above.
var jsFunctions = []exprlang.Option{
	exprlang.Function(fnTruthy, func(a ...any) (any, error) { return Truthy(a[0]), nil }, new(func(any) bool)),
	exprlang.Function(fnNot, func(a ...any) (any, error) { return !Truthy(a[0]), nil }, new(func(any) bool)),
	exprlang.Function(fnOr, func(a ...any) (any, error) {
		if Truthy(a[0]) {
			return a[0], nil
		}
		return nil, nil
	}, new(func(any) any)),
	exprlang.Function(fnAnd, func(a ...any) (any, error) {
		if Truthy(a[0]) {
			return nil, nil
		}
		return falsy{a[0]}, nil
	}, new(func(any) any)),
	exprlang.Function(fnUnbox, func(a ...any) (any, error) {
		if f, ok := a[0].(falsy); ok {
			return f.v, nil
		}
		return a[0], nil
	}, new(func(any) any)),
	exprlang.Function(fnLess, relation(func(c int) bool { return c < 0 }), new(func(any, any) bool)),
	exprlang.Function(fnLessEq, relation(func(c int) bool { return c <= 0 }), new(func(any, any) bool)),
	exprlang.Function(fnMore, relation(func(c int) bool { return c > 0 }), new(func(any, any) bool)),
	exprlang.Function(fnMoreEq, relation(func(c int) bool { return c >= 0 }), new(func(any, any) bool)),
	exprlang.Function(fnLength, func(a ...any) (any, error) {
		switch v := a[0].(type) {
		case []any:
			return int64(len(v)), nil
		case string:
			return int64(len(utf16.Encode([]rune(v)))), nil
		case map[string]any:
			return v["length"], nil
		}
		return nil, nil
	}, new(func(any) any)),
	exprlang.Function(fnNode, func(a ...any) (any, error) {
		ctx, _ := a[0].(map[string]any)
		return nodeValue(ctx, a[1].(string)), nil
	}, new(func(any, string) any)),
}

// falsy carries the falsy left operand of && past ??, which would take a
// nil or false operand for a missing one. It never leaves the expression.
type falsy struct{ v any }

// nodeValue returns the output of node id when ctx holds it, else the
// context key id.
func nodeValue(ctx map[string]any, id string) any {
	if v, ok := ctx[outputsPrefix+id]; ok {
		return v
	}
	return ctx[id]
}

// relation returns the function of a relational operator: ok tells from
// the sign of the comparison whether the relation holds.
func relation(ok func(int) bool) func(a ...any) (any, error) {
	return func(a ...any) (any, error) {
		c, comparable := compareJS(a[0], a[1])
		return comparable && ok(c), nil
	}
}

// compareJS compares a and b as JavaScript's relational operators do: two
// strings by UTF-16 code units, anything else as numbers (see toNumber).
// comparable is false when either side is nil, a map, a slice or NaN, for
// which every relational operator is false.
func compareJS(a, b any) (c int, comparable bool) {
	if as, ok := stringOf(a); ok {
		if bs, ok := stringOf(b); ok {
			return compareUTF16(as, bs), true
		}
	}
	x, ok := toNumber(a)
	if !ok {
		return 0, false
	}
	y, ok := toNumber(b)
	if !ok {
		return 0, false
	}
	if x.isInt && y.isInt {
		switch {
		case x.i < y.i:
			return -1, true
		case x.i > y.i:
			return 1, true
		}
		return 0, true
	}
	f, g := x.float(), y.float()
	switch {
	case f < g:
		return -1, true
	case f > g:
		return 1, true
	case f == g:
		return 0, true
	}
	return 0, false // NaN
}

// number is a JavaScript number, kept exact when it is an integer.
type number struct {
	i     int64
	f     float64
	isInt bool
}

func (n number) float() float64 {
	if n.isInt {
		return float64(n.i)
	}
	return n.f
}

// toNumber converts v as JavaScript's ToNumber does for primitives: a bool
// is 1 or 0, a string is parsed (see stringToNumber). ok is false for nil,
// maps, slices and other values that are not primitives.
func toNumber(v any) (n number, ok bool) {
	switch x := v.(type) {
	case nil:
		return number{}, false
	case int64:
		return number{i: x, isInt: true}, true
	case float64:
		return number{f: x}, true
	case int:
		return number{i: int64(x), isInt: true}, true
	case bool:
		if x {
			return number{i: 1, isInt: true}, true
		}
		return number{isInt: true}, true
	case string:
		return number{f: stringToNumber(x)}, true
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return number{i: i, isInt: true}, true
		}
		return number{f: stringToNumber(string(x))}, true
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Bool:
		return toNumber(rv.Bool())
	case reflect.String:
		return toNumber(rv.String())
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return number{i: rv.Int(), isInt: true}, true
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		if u := rv.Uint(); u <= math.MaxInt64 {
			return number{i: int64(u), isInt: true}, true
		}
		return number{f: float64(rv.Uint())}, true
	case reflect.Float32, reflect.Float64:
		return number{f: rv.Float()}, true
	}
	return number{}, false
}

// stringOf returns v as a string when it is one.
func stringOf(v any) (string, bool) {
	switch x := v.(type) {
	case string:
		return x, true
	case nil, json.Number: // a json.Number is a number
		return "", false
	}
	if rv := reflect.ValueOf(v); rv.Kind() == reflect.String {
		return rv.String(), true
	}
	return "", false
}

// stringToNumber is JavaScript's ToNumber of a string: surrounding white
// space is ignored, a blank string is 0, and a string that is not a decimal
// literal (optionally signed, possibly "Infinity") or an unsigned 0x, 0o or
// 0b integer is NaN.
func stringToNumber(s string) float64 {
	s = strings.TrimFunc(s, isJSSpace)
	if s == "" {
		return 0
	}
	if len(s) > 2 && s[0] == '0' {
		base := 0
		switch s[1] {
		case 'x', 'X':
			base = 16
		case 'o', 'O':
			base = 8
		case 'b', 'B':
			base = 2
		}
		if base != 0 {
			return parseInteger(s[2:], base)
		}
	}
	body := strings.TrimLeft(s[:1], "+-") + s[1:]
	if body == "Infinity" {
		if s[0] == '-' {
			return math.Inf(-1)
		}
		return math.Inf(1)
	}
	if !isDecimalLiteral(body) {
		return math.NaN()
	}
	f, _ := strconv.ParseFloat(s, 64) // out of range is ±Inf, as in JavaScript
	return f
}

// parseInteger parses the digits of a 0x, 0o or 0b literal, NaN if any is
// not a digit of base.
func parseInteger(digits string, base int) float64 {
	f := 0.0
	for i := 0; i < len(digits); i++ {
		d, err := strconv.ParseUint(digits[i:i+1], base, 8)
		if err != nil {
			return math.NaN()
		}
		f = f*float64(base) + float64(d)
	}
	return f
}

// isDecimalLiteral reports whether s matches
// (digits [. [digits]] | . digits) [(e|E) [+|-] digits].
func isDecimalLiteral(s string) bool {
	digits := func() int {
		n := 0
		for n < len(s) && '0' <= s[n] && s[n] <= '9' {
			n++
		}
		s = s[n:]
		return n
	}
	n := digits()
	if s != "" && s[0] == '.' {
		s = s[1:]
		n += digits()
	}
	if n == 0 {
		return false
	}
	if s != "" && (s[0] == 'e' || s[0] == 'E') {
		s = s[1:]
		if s != "" && (s[0] == '+' || s[0] == '-') {
			s = s[1:]
		}
		if digits() == 0 {
			return false
		}
	}
	return s == ""
}

// isJSSpace reports whether r is JavaScript white space or a line
// terminator.
func isJSSpace(r rune) bool {
	switch r {
	case '\t', '\n', '\v', '\f', '\r', ' ', 0xa0, 0x1680, 0x2028, 0x2029, 0x202f, 0x205f, 0x3000, 0xfeff:
		return true
	}
	return 0x2000 <= r && r <= 0x200a
}

// compareUTF16 compares a and b by their UTF-16 code units, as JavaScript
// compares strings.
func compareUTF16(a, b string) int {
	for a != "" && b != "" {
		r, n := utf8.DecodeRuneInString(a)
		s, m := utf8.DecodeRuneInString(b)
		a, b = a[n:], b[m:]
		if r == s {
			continue
		}
		if u, v := firstUnit(r), firstUnit(s); u != v {
			if u < v {
				return -1
			}
			return 1
		}
		// Both are outside the BMP with the same high surrogate, so the
		// low surrogates, and thus the code points, are in the same order.
		if r < s {
			return -1
		}
		return 1
	}
	switch {
	case a != "":
		return 1
	case b != "":
		return -1
	}
	return 0
}

// firstUnit returns the first UTF-16 code unit of r.
func firstUnit(r rune) rune {
	if r < 0x10000 {
		return r
	}
	return 0xd800 + (r-0x10000)>>10
}
