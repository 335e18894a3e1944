package expr

import (
	"maps"
	"math"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// eval compiles src with opts and evaluates it in env, failing the test on
// any error.
func eval(t *testing.T, src string, env Env, opts ...Option) any {
	t.Helper()
	p, err := Compile(src, opts...)
	require.NoError(t, err)
	v, err := p.Eval(env)
	require.NoError(t, err)
	return v
}

func TestNodeIDs(t *testing.T) {
	t.Parallel()
	ids := NodeIDs("A", "route", "fetch-order", "c-2")
	output := map[string]any{"ok": "output"}
	key := map[string]any{"ok": "key"}
	envs := map[string]map[string]any{
		"output only":     {"_outputs.A": output},
		"key only":        {"A": key},
		"output and key":  {"_outputs.A": output, "A": key},
		"null output":     {"_outputs.A": nil, "A": key},
		"neither":         {"B": "b"},
		"hyphenated":      {"_outputs.fetch-order": output, "fetch-order": key, "c": int64(5), "_outputs.c-2": int64(1)},
		"hyphenated: key": {"fetch-order": key},
	}
	tests := []struct {
		env, src string
		want     any
	}{
		{"output only", "A.ok", "output"},
		{"output only", "A", output},
		{"output only", "context.A.ok", "output"},
		{"output only", `context["A"].ok`, "output"},
		{"output only", `context?.A?.ok`, "output"},
		{"output only", `A.ok == "output"`, true},
		{"output only", `A["ok"] + "!"`, "output!"},
		{"key only", "A.ok", "key"},
		{"key only", `A.ok === "key"`, true},
		{"key only", `context["A"].ok`, "key"},
		{"key only", "context.A.ok", "key"},
		{"output and key", "A.ok", "output"},
		{"output and key", "A?.ok", "output"},
		{"output and key", "context.A.ok", "output"},
		{"output and key", `context["A"]["ok"]`, "output"},
		{"output and key", "A", output},
		{"output and key", "let A = 5; A + 1", 6},
		{"output and key", "let x = A; x.ok", "output"},
		{"output and key", `let A = {"ok": "var"}; A.ok`, "var"},
		{"output and key", "filter([1], A.ok == 'output') | len()", 1},
		{"null output", "A", nil},
		{"null output", "A.ok", nil},
		{"null output", "context.A", nil},
		{"null output", "A ?? 'none'", "none"},
		{"neither", "A", nil},
		{"neither", "A.ok.deeper", nil},
		{"neither", "B", "b"},
		{"neither", "route.total < 500", false},
		{"neither", "route.total >= 500", false},
		{"neither", "!route", true},
		{"hyphenated", "fetch-order.ok", "output"},
		{"hyphenated", "fetch-order.ok === 'output'", true},
		{"hyphenated", "!fetch-order.ok", false},
		{"hyphenated", "fetch-order?.ok", "output"},
		{"hyphenated", `"fetch-order" + 'fetch-order' + ` + "`fetch-order`", "fetch-orderfetch-orderfetch-order"},
		{"hyphenated", "c-2", int64(1)}, // the node, not c minus 2
		{"hyphenated", "c - 2", 3},      // spaced, a subtraction
		{"hyphenated: key", "fetch-order.ok", "key"},
	}
	for _, tt := range tests {
		t.Run(tt.env+": "+tt.src, func(t *testing.T) {
			t.Parallel()
			env := Env{Context: envs[tt.env]}
			assert.Equal(t, tt.want, eval(t, tt.src, env, ids))
		})
	}
	t.Run("without node ids", func(t *testing.T) {
		t.Parallel()
		env := Env{Context: envs["output and key"]}
		assert.Equal(t, "key", eval(t, "A.ok", env))
		assert.Equal(t, "key", eval(t, "A.ok + ''", env))
		_, err := Compile("fetch-order.ok") // fetch minus order.ok
		require.NoError(t, err)
	})
	t.Run("a node id that is a builtin's name", func(t *testing.T) {
		t.Parallel()
		env := Env{Context: map[string]any{"_outputs.len": "out"}}
		assert.Equal(t, "out", eval(t, "len + ''", env, NodeIDs("len")))
		assert.Equal(t, 3, eval(t, "len('abc')", env, NodeIDs("len")))
	})
	t.Run("calling a node id", func(t *testing.T) {
		t.Parallel()
		_, err := Compile("A(1)", ids)
		assert.ErrorContains(t, err, "unknown function A")
	})
}

func TestNodeIDContextKeys(t *testing.T) {
	t.Parallel()
	ids := NodeIDs("A", "fetch-order", "")
	tests := []struct {
		src  string
		keys []string
		all  bool
	}{
		{"A", []string{"A", "_outputs.A"}, false},
		{"A.ok", []string{"A", "_outputs.A"}, false},
		{"context.A", []string{"A", "_outputs.A"}, false},
		{"context.A.ok", []string{"A", "_outputs.A"}, false},
		{"A.ok && B", []string{"A", "B", "_outputs.A"}, false},
		{`context["A"] ?? context.B`, []string{"A", "B", "_outputs.A"}, false},
		{"fetch-order.ok === true", []string{"_outputs.fetch-order", "fetch-order"}, false},
		{`"fetch-order" == x`, []string{"x"}, false},
		{"let A = 1; A", nil, false},
		{"null ?? undefined", nil, false},
		{"let null = n; null", []string{"n"}, false},
		{"1 < A < 2", []string{"A", "_outputs.A"}, false},
		{"A.x ?: B", []string{"A", "B", "_outputs.A"}, false},
		{"keys(context)", nil, true},
		{"context", nil, true},
		{"A && context", []string{"A", "_outputs.A"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.src, func(t *testing.T) {
			t.Parallel()
			p, err := Compile(tt.src, ids)
			require.NoError(t, err)
			keys, all := p.ContextKeys()
			if len(tt.keys) == 0 {
				assert.Empty(t, keys)
			} else {
				assert.Equal(t, tt.keys, keys)
			}
			assert.Equal(t, tt.all, all, "all")
		})
	}
}

// TestNodeIDKeysSuffice checks that evaluating with only the keys
// ContextKeys lists gives the same value as with the whole context.
func TestNodeIDKeysSuffice(t *testing.T) {
	t.Parallel()
	full := map[string]any{
		"_outputs.A": map[string]any{"ok": true}, "A": "key A", "B": "key B",
		"fetch-order": "key", "_outputs.fetch-order": int64(7), "other": 1,
	}
	for _, src := range []string{"A.ok", "context.A", "A.ok && B", "fetch-order + 1", "1 < A.ok < 3", "A.ok ?: B"} {
		t.Run(src, func(t *testing.T) {
			t.Parallel()
			p, err := Compile(src, NodeIDs("A", "B", "fetch-order"))
			require.NoError(t, err)
			keys, all := p.ContextKeys()
			require.False(t, all)
			partial := map[string]any{}
			for _, k := range keys {
				if v, ok := full[k]; ok {
					partial[k] = v
				}
			}
			want, err := p.Eval(Env{Context: full})
			require.NoError(t, err)
			got, err := p.Eval(Env{Context: partial})
			require.NoError(t, err)
			assert.Equal(t, want, got)
		})
	}
}

func TestNodeIDWholeContext(t *testing.T) {
	t.Parallel()
	ctx := map[string]any{
		"_outputs.A": "output A", "A": "key A",
		"B":                    "key B", // B is a node id without output
		"_outputs.fetch-order": "output f",
		"c":                    "c",
	}
	before := maps.Clone(ctx)
	env := Env{Context: ctx}
	ids := NodeIDs("A", "B", "fetch-order")
	want := map[string]any{
		"_outputs.A": "output A", "A": "output A",
		"B":                    "key B",
		"_outputs.fetch-order": "output f", "fetch-order": "output f",
		"c": "c",
	}
	assert.Equal(t, want, eval(t, "context", env, ids), "path")
	assert.Equal(t, want, eval(t, "(context)", env, ids), "expression")
	assert.Equal(t, "output A", eval(t, "let c = context; c.A", env, ids))
	assert.Equal(t, "output f", eval(t, `context["fetch" + "-order"]`, env, ids))
	assert.Equal(t, true, eval(t, `"fetch-order" in context`, env, ids))
	assert.Equal(t, "key B", eval(t, `context["B"+""]`, env, ids))
	assert.Equal(t, before, ctx, "the context is not modified")
	assert.Equal(t, "key A", eval(t, "context", env).(map[string]any)["A"], "no overlay without node ids")
}

func TestRewrite(t *testing.T) {
	t.Parallel()
	ids := []string{"fetch-order", "a-b-c", "x-\"y"}
	tests := []struct{ src, want string }{
		{"a === b", "a == b"},
		{"a !== b", "a != b"},
		{"a===b&&c!==d", "a==b&&c!=d"},
		{"a == b != c", "a == b != c"},
		{`'a === b' + "c !== d" + ` + "`e === f`", `'a === b' + "c !== d" + ` + "`e === f`"},
		{`"a\" === b" === 'c\' !== d'`, `"a\" === b" == 'c\' !== d'`},
		{"`a\\` === b", "`a\\` == b"}, // no escapes in backquotes
		{"`a``b === c` === d", "`a``b === c` == d"},
		{"// don't\na === b", "// don't\na == b"},
		{"// `\na === b", "// `\na == b"},
		{"/* it's === */ a === b", "/* it's === */ a == b"},
		{"a / b === c", "a / b == c"},
		{"fetch-order.ok", `context["fetch-order"].ok`},
		{"!fetch-order", `!context["fetch-order"]`},
		{"x.fetch-order", `x.context["fetch-order"]`},
		{"(fetch-order)", `(context["fetch-order"])`},
		{"xfetch-order", "xfetch-order"},
		{"$fetch-order", "$fetch-order"},
		{"fetch-orders", "fetch-orders"},
		{"fetch-order-2", "fetch-order-2"},
		{"fetch-order_", "fetch-order_"},
		{"fetch-order$", "fetch-order$"},
		{"a-b-c", `context["a-b-c"]`},
		{"a-b", "a-b"},
		{`x-"y`, `context["x-\"y"]`},
		{`"fetch-order" + 'fetch-order'`, `"fetch-order" + 'fetch-order'`},
		{"fetch-order === 'fetch-order'", `context["fetch-order"] == 'fetch-order'`},
		{"'unterminated fetch-order", "'unterminated fetch-order"},
	}
	for _, tt := range tests {
		t.Run(tt.src, func(t *testing.T) {
			t.Parallel()
			got, _ := rewrite(tt.src, ids)
			assert.Equal(t, tt.want, got)
		})
	}
}

// TestQuote checks that a node id with any characters reads its key.
func TestQuote(t *testing.T) {
	t.Parallel()
	for _, k := range []string{"a-b", `a-"b`, `a-\b`, "a-\nb", "a-\rb", "a-\x00b", "a-\u2028b", "a-é😀", "a-\x7fb"} {
		p, err := Compile("context["+quote(k)+"]", NodeIDs(k))
		require.NoError(t, err, k)
		got, err := p.Eval(Env{Context: map[string]any{k: "key", "_outputs." + k: "output"}})
		require.NoError(t, err)
		assert.Equal(t, "output", got, "%q", k)
	}
}

// TestRewritePositions checks that errors point into the source as
// written: at the same place as in a source that needs no rewriting.
func TestRewritePositions(t *testing.T) {
	t.Parallel()
	env := Env{Context: map[string]any{
		"_outputs.fetch-order": map[string]any{"ok": int64(1)},
		"fetch_order":          map[string]any{"ok": int64(1)},
	}}
	errorOf := func(src string, opts ...Option) string {
		p, err := Compile(src, opts...)
		if err == nil {
			_, err = p.Eval(env)
		}
		require.Error(t, err, src)
		msg, _, _ := strings.Cut(err.(*Error).Err.Error(), "\n") // without the snippet
		return msg
	}
	for _, tt := range []struct{ src, same string }{
		{"fetch-order.ok +", "fetch_order.ok +"},
		{"a === b +", "a ==  b +"},
		{"a === b !== c === (", "a ==  b !=  c ==  ("},
		{"x +\n  fetch-order +", "x +\n  fetch_order +"},
		{"fetch-order.ok + fetch-order.ok.x", "fetch_order.ok + fetch_order.ok.x"}, // cannot fetch x
		{"fetch-order.ok + 1 + fetch-order.ok.x", "fetch_order.ok + 1 + fetch_order.ok.x"},
		{"é === fetch-order +", "é ==  fetch_order +"},
	} {
		t.Run(tt.src, func(t *testing.T) {
			t.Parallel()
			want := errorOf(tt.same)
			assert.Contains(t, want, ":", "the error has a position")
			assert.Equal(t, want, errorOf(tt.src, NodeIDs("fetch-order")))
		})
	}
}

func TestJSOperators(t *testing.T) {
	t.Parallel()
	env := Env{
		Result: map[string]any{"output": map[string]any{"status": "OK", "n": int64(2)}},
		Context: map[string]any{
			"s": "text", "empty": "", "zero": int64(0), "one": int64(1), "f": 1.0,
			"obj": map[string]any{"a": int64(1)}, "obj2": map[string]any{"a": int64(1)}, "arr": []any{int64(1)}, "no": false, "nil": nil,
			"null": "key null", "undefined": "key undefined", // unreachable by name
		},
	}
	tests := []struct {
		src  string
		want any
	}{
		{"result.output.status === 'OK'", true},
		{"arr.length", int64(1)},
		{"s.length === 4", true},
		{"'é𝄞'.length", int64(3)}, // UTF-16 code units, as JavaScript counts
		{"obj.length", nil},
		{"({length: 'own'}).length", "own"},
		{"missing.length", nil},
		{"arr.length > 0 && obj.a === 1", true},
		{"result.output.status !== 'OK'", false},
		{"result.output.n === 2", true},
		{"result.output.n === 2.0", true},
		{"one === f", true},
		{"result.output.n === '2'", false},
		{"result.output.n !== '2'", true},
		{"one == '1'", false},
		{"obj === obj2", true}, // by content, unlike JavaScript
		{"obj !== obj2", false},
		{"arr === [1]", true},
		{"missing === undefined", true},
		{"null === undefined", true}, // both are nil
		{"s || 'x'", "text"},
		{"zero || 'x'", "x"},
		{"empty || zero", int64(0)},
		{"missing || no", false},
		{"no || missing", nil},
		{"obj || 'x'", map[string]any{"a": int64(1)}},
		{"s or 'x'", "text"},
		{"s && one", int64(1)},
		{"zero && s", int64(0)},
		{"empty && s", ""},
		{"missing && s", nil},
		{"no && s", false},
		{"s and 'x'", "x"},
		{"s && empty || 'fallback'", "fallback"},
		{"s && (zero || obj)", map[string]any{"a": int64(1)}},
		{"zero || empty || missing || 'last'", "last"},
		{"one && s && arr", []any{int64(1)}},
		{"!''", true},
		{"!s", false},
		{"!zero", true},
		{"!!s", true},
		{"!obj", false},
		{"![]", false},
		{"!missing", true},
		{"not empty", true},
		{"'a' not in ['a']", false},
		{"s ? 1 : 2", 1},
		{"empty ? 1 : 2", 2},
		{"obj ? 1 : 2", 1},
		{"missing ? 1 : 2", 2},
		{"zero ? 1 : one ? 3 : 4", 3},
		{"if s { 'yes' } else { 'no' }", "yes"},
		{"if zero { 'yes' } else { 'no' }", "no"},
		{"empty ?: 'elvis'", "elvis"},
		{"missing ?? 'dflt'", "dflt"},
		{"zero ?? 'dflt'", int64(0)},
		{"null", "key null"}, // a property path
		{"(null)", nil},
		{"(undefined)", nil},
		{"null ?? 1", 1},
		{"context.null", "key null"},
		{"undefined ?? 1", 1},
		{"let undefined = 3; undefined", 3},
		{"filter([0, 1, '', 'a', nil, {}], #) | len()", 3},
		{"count(['', 'a', 'b'], #)", 2},
		{"any([0, ''], #)", false},
		{"find([0, '', 'x'], #)", "x"},
		{"filter([1, 2, 3], # > 1 && # < 3)", []any{2}},
		{"map([0, 1], # || 'z')", []any{"z", 1}},
	}
	for _, tt := range tests {
		t.Run(tt.src, func(t *testing.T) {
			t.Parallel()
			assert.Equal(t, tt.want, eval(t, tt.src, env))
		})
	}
}

func TestShortCircuit(t *testing.T) {
	t.Parallel()
	// boom fails when evaluated: arithmetic on a missing key.
	const boom = "(missing + 1)"
	for _, src := range []string{
		"false && " + boom,
		"0 && " + boom,
		"'' and " + boom,
		"true || " + boom,
		"'x' or " + boom,
		"1 ?? " + boom,
		"true ? 1 : " + boom,
		"'' ? " + boom + " : 1",
		"'' ?: 1 ?? " + boom,
		"true || " + boom + " && " + boom,
	} {
		t.Run(src, func(t *testing.T) {
			t.Parallel()
			p, err := Compile(src)
			require.NoError(t, err)
			_, err = p.Eval(Env{})
			assert.NoError(t, err)
		})
	}
	for _, src := range []string{"true && " + boom, "false || " + boom, "'' || " + boom, boom} {
		t.Run("evaluated: "+src, func(t *testing.T) {
			t.Parallel()
			p, err := Compile(src)
			require.NoError(t, err)
			_, err = p.Eval(Env{})
			var e *Error
			require.ErrorAs(t, err, &e)
			assert.Equal(t, "evaluate", e.Op)
		})
	}
}

func TestRelational(t *testing.T) {
	t.Parallel()
	type want struct{ lt, le, gt, ge bool }
	var (
		less    = want{true, true, false, false}
		equal   = want{false, true, false, true}
		greater = want{false, false, true, true}
		never   = want{}
	)
	tests := []struct {
		name string
		a, b any
		want want
	}{
		{"ints", int64(1), int64(2), less},
		{"int and float", int64(2), 2.0, equal},
		{"float and int", 2.5, int64(2), greater},
		{"ints beyond float precision", int64(1<<62 + 1), int64(1 << 62), greater},
		{"int kinds", int32(3), uint8(3), equal},
		{"strings by code unit", "10", "9", less},
		{"strings", "abc", "abd", less},
		{"string prefix", "ab", "abc", less},
		{"empty strings", "", "", equal},
		{"UTF-16 order, not code point order", "\uff61", "😀", greater},
		{"surrogate pairs", "😀", "😁", less},
		{"numeric string and int", "10", int64(9), greater},
		{"int and numeric string", int64(9), "10", less},
		{"blank string is 0", "  ", int64(0), equal},
		{"empty string is 0", "", int64(1), less},
		{"padded string", " \t12\n", int64(12), equal},
		{"JS white space", "\u00a0\ufeff7\u2028", int64(7), equal},
		{"not JS white space", "\u00857", int64(7), never},
		{"non-numeric string", "abc", int64(1), never},
		{"int and non-numeric string", int64(1), "1x", never},
		{"hex string", "0x10", int64(16), equal},
		{"signed hex string is NaN", "-0x10", int64(-16), never},
		{"binary and octal strings", "0b101", "0o5", less}, // strings compare as strings
		{"octal string", "0o17", int64(15), equal},
		{"exponent string", "1e3", int64(999), greater},
		{"decimal strings", ".5", 0.5, equal},
		{"trailing dot", "5.", int64(5), equal},
		{"Infinity", "Infinity", 1e308, greater},
		{"-Infinity", "-Infinity", -1e308, less},
		{"infinity is not a number", "infinity", int64(0), never},
		{"underscores are not digits", "1_000", int64(1000), never},
		{"bool and int", true, int64(0), greater},
		{"bools", false, true, less},
		{"bool and string", true, "1", equal},
		{"nil and int", nil, int64(500), never},
		{"int and nil", int64(500), nil, never},
		{"nils", nil, nil, never},
		{"nil and string", nil, "", never},
		{"NaN", math.NaN(), int64(1), never},
		{"NaNs", math.NaN(), math.NaN(), never},
		{"map", map[string]any{}, int64(1), never},
		{"array", []any{int64(1)}, int64(1), never},
		{"arrays", []any{}, []any{}, never},
	}
	ops := []string{"<", "<=", ">", ">="}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			env := Env{Context: map[string]any{"a": tt.a, "b": tt.b}}
			want := []bool{tt.want.lt, tt.want.le, tt.want.gt, tt.want.ge}
			for i, op := range ops {
				assert.Equal(t, want[i], eval(t, "a "+op+" b", env), "a %s b", op)
			}
		})
	}
	t.Run("literals", func(t *testing.T) {
		t.Parallel()
		for src, want := range map[string]bool{
			"1 < '2'":       true,
			"'b' > 'a'":     true,
			"undefined < 5": false,
			"null >= 0":     false,
			"1 < 2 < 3":     true,
			"3 > 2 > 1":     false, // (3 > 2) > 1 is true > 1
			"1 < 3 < 2":     true,  // true < 2
			"3 < 2 <= 0":    true,  // false <= 0
			"1 <= 1 >= 1":   true,
			"[] < 1":        false,
		} {
			assert.Equal(t, want, eval(t, src, Env{}), src)
		}
	})
}

func TestStringToNumber(t *testing.T) {
	t.Parallel()
	tests := map[string]float64{
		"": 0, " ": 0, "7": 7, "+5": 5, "-5.5": -5.5, ".5": 0.5, "5.": 5, "1e3": 1000, "1E-2": 0.01,
		"0b101": 5, "0o17": 15, "0X1f": 31, "00": 0, "Infinity": math.Inf(1), "+Infinity": math.Inf(1),
		"-Infinity": math.Inf(-1), "1e400": math.Inf(1), "-0": 0,
	}
	for s, want := range tests {
		assert.Equal(t, want, stringToNumber(s), "%q", s)
	}
	for _, s := range []string{".", "1e", "e1", "+", "0x", "-0x1", "0x1g", "0b2", "1 2", "inf", "NaN", "1_0", "0x_1", "1.2.3", "++1", "1f"} {
		assert.True(t, math.IsNaN(stringToNumber(s)), "%q", s)
	}
}

func TestJSCompileErrors(t *testing.T) {
	t.Parallel()
	// expr-lang's own checks stay: === is not a way around them.
	for _, src := range []string{"a ==== b", "a === ", "'a' === 1 +", strings.Repeat("a || ", maxNodes) + "a"} {
		_, err := Compile(src)
		var e *Error
		assert.ErrorAs(t, err, &e, src)
	}
}
