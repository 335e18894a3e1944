//go:build race

package sqsadapter_test

// raceEnabled: the race detector is on (it disables sync.Pool, so more
// allocations are counted).
const raceEnabled = true
