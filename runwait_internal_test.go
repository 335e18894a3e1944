package sqsadapter

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

// The read schedule of WaitForRun, as the runs seen complete shape it.
func TestRunTimesSchedule(t *testing.T) {
	var rt runTimes
	key := planKey{"bp", "v1"}
	t0 := time.Unix(1_000_000, 0)

	// Nothing known: read at once, then every 10ms, 20ms, 40ms ... 1s.
	assert.Zero(t, rt.firstRead("r1", t0))
	var waits []time.Duration
	interval := time.Duration(0)
	for range 9 {
		var w time.Duration
		w, interval = rt.next(key, t0, t0, interval)
		waits = append(waits, w)
	}
	assert.Equal(t, []time.Duration{10, 20, 40, 80, 160, 320, 640, 1000, 1000}, millis(waits))

	// A completed run of 400ms teaches the typical duration; a failed one
	// and a cancelled one do not.
	rt.finished(&RunStatus{RunID: "x", BlueprintID: "bp", BlueprintVersion: "v1", Status: StatusFailed, CreatedAt: t0, FinishedAt: t0.Add(time.Millisecond)})
	rt.finished(&RunStatus{RunID: "y", BlueprintID: "bp", BlueprintVersion: "v1", Status: StatusCancelled, CreatedAt: t0, FinishedAt: t0.Add(time.Hour)})
	assert.Empty(t, rt.typical)
	rt.finished(&RunStatus{RunID: "z", BlueprintID: "bp", BlueprintVersion: "v1", Status: StatusCompleted, CreatedAt: t0, FinishedAt: t0.Add(400 * time.Millisecond)})
	assert.Equal(t, 400*time.Millisecond, rt.typical[key])

	// A run started here is first read at 0.9 of it from its start; one
	// started elsewhere at once, then at 0.9 of it from its creation.
	rt.start("r2", key, t0)
	assert.Equal(t, 360*time.Millisecond, rt.firstRead("r2", t0))
	assert.Equal(t, 260*time.Millisecond, rt.firstRead("r2", t0.Add(100*time.Millisecond)))
	assert.Zero(t, rt.firstRead("r2", t0.Add(time.Second)), "past the expected finish: at once")
	assert.Zero(t, rt.firstRead("elsewhere", t0))
	w, interval := rt.next(key, t0, t0.Add(10*time.Millisecond), 0)
	assert.Equal(t, 350*time.Millisecond, w)
	// Past it, polls start at a tenth of it.
	waits = waits[:0]
	for range 3 {
		w, interval = rt.next(key, t0, t0.Add(time.Second), interval)
		waits = append(waits, w)
	}
	assert.Equal(t, []time.Duration{40, 80, 160}, millis(waits))

	// A running average: a quarter of the way to each new duration.
	rt.finished(&RunStatus{RunID: "r2", BlueprintID: "bp", BlueprintVersion: "v1", Status: StatusCompleted, CreatedAt: t0, FinishedAt: t0.Add(800 * time.Millisecond)})
	assert.Equal(t, 500*time.Millisecond, rt.typical[key])
	assert.NotContains(t, rt.started, "r2", "forgotten once seen finished")

	// A long run: the wait ahead is at most 5s, the polls at most 1s apart.
	long := planKey{"long", ""}
	rt.finished(&RunStatus{RunID: "l", BlueprintID: "long", Status: StatusCompleted, CreatedAt: t0, FinishedAt: t0.Add(time.Hour)})
	w, interval = rt.next(long, t0, t0, 0)
	assert.Equal(t, maxExpectedWait, w)
	assert.Equal(t, maxPollInterval, interval)

	// The runs remembered between StartRun and WaitForRun are bounded.
	for i := range maxStartedRuns + 5 {
		rt.start(fmt.Sprint(i), key, t0)
	}
	assert.LessOrEqual(t, len(rt.started), maxStartedRuns)
}

func millis(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d / time.Millisecond
	}
	return out
}
