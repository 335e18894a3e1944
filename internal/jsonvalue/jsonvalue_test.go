package jsonvalue

import (
	"encoding/json"
	"math"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var decodeSeeds = []string{
	`{"a":[1,2.5,null,"x",true,false,{}],"b":{"c":-0,"d":1e400,"e":-1e-400}}`,
	`"caf\u00e9 \ud83d\ude00 \ud800 <&>"`, "\"\xff\xfe\"", "\"\x01\"", `"\x"`, `"a\"b"`,
	`9223372036854775807`, `9223372036854775808`, `-9223372036854775809`, `1.5E+3`, `0.1e-2`,
	`01`, `-`, `1.`, `1e`, `.5`, `+1`, `-0.0`, `[1,]`, `{"a":1,}`, `{"a" 1}`, `{1:2}`, `[`, `{`,
	`{"a":1,"a":2}`, ` [ 1 , 2 ] `, `1 ]`, `1 }`, `1 2`, `1 x`, `[] []`, ``, `   `, `nul`, `truex`,
	`tru`, `[null,nul]`, "\ufeff1", `[[[[[[[[[[]]]]]]]]]]`,
	strings.Repeat("[", maxDepth) + strings.Repeat("]", maxDepth),
	strings.Repeat("[", maxDepth+1) + strings.Repeat("]", maxDepth+1),
	strings.Repeat("[", 10001) + strings.Repeat("]", 10001),
}

// Decode's parser decodes every input as encoding/json does.
func FuzzDecode(f *testing.F) {
	for _, s := range decodeSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		want, wantErr := decodeJSON(b)
		got, err := Decode(b)
		if wantErr != nil {
			require.EqualError(t, err, wantErr.Error())
			return
		}
		require.NoError(t, err)
		require.Equal(t, want, got)
	})
}

// Normalize's copy of JSON-like values is what their JSON round trip gives.
func FuzzNormalize(f *testing.F) {
	f.Add([]byte(`{"a":[1,2.5,null,"x",true,{}],"b":{"c":-0.0,"d":1e300}}`), "s", 1.5, int64(7))
	f.Add([]byte(`[]`), "\xff", math.Ldexp(1, 60), int64(-1))
	f.Add([]byte(`null`), "<\u2028>", 1e21, int64(math.MaxInt64))
	f.Add([]byte(`{}`), "", 9.223372036854775e18, int64(0))
	f.Add([]byte(`[9007199254740993]`), "x", -1e-7, int64(1))
	f.Fuzz(func(t *testing.T, doc []byte, s string, fl float64, i int64) {
		var parsed any // numbers as float64, as a node might return them
		if json.Unmarshal(doc, &parsed) != nil {
			parsed = nil
		}
		for _, v := range []any{
			parsed, s, fl, i, int(i),
			map[string]any{"doc": parsed, s: fl, "i": int(i), "l": []any{fl, s, i, nil, true, []any(nil), map[string]any(nil)}},
			[]any{parsed, map[string]any{"f": fl}, []any{s}},
			map[string]any{"other": []string{s}, "f": float32(fl)}, // not JSON-like: encoded
		} {
			want, wantErr := func() (any, error) {
				switch v.(type) {
				case float64, nil, string, bool, int64, int:
					return Normalize(v) // no round trip for scalars
				}
				return roundTrip(v)
			}()
			got, err := Normalize(v)
			if wantErr != nil {
				require.EqualError(t, err, wantErr.Error())
				continue
			}
			require.NoError(t, err)
			require.Equal(t, want, got, "%#v", v)
		}
	})
}

func TestNormalizeCopies(t *testing.T) {
	t.Parallel()
	in := map[string]any{"a": []any{int64(1), map[string]any{"b": "c"}}}
	out, err := Normalize(in)
	require.NoError(t, err)
	in["a"].([]any)[1].(map[string]any)["b"] = "changed"
	in["a"].([]any)[0] = int64(2)
	in["new"] = true
	assert.Equal(t, map[string]any{"a": []any{int64(1), map[string]any{"b": "c"}}}, out)
}

func TestNormalizeCycle(t *testing.T) {
	t.Parallel()
	m := map[string]any{}
	m["self"] = m
	_, err := Normalize(m)
	require.ErrorContains(t, err, "value is not JSON-marshalable")
}

// The copy and the parser allocate little more than the values they
// return (through encoding/json: 19 and 24 allocations).
func TestAllocs(t *testing.T) {
	v := map[string]any{"n": "c0", "list": []any{int64(1), 2.5, true}}
	assert.LessOrEqual(t, testing.AllocsPerRun(100, func() { _, _ = Normalize(v) }), 4.0)
	b := []byte(`{"n":"c0","list":[1,2.5,true]}`)
	assert.LessOrEqual(t, testing.AllocsPerRun(100, func() { _, _ = Decode(b) }), 14.0)
}

// Marshal writes what json.Marshal writes.
func FuzzMarshal(f *testing.F) {
	f.Add([]byte(`{"a":[1,2.5,null,"x",true,{}],"b":{"c":-0.0,"d":1e300,"<":"&"}}`), "s", 1.5, int64(7))
	f.Add([]byte(`[]`), "\xff", 1e-7, int64(-1))
	f.Add([]byte(`null`), "<\u2028>", 1e21, int64(math.MaxInt64))
	f.Add([]byte(`{"k":"v"}`), "a\"b", 123456789.0, int64(0))
	f.Fuzz(func(t *testing.T, doc []byte, s string, fl float64, i int64) {
		var parsed any
		if json.Unmarshal(doc, &parsed) != nil {
			parsed = nil
		}
		decoded, _ := Decode(doc)
		for _, v := range []any{
			parsed, decoded, s, fl, i, int(i),
			map[string]any{"doc": parsed, s: fl, "i": int(i), "l": []any{fl, s, i, nil, true, []any(nil), map[string]any(nil)}},
			[]any{parsed, map[string]any{"f": fl}, []any{s}},
			map[string]any{"other": []string{s}},
		} {
			want, wantErr := json.Marshal(v)
			got, err := Marshal(v)
			if wantErr != nil {
				require.EqualError(t, err, wantErr.Error())
				continue
			}
			require.NoError(t, err)
			require.Equal(t, string(want), string(got), "%#v", v)
		}
	})
}
