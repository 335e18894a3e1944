package expr

import (
	"encoding/json"
	"errors"
	"math"
	"strings"
	"sync"
	"testing"

	"github.com/expr-lang/expr/file"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// testEnv is the scope most tests evaluate in. Tests must not modify it.
func testEnv() Env {
	return Env{
		Result: map[string]any{
			"output": map[string]any{
				"customer": map[string]any{"isVip": true, "name": "Ada"},
				"total":    int64(150),
				"items":    []any{int64(1), "two", map[string]any{"id": "x"}},
			},
			"action": "approve",
		},
		Input: map[string]any{
			"lineItems": []any{"a", "b"},
			"name":      "héllo😀",
		},
		Context: map[string]any{
			"approved":  true,
			"count":     int64(3),
			"order":     map[string]any{"total": 99.5},
			"order-id":  "o-1",
			"len":       "a key named like a builtin",
			"$weird":    "dollar",
			"nothing":   nil,
			"typed":     map[string]int{"a": 1},
			"typedList": []string{"p", "q"},
		},
	}
}

func TestPropertyPath(t *testing.T) {
	t.Parallel()
	tests := []struct {
		src  string
		want any
	}{
		{"result.output.customer.isVip", true},
		{"result.action", "approve"},
		{"result.output.items.0", int64(1)},
		{"result.output.items.2.id", "x"},
		{"result.output.items.3", nil},
		{"result.output.items.01", nil},
		{"result.output.items.length", int64(3)},
		{"result.output.missing.deep.er", nil},
		{"result.output.total.x", nil},
		{"input.lineItems.1", "b"},
		{"input.name.length", int64(7)}, // UTF-16 code units, as in JavaScript
		{"input.name.0", nil},
		{"approved", true},
		{"context.approved", true},
		{"order.total", 99.5},
		{"context.order.total", 99.5},
		{"nothing.x", nil},
		{"missing", nil},
		{"true", nil}, // a path: the context key "true"
		{"1", nil},
		{"$weird", "dollar"},
		{"typed.a", 1},
		{"typedList.1", "q"},
		{"typedList.length", int64(2)},
		{"a..b", nil},
	}
	for _, tt := range tests {
		t.Run(tt.src, func(t *testing.T) {
			t.Parallel()
			p, err := Compile(tt.src)
			require.NoError(t, err)
			got, err := p.Eval(testEnv())
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
			assert.Equal(t, tt.src, p.String())
		})
	}
}

func TestPropertyPathScope(t *testing.T) {
	t.Parallel()
	env := testEnv()
	for _, src := range []string{"result", "input", "context"} {
		t.Run(src, func(t *testing.T) {
			t.Parallel()
			p, err := Compile(src)
			require.NoError(t, err)
			got, err := p.Eval(env)
			require.NoError(t, err)
			want := map[string]any{"result": env.Result, "input": env.Input, "context": env.Context}[src]
			assert.Equal(t, want, got)
		})
	}
	t.Run("empty env", func(t *testing.T) {
		t.Parallel()
		for src, want := range map[string]any{"result": nil, "input": nil, "context": map[string]any{}, "result.output": nil, "x.y": nil} {
			p, err := Compile(src)
			require.NoError(t, err)
			got, err := p.Eval(Env{})
			require.NoError(t, err, src)
			assert.Equal(t, want, got, src)
		}
	})
}

func TestExpression(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		src  string
		want any
	}{
		{"comparison", "result.output.total > 100", true},
		{"logic over context keys", "result.output.total > 100 && approved", true},
		{"context key compared with int literal", "count == 3", true},
		{"context key less than", "count < 5", true},
		{"context member", "context.count * 2", 6},
		{"context index with non-identifier key", `context["order-id"]`, "o-1"},
		{"bare name shadows builtin", "len", "a key named like a builtin"},
		{"builtin call", "len(result.output.items)", 3},
		{"pipe", "result.output.items | len()", 3},
		{"nested path", "order.total + 0.5", 100.0},
		{"action equality", `result.action == "approve"`, true},
		{"ternary", `approved ? "yes" : "no"`, "yes"},
		{"input", "input.lineItems[1]", "b"},
		{"let variable", "let x = 2; x * count", 6},
		{"let variable bound to context", "let o = order; o.total", 99.5},
		{"free name in predicate", "filter([1, 5], # > count)", []any{5}},
		{"predicate member", `map(result.output.items[2:], .id)`, []any{"x"}},
		{"in operator", `"approved" in context`, true},
		{"keys of context", "len(keys(context)) > 3", true},
		{"literal true", "true && true", true},
		{"explicit optional chaining", "result?.output?.customer?.name", "Ada"},
		{"string concatenation", `result.output.customer.name + "!"`, "Ada!"},
		{"nil coalescing", `(missing ?? 0) < 5`, true},
		{"map literal", `{"n": count}`, map[string]any{"n": int64(3)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, err := Compile(tt.src)
			require.NoError(t, err)
			got, err := p.Eval(testEnv())
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestExpressionNilSafety(t *testing.T) {
	t.Parallel()
	tests := []string{
		"missing.b.c",
		"result.output.missing.x.y",
		"nothing.x",
		"context.missing.x",
		`context["no-such-key"].x`,
		"result.output.customer.address.city",
		`result.output.missing["k"][0]`,
		"input.missing[0].name",
		"a?.b.c",
		"(result.output.nothing).x",
		`{"a": nil}.a.b`,
		"filter([nil, {}], .x.y == nil) | len() == 2 ? nil : 1",
	}
	for _, src := range tests {
		t.Run(src, func(t *testing.T) {
			t.Parallel()
			p, err := Compile(src)
			require.NoError(t, err)
			got, err := p.Eval(testEnv())
			require.NoError(t, err)
			assert.Nil(t, got)
		})
	}
	t.Run("empty env", func(t *testing.T) {
		t.Parallel()
		for _, src := range []string{"result.output.x.y", "input.a[0].b", "context.a.b", "a.b == nil ? 1 : 2", "keys(context) == []"} {
			p, err := Compile(src)
			require.NoError(t, err)
			_, err = p.Eval(Env{})
			assert.NoError(t, err, src)
		}
		p, err := Compile("result == nil && input == nil && context == {}")
		require.NoError(t, err)
		got, err := p.Eval(Env{})
		require.NoError(t, err)
		assert.Equal(t, true, got)
	})
}

func TestContextKeys(t *testing.T) {
	t.Parallel()
	tests := []struct {
		src   string
		keys  []string
		all   bool
		input bool
	}{
		// Property paths.
		{"approved", []string{"approved"}, false, false},
		{"order.total", []string{"order"}, false, false},
		{"context.approved.x", []string{"approved"}, false, false},
		{"context", nil, true, false},
		{"context.", nil, false, false},
		{"result.output.x", nil, false, false},
		{"input.lineItems", nil, false, true},
		// Expressions.
		{"a && b.c || a", []string{"a", "b"}, false, false},
		{`context.x + context["order-id"] + context?.y`, []string{"order-id", "x", "y"}, false, false},
		{"result.output > limit", []string{"limit"}, false, false},
		{"input.total > threshold", []string{"threshold"}, false, true},
		{"let x = count; x + y", []string{"count", "y"}, false, false},
		{"let x = 1; let y = x; y", nil, false, false},
		{"len(items) + len(result.output)", []string{"items"}, false, false},
		{"filter(items, # > min)", []string{"items", "min"}, false, false},
		{"context", nil, true, false},
		{"(context)", nil, true, false},
		{"keys(context)", nil, true, false},
		{`"a" in context`, nil, true, false},
		{"context[result.action]", nil, true, false},
		{`context["a" + "b"]`, nil, true, false},
		{"let c = context; c.x", nil, true, false},
		{"context.a && context", []string{"a"}, true, false},
		{`context[""] == nil`, nil, false, false},
		{`result.action == "ok"`, nil, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.src, func(t *testing.T) {
			t.Parallel()
			p, err := Compile(tt.src)
			require.NoError(t, err)
			keys, all := p.ContextKeys()
			if len(tt.keys) == 0 {
				assert.Empty(t, keys)
			} else {
				assert.Equal(t, tt.keys, keys)
			}
			assert.Equal(t, tt.all, all, "all")
			assert.Equal(t, tt.input, p.UsesInput(), "UsesInput")
		})
	}
	t.Run("result is a copy", func(t *testing.T) {
		t.Parallel()
		p, err := Compile("a || b")
		require.NoError(t, err)
		keys, _ := p.ContextKeys()
		keys[0] = "changed"
		again, _ := p.ContextKeys()
		assert.Equal(t, []string{"a", "b"}, again)
	})
}

// TestContextKeysSuffice checks that evaluating with only the keys
// ContextKeys lists gives the same value as with the whole context.
func TestContextKeysSuffice(t *testing.T) {
	t.Parallel()
	for _, src := range []string{
		"result.output.total > 100 && approved",
		`context["order-id"] + "/" + string(count)`,
		"let o = order; o.total > count",
		"order.total",
		"filter([1, 5], # > count)",
	} {
		t.Run(src, func(t *testing.T) {
			t.Parallel()
			p, err := Compile(src)
			require.NoError(t, err)
			keys, all := p.ContextKeys()
			require.False(t, all)
			full := testEnv()
			partial := full
			partial.Context = map[string]any{}
			for _, k := range keys {
				partial.Context[k] = full.Context[k]
			}
			want, err := p.Eval(full)
			require.NoError(t, err)
			got, err := p.Eval(partial)
			require.NoError(t, err)
			assert.Equal(t, want, got)
		})
	}
}

func TestCompileErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, src, msg string
	}{
		{"empty", "", "empty expression"},
		{"blank", "  \t", "empty expression"},
		{"syntax", "count +", "unexpected token EOF"},
		{"unbalanced", "(a", "unexpected token EOF"},
		{"unknown function", "foo(1)", "unknown function foo"},
		{"$env", "$env.x + 1", "$env is not supported"},
		{"redeclare context", "let context = 1; context", "cannot redeclare context"},
		{"redeclare input", "let input = 1; input", "cannot redeclare input"},
		{"redeclare builtin", "let count = 1; count", "cannot redeclare builtin count"},
		{"static type error", `1 + "a"`, "mismatched types int and string"},
		{"too large", strings.Repeat("a + ", maxNodes) + "a", "exceeds maximum allowed nodes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, err := Compile(tt.src)
			require.Error(t, err)
			assert.Nil(t, p)
			var e *Error
			require.ErrorAs(t, err, &e)
			assert.Equal(t, "compile", e.Op)
			assert.Equal(t, tt.src, e.Source)
			assert.Contains(t, err.Error(), tt.msg)
			assert.NotContains(t, err.Error(), "\n", "the message is one line")
		})
	}
}

func TestEvalErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, src, msg string
		env            Env
	}{
		{"arithmetic with missing key", "count + 5", "invalid operation: <nil> + int", Env{}},
		{"arithmetic on a map", "order * 2", "invalid operation: map[string]interface {} * int", testEnv()},
		{"index out of range", "result.output.items[5]", "index out of range", testEnv()},
		{"member of a number", "result.output.total.x == nil", "cannot fetch x from int64", testEnv()},
		{"conversion", `int(result.action)`, "invalid operation", testEnv()},
		{"method on a map", "input.foo()", "cannot call nil", testEnv()},
		{"len of nil", "len(missing)", "invalid argument for len", testEnv()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, err := Compile(tt.src)
			require.NoError(t, err)
			got, err := p.Eval(tt.env)
			require.Error(t, err)
			assert.Nil(t, got)
			var e *Error
			require.ErrorAs(t, err, &e)
			assert.Equal(t, "evaluate", e.Op)
			var fe *file.Error
			assert.ErrorAs(t, err, &fe, "the expr-lang error stays in the chain")
			assert.Contains(t, err.Error(), tt.msg)
			assert.Contains(t, err.Error(), tt.src)
			assert.NotContains(t, err.Error(), "\n")
		})
	}
	t.Run("memory budget", func(t *testing.T) {
		t.Parallel()
		p, err := Compile("len(1..100000000)")
		require.NoError(t, err)
		_, err = p.Eval(Env{})
		assert.ErrorContains(t, err, "memory budget exceeded")
	})
}

func TestEvalConcurrent(t *testing.T) {
	t.Parallel()
	p, err := Compile("filter(result.output.items, # == 1) | len() == 1 && approved")
	require.NoError(t, err)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				got, err := p.Eval(testEnv())
				assert.NoError(t, err)
				assert.Equal(t, true, got)
			}
		})
	}
	wg.Wait()
}

func TestTruthy(t *testing.T) {
	t.Parallel()
	type point struct{ X int }
	tests := []struct {
		name string
		v    any
		want bool
	}{
		{"nil", nil, false},
		{"false", false, false},
		{"true", true, true},
		{"empty string", "", false},
		{"string", "x", true},
		{"string false", "false", true},
		{"string 0", "0", true},
		{"string space", " ", true},
		{"int 0", 0, false},
		{"int", -1, true},
		{"int64 0", int64(0), false},
		{"int64", int64(1 << 60), true},
		{"int32 0", int32(0), false},
		{"uint8", uint8(2), true},
		{"float 0", 0.0, false},
		{"float -0", math.Copysign(0, -1), false},
		{"float NaN", math.NaN(), false},
		{"float", 0.5, true},
		{"float +Inf", math.Inf(1), true},
		{"float -Inf", math.Inf(-1), true},
		{"float32 0", float32(0), false},
		{"float32 NaN", float32(math.NaN()), false},
		{"json.Number 0", json.Number("0"), false},
		{"json.Number 0.0", json.Number("-0.0"), false},
		{"json.Number", json.Number("12"), true},
		{"empty map", map[string]any{}, true},
		{"map", map[string]any{"a": 1}, true},
		{"nil map", map[string]any(nil), false},
		{"empty slice", []any{}, true},
		{"slice of falsy", []any{false}, true},
		{"nil slice", []any(nil), false},
		{"typed empty slice", []string{}, true},
		{"typed nil slice", []string(nil), false},
		{"struct", point{}, true},
		{"pointer", &point{}, true},
		{"nil pointer", (*point)(nil), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			assert.Equal(t, tt.want, Truthy(tt.v))
		})
	}
}

func TestTruthyOfConditions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		src  string
		want bool
	}{
		{"result.output.customer.isVip", true},
		{"result.output.customer.isGold", false},
		{"approved", true},
		{"result.output.total > 200", false},
		{"0 / 0", false},  // NaN
		{"-0.0", false},   // negative zero
		{"[]", true},      // empty array
		{"{}", true},      // empty object
		{`"false"`, true}, // non-empty string
		{`""`, false},     // empty string
		{"true", false},   // a property path: the (missing) context key "true"
		{"true && true", true},
	}
	for _, tt := range tests {
		t.Run(tt.src, func(t *testing.T) {
			t.Parallel()
			p, err := Compile(tt.src)
			require.NoError(t, err)
			v, err := p.Eval(testEnv())
			require.NoError(t, err)
			assert.Equal(t, tt.want, Truthy(v))
		})
	}
}

func TestErrorUnwrap(t *testing.T) {
	t.Parallel()
	cause := errors.New("boom")
	err := error(&Error{Op: "evaluate", Source: "x", Err: cause})
	assert.ErrorIs(t, err, cause)
	assert.Equal(t, `evaluate expression "x": boom`, err.Error())
}

func FuzzCompileEval(f *testing.F) {
	for _, seed := range []string{
		"result.output.customer.isVip",
		"input.lineItems.0",
		"a..b",
		"$x.length",
		"count < 5 && approved",
		`context["order-id"] + "x"`,
		"let x = input; x.lineItems[1]",
		"filter(result.output.items, # != nil)",
		"map(input.lineItems, {k: #})",
		"keys(context)",
		"a?.b.c ?? d[0]",
		"foo(1)",
		"$env",
		"1 +",
		`"\u00e9"`,
		"result.output.status === 'OK' && A.ok !== false",
		"fetch-order.ok || 'x'",
		"0 && (missing + 1)",
		"!'' ? null : undefined",
		"'10' < 9 || 1 < 2 < 3",
		"route.total >= 500",
		"`fetch-order` + 'a === b' // it's",
		"filter([0, 1], #) | len()",
	} {
		f.Add(seed)
	}
	withOutputs := testEnv()
	withOutputs.Context["_outputs.A"] = map[string]any{"ok": true}
	withOutputs.Context["_outputs.fetch-order"] = int64(1)
	f.Fuzz(func(t *testing.T, src string) {
		for _, opts := range [][]Option{nil, {NodeIDs("A", "fetch-order", "count")}} {
			p, err := Compile(src, opts...)
			if err != nil {
				var e *Error
				require.ErrorAs(t, err, &e)
				if !strings.Contains(src, "js.") {
					require.NotContains(t, err.Error(), "js.", "the functions of js.go stay hidden")
				}
				continue
			}
			require.Equal(t, src, p.String())
			keys, _ := p.ContextKeys()
			for _, k := range keys {
				require.NotEmpty(t, k)
			}
			for _, env := range []Env{{}, testEnv(), withOutputs} {
				n := len(env.Context)
				v, err := p.Eval(env)
				require.Len(t, env.Context, n, "the context is not modified")
				if err != nil {
					var e *Error
					require.ErrorAs(t, err, &e)
					continue
				}
				Truthy(v)
			}
		}
	})
}
