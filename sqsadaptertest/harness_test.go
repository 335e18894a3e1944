package sqsadaptertest_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/flowcraft/sqsadapter"
	"github.com/flowcraft/sqsadapter/sqsadaptertest"
)

// recordingTB records what a harness reports instead of failing the test:
// Fatalf records and ends the calling goroutine, as testing's does. Log is
// passed on to the real test after it is recorded, so that logging through
// a completed test panics as it would.
type recordingTB struct {
	testing.TB
	mu     sync.Mutex
	logs   []string
	errors []string
	fatals []string
}

func (r *recordingTB) Helper() {}

func (r *recordingTB) Log(args ...any) {
	r.mu.Lock()
	r.logs = append(r.logs, fmt.Sprint(args...))
	r.mu.Unlock()
	r.TB.Log(args...)
}

func (r *recordingTB) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errors = append(r.errors, fmt.Sprintf(format, args...))
}

func (r *recordingTB) Fatalf(format string, args ...any) {
	r.mu.Lock()
	r.fatals = append(r.fatals, fmt.Sprintf(format, args...))
	r.mu.Unlock()
	runtime.Goexit()
}

func (r *recordingTB) snapshot() (logs, errs, fatals []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.logs...), append([]string(nil), r.errors...), append([]string(nil), r.fatals...)
}

// onTestGoroutine runs f as a test body would, so that a Fatalf of
// recordingTB ends only f.
func onTestGoroutine(f func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	<-done
}

func parse(t *testing.T, s string) *sqsadapter.Blueprint {
	t.Helper()
	bp, err := sqsadapter.ParseBlueprint([]byte(s))
	if err != nil {
		t.Fatalf("parse blueprint: %v", err)
	}
	return bp
}

// chain is a two-node blueprint: "double" doubles the initial key "n" and
// "inc" adds one.
func chain(t *testing.T) ([]*sqsadapter.Blueprint, sqsadapter.NodeRegistry) {
	bp := parse(t, `{"id": "chain",
	  "nodes": [{"id": "double", "uses": "double", "inputs": "n"}, {"id": "inc", "uses": "inc"}],
	  "edges": [{"source": "double", "target": "inc"}]}`)
	reg := sqsadapter.NodeRegistry{
		"double": sqsadapter.Typed(func(ctx context.Context, n int) (int, error) { return 2 * n, nil }),
		"inc":    sqsadapter.Typed(func(ctx context.Context, n int) (int, error) { return n + 1, nil }),
	}
	return []*sqsadapter.Blueprint{bp}, reg
}

func TestHarnessRunCompletes(t *testing.T) {
	bps, reg := chain(t)
	h := sqsadaptertest.New(t, sqsadaptertest.Config{Registry: reg, Blueprints: bps, Workers: 3})
	if len(h.Workers) != 3 {
		t.Errorf("%d workers, want 3", len(h.Workers))
	}
	st := h.Run("chain", map[string]any{"n": 20})
	h.RequireCompleted(st)
	if got := st.Context["_outputs.inc"]; got != int64(41) {
		t.Errorf("output of inc = %v, want 41", got)
	}
	if got, want := h.Wait(st.RunID).Status, sqsadapter.StatusCompleted; got != want {
		t.Errorf("Wait on a finished run: status %q, want %q", got, want)
	}
	h.RequireNodeStates(st, map[string]string{"double": "completed", "inc": "completed"})
}

// RequireNodeStates names each node whose state differs, and only those.
func TestHarnessRequireNodeStates(t *testing.T) {
	bps, reg := chain(t)
	rec := &recordingTB{TB: t}
	h := sqsadaptertest.New(rec, sqsadaptertest.Config{Registry: reg, Blueprints: bps})
	st := h.Run("chain", map[string]any{"n": 1})
	onTestGoroutine(func() {
		h.RequireNodeStates(st, map[string]string{"double": "completed", "inc": "skipped", "absent": ""})
	})
	_, _, fatals := rec.snapshot()
	if len(fatals) != 1 {
		t.Fatalf("fatals %q, want one", fatals)
	}
	if want := `inc is "completed", want "skipped"`; !strings.Contains(fatals[0], want) || strings.Contains(fatals[0], "double") {
		t.Errorf("failure %q should name only inc: %q", fatals[0], want)
	}
}

// Logs reach the test's log, the workers are stopped by the test's cleanup
// with no goroutine left behind, and a log written after the test ended is
// dropped rather than panicking.
func TestHarnessLifecycle(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	bps, reg := chain(t)
	rec := &recordingTB{}
	var h *sqsadaptertest.Harness
	t.Run("run", func(t *testing.T) {
		rec.TB = t
		h = sqsadaptertest.New(rec, sqsadaptertest.Config{Registry: reg, Blueprints: bps})
		h.RequireCompleted(h.Run("chain", map[string]any{"n": 1}))
	})
	logs, errs, fatals := rec.snapshot()
	if len(errs)+len(fatals) > 0 {
		t.Errorf("harness reported errors %q, fatals %q", errs, fatals)
	}
	if !containsLine(logs, "sqsadapter: run started") {
		t.Errorf("the adapter's logs did not reach t.Log; logged: %q", logs)
	}
	// The test is over: the client adapter's log line must not reach it.
	_, _ = h.Adapter.StartRun(context.Background(), "chain", map[string]any{"n": 2})
	if after, _, _ := rec.snapshot(); len(after) != len(logs) {
		t.Errorf("a log written after the test ended reached it: %q", after[len(logs):])
	}
}

func containsLine(lines []string, s string) bool {
	for _, l := range lines {
		if strings.Contains(l, s) {
			return true
		}
	}
	return false
}

// A run that does not finish within the timeout fails the test, naming the
// run and its status.
func TestHarnessWaitTimesOut(t *testing.T) {
	release := make(chan struct{})
	bp := parse(t, `{"id": "stuck", "nodes": [{"id": "hang", "uses": "hang"}]}`)
	reg := sqsadapter.NodeRegistry{"hang": func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return sqsadapter.NodeResult{}, nil
	}}
	rec := &recordingTB{TB: t}
	h := sqsadaptertest.New(rec, sqsadaptertest.Config{Registry: reg, Blueprints: []*sqsadapter.Blueprint{bp}, Timeout: 300 * time.Millisecond})
	defer close(release) // before cleanup, so that shutdown finds the node done

	id := h.Start("stuck", nil)
	var returned bool
	onTestGoroutine(func() {
		h.Wait(id)
		returned = true
	})
	_, _, fatals := rec.snapshot()
	if returned || len(fatals) != 1 {
		t.Fatalf("Wait on a stuck run: returned %v, fatals %q; want one Fatalf", returned, fatals)
	}
	for _, want := range []string{id, `status "running"`, `blueprint "stuck"`, "1 in flight"} {
		if !strings.Contains(fatals[0], want) {
			t.Errorf("Wait's failure %q does not mention %q", fatals[0], want)
		}
	}
}

// RequireCompleted fails a run that failed with the node and its error.
func TestHarnessRequireCompletedReportsFailure(t *testing.T) {
	bp := parse(t, `{"id": "fails", "nodes": [{"id": "boom", "uses": "boom"}]}`)
	reg := sqsadapter.NodeRegistry{"boom": func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
		return sqsadapter.NodeResult{}, sqsadapter.Permanent(errors.New("card declined"))
	}}
	rec := &recordingTB{TB: t}
	h := sqsadaptertest.New(rec, sqsadaptertest.Config{Registry: reg, Blueprints: []*sqsadapter.Blueprint{bp}})
	st := h.Run("fails", nil)
	if st.Status != sqsadapter.StatusFailed {
		t.Fatalf("status %q, want failed", st.Status)
	}
	onTestGoroutine(func() { h.RequireCompleted(st) })
	_, _, fatals := rec.snapshot()
	if len(fatals) != 1 {
		t.Fatalf("RequireCompleted on a failed run: fatals %q, want one", fatals)
	}
	for _, want := range []string{st.RunID, "is failed", `node "boom"`, "card declined"} {
		if !strings.Contains(fatals[0], want) {
			t.Errorf("RequireCompleted's failure %q does not mention %q", fatals[0], want)
		}
	}
}

// Setup runs before any worker polls, so fault hooks set there are in place
// from the first call; options override the harness's own.
func TestHarnessSetupAndOptions(t *testing.T) {
	bps, reg := chain(t)
	var callsAtSetup int
	var failed bool
	var own lockedBuffer
	h := sqsadaptertest.New(t, sqsadaptertest.Config{
		Registry: reg, Blueprints: bps,
		Options: []sqsadapter.Option{sqsadapter.WithLogger(slog.New(slog.NewTextHandler(&own, nil)))},
		Setup: func(h *sqsadaptertest.Harness) {
			// Workers started already would have polled by now.
			time.Sleep(50 * time.Millisecond)
			callsAtSetup = len(h.SQS.Calls())
			// The first commit fails: the worker tries the job again.
			h.ContextStore.BeforeCall = func(op string) error {
				if op == "CommitNode" && !failed {
					failed = true
					return errors.New("injected fault")
				}
				return nil
			}
		},
	})
	if callsAtSetup != 0 {
		t.Errorf("Setup ran after %d SQS calls, want before any", callsAtSetup)
	}
	h.RequireCompleted(h.Run("chain", map[string]any{"n": 1}))
	if !failed {
		t.Errorf("the fault hook set in Setup was never called")
	}
	if !strings.Contains(own.String(), "run started") {
		t.Errorf("the logger given in Options did not replace the harness's; it logged %q", own.String())
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
