package sqsadapter_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowcraft/sqsadapter"
)

// logRecord is one record captured by logRecorder.
type logRecord struct {
	At    time.Time
	Level slog.Level
	Msg   string
	Attrs map[string]any
}

// logRecorder is a slog.Handler that keeps every record, with the
// attributes of its logger.
type logRecorder struct {
	mu    *sync.Mutex
	recs  *[]logRecord
	attrs []slog.Attr
}

func newLogRecorder() *logRecorder {
	return &logRecorder{mu: &sync.Mutex{}, recs: &[]logRecord{}}
}

func (h *logRecorder) Enabled(context.Context, slog.Level) bool { return true }

func (h *logRecorder) Handle(_ context.Context, r slog.Record) error {
	rec := logRecord{At: r.Time, Level: r.Level, Msg: r.Message, Attrs: map[string]any{}}
	for _, a := range h.attrs {
		rec.Attrs[a.Key] = a.Value.Any()
	}
	r.Attrs(func(a slog.Attr) bool {
		rec.Attrs[a.Key] = a.Value.Any()
		return true
	})
	h.mu.Lock()
	*h.recs = append(*h.recs, rec)
	h.mu.Unlock()
	return nil
}

func (h *logRecorder) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.attrs = append(slices.Clip(h.attrs), as...)
	return &c
}

func (h *logRecorder) WithGroup(string) slog.Handler { return h }

// find returns the records with message msg.
func (h *logRecorder) find(msg string) []logRecord {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []logRecord
	for _, r := range *h.recs {
		if r.Msg == msg {
			out = append(out, r)
		}
	}
	return out
}

// timedOutAfter extracts the elapsed time from an attempt's timeout error.
func timedOutAfter(t *testing.T, node string, attempt int, msg string) time.Duration {
	t.Helper()
	m := regexp.MustCompile(fmt.Sprintf(`node %q attempt %d timed out after ([0-9.]+[µm]?s) `, node, attempt)).FindStringSubmatch(msg)
	require.NotNil(t, m, "no timeout of node %q attempt %d in %q", node, attempt, msg)
	d, err := time.ParseDuration(m[1])
	require.NoError(t, err)
	return d
}

// timeoutSlack is the CI-safe bound asserted on how late a timed-out
// attempt ends; NodeConfig.Timeout states 50 ms, measured ~20 ms.
const timeoutSlack = 200 * time.Millisecond

// TestTimeoutEndsAttemptWithinBound checks that an attempt whose function
// ignores its ctx ends within its timeout plus the stated bound, not after
// waiting for the function, and that the error and the log give the real
// elapsed time.
func TestTimeoutEndsAttemptWithinBound(t *testing.T) {
	t.Parallel()
	const timeout = 300 * time.Millisecond
	t.Run("next attempt starts in time", func(t *testing.T) {
		t.Parallel()
		bp := flow(t, "tbound", ids(fnode("slow", `"config":{"maxRetries":2,"timeout":300}`)))
		stuck := newGate()
		r := newRig(t, rigConfig{nodes: map[string]sqsadapter.NodeFunc{"slow": func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
			if nc.Attempt == 1 {
				<-stuck.done() // ignores ctx
				return sqsadapter.NodeResult{Output: "too late"}, nil
			}
			return sqsadapter.NodeResult{Output: "in time"}, nil
		}}}, bp)
		openAtEnd(t, stuck)
		st := r.wait(r.start("tbound", nil))
		requireStatus(t, sqsadapter.StatusCompleted, st)
		assert.Equal(t, "in time", st.Context["_outputs.slow"], "the abandoned attempt's late result must be discarded")
		calls := r.log.get("slow")
		require.Len(t, calls, 2)
		gap := calls[1].At.Sub(calls[0].At)
		t.Logf("timeout %v: attempt 2 started %v after attempt 1", timeout, gap)
		assert.GreaterOrEqual(t, gap, timeout)
		assert.Less(t, gap, timeout+timeoutSlack, "the attempt outlived its timeout by more than the bound")
	})
	t.Run("error and log name the node and the real elapsed time", func(t *testing.T) {
		t.Parallel()
		bp := flow(t, "tbound", ids(fnode("slow", `"config":{"maxRetries":1,"timeout":300}`)))
		rec := newLogRecorder()
		stuck := newGate()
		r := newRig(t, rigConfig{opts: []sqsadapter.Option{sqsadapter.WithLogger(slog.New(rec))},
			nodes: map[string]sqsadapter.NodeFunc{"slow": func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
				<-stuck.done() // ignores ctx
				return sqsadapter.NodeResult{}, nil
			}}}, bp)
		openAtEnd(t, stuck)
		id := r.start("tbound", nil)
		st := r.wait(id)
		requireStatus(t, sqsadapter.StatusFailed, st)
		assert.Equal(t, "slow", st.FailedNode)
		assert.Contains(t, st.Error, "(timeout 300ms)")
		elapsed := timedOutAfter(t, "slow", 1, st.Error)
		t.Logf("timeout %v: error says %v", timeout, elapsed)
		// The function, ignoring its ctx, is given a grace to return: the
		// real elapsed time exceeds the timeout.
		assert.Greater(t, elapsed, timeout, "the error must give the real elapsed time, not the timeout")
		assert.Less(t, elapsed, timeout+timeoutSlack)

		warns := rec.find("sqsadapter: node attempt timed out")
		require.Len(t, warns, 1)
		w := warns[0]
		assert.Equal(t, slog.LevelWarn, w.Level)
		assert.Equal(t, id, w.Attrs["run_id"])
		assert.Equal(t, "slow", w.Attrs["node_id"])
		assert.EqualValues(t, 1, w.Attrs["attempt"])
		assert.Equal(t, false, w.Attrs["returned"], "the function ignored its ctx")
		assert.GreaterOrEqual(t, w.Attrs["elapsed"], timeout)
		start := r.log.get("slow")[0].At
		t.Logf("timeout %v: logged %v after the attempt started", timeout, w.At.Sub(start))
		assert.Less(t, w.At.Sub(start), timeout+timeoutSlack)
	})
	t.Run("node honouring its ctx ends at the timeout", func(t *testing.T) {
		t.Parallel()
		bp := flow(t, "tbound", ids(fnode("slow", `"config":{"maxRetries":1,"timeout":100}`)))
		r := newRig(t, rigConfig{nodes: map[string]sqsadapter.NodeFunc{"slow": func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
			<-ctx.Done()
			return sqsadapter.NodeResult{}, ctx.Err()
		}}}, bp)
		st := r.wait(r.start("tbound", nil))
		requireStatus(t, sqsadapter.StatusFailed, st)
		elapsed := timedOutAfter(t, "slow", 1, st.Error)
		t.Logf("timeout 100ms, honoured: error says %v", elapsed)
		assert.Less(t, elapsed, 100*time.Millisecond+timeoutSlack)
		assert.Contains(t, st.Error, "(timeout 100ms) (context deadline exceeded)", "the node's own error is kept")
	})
}

// TestNodeTimeoutOption checks WithNodeTimeout: it bounds nodes without
// config.timeout, config.timeout overrides it, and 0 means no bound.
func TestNodeTimeoutOption(t *testing.T) {
	t.Parallel()
	sleepy := func(d time.Duration) sqsadapter.NodeFunc {
		return func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
			select {
			case <-time.After(d):
				return sqsadapter.NodeResult{Output: "slept"}, nil
			case <-ctx.Done():
				return sqsadapter.NodeResult{}, ctx.Err()
			}
		}
	}
	cases := []struct {
		name   string
		config string // the node's config JSON
		opt    time.Duration
		want   sqsadapter.RunState
		reason string
	}{
		{name: "applies to a node without timeout", config: `{"maxRetries":2}`, opt: 50 * time.Millisecond,
			want: sqsadapter.StatusFailed, reason: `node "s" attempt 2 timed out after`},
		{name: "error says it is the default", config: `{}`, opt: 50 * time.Millisecond,
			want: sqsadapter.StatusFailed, reason: "(default timeout 50ms: set config.timeout or WithNodeTimeout)"},
		{name: "config.timeout overrides it", config: `{"timeout":2000}`, opt: 50 * time.Millisecond, want: sqsadapter.StatusCompleted},
		{name: "zero means none", config: `{}`, opt: 0, want: sqsadapter.StatusCompleted},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			bp := flow(t, "nt", ids(fnode("s", `"config":`+tc.config)))
			r := newRig(t, rigConfig{opts: []sqsadapter.Option{sqsadapter.WithNodeTimeout(tc.opt)},
				nodes: map[string]sqsadapter.NodeFunc{"s": sleepy(300 * time.Millisecond)}}, bp)
			st := r.wait(r.start("nt", nil))
			requireStatus(t, tc.want, st)
			if tc.reason != "" {
				assert.Contains(t, st.Error, tc.reason)
			}
		})
	}
	t.Run("negative is refused", func(t *testing.T) {
		t.Parallel()
		_, err := sqsadapter.NewSqsAdapter(sqsadapter.WithNodeTimeout(-time.Second))
		assert.ErrorIs(t, err, sqsadapter.ErrInvalidOption)
	})
}

// TestStuckNodeIsNamedInLog checks that a node running past the visibility
// timeout, without any timeout, is logged at WARN while it runs.
func TestStuckNodeIsNamedInLog(t *testing.T) {
	t.Parallel()
	bp := flow(t, "stuck", ids(fnode("hang", "")))
	rec := newLogRecorder()
	release := newGate()
	r := newRig(t, rigConfig{opts: []sqsadapter.Option{sqsadapter.WithLogger(slog.New(rec)), sqsadapter.WithNodeTimeout(0)},
		nodes: map[string]sqsadapter.NodeFunc{"hang": blockUntil(release, nil)}}, bp)
	openAtEnd(t, release)
	id := r.start("stuck", nil)
	eventually(t, func() bool { return len(rec.find("sqsadapter: node still running")) > 0 }, "no WARN names the running node")
	w := rec.find("sqsadapter: node still running")[0]
	assert.Equal(t, slog.LevelWarn, w.Level)
	assert.Equal(t, id, w.Attrs["run_id"])
	assert.Equal(t, "hang", w.Attrs["node_id"])
	assert.EqualValues(t, 1, w.Attrs["attempt"])
	assert.GreaterOrEqual(t, w.Attrs["elapsed"], rigVisibility-10*time.Millisecond)
	release.open()
	requireStatus(t, sqsadapter.StatusCompleted, r.wait(id))
}

// TestMiddleware checks WithMiddleware: the first given is outermost, it
// wraps fallbacks too, it runs under the attempt's timeout, and its panics
// fail the attempt.
func TestMiddleware(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	trace := func(name string, got *[]string) func(sqsadapter.NodeFunc) sqsadapter.NodeFunc {
		return func(next sqsadapter.NodeFunc) sqsadapter.NodeFunc {
			return func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
				mu.Lock()
				*got = append(*got, name+">"+nc.NodeID)
				mu.Unlock()
				res, err := next(ctx, nc)
				mu.Lock()
				*got = append(*got, name+"<"+nc.NodeID)
				mu.Unlock()
				return res, err
			}
		}
	}
	t.Run("order and fallbacks", func(t *testing.T) {
		t.Parallel()
		var got []string
		bp := flow(t, "mw", ids(fnode("a", `"config":{"fallback":"fb"}`), "fb"))
		r := newRig(t, rigConfig{
			opts:  []sqsadapter.Option{sqsadapter.WithMiddleware(trace("m1", &got), trace("m2", &got)), sqsadapter.WithMiddleware(trace("m3", &got))},
			nodes: map[string]sqsadapter.NodeFunc{"a": failWith("nope")}}, bp)
		st := r.wait(r.start("mw", nil))
		requireStatus(t, sqsadapter.StatusCompleted, st)
		mu.Lock()
		defer mu.Unlock()
		assert.Equal(t, []string{"m1>a", "m2>a", "m3>a", "m3<a", "m2<a", "m1<a", "m1>fb", "m2>fb", "m3>fb", "m3<fb", "m2<fb", "m1<fb"}, got)
	})
	t.Run("sees the attempt's deadline and can change the result", func(t *testing.T) {
		t.Parallel()
		var deadline atomic.Bool
		mw := func(next sqsadapter.NodeFunc) sqsadapter.NodeFunc {
			return func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
				_, ok := ctx.Deadline()
				deadline.Store(ok)
				res, err := next(ctx, nc)
				res.Output = map[string]any{"wrapped": res.Output}
				return res, err
			}
		}
		bp := flow(t, "mw", ids(fnode("a", `"config":{"timeout":5000}`)))
		r := newRig(t, rigConfig{opts: []sqsadapter.Option{sqsadapter.WithMiddleware(mw)},
			nodes: map[string]sqsadapter.NodeFunc{"a": output("x", "")}}, bp)
		st := r.wait(r.start("mw", nil))
		requireStatus(t, sqsadapter.StatusCompleted, st)
		assert.True(t, deadline.Load())
		assert.Equal(t, map[string]any{"wrapped": "x"}, st.Context["_outputs.a"])
	})
	t.Run("panic fails the attempt", func(t *testing.T) {
		t.Parallel()
		var calls atomic.Int32
		mw := func(next sqsadapter.NodeFunc) sqsadapter.NodeFunc {
			return func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
				if calls.Add(1) == 1 {
					panic("middleware-boom")
				}
				return next(ctx, nc)
			}
		}
		bp := flow(t, "mw", ids(fnode("a", `"config":{"maxRetries":2}`)))
		r := newRig(t, rigConfig{opts: []sqsadapter.Option{sqsadapter.WithMiddleware(mw)}}, bp)
		st := r.wait(r.start("mw", nil))
		requireStatus(t, sqsadapter.StatusCompleted, st)
		assert.Equal(t, []int{2}, r.log.attempts("a"), "attempt 1 panicked in the middleware")
	})
	t.Run("panic while wrapping fails the run naming it", func(t *testing.T) {
		t.Parallel()
		mw := func(next sqsadapter.NodeFunc) sqsadapter.NodeFunc { panic("wrap-boom") }
		bp := flow(t, "mw", ids("a"))
		r := newRig(t, rigConfig{opts: []sqsadapter.Option{sqsadapter.WithMiddleware(mw)}}, bp)
		st := r.wait(r.start("mw", nil))
		requireStatus(t, sqsadapter.StatusFailed, st)
		assert.Contains(t, st.Error, `node "a" panicked: wrap-boom`)
	})
	t.Run("nil is refused", func(t *testing.T) {
		t.Parallel()
		_, err := sqsadapter.NewSqsAdapter(sqsadapter.WithMiddleware(nil))
		assert.ErrorIs(t, err, sqsadapter.ErrInvalidOption)
	})
}

// TestContextValueConverts checks ContextValue's conversions on values as
// a node's context holds them.
func TestContextValueConverts(t *testing.T) {
	t.Parallel()
	type prio int
	type item struct {
		Name string  `json:"name"`
		N    float64 `json:"n"`
	}
	nc := &sqsadapter.NodeContext{NodeID: "n1"}
	for k, v := range map[string]any{
		"int": int64(3), "whole": 3.0, "frac": 2.5, "big": int64(1<<60 + 1), "neg": int64(-1), "wide": int64(300),
		"str": "hi", "bool": true, "null": nil, "tenth": 0.1, "when": "2024-05-01T10:00:00Z",
		"obj":  map[string]any{"name": "x", "n": int64(2)},
		"list": []any{int64(1), 2.0}, "fracs": []any{1.5},
	} {
		require.NoError(t, nc.Set(k, v))
	}
	ctx := t.Context()
	check := func(t *testing.T, want, got any, ok bool, err error) {
		t.Helper()
		require.NoError(t, err)
		assert.True(t, ok)
		assert.Equal(t, want, got)
	}
	t.Run("numbers convert when lossless", func(t *testing.T) {
		f, ok, err := sqsadapter.ContextValue[float64](ctx, nc, "int")
		check(t, 3.0, f, ok, err)
		i, ok, err := sqsadapter.ContextValue[int](ctx, nc, "whole")
		check(t, 3, i, ok, err)
		i64, ok, err := sqsadapter.ContextValue[int64](ctx, nc, "int")
		check(t, int64(3), i64, ok, err)
		u8, ok, err := sqsadapter.ContextValue[uint8](ctx, nc, "whole")
		check(t, uint8(3), u8, ok, err)
		p, ok, err := sqsadapter.ContextValue[prio](ctx, nc, "int")
		check(t, prio(3), p, ok, err)
		f32, ok, err := sqsadapter.ContextValue[float32](ctx, nc, "tenth")
		check(t, float32(0.1), f32, ok, err)
	})
	t.Run("other kinds", func(t *testing.T) {
		s, ok, err := sqsadapter.ContextValue[string](ctx, nc, "str")
		check(t, "hi", s, ok, err)
		b, ok, err := sqsadapter.ContextValue[bool](ctx, nc, "bool")
		check(t, true, b, ok, err)
		it, ok, err := sqsadapter.ContextValue[item](ctx, nc, "obj")
		check(t, item{Name: "x", N: 2}, it, ok, err)
		ip, ok, err := sqsadapter.ContextValue[*item](ctx, nc, "obj")
		check(t, &item{Name: "x", N: 2}, ip, ok, err)
		l, ok, err := sqsadapter.ContextValue[[]int](ctx, nc, "list")
		check(t, []int{1, 2}, l, ok, err)
		m, ok, err := sqsadapter.ContextValue[map[string]any](ctx, nc, "obj")
		check(t, map[string]any{"name": "x", "n": int64(2)}, m, ok, err)
		a, ok, err := sqsadapter.ContextValue[any](ctx, nc, "int")
		check(t, int64(3), a, ok, err)
		when, ok, err := sqsadapter.ContextValue[time.Time](ctx, nc, "when")
		check(t, time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC), when, ok, err)
		np, ok, err := sqsadapter.ContextValue[*item](ctx, nc, "null")
		check(t, (*item)(nil), np, ok, err)
	})
	t.Run("missing key", func(t *testing.T) {
		i, ok, err := sqsadapter.ContextValue[int](ctx, nc, "absent")
		assert.NoError(t, err)
		assert.False(t, ok)
		assert.Zero(t, i)
	})
	t.Run("refusals name the key, the stored type and T", func(t *testing.T) {
		for _, c := range []struct {
			key, want string
			get       func(string) error
		}{
			{"frac", `context key "frac" holds float64 2.5, which does not convert to int: has a fraction`, errOf[int](ctx, nc)},
			{"wide", `holds int64 300, which does not convert to int8: out of range`, errOf[int8](ctx, nc)},
			{"neg", `holds int64 -1, which does not convert to uint: out of range`, errOf[uint](ctx, nc)},
			{"big", `holds int64 1152921504606846977, which does not convert to float64: not exact`, errOf[float64](ctx, nc)},
			{"int", `holds int64 3, which does not convert to string`, errOf[string](ctx, nc)},
			{"str", `holds string hi, which does not convert to bool`, errOf[bool](ctx, nc)},
			{"str", `holds string hi, which does not convert to float64`, errOf[float64](ctx, nc)},
			{"null", `holds null, which does not convert to int`, errOf[int](ctx, nc)},
			{"fracs", `holds []interface {} [1.5], which does not convert to []int`, errOf[[]int](ctx, nc)},
		} {
			err := c.get(c.key)
			require.Error(t, err, c.key)
			assert.Contains(t, err.Error(), `node "n1"`)
			assert.Contains(t, err.Error(), c.want)
		}
	})
}

// errOf reads a key as T and returns only the error.
func errOf[T any](ctx context.Context, nc *sqsadapter.NodeContext) func(string) error {
	return func(key string) error {
		_, _, err := sqsadapter.ContextValue[T](ctx, nc, key)
		return err
	}
}

// TestContextValueAfterCommit checks the case that motivates ContextValue:
// a whole float64 written by one node reads back as an int64 in the next,
// and ContextValue gives the float64.
func TestContextValueAfterCommit(t *testing.T) {
	t.Parallel()
	type seen struct {
		raw      any
		price    float64
		ratioErr error
	}
	var got atomic.Value
	bp := flow(t, "cv", nil, "a>b")
	r := newRig(t, rigConfig{nodes: map[string]sqsadapter.NodeFunc{
		"a": func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
			return sqsadapter.NodeResult{}, errors.Join(nc.Set("price", 3.0), nc.Set("ratio", 2.5))
		},
		"b": func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
			var s seen
			s.raw, _, _ = nc.Get(ctx, "price")
			var err error
			if s.price, _, err = sqsadapter.ContextValue[float64](ctx, nc, "price"); err != nil {
				return sqsadapter.NodeResult{}, err
			}
			_, _, s.ratioErr = sqsadapter.ContextValue[int](ctx, nc, "ratio")
			got.Store(s)
			return sqsadapter.NodeResult{}, nil
		},
	}}, bp)
	requireStatus(t, sqsadapter.StatusCompleted, r.wait(r.start("cv", nil)))
	s := got.Load().(seen)
	assert.Equal(t, int64(3), s.raw, "the store gives whole numbers back as int64")
	assert.Equal(t, 3.0, s.price)
	require.Error(t, s.ratioErr)
	assert.Contains(t, s.ratioErr.Error(), `"ratio"`)
}
