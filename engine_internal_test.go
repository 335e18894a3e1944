package sqsadapter

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowcraft/sqsadapter/internal/limits"
)

// ---------------------------------------------------------------------------
// batcher

// flushLog is a flush function that records its batches, can be held, and
// fails the items failing says.
type flushLog struct {
	mu      sync.Mutex
	batches [][]int
	hold    chan struct{} // while open, the first flush blocks on it
	entered chan struct{} // closed when the first flush starts
	failing func(int) error
	once    sync.Once
}

func newFlushLog() *flushLog {
	return &flushLog{hold: make(chan struct{}), entered: make(chan struct{})}
}

func (f *flushLog) flush(ctx context.Context, items []int) []error {
	first := false
	f.once.Do(func() { first = true; close(f.entered) })
	if first {
		<-f.hold
	}
	f.mu.Lock()
	f.batches = append(f.batches, slices.Clone(items))
	f.mu.Unlock()
	errs := make([]error, len(items))
	for i, v := range items {
		if f.failing != nil {
			errs[i] = f.failing(v)
		}
	}
	return errs
}

func (f *flushLog) got() [][]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.batches)
}

func pendingLen[T any](b *batcher[T]) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.pending)
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	require.Eventually(t, cond, 5*time.Second, time.Millisecond, what)
}

func TestBatcherGroupsConcurrentItems(t *testing.T) {
	t.Parallel()
	f := newFlushLog()
	b := newBatcher(4, 1, 0, f.flush)
	ctx := t.Context()
	errc := make(chan error, 20)
	go func() { errc <- b.do(ctx, 0) }()
	<-f.entered // the first caller is flushing [0] and holds the flusher slot
	for i := 1; i <= 9; i++ {
		go func() { errc <- b.do(ctx, i) }()
	}
	waitFor(t, func() bool { return pendingLen(b) == 9 }, "the other callers to queue their items")
	close(f.hold)
	for range 10 {
		assert.NoError(t, <-errc)
	}
	batches := f.got()
	require.Len(t, batches, 4, "one call for the first item, then batches of at most 4: %v", batches)
	assert.Equal(t, []int{0}, batches[0])
	var all []int
	for i, batch := range batches[1:] {
		assert.LessOrEqual(t, len(batch), 4, "batch %d", i+1)
		all = append(all, batch...)
	}
	slices.Sort(all)
	assert.Equal(t, []int{1, 2, 3, 4, 5, 6, 7, 8, 9}, all, "every item is flushed exactly once")
	assert.Equal(t, []int{4, 4, 1}, []int{len(batches[1]), len(batches[2]), len(batches[3])})
}

func TestBatcherIdleItemGoesAtOnce(t *testing.T) {
	t.Parallel()
	f := newFlushLog()
	close(f.hold)
	b := newBatcher(10, 2, 0, f.flush)
	require.NoError(t, b.do(t.Context(), 1, 2, 3))
	require.NoError(t, b.do(t.Context(), 4))
	require.NoError(t, b.do(t.Context()))
	assert.Equal(t, [][]int{{1, 2, 3}, {4}}, f.got())
	assert.Zero(t, b.flushers, "flushers retire")
}

func TestBatcherPerItemErrors(t *testing.T) {
	t.Parallel()
	errOdd := errors.New("odd item refused")
	t.Run("each caller gets its items' errors", func(t *testing.T) {
		t.Parallel()
		f := newFlushLog()
		f.failing = func(v int) error {
			if v%2 == 1 {
				return fmt.Errorf("item %d: %w", v, errOdd)
			}
			return nil
		}
		b := newBatcher(10, 1, 0, f.flush)
		ctx := t.Context()
		first := make(chan error, 1)
		go func() { first <- b.do(ctx, 0) }()
		<-f.entered
		results := make([]chan error, 6)
		for i := range results {
			results[i] = make(chan error, 1)
			go func() { results[i] <- b.do(ctx, i+1) }()
		}
		waitFor(t, func() bool { return pendingLen(b) == 6 }, "callers to queue")
		close(f.hold)
		assert.NoError(t, <-first)
		for i, c := range results {
			err := <-c
			if (i+1)%2 == 1 {
				assert.ErrorIs(t, err, errOdd, "item %d", i+1)
				assert.Contains(t, err.Error(), fmt.Sprintf("item %d:", i+1))
			} else {
				assert.NoError(t, err, "item %d", i+1)
			}
		}
		assert.Len(t, f.got(), 2, "the six items shared one call")
	})
	t.Run("a caller with several items gets the first error", func(t *testing.T) {
		t.Parallel()
		f := newFlushLog()
		close(f.hold)
		f.failing = func(v int) error {
			if v >= 3 {
				return fmt.Errorf("item %d: %w", v, errOdd)
			}
			return nil
		}
		b := newBatcher(10, 1, 0, f.flush)
		err := b.do(t.Context(), 2, 3, 4)
		require.ErrorIs(t, err, errOdd)
		assert.Contains(t, err.Error(), "item 3:")
	})
	t.Run("missing errors mean success", func(t *testing.T) {
		t.Parallel()
		b := newBatcher(10, 1, 0, func(context.Context, []int) []error { return nil })
		assert.NoError(t, b.do(t.Context(), 1, 2))
	})
}

func TestBatcherWaitHonoursCtx(t *testing.T) {
	t.Parallel()
	f := newFlushLog()
	b := newBatcher(10, 1, 0, f.flush)
	first := make(chan error, 1)
	go func() { first <- b.do(context.Background(), 0) }()
	<-f.entered

	cause := errors.New("caller gave up")
	ctx, cancel := context.WithCancelCause(context.Background())
	waiter := make(chan error, 1)
	go func() { waiter <- b.do(ctx, 1) }()
	waitFor(t, func() bool { return pendingLen(b) == 1 }, "the waiter to queue")
	cancel(cause)
	select {
	case err := <-waiter:
		assert.ErrorIs(t, err, cause)
	case <-time.After(5 * time.Second):
		t.Fatal("a waiting caller ignored its ctx")
	}
	close(f.hold)
	assert.NoError(t, <-first)
	// The abandoned item was still flushed by the flusher.
	waitFor(t, func() bool { return len(f.got()) == 2 }, "the abandoned item to be flushed")
	assert.Equal(t, [][]int{{0}, {1}}, f.got())
	assert.Zero(t, pendingLen(b))
}

func TestBatcherLeaderPassesCtxToFlush(t *testing.T) {
	t.Parallel()
	type key struct{}
	var seen any
	b := newBatcher(10, 1, 0, func(ctx context.Context, items []string) []error {
		seen = ctx.Value(key{})
		return make([]error, len(items))
	})
	require.NoError(t, b.do(context.WithValue(t.Context(), key{}, "leader"), "x"))
	assert.Equal(t, "leader", seen)
}

func TestBatcherLinger(t *testing.T) {
	t.Parallel()
	const linger = 10 * time.Millisecond
	t.Run("items arriving within the linger share a batch", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			f := newFlushLog()
			close(f.hold)
			b := newBatcher(10, 1, linger, f.flush)
			start := time.Now()
			errc := make(chan error, 3)
			go func() { errc <- b.do(t.Context(), 1) }()
			time.Sleep(linger / 2)
			go func() { errc <- b.do(t.Context(), 2) }()
			go func() { errc <- b.do(t.Context(), 3) }()
			for range 3 {
				assert.NoError(t, <-errc)
			}
			batches := f.got()
			require.Len(t, batches, 1, "%v", batches)
			assert.ElementsMatch(t, []int{1, 2, 3}, batches[0])
			assert.Less(t, time.Since(start), 3*linger, "the callers are not held much beyond the linger")
		})
	})
	t.Run("a full batch does not wait", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var at []time.Duration
			start := time.Now()
			b := newBatcher(3, 1, linger, func(_ context.Context, items []int) []error {
				at = append(at, time.Since(start))
				return nil
			})
			done := make(chan error, 1)
			go func() { done <- b.do(t.Context(), 1, 2, 3) }()
			synctest.Wait()
			require.Len(t, at, 1, "the full batch was flushed before any time passed")
			assert.Zero(t, at[0])
			require.NoError(t, <-done)
		})
	})
	t.Run("one collector at a time: items in a row fill one batch per linger", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			f := newFlushLog()
			close(f.hold)
			b := newBatcher(10, 2, linger, f.flush)
			start := time.Now()
			var returned time.Duration
			errc := make(chan error, 4)
			go func() { err := b.do(t.Context(), 1); returned = time.Since(start); errc <- err }()
			// Before the first batch is sent, and while it is; after it.
			for i, at := range []time.Duration{linger * 9 / 10, linger * 11 / 10, linger * 195 / 100} {
				time.Sleep(at - time.Since(start))
				go func() { errc <- b.do(t.Context(), i+2) }()
			}
			for range 4 {
				assert.NoError(t, <-errc)
			}
			synctest.Wait()
			assert.Equal(t, [][]int{{1, 2}, {3, 4}}, f.got(), "two batches, not one per lingering flusher")
			assert.Equal(t, linger, returned, "the collector returns once its own batch is sent")
		})
	})
	t.Run("hurry ends the linger", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var at []time.Duration
			start := time.Now()
			b := newBatcher(10, 2, linger, func(_ context.Context, items []int) []error {
				at = append(at, time.Since(start))
				return nil
			})
			errc := make(chan error, 1)
			go func() { errc <- b.do(t.Context(), 1) }()
			time.Sleep(linger / 4)
			b.hurry()
			require.NoError(t, <-errc)
			require.NoError(t, b.do(t.Context(), 2), "after hurry")
			assert.Equal(t, []time.Duration{linger / 4, linger / 4}, at)
		})
	})
	t.Run("a lone item waits the linger, not forever", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var at []time.Duration
			start := time.Now()
			b := newBatcher(10, 1, linger, func(_ context.Context, items []int) []error {
				at = append(at, time.Since(start))
				return nil
			})
			require.NoError(t, b.do(t.Context(), 1))
			assert.Equal(t, []time.Duration{linger}, at)
		})
	})
}

// ---------------------------------------------------------------------------
// Input resolution helpers (plan.go).

func TestRefKeys(t *testing.T) {
	t.Parallel()
	cases := []struct {
		ref  string
		want []string
	}{
		{"_inputs.a", []string{"_inputs.a"}},
		{"_outputs.a.b", []string{"_outputs.a.b"}},
		{"_x", []string{"_x"}},
		{"a.b.c", []string{"_outputs.a"}},
		{"a.", []string{"_outputs.a"}},
		{"a", []string{"_outputs.a", "a"}},
		{"order-id", []string{"_outputs.order-id", "order-id"}},
	}
	for _, c := range cases {
		t.Run(c.ref, func(t *testing.T) {
			t.Parallel()
			assert.Equal(t, c.want, refKeys(c.ref))
		})
	}
}

func TestInputKeys(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		inputs any
		want   []string
	}{
		{"none", nil, nil},
		{"string", "a", []string{"_outputs.a", "a"}},
		{"raw string", "_inputs.x", []string{"_inputs.x"}},
		{"dotted string", "a.b", []string{"_outputs.a"}},
		{"map", map[string]any{"x": "a.b", "y": "_k", "z": "c"}, []string{"_outputs.a", "_k", "_outputs.c", "c"}},
		{"map with arrays", map[string]any{"x": []any{"a", "b.c", 1, "_k"}}, []string{"_outputs.a", "a", "_outputs.b", "_k"}},
		{"duplicates once", map[string]any{"x": "a.b", "y": "a.c", "z": []any{"a", "a.d"}}, []string{"_outputs.a", "a"}},
		{"unsupported form", int64(3), nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			got := inputKeys(c.inputs)
			assert.ElementsMatch(t, c.want, got)
			assert.Len(t, got, len(c.want), "no duplicates: %v", got)
		})
	}
}

func TestResolveRef(t *testing.T) {
	t.Parallel()
	vals := map[string]any{
		"_outputs.a":   map[string]any{"x": map[string]any{"y": "deep"}, "list": []any{"l0", "l1"}, "s": "str", "nil": nil},
		"_outputs.nil": nil,
		"_outputs.b":   "b-out",
		"b":            "b-context",
		"c":            "c-context",
		"a.x":          "dotted context key",
		"_raw":         int64(7),
		"_inputs.n":    "staged",
	}
	cases := []struct {
		ref  string
		want any
	}{
		{"_raw", int64(7)},
		{"_inputs.n", "staged"},
		{"_absent", nil},
		{"_outputs.b", "b-out"},
		{"b", "b-out"},     // a node output shadows a context key
		{"c", "c-context"}, // else the context key
		{"nil", nil},       // a node whose output is null
		{"absent", nil},    // neither
		{"a.x.y", "deep"},  // a path into an output
		{"a.x", map[string]any{"y": "deep"}},
		{"a.list.1", "l1"},   // an array index
		{"a.list.2", nil},    // past the end
		{"a.list.-1", nil},   // not an index
		{"a.list.x", nil},    // not an index
		{"a.s.x", nil},       // into a string
		{"a.nil.x", nil},     // through null
		{"a.missing.x", nil}, // through a missing key
		{"nil.x", nil},       // into a null output
		{"zz.x", nil},        // no such node, and no fallback to a context key
		{"c.x", nil},         // a context key is not walked by a dotted path
	}
	for _, c := range cases {
		t.Run(c.ref, func(t *testing.T) {
			t.Parallel()
			assert.Equal(t, c.want, resolveRef(c.ref, vals))
		})
	}
}

// Reference §2.4 walks an input path with JavaScript property access, so
// "length" of an array or a string is reachable, as in edge expressions'
// bare property paths.
func TestResolveRefLength(t *testing.T) {
	t.Parallel()
	vals := map[string]any{"_outputs.a": map[string]any{"list": []any{"l0", "l1"}, "s": "abc"}}
	assert.Equal(t, int64(2), resolveRef("a.list.length", vals))
	assert.Equal(t, int64(3), resolveRef("a.s.length", vals))
}

func TestResolveInputs(t *testing.T) {
	t.Parallel()
	vals := map[string]any{
		"_outputs.a": map[string]any{"x": "ax", "zero": int64(0), "f": false, "empty": ""},
		"_outputs.n": nil,
		"k":          "kv",
	}
	cases := []struct {
		name   string
		inputs any
		want   any
	}{
		{"nil", nil, nil},
		{"string", "a.x", "ax"},
		{"string context key", "k", "kv"},
		{"map", map[string]any{"x": "a.x", "k": "k", "m": "missing"}, map[string]any{"x": "ax", "k": "kv", "m": nil}},
		{"array first present", map[string]any{"v": []any{"missing", "a.nope", "k", "a.x"}}, map[string]any{"v": "kv"}},
		{"array keeps falsy values that are present", map[string]any{"z": []any{"a.zero", "k"}, "f": []any{"a.f", "k"}, "e": []any{"a.empty", "k"}},
			map[string]any{"z": int64(0), "f": false, "e": ""}},
		{"array skips null outputs", map[string]any{"v": []any{"n", "k"}}, map[string]any{"v": "kv"}},
		{"array with nothing present", map[string]any{"v": []any{"missing", "a.nope"}}, map[string]any{"v": nil}},
		{"empty map", map[string]any{}, map[string]any{}},
		{"unsupported form", int64(3), nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			assert.Equal(t, c.want, resolveInputs(c.inputs, vals))
		})
	}
}

// ---------------------------------------------------------------------------
// Retry delays.

func TestRetryDelay(t *testing.T) {
	t.Parallel()
	adapter := func(t *testing.T, opts ...Option) *SqsAdapter {
		cfg := defaultConfig()
		for _, o := range opts {
			require.NoError(t, o(&cfg))
		}
		return &SqsAdapter{cfg: cfg}
	}
	n := &planNode{retryDelay: 100 * time.Millisecond}
	t.Run("fixed by default", func(t *testing.T) {
		t.Parallel()
		a := adapter(t)
		for _, attempt := range []int{1, 2, 3, 10, 1000} {
			assert.Equal(t, 100*time.Millisecond, a.retryDelay(n, attempt), "after attempt %d", attempt)
		}
	})
	t.Run("zero delay stays zero", func(t *testing.T) {
		t.Parallel()
		a := adapter(t, WithRetryBackoff(2, time.Second, 0.5))
		assert.Zero(t, a.retryDelay(&planNode{}, 5))
	})
	t.Run("grows and is capped", func(t *testing.T) {
		t.Parallel()
		a := adapter(t, WithRetryBackoff(2, time.Second, 0))
		want := map[int]time.Duration{1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 3: 400 * time.Millisecond,
			4: 800 * time.Millisecond, 5: time.Second, 6: time.Second, 60: time.Second, 100000: time.Second}
		for attempt, d := range want {
			assert.Equal(t, d, a.retryDelay(n, attempt), "after attempt %d", attempt)
		}
	})
	t.Run("a base delay over the cap is capped", func(t *testing.T) {
		t.Parallel()
		a := adapter(t, WithRetryBackoff(1, time.Second, 0))
		assert.Equal(t, time.Second, a.retryDelay(&planNode{retryDelay: 5 * time.Second}, 1))
	})
	t.Run("jitter stays in bounds and spreads", func(t *testing.T) {
		t.Parallel()
		a := adapter(t, WithRetryBackoff(2, time.Second, 0.25))
		for _, c := range []struct {
			attempt int
			base    time.Duration
		}{{1, 100 * time.Millisecond}, {3, 400 * time.Millisecond}, {9, time.Second}} {
			lo, hi := time.Duration(float64(c.base)*0.75), time.Duration(float64(c.base)*1.25)
			seen := map[time.Duration]bool{}
			below, above := false, false
			for range 1000 {
				d := a.retryDelay(n, c.attempt)
				if d < lo || d > hi {
					t.Fatalf("after attempt %d: delay %v not in [%v, %v]", c.attempt, d, lo, hi)
				}
				seen[d] = true
				below = below || d < c.base*9/10
				above = above || d > c.base*11/10
			}
			assert.Greater(t, len(seen), 100, "jitter spreads the delays")
			assert.True(t, below && above, "jitter goes both ways around %v", c.base)
		}
	})
}

// ---------------------------------------------------------------------------
// Job decoding.

func TestDecodeJob(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("r", maxIDLength+1)
	cases := []struct {
		name    string
		body    string
		want    Job
		wantErr []string // substrings of an ErrInvalidJob error; nil: valid
	}{
		{name: "minimal", body: `{"runId":"r","blueprintId":"b","nodeId":"n"}`, want: Job{RunID: "r", BlueprintID: "b", NodeID: "n"}},
		{name: "every field", body: `{"runId":"r","blueprintId":"b","nodeId":"n","blueprintVersion":"2","input":{"a":[1,2.5]}}`,
			want: Job{RunID: "r", BlueprintID: "b", NodeID: "n", BlueprintVersion: "2", Input: json.RawMessage(`{"a":[1,2.5]}`)}},
		{name: "extra fields ignored", body: `{"runId":"r","blueprintId":"b","nodeId":"n","attempt":3,"isLastAttempt":false,"meta":{"x":1}}`,
			want: Job{RunID: "r", BlueprintID: "b", NodeID: "n"}},
		{name: "input null is a carried null", body: `{"runId":"r","blueprintId":"b","nodeId":"n","input":null}`,
			want: Job{RunID: "r", BlueprintID: "b", NodeID: "n", Input: json.RawMessage(`null`)}},
		{name: "input absent", body: `{"runId":"r","blueprintId":"b","nodeId":"n","blueprintVersion":""}`,
			want: Job{RunID: "r", BlueprintID: "b", NodeID: "n"}},
		{name: "input string", body: `{"runId":"r","blueprintId":"b","nodeId":"n","input":"hi"}`,
			want: Job{RunID: "r", BlueprintID: "b", NodeID: "n", Input: json.RawMessage(`"hi"`)}},
		{name: "malformed JSON", body: `{"runId":"r",`, wantErr: []string{}},
		{name: "empty body", body: ``, wantErr: []string{}},
		{name: "not an object", body: `["r","b","n"]`, wantErr: []string{}},
		{name: "a string", body: `"job"`, wantErr: []string{}},
		{name: "null", body: `null`, wantErr: []string{"runId is missing", "blueprintId is missing", "nodeId is missing"}},
		{name: "empty object", body: `{}`, wantErr: []string{"runId is missing", "blueprintId is missing", "nodeId is missing"}},
		{name: "missing runId", body: `{"blueprintId":"b","nodeId":"n"}`, wantErr: []string{"runId is missing"}},
		{name: "missing blueprintId", body: `{"runId":"r","nodeId":"n"}`, wantErr: []string{"blueprintId is missing"}},
		{name: "missing nodeId", body: `{"runId":"r","blueprintId":"b"}`, wantErr: []string{"nodeId is missing"}},
		{name: "blank runId", body: `{"runId":"  ","blueprintId":"b","nodeId":"n"}`, wantErr: []string{`runId "  " is only white space`}},
		{name: "runId of the wrong type", body: `{"runId":5,"blueprintId":"b","nodeId":"n"}`, wantErr: []string{}},
		{name: "runId too long", body: `{"runId":"` + long + `","blueprintId":"b","nodeId":"n"}`, wantErr: []string{"runId is longer than"}},
		{name: "trailing garbage", body: `{"runId":"r","blueprintId":"b","nodeId":"n"} x`, wantErr: []string{}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			job, err := DecodeJob([]byte(c.body))
			if c.wantErr != nil {
				require.ErrorIs(t, err, ErrInvalidJob)
				for _, s := range c.wantErr {
					assert.Contains(t, err.Error(), s)
				}
				return
			}
			require.NoError(t, err)
			assert.Equal(t, c.want, job)
			// The decoded job encodes back to the same job.
			s, err := job.encode()
			require.NoError(t, err)
			again, err := DecodeJob([]byte(s))
			require.NoError(t, err)
			assert.Equal(t, job, again)
		})
	}
}

// TestJobEncodeSQSChars: a job whose ids or input hold characters SQS
// refuses in a message body encodes to a body SQS accepts, which decodes
// back to the same job.
func TestJobEncodeSQSChars(t *testing.T) {
	t.Parallel()
	refused := "\ufffe\uffff"
	cases := []struct {
		name string
		job  Job
	}{
		{"ids", Job{RunID: "r" + refused, BlueprintID: "b\ufffe", NodeID: "n\uffff", BlueprintVersion: "v" + refused}},
		{"input string", Job{RunID: "r", BlueprintID: "b", NodeID: "n", Input: json.RawMessage(`"a` + refused + `b"`)}},
		{"input object key", Job{RunID: "r", BlueprintID: "b", NodeID: "n", Input: json.RawMessage(`{"k` + refused + `":["` + refused + `"]}`)}},
		{"input kept escapes", Job{RunID: "r", BlueprintID: "b", NodeID: "n", Input: json.RawMessage(`"\ufffe \u0001 \"q\" \\"`)}},
		{"allowed characters stay", Job{RunID: "r", BlueprintID: "b", NodeID: "n\ufffd\U0010ffff\ue000\ud7ff", Input: json.RawMessage("\"🚀 日本 \u007f\"")}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			body, err := c.job.encode()
			require.NoError(t, err)
			assert.True(t, limits.ValidMessageBody(body), "body SQS refuses: %q", body)
			assert.NotContains(t, body, "\\u007f", "an allowed character is not escaped")
			again, err := DecodeJob([]byte(body))
			require.NoError(t, err)
			assert.Equal(t, c.job.RunID, again.RunID)
			assert.Equal(t, c.job.BlueprintID, again.BlueprintID)
			assert.Equal(t, c.job.NodeID, again.NodeID)
			assert.Equal(t, c.job.BlueprintVersion, again.BlueprintVersion)
			var want, got any
			if c.job.Input != nil {
				require.NoError(t, json.Unmarshal(c.job.Input, &want))
				require.NoError(t, json.Unmarshal(again.Input, &got))
				assert.Equal(t, want, got)
			}
		})
	}
}

// TestJobEncodeDropsInputOverMessageLimit: escaping can make a carried input
// longer than SQS takes (U+FFFE is 3 bytes, its escape 6); the job is then
// sent without it, and its node reads the input from the store.
func TestJobEncodeDropsInputOverMessageLimit(t *testing.T) {
	t.Parallel()
	in, err := json.Marshal(strings.Repeat("\ufffe", 60<<10)) // 180 KiB raw, 360 KiB escaped
	require.NoError(t, err)
	require.Less(t, len(in), limits.MessageBytes)
	j := Job{RunID: "r", BlueprintID: "b", NodeID: "n", Input: in}
	body, err := j.encode()
	require.NoError(t, err)
	assert.LessOrEqual(t, len(body), limits.MessageBytes)
	again, err := DecodeJob([]byte(body))
	require.NoError(t, err)
	assert.Equal(t, "r/n", again.String())
	assert.True(t, again.Input == nil, "the input is not carried")

	// An input that fits escaped is carried.
	j.Input, err = json.Marshal(strings.Repeat("\ufffe", 40<<10))
	require.NoError(t, err)
	body, err = j.encode()
	require.NoError(t, err)
	again, err = DecodeJob([]byte(body))
	require.NoError(t, err)
	assert.True(t, bytes.Equal(again.Input, []byte(escapeForSQS(j.Input))), "the input is carried")
}
