package sqsadapter_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowcraft/sqsadapter"
)

type typedOrder struct {
	ID  string `json:"id"`
	Qty int    `json:"qty"`
}

type typedReceipt struct {
	OrderID string `json:"orderId"`
	Total   int    `json:"total"`
	Node    string `json:"node"`
	Key     string `json:"key"`
	Attempt int    `json:"attempt"`
}

func TestTypedNode(t *testing.T) {
	t.Parallel()
	price := sqsadapter.Typed(func(ctx context.Context, in typedOrder) (typedReceipt, error) {
		nc, ok := sqsadapter.NodeContextFrom(ctx)
		if !ok {
			return typedReceipt{}, errors.New("no NodeContext in ctx")
		}
		if nc.Attempt == 1 {
			return typedReceipt{}, errors.New("first attempt fails")
		}
		if err := nc.Set("priced", in.ID); err != nil {
			return typedReceipt{}, err
		}
		return typedReceipt{OrderID: in.ID, Total: in.Qty * 10, Node: nc.NodeID, Key: nc.IdempotencyKey(), Attempt: nc.Attempt}, nil
	})
	bp := mustParse(t, `{"id":"typed","nodes":[{"id":"price","uses":"price","config":{"maxRetries":2}},{"id":"after","uses":"n"}],
		"edges":[{"source":"price","target":"after"}]}`)
	r := newRig(t, rigConfig{registry: sqsadapter.NodeRegistry{"price": price}}, bp)
	id := r.start("typed", map[string]any{"_inputs.price": map[string]any{"id": "o-1", "qty": 3}})
	st := r.wait(id)
	requireStatus(t, sqsadapter.StatusCompleted, st)
	want := map[string]any{"orderId": "o-1", "total": int64(30), "node": "price", "key": id + "/price", "attempt": int64(2)}
	assert.Equal(t, want, st.Context["_outputs.price"])
	assert.Equal(t, want, r.log.input(t, "after"))
	assert.Equal(t, "o-1", st.Context["priced"])
}

func TestTypedNodeUndecodableInputIsPermanent(t *testing.T) {
	t.Parallel()
	var calls sync.Map
	price := sqsadapter.Typed(func(ctx context.Context, in typedOrder) (typedReceipt, error) {
		calls.Store(in.ID, true)
		return typedReceipt{}, nil
	})
	bp := mustParse(t, `{"id":"typed","nodes":[{"id":"price","uses":"price","config":{"maxRetries":3}}]}`)
	r := newRig(t, rigConfig{registry: sqsadapter.NodeRegistry{"price": price}}, bp)
	st := r.wait(r.start("typed", map[string]any{"_inputs.price": "not an order"}))
	requireStatus(t, sqsadapter.StatusFailed, st)
	assert.Equal(t, "price", st.FailedNode)
	assert.Contains(t, st.Error, "1 attempt")
	assert.Contains(t, st.Error, "decode input")
	calls.Range(func(k, _ any) bool {
		t.Errorf("the typed function ran with %v", k)
		return true
	})
}

func TestTypedNodeNilInput(t *testing.T) {
	t.Parallel()
	got := make(chan typedOrder, 1)
	fn := sqsadapter.Typed(func(ctx context.Context, in typedOrder) (*typedReceipt, error) {
		got <- in
		return nil, nil
	})
	res, err := fn(t.Context(), &sqsadapter.NodeContext{NodeID: "n"})
	require.NoError(t, err)
	assert.Equal(t, typedOrder{}, <-got)
	assert.Nil(t, res.Output.(*typedReceipt))
	assert.Empty(t, res.Action)
}

func TestNodeContextFromOutsideNode(t *testing.T) {
	t.Parallel()
	nc, ok := sqsadapter.NodeContextFrom(t.Context())
	assert.False(t, ok)
	assert.Nil(t, nc)
}

func TestIdempotencyKeyStableAcrossAttempts(t *testing.T) {
	t.Parallel()
	bp := flow(t, "idem", ids(fnode("charge", `"config":{"maxRetries":3}`)))
	r := newRig(t, rigConfig{nodes: map[string]sqsadapter.NodeFunc{"charge": func(_ context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
		if nc.Attempt < 3 {
			return sqsadapter.NodeResult{}, fmt.Errorf("attempt %d fails", nc.Attempt)
		}
		return sqsadapter.NodeResult{}, nil
	}}}, bp)
	id := r.start("idem", nil, sqsadapter.WithRunID("run-7"))
	requireStatus(t, sqsadapter.StatusCompleted, r.wait(id))
	calls := r.log.get("charge")
	require.Len(t, calls, 3)
	for _, c := range calls {
		assert.Equal(t, "run-7/charge", c.Key)
	}
	assert.Equal(t, "r/n", (&sqsadapter.NodeContext{RunID: "r", NodeID: "n"}).IdempotencyKey())
}

// A NodeContext outside a run: buffered writes only.
func TestNodeContextBufferedWrites(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	nc := &sqsadapter.NodeContext{RunID: "r", NodeID: "n"}

	v, ok, err := nc.Get(ctx, "k")
	require.NoError(t, err)
	assert.False(t, ok)
	assert.Nil(t, v)

	require.NoError(t, nc.Set("k", 1))
	v, ok, err = nc.Get(ctx, "k")
	require.NoError(t, err)
	assert.True(t, ok)
	assert.Equal(t, int64(1), v, "values are stored in their JSON-like form")

	require.NoError(t, nc.Set("s", struct {
		A string `json:"a"`
	}{"x"}))
	v, _, _ = nc.Get(ctx, "s")
	assert.Equal(t, map[string]any{"a": "x"}, v)

	require.NoError(t, nc.Delete("k"))
	_, ok, err = nc.Get(ctx, "k")
	require.NoError(t, err)
	assert.False(t, ok)
	require.NoError(t, nc.Set("k", "again"))
	v, ok, _ = nc.Get(ctx, "k")
	assert.True(t, ok)
	assert.Equal(t, "again", v)

	for _, c := range []struct {
		name string
		err  error
	}{
		{"reserved key", nc.Set("_outputs.x", 1)},
		{"empty key", nc.Set("", 1)},
		{"delete reserved key", nc.Delete("_outputs.x")},
		{"delete empty key", nc.Delete("")},
	} {
		assert.ErrorIs(t, c.err, sqsadapter.ErrInvalidKey, c.name)
	}
	assert.Error(t, nc.Set("ch", make(chan int)), "a value that is not JSON-marshalable")
	_, ok, _ = nc.Get(ctx, "ch")
	assert.False(t, ok)

	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			key := fmt.Sprintf("c%d", i)
			assert.NoError(t, nc.Set(key, i))
			_, ok, err := nc.Get(ctx, key)
			assert.NoError(t, err)
			assert.True(t, ok)
		})
	}
	wg.Wait()
}

func TestNodeContextDecode(t *testing.T) {
	t.Parallel()
	nc := &sqsadapter.NodeContext{Input: map[string]any{"id": "o-2", "qty": int64(4)}}
	var o typedOrder
	require.NoError(t, nc.Decode(&o))
	assert.Equal(t, typedOrder{ID: "o-2", Qty: 4}, o)
	var n int
	assert.Error(t, nc.Decode(&n))
}

func TestPermanent(t *testing.T) {
	t.Parallel()
	base := errors.New("base")
	assert.NoError(t, sqsadapter.Permanent(nil))
	p := sqsadapter.Permanent(base)
	assert.True(t, sqsadapter.IsPermanent(p))
	assert.True(t, sqsadapter.IsPermanent(fmt.Errorf("wrapped: %w", p)))
	assert.ErrorIs(t, p, base)
	assert.Equal(t, "base", p.Error())
	assert.False(t, sqsadapter.IsPermanent(base))
	assert.False(t, sqsadapter.IsPermanent(nil))
}
