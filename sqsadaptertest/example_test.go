package sqsadaptertest_test

import (
	"context"
	"fmt"
	"runtime"
	"testing"

	"github.com/flowcraft/sqsadapter"
	"github.com/flowcraft/sqsadapter/sqsadaptertest"
)

// testGreet is a host's test of its blueprint: in a _test.go file it is
// func TestGreet(t *testing.T), and go test runs it.
func testGreet(t testing.TB) {
	bp, err := sqsadapter.ParseBlueprint([]byte(`{"id": "greet",
	  "nodes": [{"id": "name", "uses": "name", "inputs": "who"}, {"id": "hello", "uses": "hello"}],
	  "edges": [{"source": "name", "target": "hello"}]}`))
	if err != nil {
		t.Fatalf("parse blueprint: %v", err)
	}
	blueprints := []*sqsadapter.Blueprint{bp}
	registry := sqsadapter.NodeRegistry{
		"name":  sqsadapter.Typed(func(ctx context.Context, who string) (string, error) { return who, nil }),
		"hello": sqsadapter.Typed(func(ctx context.Context, name string) (string, error) { return "hello, " + name, nil }),
	}
	// readme:harness
	h := sqsadaptertest.New(t, sqsadaptertest.Config{Blueprints: blueprints, Registry: registry})
	st := h.Run("greet", map[string]any{"who": "Ada"}) // starts the run and waits for it
	h.RequireCompleted(st)
	h.RequireNodeStates(st, map[string]string{"name": "completed", "hello": "completed"})
	// readme:end
	if got := st.Context["_outputs.hello"]; got != "hello, Ada" {
		t.Errorf("hello's output = %v, want hello, Ada", got)
	}
	fmt.Println(st.Status, st.Context["_outputs.hello"])
}

// A host's test of a blueprint: New starts two workers on the in-memory
// queue and stores, Run starts a run and waits for it, and the test's
// cleanup stops the workers.
func Example() {
	runAsTest(testGreet)
	// Output: completed hello, Ada
}

// exampleT stands in for the *testing.T that go test passes to a test
// function, since an example has none: it runs the cleanups at the end and
// prints failures. The adapters' logs, which go test shows for a failing
// test or with -v, are dropped.
type exampleT struct {
	testing.TB // satisfies the interface; the methods New uses are below
	cleanups   []func()
}

func runAsTest(test func(testing.TB)) {
	t := &exampleT{}
	done := make(chan struct{})
	go func() { // Fatalf ends this goroutine, as in go test
		defer close(done)
		test(t)
	}()
	<-done
	for i := len(t.cleanups) - 1; i >= 0; i-- {
		t.cleanups[i]()
	}
}

func (t *exampleT) Helper()                   {}
func (t *exampleT) Context() context.Context  { return context.Background() }
func (t *exampleT) Cleanup(f func())          { t.cleanups = append(t.cleanups, f) }
func (t *exampleT) Log(...any)                {}
func (t *exampleT) Errorf(f string, a ...any) { fmt.Printf("FAIL: "+f+"\n", a...) }
func (t *exampleT) Fatalf(f string, a ...any) { t.Errorf(f, a...); runtime.Goexit() }
