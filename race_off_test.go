//go:build !race

package sqsadapter_test

const raceEnabled = false
