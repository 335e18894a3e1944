package sqsadapter

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/flowcraft/sqsadapter/internal/limits"
	"github.com/flowcraft/sqsadapter/internal/obs"
)

// Job is one node of one run: the body of an SQS message, in the Flowcraft
// job format {"runId", "blueprintId", "nodeId"} plus optional fields.
type Job struct {
	RunID       string `json:"runId"`
	BlueprintID string `json:"blueprintId"`
	NodeID      string `json:"nodeId"`
	// BlueprintVersion is the version of the run's blueprint. Absent in
	// foreign jobs; the worker then reads it from the run record.
	BlueprintVersion string `json:"blueprintVersion,omitempty"`
	// Input is the node's input carried in the message (JSON). When absent
	// the node's input is resolved from the run context.
	Input json.RawMessage `json:"input,omitempty"`
	// WakeAt is when a sleep node wakes, in Unix milliseconds, on the
	// delayed jobs of its timer: a job that arrives early is delayed again
	// without reading the store.
	WakeAt int64 `json:"wakeAt,omitempty"`
	// Item is set on the jobs of a batch's items (NodeID is the
	// batch-scatter node): 1 + the item's index in the batch's input.
	Item int `json:"item,omitempty"`
	// Page is set on the jobs that send the next page of a batch's items
	// (NodeID is the batch-scatter node): the page's number, from 1.
	Page int `json:"page,omitempty"`
	// Iter is set on the jobs of a loop's later passes: the iteration of
	// the body node or controller NodeID (loop.go).
	Iter int `json:"iter,omitempty"`

	delay time.Duration // how long SQS keeps the message before delivering it
	trace obs.Carrier   // the trace context its message carries (telemetry.go)
}

// maxIDLength is the longest run, blueprint or node id.
const maxIDLength = limits.IDBytes

// checkID checks a run, blueprint or node id (see limits.CheckID); what
// names it in the error.
func checkID(what, id string) error { return limits.CheckID(what, id) }

// UnmarshalJSON decodes a job message body and validates it. Unknown fields
// are ignored; a missing required field, an invalid id (see
// Blueprint.Validate) or a malformed field is an error matching
// ErrInvalidJob. (json.Unmarshal reports a body that is not JSON at all as
// a *json.SyntaxError before calling it.)
func (j *Job) UnmarshalJSON(body []byte) error {
	type plain Job // without this method
	var p plain
	if err := json.Unmarshal(body, &p); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidJob, err)
	}
	if err := Job(p).validate(); err != nil {
		return err
	}
	*j = Job(p)
	return nil
}

// decodeJob decodes and validates a message body; every problem, malformed
// JSON included, matches ErrInvalidJob.
func decodeJob(body []byte) (Job, error) {
	var j Job
	// As json.Unmarshal(body, &j), without its scan of the body before it
	// calls UnmarshalJSON, which scans it again.
	if err := j.UnmarshalJSON(body); err != nil {
		if errors.Is(err, ErrInvalidJob) {
			return Job{}, err
		}
		return Job{}, fmt.Errorf("%w: %v", ErrInvalidJob, err)
	}
	return j, nil
}

func (j Job) validate() error {
	var missing []string
	for _, f := range []struct{ name, v string }{{"runId", j.RunID}, {"blueprintId", j.BlueprintID}, {"nodeId", j.NodeID}} {
		if f.v == "" {
			missing = append(missing, f.name+" is missing")
		} else if err := checkID(f.name, f.v); err != nil {
			missing = append(missing, err.Error())
		}
	}
	if len(j.Input) > 0 && !json.Valid(j.Input) {
		missing = append(missing, "input is not valid JSON")
	}
	switch {
	case j.Item < 0 || j.Page < 0 || j.Iter < 0:
		missing = append(missing, "item, page and iter cannot be negative")
	case j.Iter > 0 && (j.Item > 0 || j.Page > 0):
		missing = append(missing, "a job of a loop's iteration is no batch item or page")
	case j.Item > 0 && j.Page > 0:
		missing = append(missing, "a job is an item or a page, not both")
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: %s", ErrInvalidJob, strings.Join(missing, ", "))
	}
	return nil
}

// encode returns the job's message body: its JSON, with every character SQS
// refuses in a message body (limits.MessageChar) written as a \uXXXX escape.
// encoding/json escapes C0 controls and replaces invalid UTF-8 in strings,
// but leaves U+FFFE and U+FFFF raw, and copies Input as it is.
//
// An escape is longer than its character (6 bytes for 3), so a carried input
// that fitted in a message may not once escaped: the job is then sent
// without it, and its node reads the input from the store, as it does any
// input too large to carry.
func (j Job) encode() (string, error) {
	b, err := j.marshal()
	if err != nil {
		return "", err
	}
	body := escapeForSQS(b)
	if len(body) > limits.MessageBytes && j.Input != nil {
		j.Input = nil
		return j.encode()
	}
	return body, nil
}

// marshal returns json.Marshal(j), written directly when every id is
// printable ASCII that JSON writes as it is and the carried input, compacted,
// holds nothing encoding/json would escape; else by json.Marshal.
func (j Job) marshal() ([]byte, error) {
	b := make([]byte, 0, 96+len(j.RunID)+len(j.BlueprintID)+len(j.NodeID)+len(j.BlueprintVersion)+len(j.Input))
	ok := true
	field := func(name, v string) {
		b = append(append(append(b, ',', '"'), name...), '"', ':', '"')
		for i := 0; i < len(v); i++ {
			if c := v[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
				ok = false
			}
		}
		b = append(append(b, v...), '"')
	}
	number := func(name string, v int64) {
		if v != 0 { // omitempty
			b = append(append(append(b, ',', '"'), name...), '"', ':')
			b = strconv.AppendInt(b, v, 10)
		}
	}
	field("runId", j.RunID)
	b[0] = '{' // the first field's comma
	field("blueprintId", j.BlueprintID)
	field("nodeId", j.NodeID)
	if j.BlueprintVersion != "" {
		field("blueprintVersion", j.BlueprintVersion)
	}
	if len(j.Input) > 0 {
		b = append(b, `,"input":`...)
		buf := bytes.NewBuffer(b)
		if json.Compact(buf, j.Input) != nil {
			return json.Marshal(j) // its error
		}
		in := buf.Bytes()[len(b):]
		if bytes.ContainsAny(in, "<>&\u2028\u2029") {
			ok = false // encoding/json escapes them
		}
		b = buf.Bytes()
	}
	number("wakeAt", j.WakeAt)
	number("item", int64(j.Item))
	number("page", int64(j.Page))
	number("iter", int64(j.Iter))
	if !ok {
		return json.Marshal(j)
	}
	return append(b, '}'), nil
}

// escapeForSQS writes the characters of a JSON document that SQS refuses as
// \uXXXX escapes, and invalid UTF-8 as \ufffd. Outside strings JSON holds
// only ASCII characters SQS accepts, so these occur only inside strings,
// where the escape stands for the same character. Every refused character
// is below U+10000, so one escape covers it.
func escapeForSQS(b []byte) string {
	var out []byte // nil until a character needs escaping
	done := 0      // b[:done] is in out
	for i := 0; i < len(b); {
		r, size := rune(b[i]), 1
		if r >= utf8.RuneSelf {
			r, size = utf8.DecodeRune(b[i:])
		}
		if limits.MessageChar(r) && (r != utf8.RuneError || size > 1) {
			i += size
			continue
		}
		if out == nil {
			out = make([]byte, 0, len(b)+16)
		}
		out = append(out, b[done:i]...)
		out = fmt.Appendf(out, `\u%04x`, r) // RuneError for invalid UTF-8
		i += size
		done = i
	}
	if out == nil {
		return string(b)
	}
	return string(append(out, b[done:]...))
}

func (j Job) String() string {
	switch {
	case j.Item > 0:
		return j.RunID + "/" + j.NodeID + "[" + strconv.Itoa(j.Item-1) + "]" // as the item's NodeContext.NodeID
	case j.Page > 0:
		return j.RunID + "/" + j.NodeID + " page " + strconv.Itoa(j.Page)
	case j.Iter > 0:
		return j.RunID + "/" + j.NodeID + "#" + strconv.Itoa(j.Iter)
	}
	return j.RunID + "/" + j.NodeID
}
