package sqsadapter

import "time"

// WithCrashHook makes a job stop at a step, as if its worker died there,
// when hook returns true: nothing more is written and its message is left to
// reappear after its visibility timeout. Steps: "receive", "acquired",
// "retry-wait", "commit", "committed", "arrived", "advanced", "complete",
// "failing", "closed", "failed", "expire" (with Tuning.Retention: after a
// run's status and before its expiry).
func WithCrashHook(hook func(step string, job Job) bool) Option {
	return func(c *config) error {
		c.crashHook = hook
		return nil
	}
}

// WithSQSTimeUnit makes the adapter count SQS "seconds" in unit, to match an
// in-memory SQS whose QueueOptions.VisibilityUnit is unit. Durations given
// to the adapter keep their meaning; they are just sent in these units. It
// also lifts the 1s minimum of the visibility timeout to one unit.
func WithSQSTimeUnit(unit time.Duration) Option {
	return func(c *config) error {
		c.sqsTimeUnit = unit
		return nil
	}
}

// DecodeJob decodes a message body as the poller does.
func DecodeJob(body []byte) (Job, error) { return decodeJob(body) }

// WithClock makes sleeps measure time with now, which runs speed times as
// fast as real time; the queue's delays are scaled to match.
func WithClock(now func() time.Time, speed float64) Option {
	return func(c *config) error {
		c.clock, c.clockSpeed = now, speed
		return nil
	}
}
