package chaos

import (
	"encoding/json"
	"strings"
	"sync"
)

// Ledger records, from the DynamoDB requests the emulator applied (an HTTP
// 200 seen by the proxy, whatever the client then got), every commit of a
// node output and every write of a run's final status. It is the witness
// of exactly-once effects: a node committed twice, or a run finished twice,
// shows here even if the engine never noticed.
//
// A commit is an UpdateItem, alone or as an item of a TransactWriteItems,
// of a context-table item "_outputs.<nodeId>" that sets its "state" to
// "committed". A final status write is an UpdateItem of a status-table item
// that sets "status" to completed, failed or cancelled. A TransactWriteItems
// is idempotent by its ClientRequestToken (the SDK sets one and keeps it
// across retries; DynamoDB applies a token once): answers with a token
// already seen are counted as replays, not commits.
//
// It is safe for concurrent use.
type Ledger struct {
	contextTable, statusTable string

	mu       sync.Mutex
	commits  map[RunNode]*CommitCount
	finishes map[string]*FinishCount
	hidden   int64 // applied writes whose answer the client did not get
	bad      int64 // 200 answers to writes the ledger could not parse
}

// RunNode names a node of a run.
type RunNode struct{ Run, Node string }

// CommitCount counts the applied commits of one node.
type CommitCount struct {
	Commits int            // distinct applied commits
	Replays int            // 200 answers to a repeated transaction token
	Hidden  int            // applied commits whose answer a fault replaced
	tokens  map[string]int // transaction tokens seen
}

// FinishCount counts the applied final status writes of one run.
type FinishCount struct {
	Writes   int
	Statuses []string
	Hidden   int
}

// NewLedger returns an empty ledger for the given tables.
func NewLedger(contextTable, statusTable string) *Ledger {
	return &Ledger{contextTable: contextTable, statusTable: statusTable,
		commits: map[RunNode]*CommitCount{}, finishes: map[string]*FinishCount{}}
}

// attrValue is a DynamoDB attribute value in its JSON form, e.g. {"S": "x"}.
type attrValue map[string]json.RawMessage

func (a attrValue) str() (string, bool) {
	raw, ok := a["S"]
	if !ok {
		return "", false
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return "", false
	}
	return s, true
}

type updateRequest struct {
	TableName                 string
	Key                       map[string]attrValue
	UpdateExpression          string
	ExpressionAttributeNames  map[string]string
	ExpressionAttributeValues map[string]attrValue
}

type transactRequest struct {
	ClientRequestToken string
	TransactItems      []struct {
		Update *updateRequest
	}
}

// Observe records one exchange; give it to the DynamoDB proxy.
func (l *Ledger) Observe(ex Exchange) {
	if ex.Service != ServiceDynamoDB || ex.Status != 200 {
		return
	}
	switch ex.Operation {
	case "UpdateItem":
		var u updateRequest
		if json.Unmarshal(ex.Request, &u) != nil {
			l.mu.Lock()
			l.bad++
			l.mu.Unlock()
			return
		}
		l.update(&u, "", ex.Hidden)
	case "TransactWriteItems":
		var t transactRequest
		if json.Unmarshal(ex.Request, &t) != nil {
			l.mu.Lock()
			l.bad++
			l.mu.Unlock()
			return
		}
		for _, it := range t.TransactItems {
			if it.Update != nil {
				l.update(it.Update, t.ClientRequestToken, ex.Hidden)
			}
		}
	}
}

// update records one applied update, if it is a commit or a final status;
// token is its transaction's token, if any.
func (l *Ledger) update(u *updateRequest, token string, hidden bool) {
	switch u.TableName {
	case l.contextTable:
		key, _ := u.Key["key"].str()
		run, _ := u.Key["runId"].str()
		node, isNode := strings.CutPrefix(key, "_outputs.")
		if !isNode || assigned(u, "state") != "committed" {
			return
		}
		l.mu.Lock()
		defer l.mu.Unlock()
		c := l.commits[RunNode{run, node}]
		if c == nil {
			c = &CommitCount{tokens: map[string]int{}}
			l.commits[RunNode{run, node}] = c
		}
		if token != "" {
			c.tokens[token]++
			if c.tokens[token] > 1 {
				c.Replays++
				return
			}
		}
		c.Commits++
		if hidden {
			c.Hidden++
			l.hidden++
		}
	case l.statusTable:
		run, _ := u.Key["runId"].str()
		switch st := assigned(u, "status"); st {
		case "completed", "failed", "cancelled":
			l.mu.Lock()
			defer l.mu.Unlock()
			f := l.finishes[run]
			if f == nil {
				f = &FinishCount{}
				l.finishes[run] = f
			}
			f.Writes++
			f.Statuses = append(f.Statuses, st)
			if hidden {
				f.Hidden++
				l.hidden++
			}
		}
	}
}

// Commits returns the commit counts of a run's nodes.
func (l *Ledger) Commits(run string) map[string]CommitCount {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]CommitCount{}
	for k, c := range l.commits {
		if k.Run == run {
			cc := *c
			cc.tokens = nil
			out[k.Node] = cc
		}
	}
	return out
}

// Finishes returns the final status writes of a run.
func (l *Ledger) Finishes(run string) FinishCount {
	l.mu.Lock()
	defer l.mu.Unlock()
	if f := l.finishes[run]; f != nil {
		c := *f
		c.Statuses = append([]string(nil), f.Statuses...)
		return c
	}
	return FinishCount{}
}

// Hidden is the number of applied commits and final status writes whose
// answer an injected fault replaced: writes that succeeded while the client
// saw an error.
func (l *Ledger) Hidden() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.hidden
}

// Unparsable is the number of applied writes whose request the ledger
// could not decode (it should be zero).
func (l *Ledger) Unparsable() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.bad
}

// assigned returns the string value an update expression's SET clause
// assigns to the top-level attribute name, or "".
func assigned(u *updateRequest, name string) string {
	for _, a := range setAssignments(u.UpdateExpression) {
		path := a[0]
		if n, ok := u.ExpressionAttributeNames[path]; ok {
			path = n
		}
		if path != name {
			continue
		}
		if v, ok := u.ExpressionAttributeValues[a[1]]; ok {
			s, _ := v.str()
			return s
		}
	}
	return ""
}

// setAssignments returns the [path, value] pairs of the SET clauses of an
// update expression, as written (placeholders unresolved).
func setAssignments(expr string) [][2]string {
	var out [][2]string
	for _, clause := range clauses(expr) {
		kw, rest, _ := strings.Cut(strings.TrimSpace(clause), " ")
		if !strings.EqualFold(kw, "SET") {
			continue
		}
		for _, part := range splitTop(rest, ',') {
			lhs, rhs, ok := strings.Cut(part, "=")
			if ok {
				out = append(out, [2]string{strings.TrimSpace(lhs), strings.TrimSpace(rhs)})
			}
		}
	}
	return out
}

// clauses splits an update expression before each top-level SET, REMOVE,
// ADD or DELETE keyword.
func clauses(expr string) []string {
	var out []string
	start, depth := 0, 0
	isWord := func(c byte) bool {
		return c == '_' || c == '#' || c == ':' || ('a' <= c|0x20 && c|0x20 <= 'z') || ('0' <= c && c <= '9')
	}
	for i := 0; i < len(expr); i++ {
		switch expr[i] {
		case '(':
			depth++
			continue
		case ')':
			depth--
			continue
		}
		if depth != 0 || (i > 0 && isWord(expr[i-1])) {
			continue
		}
		for _, kw := range []string{"SET", "REMOVE", "ADD", "DELETE"} {
			end := i + len(kw)
			if end <= len(expr) && strings.EqualFold(expr[i:end], kw) && (end == len(expr) || !isWord(expr[end])) {
				if i > start {
					out = append(out, expr[start:i])
				}
				start = i
				i = end - 1
				break
			}
		}
	}
	return append(out, expr[start:])
}

// splitTop splits s at sep outside parentheses.
func splitTop(s string, sep byte) []string {
	var out []string
	start, depth := 0, 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '(':
			depth++
		case ')':
			depth--
		case sep:
			if depth == 0 {
				out = append(out, s[start:i])
				start = i + 1
			}
		}
	}
	return append(out, s[start:])
}
