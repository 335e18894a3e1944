package runindex

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowcraft/sqsadapter/store"
)

func TestKey(t *testing.T) {
	seen := map[string]int{}
	for i := range 1600 {
		id := fmt.Sprint("run-", i)
		k := Key(id)
		assert.Equal(t, k, Key(id), "stable")
		assert.Equal(t, SourceKey(Shard(id)), k)
		seen[k]++
	}
	require.Len(t, seen, Shards, "every shard used")
	for k, n := range seen {
		assert.True(t, strings.HasPrefix(k, "running#"), k)
		assert.InDelta(t, 100, n, 40, "runs of %s", k)
	}
	assert.Equal(t, "running#0", SourceKey(0))
	assert.Equal(t, "running#15", SourceKey(Shards-1))
	assert.Equal(t, "running", SourceKey(Shards))
}

func TestCursorRoundTrip(t *testing.T) {
	var c Cursor
	c[0].Done = true
	c[3].At = &Position{Since: -5, RunID: "a"}
	c[Shards].At = &Position{Since: 1700000000000, RunID: "run \"x\"/é"}
	got, err := Decode(Encode(&c))
	require.NoError(t, err)
	assert.Equal(t, c, *got)
}

func TestCursorInvalid(t *testing.T) {
	enc := func(s string) string { return b64(s) }
	all := func(entry string) string {
		return enc(`{"v":1,"s":[` + strings.Repeat(entry+",", Sources-1) + entry + `]}`)
	}
	for name, cursor := range map[string]string{
		"not base64":          "not a cursor!",
		"not JSON":            enc("x"),
		"empty object":        enc("{}"),
		"unknown field":       enc(`{"v":1,"s":[],"x":1}`),
		"other version":       enc(`{"v":2,"s":[]}`),
		"too few sources":     enc(`{"v":1,"s":[{}]}`),
		"every source done":   all(`{"e":true}`),
		"done with position":  all(`{"e":true,"t":1,"r":"a"}`),
		"run id without time": all(`{"r":"a"}`),
		"empty run id":        all(`{"t":1}`),
		"bad run id":          all(`{"t":1,"r":"a\u0001"}`),
		"trailing data":       enc(`{"v":1,"s":[]} {}`),
		"single key cursor":   enc(`{"gsiRunning":{"S":"running"},"runId":{"S":"r"},"runningSince":{"N":"1"}}`),
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Decode(cursor)
			require.ErrorIs(t, err, store.ErrInvalidCursor)
		})
	}
	_, err := Decode(all(`{}`))
	require.NoError(t, err, "every source from its start")
}

// table is a fake index: each source's runs in index order.
type table struct {
	mu    sync.Mutex
	src   [Sources][]Item[string]
	reads int
}

func (tb *table) add(since int64, id string, legacy bool) {
	i := Shard(id)
	if legacy {
		i = Shards
	}
	tb.src[i] = append(tb.src[i], Item[string]{Since: since, RunID: id, Value: id})
	slices.SortFunc(tb.src[i], func(a, b Item[string]) int {
		if less(a, b) {
			return -1
		}
		if less(b, a) {
			return 1
		}
		return 0
	})
}

func (tb *table) remove(id string) {
	for i := range tb.src {
		tb.src[i] = slices.DeleteFunc(tb.src[i], func(it Item[string]) bool { return it.RunID == id })
	}
}

// fetch reads like a DynamoDB Query with Limit: more is true whenever
// limit runs were returned.
func (tb *table) fetch(_ context.Context, i int, from *Position, limit int) ([]Item[string], bool, error) {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	tb.reads++
	var out []Item[string]
	for _, it := range tb.src[i] {
		if from != nil && !less(Item[string]{Since: from.Since, RunID: from.RunID}, it) {
			continue
		}
		out = append(out, it)
		if len(out) == limit {
			return out, true, nil
		}
	}
	return out, false, nil
}

// TestListMerge lists runs spread over every source, with many created in
// the same millisecond, while runs start and finish between pages: every
// run that runs for the whole listing is listed exactly once, oldest first.
func TestListMerge(t *testing.T) {
	ctx := t.Context()
	for seed := range uint64(40) {
		rng := rand.New(rand.NewPCG(seed, 7))
		tb := &table{}
		n := 1 + rng.IntN(300)
		spread := int64(1 + rng.IntN(200)) // few distinct times: many ties
		ids := map[string]int64{}
		for k := range n {
			id := fmt.Sprintf("r%d-%d", seed, k)
			ids[id] = rng.Int64N(spread)
			tb.add(ids[id], id, rng.IntN(10) == 0)
		}
		stable := map[string]bool{} // neither finished nor started during the listing
		for id := range ids {
			stable[id] = true
		}
		limit := 1 + rng.IntN(40)
		var c *Cursor
		var got []Item[string]
		for page := 0; ; page++ {
			require.Less(t, page, 10*n+10, "seed %d: too many pages", seed)
			items, next, err := List(ctx, c, limit, tb.fetch)
			require.NoError(t, err)
			require.LessOrEqual(t, len(items), limit)
			got = append(got, items...)
			if next == nil {
				break
			}
			// Round-trip the cursor, as a caller would.
			c, err = Decode(Encode(next))
			require.NoError(t, err)
			// Some runs finish, some start.
			if rng.IntN(3) == 0 {
				for id := range ids {
					if rng.IntN(20) == 0 {
						tb.remove(id)
						delete(stable, id)
					}
				}
				id := fmt.Sprintf("new%d-%d", seed, page)
				tb.add(spread+int64(page), id, false) // started now: newer than every other
			}
		}
		count := map[string]int{}
		for k, it := range got {
			count[it.RunID]++
			if k > 0 {
				require.LessOrEqual(t, got[k-1].Since, it.Since, "seed %d: oldest first", seed)
			}
		}
		for id, c := range count {
			require.Equal(t, 1, c, "seed %d: %s listed %d times", seed, id, c)
		}
		for id := range stable {
			require.Contains(t, count, id, "seed %d: run %s not listed", seed, id)
		}
	}
}

// TestListCost: with runs spread evenly over the shards, a page reads each
// source once and holds limit runs.
func TestListCost(t *testing.T) {
	tb := &table{}
	for k := range 2000 {
		tb.add(int64(k), fmt.Sprint("run-", k), false)
	}
	var c *Cursor
	pages, listed := 0, 0
	for ; pages < 100; pages++ {
		items, next, err := List(t.Context(), c, 100, tb.fetch)
		require.NoError(t, err)
		listed += len(items)
		if next == nil {
			break
		}
		c = next
	}
	assert.Equal(t, 2000, listed)
	assert.LessOrEqual(t, pages, 22, "pages of 100 for 2000 runs")
	assert.LessOrEqual(t, tb.reads, (pages+1)*Sources*3/2, "reads: about one per source and page")
	t.Logf("%d pages, %d reads", pages, tb.reads)
}

func TestListError(t *testing.T) {
	boom := errors.New("boom")
	_, _, err := List(t.Context(), nil, 10, func(ctx context.Context, i int, _ *Position, _ int) ([]Item[int], bool, error) {
		if i == 3 {
			return nil, false, boom
		}
		<-ctx.Done() // the others are cancelled
		return nil, false, ctx.Err()
	})
	require.ErrorIs(t, err, boom)
	_, _, err = List(t.Context(), nil, 10, func(context.Context, int, *Position, int) ([]Item[int], bool, error) {
		return nil, true, nil
	})
	require.Error(t, err, "a source that reads nothing but has more")
}

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// TestListSkewed: runs of the legacy source all older than the shards'
// (a rolling upgrade) still fill pages, by reading the legacy source again.
func TestListSkewed(t *testing.T) {
	tb := &table{}
	for k := range 500 {
		tb.add(int64(k), fmt.Sprint("old-", k), true)
		tb.add(int64(500+k), fmt.Sprint("new-", k), false)
	}
	var c *Cursor
	var all []Item[string]
	pages := 0
	for ; pages < 100; pages++ {
		items, next, err := List(t.Context(), c, 100, tb.fetch)
		require.NoError(t, err)
		all = append(all, items...)
		if next == nil {
			break
		}
		c = next
	}
	require.Len(t, all, 1000)
	assert.Equal(t, "old-0", all[0].RunID)
	assert.Equal(t, "old-499", all[499].RunID)
	assert.LessOrEqual(t, pages, 11, "pages of 100 for 1000 runs")
	t.Logf("%d pages, %d reads", pages+1, tb.reads)
}
