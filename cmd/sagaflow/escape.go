package main

import (
	"strconv"
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
