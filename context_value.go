package sqsadapter

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"reflect"
)

// ContextValue reads key of the run context, like nc.Get, and converts it to
// T. Context values are JSON-like, and a number written as a float64
// without a fraction comes back as an int64: ContextValue converts between
// numeric kinds when no information is lost (3.0 reads as int 3, 3.5 as an
// int is an error, int64 7 reads as float64 7; a float32 rounds like
// encoding/json), and converts maps, slices and structs through JSON, like
// nc.Decode. A missing key gives T's zero value, false and nil. A value that
// does not convert, or null into a T that cannot be nil, gives an error
// naming the key, the stored type and T.
func ContextValue[T any](ctx context.Context, nc *NodeContext, key string) (T, bool, error) {
	var zero T
	v, ok, err := nc.Get(ctx, key)
	if err != nil || !ok {
		return zero, false, err
	}
	t, err := convertValue[T](v)
	if err != nil {
		return zero, true, fmt.Errorf("sqsadapter: node %q: context key %q holds %s, which does not convert to %v: %w",
			nc.NodeID, key, brief(v), reflect.TypeFor[T](), err)
	}
	return t, true, nil
}

// convertValue converts a JSON-like value to T without losing information.
func convertValue[T any](v any) (T, error) {
	var t T
	if x, ok := v.(T); ok && v != nil {
		return x, nil
	}
	dst := reflect.ValueOf(&t).Elem()
	if v == nil {
		switch dst.Kind() {
		case reflect.Pointer, reflect.Map, reflect.Slice, reflect.Interface:
			return t, nil
		}
		return t, fmt.Errorf("it cannot be nil")
	}
	switch dst.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		i, err := asInt(v)
		if err == nil && dst.OverflowInt(i) {
			err = fmt.Errorf("out of range")
		}
		if err == nil {
			dst.SetInt(i)
		}
		return t, err
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		i, err := asInt(v)
		if err == nil && (i < 0 || dst.OverflowUint(uint64(i))) {
			err = fmt.Errorf("out of range")
		}
		if err == nil {
			dst.SetUint(uint64(i))
		}
		return t, err
	case reflect.Float32, reflect.Float64:
		var f float64
		switch x := v.(type) {
		case float64:
			f = x
		case int64:
			if f = float64(x); f >= 1<<63 || int64(f) != x {
				return t, fmt.Errorf("not exact as a float")
			}
		default:
			return t, fmt.Errorf("not a number")
		}
		if dst.OverflowFloat(f) {
			return t, fmt.Errorf("out of range")
		}
		dst.SetFloat(f)
		return t, nil
	case reflect.String:
		s, ok := v.(string)
		if !ok {
			return t, fmt.Errorf("not a string")
		}
		dst.SetString(s)
		return t, nil
	case reflect.Bool:
		b, ok := v.(bool)
		if !ok {
			return t, fmt.Errorf("not a bool")
		}
		dst.SetBool(b)
		return t, nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return t, err
	}
	if err := json.Unmarshal(b, &t); err != nil {
		return t, err
	}
	return t, nil
}

// asInt returns v as an int64 if it is an integer.
func asInt(v any) (int64, error) {
	switch x := v.(type) {
	case int64:
		return x, nil
	case float64:
		if x != math.Trunc(x) {
			return 0, fmt.Errorf("has a fraction")
		}
		if x < -(1<<63) || x >= 1<<63 {
			return 0, fmt.Errorf("out of range")
		}
		return int64(x), nil
	}
	return 0, fmt.Errorf("not a number")
}

// brief shows a stored value's type and value in an error, cut short.
func brief(v any) string {
	if v == nil {
		return "null"
	}
	s := fmt.Sprint(v)
	if len(s) > 40 {
		s = s[:37] + "..."
	}
	return fmt.Sprintf("%T %s", v, s)
}
