package jsonvalue

import (
	"encoding/json"
	"unicode/utf8"
)

// parse decodes b as Decode does, without encoding/json's reflection and
// buffering, for the common case: one valid JSON value, nested at most
// maxDepth deep, with surrounding white space only. ok is false for
// anything else, which decodeJSON then decides (errors, trailing data it
// tolerates, deep nesting). Strings with escapes or invalid UTF-8 are
// unquoted by encoding/json, so they decode exactly as there.
func parse(b []byte) (v any, ok bool) {
	p := parser{b: b}
	p.space()
	if v, ok = p.value(0); !ok {
		return nil, false
	}
	p.space()
	return v, p.i == len(b)
}

type parser struct {
	b []byte
	i int
}

func (p *parser) space() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *parser) value(depth int) (any, bool) {
	if p.i >= len(p.b) {
		return nil, false
	}
	switch c := p.b[p.i]; {
	case c == '{':
		return p.object(depth + 1)
	case c == '[':
		return p.array(depth + 1)
	case c == '"':
		s, ok := p.string()
		return s, ok
	case c == 't':
		return true, p.literal("true")
	case c == 'f':
		return false, p.literal("false")
	case c == 'n':
		return nil, p.literal("null")
	case c == '-' || '0' <= c && c <= '9':
		return p.number()
	}
	return nil, false
}

func (p *parser) literal(s string) bool {
	if len(p.b)-p.i < len(s) || string(p.b[p.i:p.i+len(s)]) != s {
		return false
	}
	p.i += len(s)
	return true
}

func (p *parser) object(depth int) (any, bool) {
	if depth > maxDepth {
		return nil, false
	}
	p.i++ // {
	m := make(map[string]any)
	p.space()
	if p.i < len(p.b) && p.b[p.i] == '}' {
		p.i++
		return m, true
	}
	for {
		if p.i >= len(p.b) || p.b[p.i] != '"' {
			return nil, false
		}
		k, ok := p.string()
		if !ok {
			return nil, false
		}
		p.space()
		if p.i >= len(p.b) || p.b[p.i] != ':' {
			return nil, false
		}
		p.i++
		p.space()
		v, ok := p.value(depth)
		if !ok {
			return nil, false
		}
		m[k] = v // a repeated key: the last one wins, as in encoding/json
		p.space()
		if p.i >= len(p.b) {
			return nil, false
		}
		switch p.b[p.i] {
		case ',':
			p.i++
			p.space()
		case '}':
			p.i++
			return m, true
		default:
			return nil, false
		}
	}
}

func (p *parser) array(depth int) (any, bool) {
	if depth > maxDepth {
		return nil, false
	}
	p.i++ // [
	s := []any{}
	p.space()
	if p.i < len(p.b) && p.b[p.i] == ']' {
		p.i++
		return s, true
	}
	for {
		v, ok := p.value(depth)
		if !ok {
			return nil, false
		}
		s = append(s, v)
		p.space()
		if p.i >= len(p.b) {
			return nil, false
		}
		switch p.b[p.i] {
		case ',':
			p.i++
			p.space()
		case ']':
			p.i++
			return s, true
		default:
			return nil, false
		}
	}
}

// string decodes the string literal at p.i.
func (p *parser) string() (string, bool) {
	start := p.i
	p.i++         // "
	plain := true // no escape, valid UTF-8
	for ; p.i < len(p.b); p.i++ {
		switch c := p.b[p.i]; {
		case c == '"':
			p.i++
			lit := p.b[start:p.i]
			if plain {
				return string(lit[1 : len(lit)-1]), true
			}
			var s string
			if json.Unmarshal(lit, &s) != nil {
				return "", false
			}
			return s, true
		case c < ' ':
			return "", false
		case c == '\\':
			plain = false
			p.i++ // the escaped character; encoding/json checks the escape
		case c >= utf8.RuneSelf:
			r, size := utf8.DecodeRune(p.b[p.i:])
			if r == utf8.RuneError && size == 1 {
				plain = false // encoding/json replaces it
			}
			p.i += size - 1
		}
	}
	return "", false
}

// number decodes the number at p.i, checking JSON's grammar.
func (p *parser) number() (any, bool) {
	start := p.i
	if p.b[p.i] == '-' {
		p.i++
	}
	switch {
	case p.i < len(p.b) && p.b[p.i] == '0':
		p.i++
	case p.digits() == 0:
		return nil, false
	}
	if p.i-start <= 18 && (p.i == len(p.b) || p.b[p.i] != '.' && p.b[p.i] != 'e' && p.b[p.i] != 'E') {
		return smallInt(p.b[start:p.i]), true // fits in int64: what convertNumber returns
	}
	if p.i < len(p.b) && p.b[p.i] == '.' {
		p.i++
		if p.digits() == 0 {
			return nil, false
		}
	}
	if p.i < len(p.b) && (p.b[p.i] == 'e' || p.b[p.i] == 'E') {
		p.i++
		if p.i < len(p.b) && (p.b[p.i] == '+' || p.b[p.i] == '-') {
			p.i++
		}
		if p.digits() == 0 {
			return nil, false
		}
	}
	return convertNumber(string(p.b[start:p.i])), true
}

func (p *parser) digits() int {
	start := p.i
	for p.i < len(p.b) && '0' <= p.b[p.i] && p.b[p.i] <= '9' {
		p.i++
	}
	return p.i - start
}

// smallInt converts an integer of at most 18 characters, sign included.
func smallInt(b []byte) int64 {
	neg := b[0] == '-'
	if neg {
		b = b[1:]
	}
	var n int64
	for _, c := range b {
		n = n*10 + int64(c-'0')
	}
	if neg {
		return -n
	}
	return n
}
