// Package storetest is the conformance suite of the storage interfaces
// store.ContextStore and store.CoordinationStore. Every
// implementation runs it from its own tests:
//
//	func TestContextStore(t *testing.T) {
//		storetest.TestContextStore(t, func(t *testing.T) store.ContextStore {
//			return sqsadaptertest.NewContextStore()
//		})
//	}
//
// The suite tests only the documented contract. Every subtest gets a store
// from newStore and uses run ids and keys of its own, so several subtests may
// share one backing table (DynamoDB Local). Subtests are fast against a real
// server: concurrency tests use 16 goroutines, and the one test that waits for
// a TTL to expire runs in parallel with the others.
package storetest

import (
	"crypto/rand"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowcraft/sqsadapter/internal/jsonvalue"
)

// racers is the number of goroutines of the concurrency tests.
const racers = 16

// subtest is one named test of a suite.
type subtest[S any] struct {
	name     string
	parallel bool
	fn       func(t *testing.T, s S)
}

func run[S any](t *testing.T, newStore func(t *testing.T) S, tests []subtest[S]) {
	t.Helper()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.parallel {
				t.Parallel()
			}
			tc.fn(t, newStore(t))
		})
	}
}

// unique returns an identifier no other test (or test run) uses.
func unique(prefix string) string {
	return "storetest-" + prefix + "-" + strings.ToLower(rand.Text()[:16])
}

// baseTime is a current time with millisecond precision, which every store
// keeps exactly.
func baseTime() time.Time {
	return time.Now().UTC().Truncate(time.Millisecond)
}

// assertTime asserts that got is want, to the millisecond.
func assertTime(t *testing.T, want, got time.Time, msgAndArgs ...any) {
	t.Helper()
	if want.IsZero() {
		assert.True(t, got.IsZero(), append([]any{"want a zero time, got %v", got}, msgAndArgs...)...)
		return
	}
	assert.WithinDuration(t, want, got, time.Millisecond, msgAndArgs...)
}

// normalize returns the JSON-like form of v, which a store returns for it.
func normalize(t *testing.T, v any) any {
	t.Helper()
	n, err := jsonvalue.Normalize(v)
	require.NoError(t, err)
	return n
}

// race runs fn(0) … fn(n-1) in n goroutines released together and returns
// their errors by index.
func race(n int, fn func(i int) error) []error {
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			errs[i] = fn(i)
		})
	}
	close(start)
	wg.Wait()
	return errs
}

// winners returns the indexes whose error is nil.
func winners(errs []error) []int {
	var w []int
	for i, err := range errs {
		if err == nil {
			w = append(w, i)
		}
	}
	return w
}
