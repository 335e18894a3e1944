package expr

import (
	"reflect"
	"strconv"
	"strings"
	"unicode/utf16"
)

// isPropertyPath reports whether src fully matches ^[A-Za-z0-9_$.]+$, the
// characters Flowcraft's PropertyEvaluator accepts.
func isPropertyPath(src string) bool {
	if src == "" {
		return false
	}
	for i := 0; i < len(src); i++ {
		switch c := src[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9',
			c == '_', c == '$', c == '.':
		default:
			return false
		}
	}
	return true
}

func compilePath(src string, nodes map[string]bool) *Program {
	p := &Program{src: src, path: strings.Split(src, ".")}
	key := ""
	switch head := p.path[0]; head {
	case "result":
	case "input":
		p.input = true
	case "context":
		if len(p.path) == 1 {
			p.all = true
			p.nodes = nodes
		} else {
			key = p.path[1]
		}
	default:
		key = head
	}
	if key != "" {
		set := map[string]bool{key: true}
		if nodes[key] {
			p.nodes = map[string]bool{key: true}
			set[outputsPrefix+key] = true
		}
		p.keys = sortedKeys(set)
	}
	return p
}

// evalPath walks the path. A missing or nil step yields nil.
func (p *Program) evalPath(env Env) any {
	var v any
	rest := p.path[1:]
	switch head := p.path[0]; head {
	case "result":
		v = untypedNil(env.Result)
	case "input":
		v = env.Input
	case "context":
		if len(rest) > 0 && !p.all && p.nodes[rest[0]] {
			v, rest = nodeValue(env.Context, rest[0]), rest[1:]
		} else {
			v = p.contextMap(env.Context)
		}
	default:
		if p.nodes[head] {
			v = nodeValue(env.Context, head)
		} else {
			v = env.Context[head]
		}
	}
	for _, seg := range rest {
		if v == nil {
			return nil
		}
		v = property(v, seg)
	}
	return v
}

// property returns v[seg] with JavaScript property access semantics over
// JSON-like values, or nil.
func property(v any, seg string) any {
	switch x := v.(type) {
	case map[string]any:
		return x[seg]
	case []any:
		if seg == "length" {
			return int64(len(x))
		}
		if i, ok := arrayIndex(seg); ok && i < len(x) {
			return x[i]
		}
		return nil
	case string:
		if seg == "length" { // JavaScript counts UTF-16 code units
			return int64(len(utf16.Encode([]rune(x))))
		}
		return nil
	}
	// Other maps and slices, for values that were not normalized.
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Map:
		if rv.Type().Key().Kind() != reflect.String {
			return nil
		}
		if e := rv.MapIndex(reflect.ValueOf(seg).Convert(rv.Type().Key())); e.IsValid() {
			return e.Interface()
		}
	case reflect.Slice, reflect.Array:
		if seg == "length" {
			return int64(rv.Len())
		}
		if i, ok := arrayIndex(seg); ok && i < rv.Len() {
			return rv.Index(i).Interface()
		}
	}
	return nil
}

// arrayIndex parses seg as a canonical array index: "0", "1", ... but not
// "01", "-1" or "1.0", which JavaScript treats as ordinary property names.
func arrayIndex(seg string) (int, bool) {
	i, err := strconv.Atoi(seg)
	if err != nil || i < 0 || strconv.Itoa(i) != seg {
		return 0, false
	}
	return i, true
}
