package jsonvalue

import (
	"fmt"
	"math"
)

// WholeNumber reads a JSON-like number that is a whole number (an int64, an
// int, or a float64 without a fraction within ±2^53).
func WholeNumber(v any) (int64, bool) {
	switch n := v.(type) {
	case int64:
		return n, true
	case int:
		return int64(n), true
	case float64:
		if n == math.Trunc(n) && math.Abs(n) < 1<<53 {
			return int64(n), true
		}
	}
	return 0, false
}

// Kind names the JSON type of a JSON-like value for messages: "a string",
// "a boolean", "a number", "an object", else its Go type.
func Kind(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case int64, float64, int:
		return "a number"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}
