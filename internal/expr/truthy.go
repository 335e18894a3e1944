package expr

import (
	"encoding/json"
	"math"
	"reflect"
)

// Truthy reports whether v is truthy in JavaScript, as Flowcraft coerces a
// condition's value with !!value. Falsy are nil, false, 0, -0, NaN and "";
// everything else is truthy, including "0", "false", and empty maps and
// slices. A nil map or slice counts as null, which is how it encodes to JSON.
func Truthy(v any) bool {
	switch x := v.(type) {
	case nil:
		return false
	case bool:
		return x
	case string:
		return x != ""
	case int:
		return x != 0
	case int64:
		return x != 0
	case float64:
		return x != 0 && !math.IsNaN(x) // -0 == 0
	case json.Number:
		f, err := x.Float64()
		return err != nil || f != 0 // an unparsable number is a non-empty string
	case map[string]any:
		return x != nil
	case []any:
		return x != nil
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Bool:
		return rv.Bool()
	case reflect.String:
		return rv.Len() > 0
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return rv.Int() != 0
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return rv.Uint() != 0
	case reflect.Float32, reflect.Float64:
		f := rv.Float()
		return f != 0 && !math.IsNaN(f)
	case reflect.Map, reflect.Slice, reflect.Pointer, reflect.Interface, reflect.Func, reflect.Chan:
		return !rv.IsNil()
	}
	return true
}
