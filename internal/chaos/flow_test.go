package chaos

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowcraft/sqsadapter"
	"github.com/flowcraft/sqsadapter/internal/interp"
	"github.com/flowcraft/sqsadapter/sqsadaptertest"
)

// TestBlueprintShape checks that the chaos blueprint has what the harness
// promises: 12+ nodes, fan-out, "all" and "any" joins, action routing, a
// conditional edge, a flaky node, a failing node with a fallback, a slow
// node, the waiting nodes: a wait, a webhook and sleeps of 0-5 s, and a
// map node that tolerates a failed item, whose worker is registered.
func TestBlueprintShape(t *testing.T) {
	bp, err := Blueprint()
	require.NoError(t, err)
	assert.GreaterOrEqual(t, len(bp.Nodes), 12)
	out, in := map[string]int{}, map[string]int{}
	var actions, conditions int
	for _, e := range bp.Edges {
		out[e.Source]++
		in[e.Target]++
		if e.Action != "" {
			actions++
		}
		if e.Condition != "" {
			conditions++
		}
	}
	uses := map[string]*sqsadapter.NodeDefinition{}
	joins := map[string]int{}
	for i, d := range bp.Nodes {
		uses[d.Uses] = &bp.Nodes[i]
		if in[d.ID] > 1 {
			js := d.Config.JoinStrategy
			if js == "" {
				js = "all"
			}
			joins[js]++
		}
	}
	assert.GreaterOrEqual(t, out["intake"], 3, "fan-out")
	assert.Positive(t, joins["all"])
	assert.Positive(t, joins["any"])
	assert.Positive(t, actions)
	assert.Positive(t, conditions)
	require.Contains(t, uses, "flaky")
	k := uses["flaky"].Params["k"].(int64)
	assert.Greater(t, int64(uses["flaky"].Config.MaxRetries), k+1, "the flaky node needs slack beyond its failures")
	require.Contains(t, uses, "fail")
	assert.NotEmpty(t, uses["fail"].Config.Fallback)
	assert.Contains(t, uses, "slow")
	assert.Contains(t, uses, "wait")
	assert.Contains(t, uses, "webhook")
	var sleeps []string
	for _, d := range bp.Nodes {
		if d.Uses == "sleep" {
			sleeps = append(sleeps, fmt.Sprint(d.Params["duration"]))
		}
	}
	assert.ElementsMatch(t, []string{"0", "2s", "4500"}, sleeps)
	require.Contains(t, uses, "map")
	m := uses["map"]
	assert.Positive(t, m.Params["toleratedFailures"])
	assert.Greater(t, m.Config.MaxRetries, 3, "flaky items need slack beyond their failures")
	reg := Registry(bp, 0)
	assert.Contains(t, reg, m.Params["worker"])
	for u := range uses {
		if Builtin(u) {
			assert.NotContains(t, reg, u, "a registered function would replace the built-in")
		} else {
			assert.Contains(t, reg, u)
		}
	}
}

// TestModelBranches checks that the runs of a seed take every branch.
func TestModelBranches(t *testing.T) {
	bp, err := Blueprint()
	require.NoError(t, err)
	seen := map[string]int{}
	for i := range 200 {
		r, _, err := Expect(bp, Initial(7, i))
		require.NoError(t, err)
		seen[string(r.Status)]++
		for _, id := range []string{"approve", "review", "reject", "audit", "ledger", "finish", "payment", "manualReview", "escalate", "cooldown", "settle", "lines"} {
			if r.Is(id, interp.Ran) {
				seen[id]++
			}
		}
		if r.Status == sqsadapter.StatusCompleted {
			assert.Len(t, r.Catches, 1, "scoreC always falls back")
			assert.Equal(t, true, r.Context["degraded"])
		} else {
			for id := range r.Errors {
				assert.Contains(t, []string{"review", "lines"}, id, "only the review and the lines' gather fail a run")
			}
			if _, ok := r.Errors["lines"]; ok {
				seen["lines-failed"]++
			}
		}
		for _, it := range r.Items["lines_scatter"] {
			if it.State == interp.Failed && r.Is("lines", interp.Ran) {
				seen["line-tolerated"]++
				break
			}
		}
		assert.Equal(t, 3, r.Attempts["scoreA"], "flaky: two failures, then success")
		if r.Is("archive", interp.Ran) && r.Status == sqsadapter.StatusCompleted {
			// A subflow: a child run of chaos-archive, whose "store" output
			// the parent receives as "archiveRef".
			require.Len(t, r.Children["archive"], 1)
			assert.Equal(t, r.Children["archive"][0].Outputs["store"], r.Context["archiveRef"])
		}
		assert.Empty(t, r.Racy)
	}
	t.Logf("branches over 200 runs: %v", seen)
	for _, k := range []string{string(sqsadapter.StatusCompleted), string(sqsadapter.StatusFailed), "approve", "review", "reject", "audit", "ledger", "finish",
		"payment", "manualReview", "escalate", "cooldown", "settle", "lines", "lines-failed", "line-tolerated"} {
		assert.Positive(t, seen[k], "no run takes %s", k)
	}
	assert.Less(t, seen["lines-failed"], 20, "a tenth of the runs fail at the lines")
	assert.Less(t, seen["ledger"], seen["payment"], "every payment is paid")
	assert.Less(t, seen["escalate"], seen["manualReview"], "every review escalates")
	assert.Less(t, seen["audit"], 200, "every run audits")
}

// TestFlowOnEngine runs chaos runs on the engine over the in-memory SQS and
// stores, without faults, resuming their waiting nodes as the driver does,
// and checks them against the interpreter. A sleeping node refuses
// ResumeRun: only its timer wakes it.
func TestFlowOnEngine(t *testing.T) {
	all, err := Blueprints()
	require.NoError(t, err)
	bp := all[0]
	h := sqsadaptertest.New(t, sqsadaptertest.Config{
		Registry: Registry(bp, 10*time.Millisecond), Blueprints: all, Workers: 1,
		Options: []sqsadapter.Option{sqsadapter.WithConcurrency(20)}, Timeout: time.Minute, LogLevel: slog.LevelWarn,
	})
	var wg sync.WaitGroup
	probed := atomic.Int32{}
	for i := range 20 {
		initial := Initial(11, i)
		want, resumes, err := Expect(bp, initial)
		require.NoError(t, err)
		id := h.Start(bp.ID, initial, sqsadapter.WithRunID(fmt.Sprintf("run-%d", i)))
		wg.Go(func() {
			ctx := t.Context()
			for {
				st, err := h.Adapter.GetRun(ctx, id)
				if !assert.NoError(t, err) {
					return
				}
				if st.Finished() {
					assert.Empty(t, want.Check(st), "run %d: %v", i, initial)
					return
				}
				for nid, ns := range st.Nodes {
					if ns.State != "waiting" {
						continue
					}
					switch ns.Wait.Reason {
					case "timer":
						err := h.Adapter.ResumeRun(ctx, id, nid, "not the timer", "")
						if !errors.Is(err, sqsadapter.ErrRunFinished) {
							assert.ErrorIs(t, err, sqsadapter.ErrNotWaiting, "run %d: sleeping node %s", i, nid)
						}
						probed.Add(1)
					case "subflow":
						// Its child run resumes it.
					case "webhook":
						assert.NoError(t, h.Adapter.DeliverWebhook(ctx, ns.Wait.WebhookID, resumes[nid].Output), "run %d: %s", i, nid)
						assert.ErrorIs(t, h.Adapter.DeliverWebhook(ctx, ns.Wait.WebhookID, resumes[nid].Output), sqsadapter.ErrNotWaiting)
					default:
						o := resumes[nid]
						assert.NoError(t, h.Adapter.ResumeRun(ctx, id, nid, o.Output, o.Action), "run %d: %s", i, nid)
						assert.ErrorIs(t, h.Adapter.ResumeRun(ctx, id, nid, o.Output, o.Action), sqsadapter.ErrNotWaiting)
					}
				}
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
	wg.Wait()
	assert.Positive(t, probed.Load(), "no sleeping node was seen")
}
