// Package waitvalue converts a node's store.Wait to and from the JSON-like
// value the context stores keep in its node record, so that the DynamoDB
// store and the in-memory one store, size and read it alike.
package waitvalue

import (
	"fmt"
	"time"

	"github.com/flowcraft/sqsadapter/internal/jsonvalue"
	"github.com/flowcraft/sqsadapter/store"
)

// Encode returns the JSON-like form of w, as its json tags spell it: its
// Details normalized (jsonvalue.Normalize), WakeAt in UTC as an RFC 3339
// string with nanoseconds. It fails when Details are not JSON-like.
func Encode(w store.Wait) (map[string]any, error) {
	m := map[string]any{"reason": w.Reason}
	if w.Details != nil {
		d, err := jsonvalue.Normalize(w.Details)
		if err != nil {
			return nil, fmt.Errorf("wait details: %w", err)
		}
		m["details"] = d
	}
	if !w.WakeAt.IsZero() {
		m["wakeAt"] = w.WakeAt.UTC().Format(time.RFC3339Nano)
	}
	if w.WebhookID != "" {
		m["webhookId"] = w.WebhookID
	}
	return m, nil
}

// Decode reads back a value of Encode, as a store read it (a fresh
// JSON-like value, which the returned Wait keeps).
func Decode(v any) (*store.Wait, error) {
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("wait is a %T, not an object", v)
	}
	str := func(name string) (string, error) {
		switch s := m[name].(type) {
		case nil:
			return "", nil
		case string:
			return s, nil
		default:
			return "", fmt.Errorf("wait %s is a %T, not a string", name, s)
		}
	}
	w := &store.Wait{}
	var err error
	if w.Reason, err = str("reason"); err != nil {
		return nil, err
	}
	if w.WebhookID, err = str("webhookId"); err != nil {
		return nil, err
	}
	at, err := str("wakeAt")
	if err != nil {
		return nil, err
	}
	if at != "" {
		if w.WakeAt, err = time.Parse(time.RFC3339Nano, at); err != nil {
			return nil, fmt.Errorf("wait wakeAt: %w", err)
		}
		w.WakeAt = w.WakeAt.UTC()
	}
	if d, ok := m["details"]; ok && d != nil {
		details, ok := d.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("wait details are a %T, not an object", d)
		}
		w.Details = details
	}
	return w, nil
}
