package console

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html/template"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// maxShown caps a JSON document (an input, a step output, a dead letter's payload) on a page; the
// rest is cut, and the page says how large the whole is.
const maxShown = 32 << 10

// printable returns s with every control or invisible character (ANSI escapes, NUL, line breaks,
// bidi overrides) written as a visible escape (\x1b, \n, \u202e), so what a saga or a message
// carries can neither draw on the page nor pass for something else. html/template then escapes
// the HTML.
func printable(s string) string {
	return escapeRunes(s, false)
}

// printableText is printable for multi-line text: line feeds and tabs stay.
func printableText(s string) string {
	return escapeRunes(s, true)
}

func escapeRunes(s string, multiline bool) string {
	clean := true
	for _, r := range s {
		if !shown(r, multiline) {
			clean = false
			break
		}
	}
	if clean && utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	for i, w := 0, 0; i < len(s); i += w {
		r, size := utf8.DecodeRuneInString(s[i:])
		w = size
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case shown(r, multiline):
			b.WriteRune(r)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x100:
			fmt.Fprintf(&b, `\x%02x`, r)
		default:
			fmt.Fprintf(&b, `\u%04x`, r)
		}
	}
	return b.String()
}

// shown reports whether r is printed as itself.
func shown(r rune, multiline bool) bool {
	if multiline && (r == '\n' || r == '\t') {
		return true
	}
	return r == ' ' || (unicode.IsGraphic(r) && !unicode.Is(unicode.Bidi_Control, r))
}

// document is a JSON value as a page shows it: indented, capped at maxShown.
type document struct {
	Text      string
	Size      int
	Truncated bool
	Empty     bool
}

// prettyJSON indents raw (or shows it as it is when it is not JSON) and caps it.
func prettyJSON(raw []byte) document {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return document{Empty: true}
	}
	var buf bytes.Buffer
	text := string(raw)
	if json.Indent(&buf, raw, "", "  ") == nil {
		text = buf.String()
	}
	return capped(text, len(raw))
}

// capped cuts text at maxShown (on a rune boundary) and escapes what cannot be shown.
func capped(text string, size int) document {
	d := document{Size: size}
	if len(text) > maxShown {
		cut := maxShown
		for cut > 0 && !utf8.RuneStart(text[cut]) {
			cut--
		}
		text, d.Truncated = text[:cut], true
	}
	d.Text = printableText(text)
	return d
}

// timeFormat is how pages show times: UTC, to the millisecond.
const timeFormat = "2006-01-02 15:04:05.000Z07:00"

func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(timeFormat)
}

// since returns how long after from to is, "" when either is unset.
func since(from, to time.Time) string {
	if from.IsZero() || to.IsZero() {
		return ""
	}
	return formatDuration(to.Sub(from))
}

func formatDuration(d time.Duration) string {
	switch {
	case d < 0:
		return ""
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return d.Round(10 * time.Millisecond).String()
	default:
		return d.Round(time.Second).String()
	}
}

// bytesText is a size for people: 512 B, 3.2 KiB.
func bytesText(n int) string {
	switch {
	case n < 1024:
		return fmt.Sprintf("%d B", n)
	case n < 1<<20:
		return fmt.Sprintf("%.1f KiB", float64(n)/1024)
	default:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
}

var funcs = template.FuncMap{
	"printable": printable,
	"time":      formatTime,
	"since":     since,
	"bytes":     bytesText,
	"json":      prettyJSON,
	"args":      newActionArgs,
}

// actionArgs are what the "action" template of a saga page needs.
type actionArgs struct {
	ID, Op, Label, Confirm, CSRF, Extra string
}

func newActionArgs(id, op, label, confirm, csrf, extra string) actionArgs {
	return actionArgs{ID: id, Op: op, Label: label, Confirm: confirm, CSRF: csrf, Extra: extra}
}
