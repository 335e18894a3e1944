// Package runindex shards the running-runs index of the status table and
// lists it: which partition key value a run is written under, the cursor of
// a listing that reads every value, and the merge of the values' pages into
// one listing, oldest first.
//
// A single partition key value puts every run start and finish on one
// partition of the index, which DynamoDB caps at 1,000 write units per
// second. With Shards values the writes spread over Shards partitions.
package runindex

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"sync"

	"github.com/flowcraft/sqsadapter/internal/limits"
	"github.com/flowcraft/sqsadapter/store"
)

// Shards is the number of partition key values of the index. Changing it
// moves runs between values: runs written under a value that is no longer
// read are not listed until they finish. Keep it fixed.
const Shards = 16

// Legacy is the single partition key value written before the index was
// sharded. Listings read it too, so runs started by an earlier version are
// still listed (during a rolling upgrade, and until they finish); FinishRun
// removes the attribute whatever its value.
const Legacy = "running"

// Sources is the number of partition key values a listing reads: the
// shards and the legacy value.
const Sources = Shards + 1

// Shard returns the shard of a run: FNV-1a of its id, modulo Shards. It
// depends only on the id, so a run keeps its shard.
func Shard(runID string) int {
	return ShardOf(runID, Shards)
}

// ShardOf is the shard of a run among n shards: FNV-1a of its id, modulo
// n. A load model uses it to try other shard counts.
func ShardOf(runID string, n int) int {
	h := fnv.New32a()
	h.Write([]byte(runID)) // never fails
	return int(h.Sum32() % uint32(n))
}

// Key returns the partition key value of a run: "running#<shard>".
func Key(runID string) string {
	return SourceKey(Shard(runID))
}

// SourceKey returns the partition key value of source i: shard i for i in
// [0, Shards), Legacy for i == Shards.
func SourceKey(i int) string {
	if i == Shards {
		return Legacy
	}
	return Legacy + "#" + strconv.Itoa(i)
}

// Position is a place in one source: the index keys of the last run listed
// from it.
type Position struct {
	Since int64  // runningSince, unix milliseconds
	RunID string // runId
}

// SourceState is where a listing stands in one source.
type SourceState struct {
	// At is the last run listed from the source; nil when none was.
	At *Position
	// Done: every run of the source in range was listed.
	Done bool
}

// Cursor is the position of a listing in every source, by source index.
type Cursor [Sources]SourceState

// Finished reports whether every source is done.
func (c *Cursor) Finished() bool {
	for _, s := range c {
		if !s.Done {
			return false
		}
	}
	return true
}

// cursorVersion is the format of an encoded cursor.
const cursorVersion = 1

type wireCursor struct {
	V int         `json:"v"`
	S []wireState `json:"s"`
}

type wireState struct {
	T *int64 `json:"t,omitempty"`
	R string `json:"r,omitempty"`
	E bool   `json:"e,omitempty"`
}

// Encode returns c as URL-safe base64 of JSON: a version and one entry per
// source.
func Encode(c *Cursor) string {
	w := wireCursor{V: cursorVersion, S: make([]wireState, Sources)}
	for i, s := range c {
		switch {
		case s.Done:
			w.S[i].E = true
		case s.At != nil:
			since := s.At.Since
			w.S[i].T, w.S[i].R = &since, s.At.RunID
		}
	}
	b, err := json.Marshal(w)
	if err != nil {
		panic(err) // ints, strings and bools always marshal
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// Decode parses a cursor of Encode. Anything else, a cursor of another
// version or shard count included, fails with an error wrapping
// store.ErrInvalidCursor.
func Decode(cursor string) (*Cursor, error) {
	invalid := func(err error) error {
		shown := cursor
		if len(shown) > 64 {
			shown = shown[:64] + "..."
		}
		return fmt.Errorf("%w %q: %v", store.ErrInvalidCursor, shown, err)
	}
	b, err := base64.RawURLEncoding.DecodeString(cursor)
	if err != nil {
		return nil, invalid(err)
	}
	var w wireCursor
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&w); err != nil {
		return nil, invalid(err)
	}
	if dec.More() {
		return nil, invalid(errors.New("trailing data"))
	}
	if w.V != cursorVersion {
		return nil, invalid(fmt.Errorf("version %d, not %d", w.V, cursorVersion))
	}
	if len(w.S) != Sources {
		return nil, invalid(fmt.Errorf("%d sources, not %d", len(w.S), Sources))
	}
	var c Cursor
	for i, s := range w.S {
		switch {
		case s.E:
			if s.T != nil || s.R != "" {
				return nil, invalid(fmt.Errorf("source %d: done with a position", i))
			}
			c[i].Done = true
		case s.T != nil:
			if err := limits.CheckID("run id", s.R); err != nil {
				return nil, invalid(fmt.Errorf("source %d: %w", i, err))
			}
			c[i].At = &Position{Since: *s.T, RunID: s.R}
		case s.R != "":
			return nil, invalid(fmt.Errorf("source %d: run id without a time", i))
		}
	}
	if c.Finished() {
		return nil, invalid(errors.New("every source is done")) // Encode's caller returns "" instead
	}
	return &c, nil
}

// Item is one run a source returned, with the caller's record of it.
type Item[T any] struct {
	Since int64 // runningSince, unix milliseconds
	RunID string
	Value T
}

// Fetch reads at most limit runs of source i, in the source's order, after
// from (from its first run when from is nil). more reports whether the
// source may hold runs after the last one returned; a source that returns no
// run must report no more.
type Fetch[T any] func(ctx context.Context, source int, from *Position, limit int) (items []Item[T], more bool, err error)

// Parallel is the number of sources List reads at once.
const Parallel = 8

// MaxRounds bounds the reads of one List call: a first read of every
// source that is not done, then reads of the sources that ran out first,
// when they hold back a page.
const MaxRounds = 4

// List returns at most limit runs after cursor c (nil: from the start), the
// oldest first, and the cursor of what follows (nil at the end). It reads
// the sources that are not done with fetch, Parallel at a time, asking each
// for about twice its share of the page (2·limit/sources read), and merges
// them: a run is listed only once every source that may hold an
// older one has been read past it. When a source runs out first and holds
// the page back, it is read again, at most MaxRounds reads in all, so a page
// may hold fewer than limit runs (none, even) with a next cursor. Each
// source's runs are listed in the source's own order, a prefix at a time,
// so its position is the last run listed from it.
func List[T any](ctx context.Context, c *Cursor, limit int, fetch Fetch[T]) ([]Item[T], *Cursor, error) {
	if limit <= 0 {
		return nil, nil, fmt.Errorf("limit %d: must be positive", limit)
	}
	type source struct {
		from    *Position // where the next read starts
		buf     []Item[T] // read, not listed yet
		more    bool      // the source may hold runs after buf
		emitted *Position // last run listed from it by this call
	}
	var srcs [Sources]source
	for i := range srcs {
		srcs[i].more = true
		if c != nil {
			srcs[i].from, srcs[i].more = c[i].At, !c[i].Done
		}
	}
	open := func(s *source) bool { return s.more || len(s.buf) > 0 }
	var out []Item[T]
	for range MaxRounds {
		var dry []int
		for i := range srcs {
			if srcs[i].more && len(srcs[i].buf) == 0 {
				dry = append(dry, i)
			}
		}
		if len(dry) == 0 {
			break
		}
		// Twice a fair share of what the page still needs: in the first
		// round every open source is dry; later only those that held the
		// page back are.
		want := limit - len(out)
		per := min(want, (2*want+len(dry)-1)/len(dry))
		if err := readAll(ctx, dry, func(ctx context.Context, i int) error {
			s := &srcs[i]
			items, more, err := fetch(ctx, i, s.from, per)
			if err != nil {
				return err
			}
			if len(items) == 0 && more {
				return fmt.Errorf("source %d: no runs read but more to come", i)
			}
			s.buf, s.more = items, more
			if n := len(items); n > 0 {
				s.from = &Position{Since: items[n-1].Since, RunID: items[n-1].RunID}
			}
			return nil
		}); err != nil {
			return nil, nil, err
		}
		blocked := false
		for len(out) < limit {
			head := -1
			for i := range srcs {
				if len(srcs[i].buf) == 0 {
					continue
				}
				if head < 0 || less(srcs[i].buf[0], srcs[head].buf[0]) {
					head = i
				}
			}
			if head < 0 {
				break
			}
			next := srcs[head].buf[0]
			// A source read to its end of buffer may hold a run older than
			// next: its unread runs are no older than the last one read.
			for i := range srcs {
				s := &srcs[i]
				if s.more && len(s.buf) == 0 && (s.from == nil || s.from.Since < next.Since) {
					blocked = true
				}
			}
			if blocked {
				break
			}
			srcs[head].buf = srcs[head].buf[1:]
			srcs[head].emitted = &Position{Since: next.Since, RunID: next.RunID}
			out = append(out, next)
		}
		if !blocked {
			break
		}
	}
	var next Cursor
	for i := range srcs {
		s := &srcs[i]
		switch {
		case !open(s):
			next[i].Done = true
		case s.emitted != nil:
			next[i].At = s.emitted
		case c != nil:
			next[i].At = c[i].At
		}
	}
	if next.Finished() {
		return out, nil, nil
	}
	return out, &next, nil
}

// less orders runs by creation time, then run id.
func less[T any](a, b Item[T]) bool {
	if a.Since != b.Since {
		return a.Since < b.Since
	}
	return a.RunID < b.RunID
}

// readAll calls read for every source of ids, Parallel at a time, and
// returns the first error that happened (the others are its consequences:
// it cancels the calls still running). It returns when every call has
// returned.
func readAll(ctx context.Context, ids []int, read func(context.Context, int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu    sync.Mutex
		first error
		wg    sync.WaitGroup
	)
	sem := make(chan struct{}, Parallel)
	for _, i := range ids {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := read(ctx, i); err != nil {
				mu.Lock()
				if first == nil {
					first = err
					cancel()
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return first
}
