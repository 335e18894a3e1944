package sqsadapter_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"

	"github.com/flowcraft/sqsadapter"
	"github.com/flowcraft/sqsadapter/internal/expr"
	"github.com/flowcraft/sqsadapter/sqsadaptertest"
)

// The hostile alphabet: ids and values that look like the engine's own
// separators and internal names, quotes and escapes, non-ASCII text, the
// non-characters U+FFFE and U+FFFF, the longest ids allowed, and empty
// values.
//
// The id rule: 1 to protoMaxID bytes of valid UTF-8, not only white space,
// no control character (U+0000–U+001F, U+007F). Ids it accepts must work
// everywhere; ids it refuses must be refused with a typed error.

const protoMaxID = 256

// protoHostileParts are the pieces hostile ids are made of.
var protoHostileParts = []string{
	":", ".", "/", "#", "@", "%", " ", `"`, "'", `\`, "é", "日本", "🙂", "\u00a0", "\u200b", "\u2028", "\ufffd",
	"x", "x@fallback", "@fallback", "_outputs.", "_inputs.", "flowcraft:fanin:", "r:x", "x:j", "%2F", "\\u0000",
	"{}", "[]", "$", "*", "?", "a b", "..", "//", "-", "_",
}

// protoNonchars are valid UTF-8 that SQS does not allow in a message body.
var protoNonchars = []string{"\ufffe", "\uffff"}

// protoHostileGen draws hostile ids and values.
type protoHostileGen struct {
	r *rand.Rand
	// nonchars allows U+FFFE and U+FFFF: only some blueprints get them, so
	// that the others show what else breaks.
	nonchars bool
}

func (h *protoHostileGen) part() string {
	if h.nonchars && h.r.IntN(6) == 0 {
		return protoNonchars[h.r.IntN(len(protoNonchars))]
	}
	return protoHostileParts[h.r.IntN(len(protoHostileParts))]
}

// id returns a hostile id that contains token (which makes it unique) and
// follows the id rule; one in eight is exactly protoMaxID bytes long.
func (h *protoHostileGen) id(token string) string {
	var b strings.Builder
	for range 1 + h.r.IntN(3) {
		b.WriteString(h.part())
	}
	if h.r.IntN(2) == 0 {
		b.WriteString(token)
	} else {
		s := b.String()
		b.Reset()
		b.WriteString(token)
		b.WriteString(s)
	}
	if h.r.IntN(3) == 0 {
		b.WriteString(h.part())
	}
	id := b.String()
	if strings.TrimSpace(id) == "" || strings.HasPrefix(id, "k_") {
		id = "i" + id
	}
	if h.r.IntN(8) == 0 {
		id = protoPadID(id)
	}
	return id
}

// protoCut cuts id to at most n bytes, at a character boundary.
func protoCut(id string, n int) string {
	if len(id) <= n {
		return id
	}
	for n > 0 && !utf8.RuneStart(id[n]) {
		n--
	}
	return id[:n]
}

// protoPadID pads id with parts and then ASCII to exactly protoMaxID bytes.
func protoPadID(id string) string {
	for i := 0; len(id) < protoMaxID; i++ {
		p := protoHostileParts[i%len(protoHostileParts)]
		if len(id)+len(p) > protoMaxID {
			p = strings.Repeat("z", protoMaxID-len(id))
		}
		id += p
	}
	return id
}

// value returns a hostile JSON-like value.
func (h *protoHostileGen) value() any {
	switch h.r.IntN(12) {
	case 0:
		return ""
	case 1:
		return map[string]any{}
	case 2:
		return []any{}
	case 3:
		return nil
	case 4:
		return map[string]any{"_outputs.x": h.text(), "": h.text(), "x@fallback": []any{h.text(), map[string]any{}}}
	case 5:
		return "_outputs." + h.text()
	case 6:
		return "\x00\x01\t\n\r\x1f\x7f" + h.text()
	case 7:
		return []any{int64(9223372036854775807), int64(-9223372036854775808), -0.5, "", nil, true}
	default:
		return h.text()
	}
}

func (h *protoHostileGen) text() string {
	var b strings.Builder
	for range 1 + h.r.IntN(4) {
		b.WriteString(h.part())
	}
	return b.String()
}

// protoPlainRef reports whether an input reference naming node id means
// that node's output (§4.2: a reference with a '.' is a path into the
// output of the node before the dot, one starting with '_' a raw key).
func protoPlainRef(id string) bool {
	return !strings.Contains(id, ".") && !strings.HasPrefix(id, "_")
}

// protoExprString returns an expression string literal for s.
func protoExprString(s string) string { return strconv.Quote(s) }

var (
	protoWriterRef = regexp.MustCompile(`\(k_([a-z]+[0-9]+)\.v \?\? 1\)`)
	protoActionRef = regexp.MustCompile(`result\.action == "([a-z])"`)
)

// protoHostile renames every node, the blueprint and the run with hostile
// ids and every action with a hostile action, keeping what each reference
// means, and adds hostile values: in node outputs and context writes
// (params "echo" and "shape"), in the initial context, as start inputs.
//
// Where a pair of nodes allows it, the predecessor of a failing node x that
// has a fallback is named "x@fallback", the name of x's fallback attempt
// record: it commits before x fails.
func protoHostile(c *protoCase, r *rand.Rand) {
	h := &protoHostileGen{r: r, nonchars: r.IntN(6) == 0}
	bp := c.bp
	preds := map[string][]string{}
	out := map[string][]sqsadapter.EdgeDefinition{}
	for _, e := range bp.Edges {
		preds[e.Target] = append(preds[e.Target], e.Source)
		out[e.Source] = append(out[e.Source], e)
	}
	defs := map[string]*sqsadapter.NodeDefinition{}
	for i := range bp.Nodes {
		defs[bp.Nodes[i].ID] = &bp.Nodes[i]
	}

	// Names.
	twins := map[string]string{} // predecessor → the failing node it is named after
	hasTwin := map[string]bool{}
	for _, d := range bp.Nodes {
		if d.Config.Fallback == "" || d.Params["kind"] != "fail" || r.IntN(5) != 0 {
			continue
		}
		for _, p := range preds[d.ID] {
			if _, ok := twins[p]; !ok && !hasTwin[p] && defs[p].Config.Fallback == "" {
				twins[p], hasTwin[d.ID] = d.ID, true
				break
			}
		}
	}
	names := map[string]string{}
	used := map[string]bool{}
	fresh := func(i int) string {
		id := h.id(fmt.Sprintf("%d", i))
		for try := 1; used[id]; try++ { // at most len(used) times
			id = protoCut(h.id(fmt.Sprintf("%d", i)), protoMaxID-8) + fmt.Sprintf("~%d", try)
		}
		used[id] = true
		return id
	}
	for i, d := range bp.Nodes {
		if _, ok := twins[d.ID]; !ok {
			names[d.ID] = fresh(i)
		}
	}
	for i, d := range bp.Nodes {
		if x, ok := twins[d.ID]; ok {
			name := names[x] + "@fallback"
			if len(name) > protoMaxID || used[name] {
				name = fresh(i)
			}
			used[name] = true
			names[d.ID] = name
		}
	}
	actions := map[string]string{"": ""}
	taken := map[string]bool{"": true}
	for _, a := range []string{"a", "b", "c", "z"} {
		v := h.text()
		for try := 1; taken[v]; try++ { // at most len(taken) times
			v = h.text() + fmt.Sprintf("~%d", try)
		}
		actions[a], taken[v] = v, true
	}

	ref := func(s string) string {
		switch {
		case strings.HasPrefix(s, "_inputs."):
			if n, ok := names[strings.TrimPrefix(s, "_inputs.")]; ok {
				return "_inputs." + n
			}
		case strings.HasPrefix(s, "k_"):
			if n, ok := names[strings.TrimPrefix(s, "k_")]; ok {
				return "k_" + n
			}
		}
		base, path, dotted := strings.Cut(s, ".")
		n, ok := names[base]
		if !ok {
			return s // an initial key, or a key no one writes
		}
		if !protoPlainRef(n) {
			return "_inputs." + n // a raw key: present only as a start input
		}
		if dotted {
			return n + "." + path
		}
		return n
	}
	inputs := func(in any) any {
		switch v := in.(type) {
		case string:
			return ref(v)
		case map[string]any:
			m := map[string]any{}
			for k, x := range v {
				switch y := x.(type) {
				case string:
					m[k] = ref(y)
				case []any:
					var arr []any
					for _, e := range y {
						arr = append(arr, ref(e.(string)))
					}
					m[k] = arr
				}
			}
			return m
		}
		return in
	}

	// A node may return an unusual output only if nothing evaluates it:
	// no condition or transform on its edges, nor on those of the nodes it
	// stands in for.
	quiet := func(id string) bool {
		for _, e := range out[id] {
			if e.Condition != "" || e.Transform != "" {
				return false
			}
		}
		return true
	}
	fbFor := map[string][]string{}
	for _, d := range bp.Nodes {
		if f := d.Config.Fallback; f != "" {
			fbFor[f] = append(fbFor[f], d.ID)
		}
	}
	for i := range bp.Nodes {
		d := &bp.Nodes[i]
		old := d.ID
		p := maps.Clone(d.Params)
		if acts, ok := p["actions"].([]any); ok {
			renamed := make([]any, len(acts))
			for j, a := range acts {
				renamed[j] = actions[a.(string)]
			}
			p["actions"] = renamed
		}
		if r.IntN(3) == 0 {
			p["echo"] = h.value()
		}
		calm := quiet(old)
		for _, x := range fbFor[old] {
			calm = calm && quiet(x)
		}
		if calm && r.IntN(4) == 0 {
			p["shape"] = []string{"empty", "emptyString", "null", "echo"}[r.IntN(4)]
			if _, ok := p["echo"]; !ok {
				p["echo"] = h.value()
			}
		}
		if ev, ok := p["eventName"].(string); ok {
			if hook, paired := strings.CutPrefix(ev, "webhook:"); paired && names[hook] != "" {
				p["eventName"] = "webhook:" + names[hook] // the pairing follows the renaming
			} else {
				p["eventName"] = h.text()
			}
		}
		d.Params = p
		d.ID = names[old]
		if d.Config.Fallback != "" {
			d.Config.Fallback = names[d.Config.Fallback]
		}
		if d.Inputs != nil {
			d.Inputs = inputs(d.Inputs)
		}
	}
	for i := range bp.Edges {
		e := &bp.Edges[i]
		e.Source, e.Target = names[e.Source], names[e.Target]
		e.Action = actions[e.Action]
		e.Condition = protoWriterRef.ReplaceAllStringFunc(e.Condition, func(m string) string {
			id := protoWriterRef.FindStringSubmatch(m)[1]
			return "(context[" + protoExprString("k_"+names[id]) + "].v ?? 1)"
		})
		e.Condition = protoActionRef.ReplaceAllStringFunc(e.Condition, func(m string) string {
			return "result.action == " + protoExprString(actions[protoActionRef.FindStringSubmatch(m)[1]])
		})
	}

	initial := map[string]any{}
	for k, v := range c.initial {
		if n, ok := names[strings.TrimPrefix(k, "_inputs.")]; ok && strings.HasPrefix(k, "_inputs.") {
			k = "_inputs." + n
			if r.IntN(2) == 0 {
				v = h.value()
			}
		}
		initial[k] = v
	}
	for i := range 1 + r.IntN(3) {
		k := h.id(fmt.Sprintf("key%d", i))
		if strings.HasPrefix(k, "_outputs.") {
			k = "·" + k // the prefix is reserved; StartRun refuses it
		}
		if _, ok := initial[k]; !ok {
			initial[k] = h.value()
		}
	}
	c.initial = initial
	bp.ID = h.id(fmt.Sprintf("bp%d", c.index))
	c.runID = h.id(fmt.Sprintf("run%d", c.index))
}

// protoCraftedCollisions returns cases whose ids collide with the engine's
// internal names, numbered from index on:
//
//   - Two runs sharing the store, run "R:X" of a blueprint with a join "J"
//     and then run "R" of a blueprint with a join "X:J": both joins are
//     "flowcraft:fanin:R:X:J" if the key is built by joining with ':'. In
//     the second run every edge into its join is dead, so it must be
//     skipped; a join record left by the first run says otherwise.
//   - A node "x@fallback" that runs before node x, which fails and has a
//     fallback: a fallback's attempts must not be counted in the record of
//     the node "x@fallback" (or the reverse).
func protoCraftedCollisions(t *testing.T, seed uint64, index int) []*protoCase {
	t.Helper()
	h := &protoHostileGen{r: rand.New(rand.NewPCG(seed^0xc0111de, 1))}
	// Spare attempts, as genProtoCase gives: a fault that costs an attempt
	// must not hide the collision.
	node := func(id string, params map[string]any, cfg sqsadapter.NodeConfig) sqsadapter.NodeDefinition {
		p := map[string]any{"kind": "ok", "salt": int64(h.r.IntN(1000))}
		maps.Copy(p, params)
		cfg.MaxRetries = 9
		return sqsadapter.NodeDefinition{ID: id, Uses: "pass", Params: p, Config: cfg}
	}
	mk := func(bp sqsadapter.Blueprint, runID string, after int) *protoCase {
		c := &protoCase{index: index, bp: &bp, initial: map[string]any{}, runID: runID, after: after}
		require.NoError(t, c.rebuild())
		index++
		return c
	}
	var cases []*protoCase
	for pair := range 2 {
		R, X, J := protoCut(h.id(fmt.Sprintf("R%d", pair)), 120), protoCut(h.id("X"), 120), protoCut(h.id("J"), 120)
		first := mk(sqsadapter.Blueprint{ID: fmt.Sprintf("collide-%d-taken", pair),
			Nodes: []sqsadapter.NodeDefinition{node("a", nil, sqsadapter.NodeConfig{}), node("b", nil, sqsadapter.NodeConfig{}), node(J, nil, sqsadapter.NodeConfig{})},
			Edges: []sqsadapter.EdgeDefinition{{Source: "a", Target: J}, {Source: "b", Target: J}},
		}, R+":"+X, -1)
		second := mk(sqsadapter.Blueprint{ID: fmt.Sprintf("collide-%d-dead", pair),
			Nodes: []sqsadapter.NodeDefinition{node("a", nil, sqsadapter.NodeConfig{}), node("b", nil, sqsadapter.NodeConfig{}), node(X+":"+J, nil, sqsadapter.NodeConfig{})},
			Edges: []sqsadapter.EdgeDefinition{{Source: "a", Target: X + ":" + J, Action: "never"}, {Source: "b", Target: X + ":" + J, Action: "never"}},
		}, R, first.index)
		cases = append(cases, first, second)
	}
	x := protoCut(h.id("x"), protoMaxID-len("@fallback"))
	cases = append(cases, mk(sqsadapter.Blueprint{ID: "collide-fallback",
		Nodes: []sqsadapter.NodeDefinition{
			node(x+"@fallback", nil, sqsadapter.NodeConfig{}),
			node(x, map[string]any{"kind": "fail"}, sqsadapter.NodeConfig{Fallback: "f"}),
			node("f", nil, sqsadapter.NodeConfig{}),
		},
		Edges: []sqsadapter.EdgeDefinition{{Source: x + "@fallback", Target: x}},
	}, h.id("run-fallback"), -1))
	return cases
}

// TestProtocolHostileIDs checks the id rule at its edges: ids it accepts
// (hostile ones, the longest) are accepted as node, blueprint and run ids;
// ids it refuses (empty, only white space, a control character, invalid
// UTF-8, one byte too long) are refused with ErrInvalidBlueprint for a
// node or blueprint id and ErrInvalidOption for a run id, and nothing is
// created.
func TestProtocolHostileIDs(t *testing.T) {
	seed := protocolSeed(t)
	h := &protoHostileGen{r: rand.New(rand.NewPCG(seed, 0x1d5)), nonchars: true}
	valid := []string{protoPadID("v"), strings.Repeat("é", protoMaxID/2), "x@fallback", "r:x", " a ", "\ufffe", "\uffff", "_outputs.x"}
	invalid := []string{"", " ", "\u00a0\u2028 ", "a\x00b", "\x01", "a\x1fb", "a\x7fb", "a\tb", "a\nb", "\xff", "a\xc3",
		strings.Repeat("x", protoMaxID+1), strings.Repeat("é", protoMaxID/2) + "x", protoPadID("v") + "é"}
	for i := range 8 {
		valid = append(valid, h.id(fmt.Sprintf("%d", i)))
		// A hostile id broken by a control character.
		id := h.id(fmt.Sprintf("%d", i))
		at := h.r.IntN(len(id) + 1)
		for at > 0 && at < len(id) && !utf8.RuneStart(id[at]) {
			at--
		}
		invalid = append(invalid, id[:at]+string(rune(h.r.IntN(0x20)))+id[at:])
	}
	for _, id := range invalid {
		require.False(t, protoValidID(id), "%q", id)
	}
	for _, id := range valid {
		require.True(t, protoValidID(id), "%q", id)
	}

	reg := sqsadapter.NodeRegistry{"pass": func(context.Context, *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
		return sqsadapter.NodeResult{}, nil
	}}
	q := sqsadaptertest.NewSQS()
	url := q.CreateQueue("ids", sqsadaptertest.QueueOptions{})
	store := sqsadaptertest.NewContextStore()
	adapter := func(bps ...*sqsadapter.Blueprint) (*sqsadapter.SqsAdapter, error) {
		return sqsadapter.NewSqsAdapter(sqsadapter.WithSQSClient(q), sqsadapter.WithQueueURL(url),
			sqsadapter.WithContextStore(store), sqsadapter.WithCoordinationStore(sqsadaptertest.NewCoordinationStore()),
			sqsadapter.WithRegistry(reg), sqsadapter.WithBlueprints(bps...), sqsadapter.WithLogger(testLogger()))
	}
	withNode := func(bpID, nodeID string) *sqsadapter.Blueprint {
		return &sqsadapter.Blueprint{ID: bpID, Nodes: []sqsadapter.NodeDefinition{{ID: nodeID, Uses: "pass"}}}
	}
	client, err := adapter(withNode("ids", "a"))
	require.NoError(t, err)

	// Each place an id goes, with what it says about one id: nil if it
	// accepted it.
	places := []struct {
		name   string
		refuse error // the typed error of a refusal
		try    func(id string) error
	}{
		{"node id (Validate)", sqsadapter.ErrInvalidBlueprint, func(id string) error { return withNode("ids", id).Validate() }},
		{"blueprint id (Validate)", sqsadapter.ErrInvalidBlueprint, func(id string) error { return withNode(id, "a").Validate() }},
		{"node and blueprint id (NewSqsAdapter)", sqsadapter.ErrInvalidBlueprint, func(id string) error {
			a, err := adapter(withNode(id, id))
			if err == nil {
				err = a.Shutdown(t.Context())
			}
			return err
		}},
		{"run id (StartRun)", sqsadapter.ErrInvalidOption, func(id string) error {
			if id == "" {
				return sqsadapter.ErrInvalidOption // WithRunID(""): no id, a fresh one is drawn
			}
			got, err := client.StartRun(t.Context(), "ids", nil, sqsadapter.WithRunID(id))
			if err == nil && got != id {
				err = fmt.Errorf("started run %q", got)
			}
			if err != nil && errors.Is(err, sqsadapter.ErrInvalidOption) {
				if _, gerr := store.GetRun(t.Context(), id); !errors.Is(gerr, sqsadapter.ErrRunNotFound) {
					err = fmt.Errorf("refused, but a run was created: %v", gerr)
				}
			}
			return err
		}},
	}
	for _, pl := range places {
		var refusedValid, acceptedInvalid, untyped []string
		for _, id := range valid {
			if err := pl.try(id); err != nil {
				refusedValid = append(refusedValid, fmt.Sprintf("%s (%v)", protoShortID(id), err))
			}
		}
		for _, id := range invalid {
			switch err := pl.try(id); {
			case err == nil:
				acceptedInvalid = append(acceptedInvalid, protoShortID(id))
			case !errors.Is(err, pl.refuse):
				untyped = append(untyped, fmt.Sprintf("%s (%v)", protoShortID(id), err))
			}
		}
		if len(refusedValid) > 0 {
			t.Errorf("%s: valid ids refused: %s", pl.name, strings.Join(refusedValid, "; "))
		}
		if len(acceptedInvalid) > 0 {
			t.Errorf("%s: ids the rule refuses were accepted: %s", pl.name, strings.Join(acceptedInvalid, ", "))
		}
		if len(untyped) > 0 {
			t.Errorf("%s: ids refused without %v: %s", pl.name, pl.refuse, strings.Join(untyped, "; "))
		}
	}
	require.NoError(t, client.Shutdown(t.Context()))
}

// protoValidID is the id rule.
func protoValidID(id string) bool {
	if id == "" || len(id) > protoMaxID || !utf8.ValidString(id) || strings.TrimSpace(id) == "" {
		return false
	}
	for _, r := range id {
		if r < 0x20 || r == 0x7f {
			return false
		}
	}
	return true
}

// Keep the generator honest: a rewritten writer condition reads the key it
// names.
func TestProtocolHostileConditionsReadTheirKeys(t *testing.T) {
	h := &protoHostileGen{r: rand.New(rand.NewPCG(1, 2)), nonchars: true}
	for i := range 200 {
		key := "k_" + h.id(fmt.Sprintf("%d", i))
		p, err := expr.Compile("(context[" + protoExprString(key) + "].v ?? 1) % 2 == 0")
		require.NoError(t, err, "%q", key)
		keys, all := p.ContextKeys()
		require.False(t, all)
		require.Equal(t, []string{key}, keys)
		v, err := p.Eval(expr.Env{Context: map[string]any{key: map[string]any{"v": int64(4)}}})
		require.NoError(t, err)
		require.Equal(t, true, v)
	}
	require.True(t, slices.Contains(protoHostileParts, "x@fallback"))
}
