// Package jsonvalue converts values to and from the JSON-like form stored in a run context.
package jsonvalue

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
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
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("value is not JSON-marshalable: %w", err)
	}
	return Decode(b)
}

// Decode decodes JSON into the JSON-like form used for context values:
// integers that fit in int64 decode as int64, other numbers as float64.
func Decode(b []byte) (any, error) {
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
		if i, err := strconv.ParseInt(string(x), 10, 64); err == nil {
			return i
		}
		f, err := strconv.ParseFloat(string(x), 64)
		if err != nil || math.IsInf(f, 0) {
			return string(x)
		}
		return f
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
