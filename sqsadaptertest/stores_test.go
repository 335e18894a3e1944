package sqsadaptertest_test

import (
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowcraft/sqsadapter"
	"github.com/flowcraft/sqsadapter/sqsadaptertest"
	"github.com/flowcraft/sqsadapter/store"
	"github.com/flowcraft/sqsadapter/store/storetest"
)

func TestContextStore(t *testing.T) {
	storetest.TestContextStore(t, func(*testing.T) sqsadapter.ContextStore {
		return sqsadaptertest.NewContextStore()
	})
}

func TestContextStoreLimits(t *testing.T) {
	storetest.TestContextStoreLimits(t, func(*testing.T) sqsadapter.ContextStore {
		return sqsadaptertest.NewContextStore()
	})
}

func TestCoordinationStoreLimits(t *testing.T) {
	storetest.TestCoordinationStoreLimits(t, func(*testing.T) sqsadapter.CoordinationStore {
		return sqsadaptertest.NewCoordinationStore()
	})
}

func TestStoresZeroValue(t *testing.T) {
	ctx := t.Context()
	var cs sqsadaptertest.ContextStore
	require.NoError(t, cs.Set(ctx, "r", "k", "v"))
	got, ok, err := cs.Get(ctx, "r", "k")
	require.NoError(t, err)
	assert.True(t, ok)
	assert.Equal(t, "v", got)

	var co sqsadaptertest.CoordinationStore
	set, err := co.SetIfNotExist(ctx, "k", "v", time.Hour)
	require.NoError(t, err)
	assert.True(t, set)
	assert.Equal(t, map[string]int{"SetIfNotExist": 1}, co.Calls())
}

func TestCoordinationStore(t *testing.T) {
	storetest.TestCoordinationStore(t, func(*testing.T) sqsadapter.CoordinationStore {
		return sqsadaptertest.NewCoordinationStore()
	})
}

// TestContextStoreSharedBacking runs the suite with one store for every
// subtest, as a shared DynamoDB table is used.
func TestContextStoreSharedBacking(t *testing.T) {
	s := sqsadaptertest.NewContextStore()
	storetest.TestContextStore(t, func(*testing.T) sqsadapter.ContextStore { return s })
}

func TestCoordinationStoreSharedBacking(t *testing.T) {
	s := sqsadaptertest.NewCoordinationStore()
	storetest.TestCoordinationStore(t, func(*testing.T) sqsadapter.CoordinationStore { return s })
}

func TestContextStoreCreatedAtDefault(t *testing.T) {
	s := sqsadaptertest.NewContextStore()
	before := time.Now()
	require.NoError(t, s.CreateRun(t.Context(), store.RunRecord{RunID: "r", BlueprintID: "bp"}, nil))
	run, err := s.GetRun(t.Context(), "r")
	require.NoError(t, err)
	assert.False(t, run.CreatedAt.Before(before))
	assert.False(t, run.CreatedAt.After(time.Now()))
}

// TestCoordinationStoreExpiryClock checks the expiry boundary on a fake
// clock: a record is live up to its expiry and absent after it.
func TestCoordinationStoreExpiryClock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := t.Context()
		s := sqsadaptertest.NewCoordinationStore()
		set, err := s.SetIfNotExist(ctx, "lock", "v", time.Minute)
		require.NoError(t, err)
		require.True(t, set)
		n, err := s.Increment(ctx, "counter", 2, time.Minute)
		require.NoError(t, err)
		require.Equal(t, int64(2), n)

		time.Sleep(time.Minute)
		_, ok, err := s.Get(ctx, "lock")
		require.NoError(t, err)
		assert.True(t, ok, "live at its expiry")
		ok, err = s.ExtendTTL(ctx, "lock", 2*time.Minute)
		require.NoError(t, err)
		assert.True(t, ok)

		time.Sleep(time.Nanosecond)
		n, err = s.Increment(ctx, "counter", 1, time.Minute)
		require.NoError(t, err)
		assert.Equal(t, int64(1), n, "expired just after its expiry")

		time.Sleep(2*time.Minute - time.Nanosecond)
		_, ok, err = s.Get(ctx, "lock")
		require.NoError(t, err)
		assert.True(t, ok, "the extended expiry")
		time.Sleep(time.Nanosecond)
		_, ok, err = s.Get(ctx, "lock")
		require.NoError(t, err)
		assert.False(t, ok)
	})
}

var errInjected = errors.New("injected fault")

func TestContextStoreFaultHooks(t *testing.T) {
	ctx := t.Context()

	t.Run("BeforeCall fails the call without effect", func(t *testing.T) {
		s := sqsadaptertest.NewContextStore()
		var ops []string
		s.BeforeCall = func(op string) error {
			ops = append(ops, op)
			if op == "CommitNode" || op == "Set" {
				return errInjected
			}
			return nil
		}
		require.ErrorIs(t, s.Set(ctx, "r", "k", 1), errInjected)
		_, err := s.CommitNode(ctx, "r", store.NodeCommit{NodeID: "n", Output: 1, Sets: map[string]any{"k": 2}})
		require.ErrorIs(t, err, errInjected)

		snap, err := s.Snapshot(ctx, "r")
		require.NoError(t, err)
		assert.Empty(t, snap)
		recs, err := s.GetNodes(ctx, "r", []string{"n"})
		require.NoError(t, err)
		assert.Empty(t, recs)
		assert.Equal(t, []string{"Set", "CommitNode", "Snapshot", "GetNodes"}, ops)
	})

	t.Run("AfterCall loses the response of a call that took effect", func(t *testing.T) {
		s := sqsadaptertest.NewContextStore()
		fail := true
		s.AfterCall = func(op string) error {
			if fail && op == "CommitNode" {
				return errInjected
			}
			return nil
		}
		c := store.NodeCommit{NodeID: "n", Output: "out", Sets: map[string]any{"k": "v"}}
		_, err := s.CommitNode(ctx, "r", c)
		require.ErrorIs(t, err, errInjected)

		// The retry finds its own commit, and succeeds.
		fail = false
		rec, err := s.CommitNode(ctx, "r", c)
		require.NoError(t, err)
		assert.Equal(t, "out", rec.Output)
		got, ok, err := s.Get(ctx, "r", "k")
		require.NoError(t, err)
		require.True(t, ok)
		assert.Equal(t, "v", got)
	})

	t.Run("Calls counts by method", func(t *testing.T) {
		s := sqsadaptertest.NewContextStore()
		s.BeforeCall = func(op string) error {
			if op == "Delete" {
				return errInjected
			}
			return nil
		}
		require.NoError(t, s.Set(ctx, "r", "k", 1))
		require.NoError(t, s.Set(ctx, "r", "k", 2))
		_, _, err := s.Get(ctx, "r", "k")
		require.NoError(t, err)
		_, err = s.Delete(ctx, "r", "k")
		require.ErrorIs(t, err, errInjected)
		calls := s.Calls()
		assert.Equal(t, map[string]int{"Set": 2, "Get": 1, "Delete": 1}, calls)
		calls["Set"] = 100
		assert.Equal(t, 2, s.Calls()["Set"], "Calls returns a copy")
	})
}

func TestCoordinationStoreFaultHooks(t *testing.T) {
	ctx := t.Context()

	t.Run("BeforeCall fails the call without effect", func(t *testing.T) {
		s := sqsadaptertest.NewCoordinationStore()
		s.BeforeCall = func(op string) error {
			if op == "Arrive" {
				return errInjected
			}
			return nil
		}
		_, err := s.Arrive(ctx, "j", store.Arrival{Source: "a", Taken: true, Claim: true}, time.Hour)
		require.ErrorIs(t, err, errInjected)
		joins, err := s.GetJoins(ctx, []string{"j"})
		require.NoError(t, err)
		assert.Empty(t, joins)
	})

	t.Run("AfterCall loses the response of a call that took effect", func(t *testing.T) {
		s := sqsadaptertest.NewCoordinationStore()
		fail := true
		s.AfterCall = func(op string) error {
			if fail {
				return errInjected
			}
			return nil
		}
		_, err := s.Arrive(ctx, "j", store.Arrival{Source: "a", Taken: true, Claim: true}, time.Hour)
		require.ErrorIs(t, err, errInjected)
		_, err = s.SetIfNotExist(ctx, "lock", "v", time.Hour)
		require.ErrorIs(t, err, errInjected)

		// The retries find the effects, and repeat nothing.
		fail = false
		st, err := s.Arrive(ctx, "j", store.Arrival{Source: "a", Taken: true, Claim: true}, time.Hour)
		require.NoError(t, err)
		assert.Equal(t, &store.JoinState{Arrived: []string{"a"}, Taken: []string{"a"}, FiredBy: "a"}, st)
		set, err := s.SetIfNotExist(ctx, "lock", "v", time.Hour)
		require.NoError(t, err)
		assert.False(t, set)
	})

	t.Run("Calls counts by method", func(t *testing.T) {
		s := sqsadaptertest.NewCoordinationStore()
		for range 3 {
			_, err := s.Increment(ctx, "c", 1, time.Hour)
			require.NoError(t, err)
		}
		_, _, err := s.Get(ctx, "c")
		require.NoError(t, err)
		assert.Equal(t, map[string]int{"Increment": 3, "Get": 1}, s.Calls())
	})
}
