// Package jsonvalue converts values to and from the JSON-like form stored in a run context.
package jsonvalue

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"unicode/utf8"
)

// Normalize converts v to its JSON-like form: map[string]any, []any,
// string, bool, nil, int64 (integers that fit) or float64. Go structs with
// json tags are converted through their JSON encoding.
func Normalize(v any) (any, error) {
	switch x := v.(type) {
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return nil, fmt.Errorf("value is not JSON-marshalable: %v", x)
		}
		return x, nil
	case nil, string, bool, int64:
		return x, nil
	case int:
		return int64(x), nil
	}
	if n, ok := copyJSONLike(v, 0); ok {
		return n, nil
	}
	return roundTrip(v)
}

// roundTrip is Normalize's general case: v's JSON encoding, decoded.
func roundTrip(v any) (any, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("value is not JSON-marshalable: %w", err)
	}
	return Decode(b)
}

// maxDepth bounds the nesting that copyJSONLike and parse handle; deeper
// values (and cycles) take the encoding/json path, which decides.
const maxDepth = 500

// copyJSONLike returns what roundTrip returns for a value made only of
// map[string]any, []any, string, bool, nil, int, int64 and float64 at the
// given nesting depth, without encoding it: a deep copy, with ints as int64
// and floats as their JSON text decodes. ok is false for anything else
// (other types, invalid UTF-8, NaN and infinities, deep nesting): then
// roundTrip decides, errors included.
func copyJSONLike(v any, depth int) (any, bool) {
	switch x := v.(type) {
	case nil, bool, int64:
		return v, true
	case string:
		return v, utf8.ValidString(x) // encoding/json replaces invalid UTF-8
	case int:
		return int64(x), true
	case float64:
		if n, ok := jsonFloat(x); !ok || n != nil {
			return n, ok
		}
		return v, true
	case map[string]any:
		if x == nil {
			return nil, true
		}
		if depth >= maxDepth {
			return nil, false
		}
		m := make(map[string]any, len(x))
		for k, e := range x {
			c, ok := copyJSONLike(e, depth+1)
			if !ok || !utf8.ValidString(k) {
				return nil, false
			}
			m[k] = c
		}
		return m, true
	case []any:
		if x == nil {
			return nil, true
		}
		if depth >= maxDepth {
			return nil, false
		}
		s := make([]any, len(x))
		for i, e := range x {
			c, ok := copyJSONLike(e, depth+1)
			if !ok {
				return nil, false
			}
			s[i] = c
		}
		return s, true
	}
	return nil, false
}

// jsonFloat is what f decodes to once encoded by encoding/json, as an
// element of a value: an integer that fits in int64 is written without
// fraction or exponent, so it decodes as int64 (from its shortest decimal
// form, which above 2^53 need not be f's exact value); anything else decodes
// to f itself, reported as nil. NaN and infinities cannot be encoded.
func jsonFloat(f float64) (any, bool) {
	switch {
	case math.IsNaN(f) || math.IsInf(f, 0):
		return nil, false
	case f != math.Trunc(f) || math.Abs(f) >= 1e21: // encoded with a fraction or an exponent
		return nil, true
	case math.Abs(f) < 1<<53:
		return int64(f), true
	}
	var buf [32]byte
	return convertNumber(string(strconv.AppendFloat(buf[:0], f, 'f', -1, 64))), true
}

// Decode decodes JSON into the JSON-like form used for context values:
// integers that fit in int64 decode as int64, other numbers as float64.
func Decode(b []byte) (any, error) {
	if v, ok := parse(b); ok {
		return v, nil
	}
	return decodeJSON(b)
}

// decodeJSON is Decode by encoding/json: the reference for parse, and the
// path that decides on everything parse leaves to it, errors included.
func decodeJSON(b []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	if d.More() {
		return nil, fmt.Errorf("invalid JSON: trailing data")
	}
	return convertNumbers(v), nil
}

func convertNumbers(v any) any {
	switch x := v.(type) {
	case json.Number:
		return convertNumber(string(x))
	case map[string]any:
		for k, e := range x {
			x[k] = convertNumbers(e)
		}
		return x
	case []any:
		for i, e := range x {
			x[i] = convertNumbers(e)
		}
		return x
	default:
		return v
	}
}

// convertNumber converts a JSON number: an int64 if it is an integer that
// fits, else a float64, else (out of range) the number's text.
func convertNumber(s string) any {
	if i, err := strconv.ParseInt(s, 10, 64); err == nil {
		return i
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsInf(f, 0) {
		return s
	}
	return f
}

func String(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case nil:
		return ""
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}
