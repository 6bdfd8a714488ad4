package main

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// safe returns s as is when it is valid UTF-8 made only of printable characters, and otherwise
// quoted with strconv.Quote (newlines, tabs, ESC, C1 controls, bidi overrides and invalid bytes
// become escapes), so a value from the server (a business key, an error, a history detail) can
// neither forge a table row nor drive the terminal.
func safe(s string) string {
	if !utf8.ValidString(s) {
		return strconv.Quote(s)
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return strconv.Quote(s)
		}
	}
	return s
}

// escapeControls returns s with each non-printable character (and each invalid byte) replaced by
// its Go escape (\n, \x1b, \u202e), for a line of text that quotes a user's file, such as a
// definition error naming a field.
func escapeControls(s string) string {
	if safe(s) == s {
		return s
	}
	var b strings.Builder
	for i, r := range s {
		if r == utf8.RuneError && !strings.HasPrefix(s[i:], string(utf8.RuneError)) {
			fmt.Fprintf(&b, `\x%02x`, s[i]) // an invalid byte
			continue
		}
		if unicode.IsPrint(r) {
			b.WriteRune(r)
			continue
		}
		q := strconv.QuoteRune(r)
		b.WriteString(q[1 : len(q)-1])
	}
	return b.String()
}
