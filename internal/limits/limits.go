// Package limits is the one table of the AWS limits that the adapter obeys:
// DynamoDB's item, key and transaction limits, SQS's message limits, and the
// rules for ids and context keys that follow from them. The DynamoDB stores,
// the in-memory fakes of package sqsadaptertest and the validators
// (ParseBlueprint, DecodeJob, StartRun, NodeContext) all take their numbers
// and checks from here, so that what the fakes accept is what AWS accepts.
//
// Checks return plain errors that describe the problem; each caller wraps
// them in its own typed error (ErrInvalidKey, ErrInvalidJob...).
package limits

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

// DynamoDB.
const (
	// ItemBytes is the size limit of one DynamoDB item (400 KB), attribute
	// names and values included.
	ItemBytes = 400 * 1024
	// ItemOverhead is added to the estimated size of every item (see
	// ItemSize): its attribute names, and the bookkeeping attributes of a
	// node record (state, attempts, timestamps).
	ItemOverhead = 100
	// TransactItems is the most items one TransactWriteItems may write.
	TransactItems = 100
	// TransactBytes is the size limit of one TransactWriteItems request
	// (4 MB), compared with TransactionBytes.
	TransactBytes = 4 * 1024 * 1024
	// BatchGetKeys is the most keys one BatchGetItem may read. The stores
	// read more keys in several requests, so it limits no caller.
	BatchGetKeys = 100
	// BatchWriteItems is the most writes one BatchWriteItem may make.
	BatchWriteItems = 25
	// PartitionKeyBytes is the longest partition key value.
	PartitionKeyBytes = 2048
	// SortKeyBytes is the longest sort key value.
	SortKeyBytes = 1024
	// ReasonBytes bounds the failure reason kept in a run record or a
	// failed node record; a longer one is truncated, so that an enormous
	// error message cannot keep a run from finishing.
	ReasonBytes = 32 * 1024
	// NumberMin and NumberMax bound the magnitude of a number DynamoDB
	// stores natively (besides zero): 1e-130 <= |n| < 1e126.
	NumberMin = 1e-130
	NumberMax = 1e126
)

// SQS.
const (
	// MessageBytes is the size limit of one message, and of the sum of the
	// messages of one SendMessageBatch: 256 KiB, SQS's limit for years and
	// that of a queue whose MaximumMessageSize is 262144. A message within
	// it fits any queue left at a default size.
	MessageBytes = 262144
	// BatchEntries is the most entries one SQS batch request may hold.
	BatchEntries = 10
)

// Ids and context keys.
const (
	// IDBytes is the longest run, blueprint or node id (see CheckID).
	IDBytes = 256
	// OutputsPrefix begins the context key of a node record,
	// "_outputs.<nodeId>"; context keys written by callers may not use it.
	OutputsPrefix = "_outputs."
	// ContextKeyBytes is the longest context key: the context table's
	// sort key.
	ContextKeyBytes = SortKeyBytes
	// CoordinationKeyBytes is the longest coordination key: the
	// coordination table's partition key.
	CoordinationKeyBytes = PartitionKeyBytes
)

// CheckID checks a run, blueprint or node id; what names it in the error
// ("run id", "node id"...). An id is 1 to IDBytes bytes of valid UTF-8, not
// only white space, without control characters (U+0000–U+001F, U+007F).
//
// The length leaves room for the keys built from ids: a coordination key
// such as "flowcraft:fanin:<runId>:<nodeId>" with its ids escaped (which
// can triple them) stays within PartitionKeyBytes, and a node record's key
// "_outputs.<nodeId>" with an internal suffix within SortKeyBytes. Control
// characters are reserved for internal record names.
func CheckID(what, id string) error {
	switch {
	case id == "":
		return fmt.Errorf("%s is empty", what)
	case len(id) > IDBytes:
		return fmt.Errorf("%s is longer than %d bytes (%d bytes: %s)", what, IDBytes, len(id), prefix(id))
	case !utf8.ValidString(id):
		return fmt.Errorf("%s %q is not valid UTF-8", what, id)
	case strings.TrimSpace(id) == "":
		return fmt.Errorf("%s %q is only white space", what, id)
	}
	for _, r := range id {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("%s %q holds the control character U+%04X", what, id, r)
		}
	}
	return nil
}

// CheckNodeRecordID checks a node id given to a store, which names a node
// record: a node id (see CheckID), or the name of an internal record built
// from one, such as a fallback's attempt record "<nodeId>@fallback" (the
// control characters that node ids may not hold are reserved for such
// names). It is not empty, is valid UTF-8, and its record key
// "_outputs.<nodeId>" is at most SortKeyBytes bytes.
func CheckNodeRecordID(nodeID string) error {
	switch {
	case nodeID == "":
		return fmt.Errorf("node id is empty")
	case !utf8.ValidString(nodeID):
		return fmt.Errorf("node id %q is not valid UTF-8", nodeID)
	case len(OutputsPrefix)+len(nodeID) > SortKeyBytes:
		return fmt.Errorf("node id %s is longer than %d bytes", prefix(nodeID), SortKeyBytes-len(OutputsPrefix))
	}
	return nil
}

// CheckContextKey checks a context key that a caller writes or deletes: not
// empty, not beginning with OutputsPrefix (reserved for node records), at
// most ContextKeyBytes bytes.
func CheckContextKey(key string) error {
	if strings.HasPrefix(key, OutputsPrefix) {
		return fmt.Errorf("%q: the prefix %q is reserved for node outputs", key, OutputsPrefix)
	}
	return CheckReadKey(key)
}

// CheckReadKey checks a context key that a caller reads, node records'
// "_outputs.<nodeId>" included: not empty, at most ContextKeyBytes bytes.
func CheckReadKey(key string) error {
	switch {
	case key == "":
		return fmt.Errorf("empty key")
	case len(key) > ContextKeyBytes:
		return fmt.Errorf("%s is longer than %d bytes", prefix(key), ContextKeyBytes)
	}
	return nil
}

// CheckCoordinationKey checks a coordination key: not empty, at most
// CoordinationKeyBytes bytes.
func CheckCoordinationKey(key string) error {
	switch {
	case key == "":
		return fmt.Errorf("empty coordination key")
	case len(key) > CoordinationKeyBytes:
		return fmt.Errorf("coordination key %s is longer than %d bytes", prefix(key), CoordinationKeyBytes)
	}
	return nil
}

// prefix quotes the beginning of a long string for an error message.
func prefix(s string) string {
	if len(s) <= 32 {
		return strconv.Quote(s)
	}
	return strconv.Quote(s[:32]) + "..."
}

// ItemSize estimates the size DynamoDB counts for a context-table item: its
// key (runID and key), the sizes of the values it holds, and ItemOverhead.
// It errs on the large side, so an item it accepts DynamoDB accepts. Both
// the DynamoDB store and the in-memory one size items with it, the values
// sized with ValueSize, so a value that fits one fits the other.
func ItemSize(runID, key string, valueSizes ...int) int {
	n := len(runID) + len(key) + ItemOverhead
	for _, s := range valueSizes {
		n += s
	}
	return n
}

// NodeRecordSize estimates the size of a committed node record: ItemSize of
// the record's key with the output and staged inputs (sized with ValueSize;
// 0 when absent), the action, the fallback and the list of taken targets.
func NodeRecordSize(runID, nodeID string, outputSize, stagedSize int, action, fallback string, taken []string) int {
	takenSize := 0
	if taken != nil {
		takenSize = 3
		for _, t := range taken {
			takenSize += 1 + len(t)
		}
	}
	return ItemSize(runID, OutputsPrefix+nodeID, outputSize, stagedSize, len(action), len(fallback), takenSize)
}

// WaitSize estimates what a node record's wait and resume token add to its
// size (see NodeRecordSize): the wait, a JSON-like value sized with
// ValueSize (nil when there is none), and the token, with their attribute
// names.
func WaitSize(wait any, token string) int {
	n := 0
	if wait != nil {
		n += len("wait") + ValueSize(wait)
	}
	if token != "" {
		n += len("token") + len(token)
	}
	return n
}

// WaitingUpdateSize estimates the update of a run record's Waiting set by
// one node, one item of the transaction that suspends or resumes it.
func WaitingUpdateSize(runID, nodeID string) int {
	return ItemSize(runID, "", len(nodeID))
}

// RunRecordSize estimates the size of a run record (status table) as it is
// created; more are its other string attributes (a child run's parent).
// It counts the shard suffix of the running-runs index key ("#15" in
// "running#15") beyond ItemOverhead.
func RunRecordSize(runID, blueprintID, version string, more ...string) int {
	const shardSuffix = 3
	n := ItemSize(runID, "", len(blueprintID), len(version)) + shardSuffix
	for _, s := range more {
		n += len(s) + 16 // the value and its attribute name
	}
	return n
}

// TransactionBytes estimates the size of a transaction (TransactWriteItems)
// that writes items of the given estimated sizes and deletes the items at
// keys of runID: the sum of the sizes, and ItemSize of each distinct key
// deleted. Compare it with TransactBytes.
func TransactionBytes(runID string, itemSizes []int, deletes []string) int {
	n := 0
	for _, s := range itemSizes {
		n += s
	}
	seen := make(map[string]bool, len(deletes))
	for _, k := range deletes {
		if !seen[k] {
			seen[k] = true
			n += ItemSize(runID, k)
		}
	}
	return n
}

// ValueSize estimates the bytes DynamoDB counts for a JSON-like value (see
// jsonvalue.Normalize) as the DynamoDB store keeps it. Stored natively, a
// string counts its length, a number its decimal digits plus one, a bool or
// null one, a list or map three plus, for each element, one, its size and a
// map's key. A value that is not Native is stored as its JSON encoding and
// counts its length.
func ValueSize(v any) int {
	if native, err := Native(v); err != nil || !native {
		b, _ := json.Marshal(v) // a JSON-like value marshals
		return len(b)
	}
	return nativeSize(v)
}

func nativeSize(v any) int {
	switch x := v.(type) {
	case string:
		return len(x)
	case int64:
		return len(strconv.FormatInt(x, 10)) + 1
	case float64:
		return len(strconv.FormatFloat(x, 'g', -1, 64)) + 1
	case []any:
		n := 3
		for _, e := range x {
			n += 1 + nativeSize(e)
		}
		return n
	case map[string]any:
		n := 3
		for k, e := range x {
			n += 1 + len(k) + nativeSize(e)
		}
		return n
	}
	return 1 // bool, nil
}

// Native reports whether DynamoDB can hold a JSON-like value with its own
// types: no empty object key (an empty attribute name), no number outside
// NumberMin to NumberMax in magnitude. NaN and infinities, which are no JSON
// values, are an error.
func Native(v any) (bool, error) {
	switch x := v.(type) {
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return false, fmt.Errorf("value is not JSON-marshalable: %v", x)
		}
		a := math.Abs(x)
		return a == 0 || (a >= NumberMin && a < NumberMax), nil
	case map[string]any:
		native := true
		for k, e := range x {
			ok, err := Native(e)
			if err != nil {
				return false, err
			}
			native = native && ok && k != ""
		}
		return native, nil
	case []any:
		native := true
		for _, e := range x {
			ok, err := Native(e)
			if err != nil {
				return false, err
			}
			native = native && ok
		}
		return native, nil
	}
	return true, nil
}

// MessageChar reports whether SQS accepts r in a message body: #x9, #xA,
// #xD, #x20 to #xD7FF, #xE000 to #xFFFD and #x10000 to #x10FFFF.
func MessageChar(r rune) bool {
	switch {
	case r == 0x9 || r == 0xA || r == 0xD:
	case r >= 0x20 && r <= 0xD7FF:
	case r >= 0xE000 && r <= 0xFFFD:
	case r >= 0x10000 && r <= 0x10FFFF:
	default:
		return false
	}
	return true
}

// ValidMessageBody reports whether s is valid UTF-8 made only of characters
// SQS accepts in a message body (MessageChar).
func ValidMessageBody(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if !MessageChar(r) {
			return false
		}
	}
	return true
}

// TruncateReason cuts a failure reason to at most ReasonBytes bytes, at a
// rune boundary, marking the cut.
func TruncateReason(s string) string {
	if len(s) <= ReasonBytes {
		return s
	}
	const marker = "… (truncated)"
	cut := ReasonBytes - len(marker)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + marker
}
