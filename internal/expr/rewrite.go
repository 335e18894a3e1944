package expr

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/expr-lang/expr/file"
)

// rewrite turns the JavaScript spellings expr-lang does not parse into
// expr-lang outside string literals and comments: `===` becomes `==`, `!==`
// becomes `!=`, and a hyphenated node id k that is neither preceded by
// [A-Za-z0-9_$] nor followed by [A-Za-z0-9_$-] becomes context["k"], as
// Flowcraft's UnsafeEvaluator rewrites it. String literals and comments are
// delimited as expr-lang's lexer delimits them.
func rewrite(src string, hyphenated []string) (string, *posMap) {
	var b strings.Builder
	m := &posMap{}
	last := 0 // src[:last] is written to b
	edit := func(from, to int, repl string) {
		b.WriteString(src[last:from])
		m.edits = append(m.edits, posEdit{oldFrom: from, oldTo: to, newFrom: b.Len(), newTo: b.Len() + len(repl)})
		b.WriteString(repl)
		last = to
	}
	for i := 0; i < len(src); {
		switch c := src[i]; {
		case c == '\'' || c == '"':
			i = skipQuoted(src, i)
		case c == '`':
			i = skipRaw(src, i)
		case strings.HasPrefix(src[i:], "//"):
			i = skipTo(src, i+2, "\n")
		case strings.HasPrefix(src[i:], "/*"):
			i = skipTo(src, i+2, "*/")
		case strings.HasPrefix(src[i:], "==="), strings.HasPrefix(src[i:], "!=="):
			edit(i, i+3, src[i:i+2])
			i += 3
		default:
			if k := hyphenatedAt(src, i, hyphenated); k != "" {
				edit(i, i+len(k), `context[`+quote(k)+`]`)
				i += len(k)
				continue
			}
			i++
		}
	}
	if len(m.edits) == 0 {
		return src, nil
	}
	b.WriteString(src[last:])
	m.old, m.new = src, b.String()
	return m.new, m
}

// skipQuoted returns the index after the single- or double-quoted literal
// starting at i, or len(src) when it is not terminated.
func skipQuoted(src string, i int) int {
	q := src[i]
	for i++; i < len(src); i++ {
		switch src[i] {
		case '\\':
			i++
		case q, '\n': // a newline ends the (unterminated) literal for the lexer too
			return i + 1
		}
	}
	return len(src)
}

// skipRaw returns the index after the backquoted literal starting at i. A
// doubled backquote inside is a backquote; ending the literal and starting
// another at once delimits the same text.
func skipRaw(src string, i int) int {
	if j := strings.IndexByte(src[i+1:], '`'); j >= 0 {
		return i + 1 + j + 1
	}
	return len(src)
}

// skipTo returns the index after the first end at or after i, or len(src).
func skipTo(src string, i int, end string) int {
	if j := strings.Index(src[i:], end); j >= 0 {
		return i + j + len(end)
	}
	return len(src)
}

// hyphenatedAt returns the id of hyphenated that occurs at src[i:] as
// Flowcraft's rewrite matches it, or "".
func hyphenatedAt(src string, i int, hyphenated []string) string {
	if i > 0 && isJSIdentByte(src[i-1]) {
		return ""
	}
	for _, k := range hyphenated {
		if !strings.HasPrefix(src[i:], k) {
			continue
		}
		if end := i + len(k); end < len(src) && (isJSIdentByte(src[end]) || src[end] == '-') {
			continue
		}
		return k
	}
	return ""
}

func isJSIdentByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '$'
}

// quote returns s, valid UTF-8, as an expr-lang double-quoted string
// literal.
func quote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < ' ', r == 0x7f:
			fmt.Fprintf(&b, `\x%02x`, r)
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	b.WriteByte('"')
	return b.String()
}

// posMap maps positions in a rewritten source back to the original.
type posMap struct {
	old, new string
	edits    []posEdit // in source order
}

// posEdit records that old[oldFrom:oldTo] became new[newFrom:newTo].
type posEdit struct{ oldFrom, oldTo, newFrom, newTo int }

// fix makes an expr-lang error located in the rewritten source point into
// the original one. A position inside a rewritten piece points to its start.
func (m *posMap) fix(err error) {
	var fe *file.Error
	if m == nil || !errors.As(err, &fe) || fe.Snippet == "" {
		return
	}
	at := m.oldOffset(runeToByte(m.new, fe.From))
	fe.From = utf8.RuneCountInString(m.old[:at])
	fe.To = fe.From
	fe.Snippet = ""
	fe.Bind(file.NewSource(m.old))
}

// oldOffset maps a byte offset in new to one in old.
func (m *posMap) oldOffset(at int) int {
	shift := 0
	for _, e := range m.edits {
		if at < e.newFrom {
			break
		}
		if at < e.newTo {
			return e.oldFrom
		}
		shift = e.oldTo - e.newTo
	}
	return at + shift
}

// runeToByte returns the byte offset of the n-th rune of s, counting each
// invalid byte as a rune as expr-lang's lexer does.
func runeToByte(s string, n int) int {
	i := 0
	for ; n > 0 && i < len(s); n-- {
		_, size := utf8.DecodeRuneInString(s[i:])
		i += size
	}
	return i
}
