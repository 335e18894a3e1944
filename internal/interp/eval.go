package interp

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"unicode/utf16"

	"github.com/flowcraft/sqsadapter"
	"github.com/flowcraft/sqsadapter/internal/expr"
)

// route decides which outgoing edges a node's result takes (§4.5): the
// edges whose action equals the result's action, else those without an
// action, each only if its condition is truthy. It returns the targets
// taken, the inputs their edges' transforms staged, and the errors of the
// expressions that failed to evaluate: a failed condition counts as false
// and a failed transform stages nil, as in the engine. transformInput gives
// the value a transform transforms, given the edge.
func route(edges []sqsadapter.EdgeDefinition, nodeIDs []string, res Outcome, in any, ctxView map[string]any,
	transformInput func(sqsadapter.EdgeDefinition) any) (map[string]bool, map[string]any, []string) {
	result := map[string]any{"output": res.Output, "action": res.Action}
	var took []sqsadapter.EdgeDefinition
	var errs []string
	for _, withAction := range []bool{true, false} {
		if withAction && res.Action == "" {
			continue
		}
		for _, e := range edges {
			if withAction && e.Action != res.Action || !withAction && e.Action != "" {
				continue
			}
			ok := true
			if e.Condition != "" {
				v, err := eval(e.Condition, nodeIDs, expr.Env{Result: result, Input: in, Context: ctxView})
				if err != nil {
					errs = append(errs, fmt.Sprintf("condition of edge %s -> %s: %v", e.Source, e.Target, err))
				}
				ok = err == nil && expr.Truthy(v)
			}
			if ok {
				took = append(took, e)
			}
		}
		if len(took) > 0 {
			break
		}
	}
	taken := map[string]bool{}
	staged := map[string]any{}
	for _, e := range took {
		taken[e.Target] = true
		if e.Transform == "" {
			continue
		}
		v, err := eval(e.Transform, nodeIDs, expr.Env{Result: result, Input: transformInput(e), Context: ctxView})
		if err == nil {
			v, err = Normalize(v)
		}
		if err != nil {
			errs = append(errs, fmt.Sprintf("transform of edge %s -> %s: %v", e.Source, e.Target, err))
			v = nil
		}
		staged[e.Target] = v
	}
	return taken, staged, errs
}

// programs caches compiled expressions; compiled programs are immutable.
var programs sync.Map // source and node ids → *expr.Program

// eval evaluates src, in which the blueprint's node ids name their outputs.
func eval(src string, nodeIDs []string, env expr.Env) (any, error) {
	key := src + "\x00" + strings.Join(nodeIDs, "\x00")
	p, ok := programs.Load(key)
	if !ok {
		prog, err := expr.Compile(src, expr.NodeIDs(nodeIDs...))
		if err != nil {
			return nil, err
		}
		p, _ = programs.LoadOrStore(key, prog)
	}
	return p.(*expr.Program).Eval(env)
}

// resolveInputs resolves an "inputs" definition against the context view
// (§4.2): a string is one reference; a map resolves each value, an array
// value taking its first present (non-null) reference.
func resolveInputs(inputs any, view map[string]any) any {
	switch in := inputs.(type) {
	case string:
		return resolveRef(in, view)
	case map[string]any:
		m := map[string]any{}
		for name, v := range in {
			switch rv := v.(type) {
			case string:
				m[name] = resolveRef(rv, view)
			case []any:
				m[name] = nil
				for _, e := range rv {
					s, _ := e.(string)
					if got := resolveRef(s, view); got != nil {
						m[name] = got
						break
					}
				}
			}
		}
		return m
	}
	return nil
}

// resolveRef resolves one reference: "_…" is a raw context key;
// "node.path" walks that node's output; a plain name is that node's output
// if it has one, else the context key of that name.
func resolveRef(ref string, view map[string]any) any {
	if strings.HasPrefix(ref, "_") {
		return view[ref]
	}
	if base, path, ok := strings.Cut(ref, "."); ok {
		return walk(view["_outputs."+base], strings.Split(path, "."))
	}
	if v, ok := view["_outputs."+ref]; ok {
		return v
	}
	return view[ref]
}

// walk follows a dotted path through maps and arrays (a numeric segment
// indexes an array; "length" is the length of an array, or of a string in
// UTF-16 code units, as in JavaScript). A missing step yields nil.
func walk(v any, path []string) any {
	for _, seg := range path {
		if v == nil {
			return nil
		}
		switch x := v.(type) {
		case map[string]any:
			v = x[seg]
		case []any:
			if seg == "length" {
				v = int64(len(x))
				continue
			}
			i, ok := index(seg)
			if !ok || i >= len(x) {
				return nil
			}
			v = x[i]
		case string:
			if seg != "length" {
				return nil
			}
			v = int64(len(utf16.Encode([]rune(x))))
		default:
			return nil
		}
	}
	return v
}

// index parses an array index: decimal digits only.
func index(seg string) (int, bool) {
	if seg == "" || len(seg) > 9 {
		return 0, false
	}
	for _, c := range seg {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	i, err := strconv.Atoi(seg)
	return i, err == nil
}

// Normalize converts v to the JSON-like form of context values through a
// JSON round trip: map[string]any, []any, string, bool, nil, int64 for
// integers that fit, float64 for other numbers.
func Normalize(v any) (any, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var out any
	if err := d.Decode(&out); err != nil {
		return nil, err
	}
	var conv func(any) any
	conv = func(v any) any {
		switch x := v.(type) {
		case json.Number:
			if i, err := x.Int64(); err == nil {
				return i
			}
			f, _ := x.Float64()
			return f
		case map[string]any:
			for k, e := range x {
				x[k] = conv(e)
			}
		case []any:
			for i, e := range x {
				x[i] = conv(e)
			}
		}
		return v
	}
	return conv(out), nil
}
