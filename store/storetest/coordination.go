package storetest

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowcraft/sqsadapter/store"
)

// ttl is the TTL of records that must not expire during a test.
const ttl = time.Hour

// TestCoordinationStore runs the conformance suite of
// store.CoordinationStore. newStore is called once per subtest.
func TestCoordinationStore(t *testing.T, newStore func(t *testing.T) store.CoordinationStore) {
	run(t, newStore, []subtest[store.CoordinationStore]{
		{name: "Expiry", parallel: true, fn: testCoordinationExpiry},
		{name: "SetIfNotExist", fn: testSetIfNotExist},
		{name: "SetIfNotExistRace", fn: testSetIfNotExistRace},
		{name: "ExtendTTL", fn: testExtendTTL},
		{name: "Delete", fn: testCoordinationDelete},
		{name: "Increment", fn: testIncrement},
		{name: "IncrementRace", fn: testIncrementRace},
		{name: "Arrive", fn: testArrive},
		{name: "ArriveRace", fn: testArriveRace},
		{name: "GetJoins", fn: testGetJoins},
		{name: "CanceledContext", fn: testCoordinationStoreCanceled},
	})
}

func testSetIfNotExist(t *testing.T, s store.CoordinationStore) {
	ctx := t.Context()
	key := unique("lock")

	_, ok, err := s.Get(ctx, key)
	require.NoError(t, err)
	assert.False(t, ok, "absent key")

	set, err := s.SetIfNotExist(ctx, key, "first", ttl)
	require.NoError(t, err)
	assert.True(t, set)
	set, err = s.SetIfNotExist(ctx, key, "second", ttl)
	require.NoError(t, err)
	assert.False(t, set, "the key exists")

	got, ok, err := s.Get(ctx, key)
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, "first", got)

	// Values are strings of any content; keys are separate.
	for _, v := range []string{"", "unicode 日本 🚀", `{"json": [1, 2]}`} {
		k := unique("value")
		set, err := s.SetIfNotExist(ctx, k, v, ttl)
		require.NoError(t, err)
		require.True(t, set)
		got, ok, err := s.Get(ctx, k)
		require.NoError(t, err)
		require.True(t, ok, "%q", v)
		assert.Equal(t, v, got)
	}

	// No TTL: the record does not expire.
	k := unique("forever")
	set, err = s.SetIfNotExist(ctx, k, "v", 0)
	require.NoError(t, err)
	require.True(t, set)
	got, ok, err = s.Get(ctx, k)
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, "v", got)
}

func testSetIfNotExistRace(t *testing.T, s store.CoordinationStore) {
	ctx := t.Context()
	key := unique("lock")
	set := make([]bool, racers)
	errs := race(racers, func(i int) error {
		var err error
		set[i], err = s.SetIfNotExist(ctx, key, fmt.Sprint("owner-", i), ttl)
		return err
	})
	var won []int
	for i, err := range errs {
		require.NoError(t, err)
		if set[i] {
			won = append(won, i)
		}
	}
	require.Len(t, won, 1, "exactly one SetIfNotExist succeeds")
	got, ok, err := s.Get(ctx, key)
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, fmt.Sprint("owner-", won[0]), got)
}

func testExtendTTL(t *testing.T, s store.CoordinationStore) {
	ctx := t.Context()
	key := unique("lease")
	ok, err := s.ExtendTTL(ctx, key, ttl)
	require.NoError(t, err)
	assert.False(t, ok, "absent key")
	_, found, err := s.Get(ctx, key)
	require.NoError(t, err)
	assert.False(t, found, "ExtendTTL creates nothing")

	set, err := s.SetIfNotExist(ctx, key, "v", time.Minute)
	require.NoError(t, err)
	require.True(t, set)
	ok, err = s.ExtendTTL(ctx, key, ttl)
	require.NoError(t, err)
	assert.True(t, ok)
	got, found, err := s.Get(ctx, key)
	require.NoError(t, err)
	require.True(t, found)
	assert.Equal(t, "v", got, "the value is kept")

	// Counters and joins have TTLs too.
	counter := unique("counter")
	_, err = s.Increment(ctx, counter, 3, time.Minute)
	require.NoError(t, err)
	ok, err = s.ExtendTTL(ctx, counter, ttl)
	require.NoError(t, err)
	assert.True(t, ok)
	n, err := s.Increment(ctx, counter, 1, ttl)
	require.NoError(t, err)
	assert.Equal(t, int64(4), n, "the count is kept")

	join := unique("join")
	_, err = s.Arrive(ctx, join, store.Arrival{Source: "a", Taken: true, Claim: true}, time.Minute)
	require.NoError(t, err)
	ok, err = s.ExtendTTL(ctx, join, ttl)
	require.NoError(t, err)
	assert.True(t, ok)
	joins, err := s.GetJoins(ctx, []string{join})
	require.NoError(t, err)
	require.Contains(t, joins, join)
	assert.Equal(t, []string{"a"}, joins[join].Arrived, "the join is kept")
	assert.Equal(t, "a", joins[join].FiredBy)

	require.NoError(t, s.Delete(ctx, key))
	ok, err = s.ExtendTTL(ctx, key, ttl)
	require.NoError(t, err)
	assert.False(t, ok, "deleted key")
}

func testCoordinationDelete(t *testing.T, s store.CoordinationStore) {
	ctx := t.Context()
	require.NoError(t, s.Delete(ctx, unique("absent")), "deleting an absent key")

	key := unique("lock")
	_, err := s.SetIfNotExist(ctx, key, "v", ttl)
	require.NoError(t, err)
	require.NoError(t, s.Delete(ctx, key))
	_, ok, err := s.Get(ctx, key)
	require.NoError(t, err)
	assert.False(t, ok)
	set, err := s.SetIfNotExist(ctx, key, "again", ttl)
	require.NoError(t, err)
	assert.True(t, set, "a deleted key can be set again")
	require.NoError(t, s.Delete(ctx, key))
	require.NoError(t, s.Delete(ctx, key), "deleted twice")

	counter := unique("counter")
	_, err = s.Increment(ctx, counter, 5, ttl)
	require.NoError(t, err)
	require.NoError(t, s.Delete(ctx, counter))
	n, err := s.Increment(ctx, counter, 1, ttl)
	require.NoError(t, err)
	assert.Equal(t, int64(1), n, "a deleted counter restarts at 0")

	join := unique("join")
	_, err = s.Arrive(ctx, join, store.Arrival{Source: "a", Taken: true, Claim: true}, ttl)
	require.NoError(t, err)
	require.NoError(t, s.Delete(ctx, join))
	joins, err := s.GetJoins(ctx, []string{join})
	require.NoError(t, err)
	assert.Empty(t, joins)
	st, err := s.Arrive(ctx, join, store.Arrival{Source: "b"}, ttl)
	require.NoError(t, err)
	assert.Equal(t, []string{"b"}, st.Arrived, "a deleted join restarts empty")
	assert.Empty(t, st.Taken)
	assert.Empty(t, st.FiredBy)
}

func testIncrement(t *testing.T, s store.CoordinationStore) {
	ctx := t.Context()
	key := unique("counter")
	for _, step := range []struct{ delta, want int64 }{
		{1, 1}, {1, 2}, {5, 7}, {-3, 4}, {0, 4}, {-10, -6},
	} {
		n, err := s.Increment(ctx, key, step.delta, ttl)
		require.NoError(t, err)
		assert.Equal(t, step.want, n, "after adding %d", step.delta)
	}
	big := unique("counter")
	n, err := s.Increment(ctx, big, 1<<53+1, ttl)
	require.NoError(t, err)
	assert.Equal(t, int64(1<<53+1), n, "no float rounding")
	n, err = s.Increment(ctx, big, 1, 0)
	require.NoError(t, err)
	assert.Equal(t, int64(1<<53+2), n)

	n, err = s.Increment(ctx, unique("counter"), 3, 0)
	require.NoError(t, err)
	assert.Equal(t, int64(3), n, "a new counter starts at 0")
}

func testIncrementRace(t *testing.T, s store.CoordinationStore) {
	ctx := t.Context()
	key := unique("counter")
	const each = 4
	got := make([][]int64, racers)
	errs := race(racers, func(i int) error {
		for range each {
			n, err := s.Increment(ctx, key, 1, ttl)
			if err != nil {
				return err
			}
			got[i] = append(got[i], n)
		}
		return nil
	})
	var all []int64
	for i, err := range errs {
		require.NoError(t, err)
		all = append(all, got[i]...)
	}
	slices.Sort(all)
	want := make([]int64, racers*each)
	for i := range want {
		want[i] = int64(i + 1)
	}
	assert.Equal(t, want, all, "every increment returns a distinct count")
	n, err := s.Increment(ctx, key, 0, ttl)
	require.NoError(t, err)
	assert.Equal(t, int64(racers*each), n)
}

func testArrive(t *testing.T, s store.CoordinationStore) {
	ctx := t.Context()
	key := unique("fanin")

	st, err := s.Arrive(ctx, key, store.Arrival{Source: "c"}, ttl)
	require.NoError(t, err)
	assert.Equal(t, []string{"c"}, st.Arrived)
	assert.Empty(t, st.Taken)
	assert.Empty(t, st.FiredBy)

	st, err = s.Arrive(ctx, key, store.Arrival{Source: "b", Taken: true}, ttl)
	require.NoError(t, err)
	assert.Equal(t, []string{"b", "c"}, st.Arrived, "sorted")
	assert.Equal(t, []string{"b"}, st.Taken)
	assert.Empty(t, st.FiredBy, "no claim")

	st, err = s.Arrive(ctx, key, store.Arrival{Source: "a", Claim: true}, ttl)
	require.NoError(t, err)
	assert.Equal(t, []string{"a", "b", "c"}, st.Arrived)
	assert.Equal(t, []string{"b"}, st.Taken)
	assert.Empty(t, st.FiredBy, "only taken arrivals claim")

	st, err = s.Arrive(ctx, key, store.Arrival{Source: "e", Taken: true, Claim: true}, ttl)
	require.NoError(t, err)
	assert.Equal(t, []string{"a", "b", "c", "e"}, st.Arrived)
	assert.Equal(t, []string{"b", "e"}, st.Taken)
	assert.Equal(t, "e", st.FiredBy)

	st, err = s.Arrive(ctx, key, store.Arrival{Source: "d", Taken: true, Claim: true}, ttl)
	require.NoError(t, err)
	assert.Equal(t, []string{"a", "b", "c", "d", "e"}, st.Arrived)
	assert.Equal(t, []string{"b", "d", "e"}, st.Taken)
	assert.Equal(t, "e", st.FiredBy, "the first claim stands")
	want := st

	// Repeated arrivals change nothing.
	for _, a := range []store.Arrival{
		{Source: "d", Taken: true, Claim: true},
		{Source: "e", Taken: true, Claim: true},
		{Source: "b", Taken: true, Claim: true},
		{Source: "c"},
	} {
		st, err := s.Arrive(ctx, key, a, ttl)
		require.NoError(t, err)
		assert.Equal(t, want, st, "repeated %+v", a)
	}
	joins, err := s.GetJoins(ctx, []string{key})
	require.NoError(t, err)
	assert.Equal(t, map[string]*store.JoinState{key: want}, joins)

	// The state returned is the caller's.
	st.Arrived[0] = "changed"
	st.Taken[0] = "changed"
	again, err := s.Arrive(ctx, key, store.Arrival{Source: "a"}, ttl)
	require.NoError(t, err)
	assert.Equal(t, []string{"a", "b", "c", "d", "e"}, again.Arrived)
	assert.Equal(t, []string{"b", "d", "e"}, again.Taken)
}

func testArriveRace(t *testing.T, s store.CoordinationStore) {
	ctx := t.Context()
	key := unique("fanin")
	// racers/2 predecessors, each arriving twice (a duplicate delivery); the
	// even ones took their edge and claim the firing.
	const sources = racers / 2
	states := make([]*store.JoinState, racers)
	arrival := func(i int) store.Arrival {
		src := i % sources
		taken := src%2 == 0
		return store.Arrival{Source: fmt.Sprintf("p%02d", src), Taken: taken, Claim: taken}
	}
	errs := race(racers, func(i int) error {
		var err error
		states[i], err = s.Arrive(ctx, key, arrival(i), ttl)
		return err
	})
	var wantArrived, wantTaken []string
	for src := range sources {
		wantArrived = append(wantArrived, fmt.Sprintf("p%02d", src))
		if src%2 == 0 {
			wantTaken = append(wantTaken, fmt.Sprintf("p%02d", src))
		}
	}
	joins, err := s.GetJoins(ctx, []string{key})
	require.NoError(t, err)
	require.Contains(t, joins, key)
	final := joins[key]
	assert.Equal(t, wantArrived, final.Arrived)
	assert.Equal(t, wantTaken, final.Taken)
	require.Contains(t, wantTaken, final.FiredBy, "a claimant fired the join")

	for i, err := range errs {
		require.NoError(t, err)
		a := arrival(i)
		st := states[i]
		assert.Contains(t, st.Arrived, a.Source, "an arrival sees itself")
		assert.True(t, slices.IsSorted(st.Arrived))
		assert.True(t, slices.IsSorted(st.Taken))
		if a.Claim {
			assert.Equal(t, final.FiredBy, st.FiredBy, "a claimant sees who fired")
		} else if st.FiredBy != "" {
			assert.Equal(t, final.FiredBy, st.FiredBy, "FiredBy never changes")
		}
	}

	// Late and repeated arrivals change nothing.
	for src := range sources {
		st, err := s.Arrive(ctx, key, store.Arrival{Source: fmt.Sprintf("p%02d", src), Taken: true, Claim: true}, ttl)
		require.NoError(t, err)
		assert.Equal(t, final.FiredBy, st.FiredBy)
		assert.Equal(t, wantArrived, st.Arrived)
	}
}

func testGetJoins(t *testing.T, s store.CoordinationStore) {
	ctx := t.Context()
	k1, k2, absent := unique("fanin"), unique("fanin"), unique("fanin")
	_, err := s.Arrive(ctx, k1, store.Arrival{Source: "a", Taken: true, Claim: true}, ttl)
	require.NoError(t, err)
	_, err = s.Arrive(ctx, k2, store.Arrival{Source: "b"}, ttl)
	require.NoError(t, err)

	joins, err := s.GetJoins(ctx, []string{k1, k2, absent, k1})
	require.NoError(t, err)
	require.Len(t, joins, 2)
	assert.Equal(t, []string{"a"}, joins[k1].Arrived)
	assert.Equal(t, []string{"a"}, joins[k1].Taken)
	assert.Equal(t, "a", joins[k1].FiredBy)
	assert.Equal(t, []string{"b"}, joins[k2].Arrived)
	assert.Empty(t, joins[k2].Taken)
	assert.Empty(t, joins[k2].FiredBy)

	// The records returned are the caller's.
	joins[k1].Arrived[0] = "changed"
	joins[k1].FiredBy = "changed"
	again, err := s.GetJoins(ctx, []string{k1})
	require.NoError(t, err)
	assert.Equal(t, &store.JoinState{Arrived: []string{"a"}, Taken: []string{"a"}, FiredBy: "a"}, again[k1])

	joins, err = s.GetJoins(ctx, nil)
	require.NoError(t, err)
	assert.Empty(t, joins)
}

// testCoordinationExpiry writes records with a one-second TTL and checks that
// every method treats them as absent once they expire.
func testCoordinationExpiry(t *testing.T, s store.CoordinationStore) {
	ctx := t.Context()
	const short = time.Second
	var (
		reset    = unique("reset")    // string, set again after expiry
		extend   = unique("extend")   // string, ExtendTTL after expiry
		counter  = unique("counter")  // counter, incremented after expiry
		join     = unique("join")     // join, arrived at after expiry
		joinRead = unique("joinread") // join, read after expiry
		forever  = unique("forever")  // no TTL
		kept     = unique("kept")     // short TTL, extended to an hour before it expires
		counted  = unique("counted")  // counter without TTL
		probe    = unique("probe")    // written last: once it expired, all short records did
	)
	for _, k := range []string{reset, extend, kept} {
		set, err := s.SetIfNotExist(ctx, k, "old", short)
		require.NoError(t, err)
		require.True(t, set)
	}
	set, err := s.SetIfNotExist(ctx, forever, "forever", 0)
	require.NoError(t, err)
	require.True(t, set)
	_, err = s.Increment(ctx, counter, 5, short)
	require.NoError(t, err)
	_, err = s.Increment(ctx, counted, 5, 0)
	require.NoError(t, err)
	for _, k := range []string{join, joinRead} {
		_, err = s.Arrive(ctx, k, store.Arrival{Source: "old", Taken: true, Claim: true}, short)
		require.NoError(t, err)
	}
	ok, err := s.ExtendTTL(ctx, kept, time.Hour)
	require.NoError(t, err)
	require.True(t, ok)
	set, err = s.SetIfNotExist(ctx, probe, "probe", short)
	require.NoError(t, err)
	require.True(t, set)

	// Not expired yet.
	for _, k := range []string{reset, extend, probe} {
		_, found, err := s.Get(ctx, k)
		require.NoError(t, err)
		require.True(t, found, "present before its TTL")
	}
	joins, err := s.GetJoins(ctx, []string{joinRead})
	require.NoError(t, err)
	require.Len(t, joins, 1)

	require.Eventually(t, func() bool {
		_, found, err := s.Get(ctx, probe)
		return err == nil && !found
	}, 5*time.Second, 50*time.Millisecond, "a record with a 1s TTL is absent after it expires")

	_, found, err := s.Get(ctx, reset)
	require.NoError(t, err)
	assert.False(t, found, "Get misses an expired record")
	set, err = s.SetIfNotExist(ctx, reset, "new", ttl)
	require.NoError(t, err)
	assert.True(t, set, "SetIfNotExist succeeds over an expired record")
	got, found, err := s.Get(ctx, reset)
	require.NoError(t, err)
	require.True(t, found)
	assert.Equal(t, "new", got)

	ok, err = s.ExtendTTL(ctx, extend, ttl)
	require.NoError(t, err)
	assert.False(t, ok, "ExtendTTL of an expired record")
	_, found, err = s.Get(ctx, extend)
	require.NoError(t, err)
	assert.False(t, found, "ExtendTTL does not revive an expired record")

	n, err := s.Increment(ctx, counter, 1, ttl)
	require.NoError(t, err)
	assert.Equal(t, int64(1), n, "an expired counter restarts at 0")

	joins, err = s.GetJoins(ctx, []string{joinRead, join})
	require.NoError(t, err)
	assert.Empty(t, joins, "GetJoins misses expired joins")
	st, err := s.Arrive(ctx, join, store.Arrival{Source: "new"}, ttl)
	require.NoError(t, err)
	assert.Equal(t, []string{"new"}, st.Arrived, "an expired join restarts empty")
	assert.Empty(t, st.Taken)
	assert.Empty(t, st.FiredBy)

	got, found, err = s.Get(ctx, forever)
	require.NoError(t, err)
	require.True(t, found, "a record without TTL does not expire")
	assert.Equal(t, "forever", got)
	got, found, err = s.Get(ctx, kept)
	require.NoError(t, err)
	require.True(t, found, "ExtendTTL moved the expiry")
	assert.Equal(t, "old", got)
	n, err = s.Increment(ctx, counted, 1, 0)
	require.NoError(t, err)
	assert.Equal(t, int64(6), n, "a counter without TTL does not expire")
}

func testCoordinationStoreCanceled(t *testing.T, s store.CoordinationStore) {
	live := t.Context()
	key, counter, join := unique("lock"), unique("counter"), unique("join")
	_, err := s.SetIfNotExist(live, key, "v", ttl)
	require.NoError(t, err)

	ctx, cancel := context.WithCancel(live)
	cancel()
	calls := map[string]func() error{
		"Increment": func() error { _, err := s.Increment(ctx, counter, 1, ttl); return err },
		"SetIfNotExist": func() error {
			_, err := s.SetIfNotExist(ctx, unique("lock"), "v", ttl)
			return err
		},
		"ExtendTTL": func() error { _, err := s.ExtendTTL(ctx, key, ttl); return err },
		"Delete":    func() error { return s.Delete(ctx, key) },
		"Get":       func() error { _, _, err := s.Get(ctx, key); return err },
		"Arrive": func() error {
			_, err := s.Arrive(ctx, join, store.Arrival{Source: "a", Taken: true, Claim: true}, ttl)
			return err
		},
		"GetJoins": func() error { _, err := s.GetJoins(ctx, []string{join}); return err },
	}
	for name, call := range calls {
		assert.ErrorIs(t, call(), context.Canceled, name)
	}

	// Nothing changed.
	got, ok, err := s.Get(live, key)
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, "v", got)
	n, err := s.Increment(live, counter, 1, ttl)
	require.NoError(t, err)
	assert.Equal(t, int64(1), n)
	joins, err := s.GetJoins(live, []string{join})
	require.NoError(t, err)
	assert.Empty(t, joins)
}
