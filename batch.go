package sqsadapter

import (
	"context"
	"sync"
	"time"
)

// batcher groups concurrent requests into batch calls without a goroutine
// of its own (group commit): a caller that finds fewer than maxFlushers
// flushes in progress becomes a flusher and sends whatever is pending, up to
// maxBatch items per call, until nothing is; the others wait for their
// result. Under load, items pile up while a call is in flight, so batches
// fill by themselves; when idle, an item is sent at once.
//
// With a linger, one flusher at a time (the collector) waits for a batch to
// fill before it sends; items arriving meanwhile join its batch rather than
// start a linger of their own, and a full batch is sent at once by another
// flusher. After hurry, nothing lingers any more.
type batcher[T any] struct {
	maxBatch    int
	maxFlushers int
	linger      time.Duration                                // how long the collector waits for a batch to fill
	flush       func(ctx context.Context, items []T) []error // one error per item
	hurried     chan struct{}                                // closed by hurry

	mu         sync.Mutex
	pending    []*batchItem[T]
	flushers   int
	collecting bool // a flusher is lingering
	hurrying   bool
	hurryOnce  sync.Once
}

type batchItem[T any] struct {
	v    T
	ctx  context.Context
	err  error         // the item's result, set before done is signalled
	done chan struct{} // holds no pointer: one allocation, where a chan error takes two
}

func newBatcher[T any](maxBatch, maxFlushers int, linger time.Duration, flush func(context.Context, []T) []error) *batcher[T] {
	return &batcher[T]{maxBatch: maxBatch, maxFlushers: maxFlushers, linger: linger, flush: flush, hurried: make(chan struct{})}
}

// hurry ends the linger of the collector, and of every later flush.
func (b *batcher[T]) hurry() {
	b.hurryOnce.Do(func() {
		b.mu.Lock()
		b.hurrying = true
		b.mu.Unlock()
		close(b.hurried)
	})
}

// lingers reports whether a flusher should wait for more items; b.mu held.
func (b *batcher[T]) lingers() bool {
	return b.linger > 0 && !b.hurrying && len(b.pending) < b.maxBatch
}

// do submits items and waits until each is flushed, returning the first
// error. ctx bounds the flush calls this caller makes, and its own wait.
func (b *batcher[T]) do(ctx context.Context, vs ...T) error {
	items := make([]batchItem[T], len(vs))
	b.mu.Lock()
	for i, v := range vs {
		it := &items[i]
		it.v, it.ctx, it.done = v, ctx, make(chan struct{}, 1)
		b.pending = append(b.pending, it)
	}
	// While a collector lingers, only a full batch needs another flusher.
	lead := b.flushers < b.maxFlushers && !(b.collecting && b.lingers())
	if lead {
		b.flushers++
	}
	b.mu.Unlock()
	if lead {
		b.drain(ctx)
	}
	var first error
	for i := range items {
		it := &items[i]
		select {
		case <-it.done:
			err := it.err
			if err != nil && first == nil {
				first = err
			}
		case <-ctx.Done():
			// The item may still be flushed by another caller; we no longer wait.
			return context.Cause(ctx)
		}
	}
	return first
}

// drain flushes pending items until none is left, or until another flusher
// collects them, then retires the flusher.
func (b *batcher[T]) drain(ctx context.Context) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for len(b.pending) > 0 {
		if b.lingers() {
			if b.collecting {
				break // the collector sends them
			}
			b.collecting = true
			b.mu.Unlock()
			t := time.NewTimer(b.linger)
			select {
			case <-t.C:
			case <-b.hurried:
			case <-ctx.Done():
			}
			t.Stop()
			b.mu.Lock()
			b.collecting = false
			if len(b.pending) == 0 { // a full batch was sent meanwhile
				break
			}
		}
		n := min(len(b.pending), b.maxBatch)
		batch := b.pending[:n:n]
		b.pending = b.pending[n:]
		b.mu.Unlock()

		vs := make([]T, len(batch))
		for i, it := range batch {
			vs[i] = it.v
		}
		errs := b.flush(ctx, vs)
		for i, it := range batch {
			var err error
			if i < len(errs) {
				err = errs[i]
			}
			it.err = err
			it.done <- struct{}{}
		}
		b.mu.Lock()
	}
	b.flushers--
}
