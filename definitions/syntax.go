package definitions

import (
	"errors"
	"regexp"
	"strconv"
	"strings"

	goccy "github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/lexer"
	"github.com/goccy/go-yaml/parser"
	"github.com/goccy/go-yaml/token"
)

// syntaxError turns a YAML syntax error of src into a positioned Error.
//
// go.yaml.in/yaml/v3, which decodes definitions, reports a parser error's line off by one (it
// prints libyaml's 0-based mark) and never a column, so the error is diagnosed again here with
// github.com/goccy/go-yaml, whose syntax errors carry the line and column of the offending token.
// An unclosed flow sequence or mapping ("service: [inventory") is reported where it opens, since
// the token that gives it away may be lines further down. Should goccy find no error where
// yaml/v3 did, yaml/v3's own message and line are used.
func syntaxError(filename string, src []byte, err error) error {
	msg := err.Error()
	// A nesting too deep for yaml/v3 is left at that: goccy has no depth limit of its own.
	if !strings.Contains(msg, "exceeded max depth") {
		if e := diagnose(filename, src); e != nil {
			return ErrorList{e}
		}
	}
	e := &Error{File: filename}
	if m := yamlLineRe.FindStringSubmatch(msg); m != nil {
		e.Line, _ = strconv.Atoi(m[1])
		msg = msg[len(m[0]):]
	} else {
		msg = strings.TrimPrefix(msg, "yaml: ")
	}
	e.Msg = "invalid YAML: " + msg
	return ErrorList{e}
}

// yamlLineRe finds the line in an error of go.yaml.in/yaml/v3, which has no error type.
var yamlLineRe = regexp.MustCompile(`^yaml: line (\d+): `)

// maxDiagnoseDepth bounds the flow nesting diagnose hands to goccy/go-yaml, whose parser slows
// down quadratically with it (seconds at a few thousand levels); no definition nests that deep.
const maxDiagnoseDepth = 64

// diagnose parses src with goccy/go-yaml and returns its syntax error with a position, or nil
// (also should goccy panic, or src nest flow collections deeper than maxDiagnoseDepth: the
// diagnosis is a courtesy, yaml/v3's error stands).
func diagnose(filename string, src []byte) (e *Error) {
	defer func() {
		if recover() != nil {
			e = nil
		}
	}()
	tokens := lexer.Tokenize(string(src))
	open, depth := unclosedFlow(tokens)
	if depth > maxDiagnoseDepth {
		return nil
	}
	_, err := parser.Parse(tokens, 0)
	var se *goccy.SyntaxError
	if !errors.As(err, &se) || se.Token == nil || se.Token.Position == nil {
		return nil
	}
	unclosed := strings.Contains(se.Message, "must be specified") || strings.Contains(se.Message, "end token")
	if open != nil && unclosed {
		kind, closer := "sequence", "]"
		if open.Type == token.MappingStartType {
			kind, closer = "mapping", "}"
		}
		return &Error{File: filename, Line: open.Position.Line, Column: open.Position.Column,
			Msg: "invalid YAML: flow " + kind + " opened here is never closed: expected ',' or '" + closer + "'"}
	}
	return &Error{File: filename, Line: se.Token.Position.Line, Column: se.Token.Position.Column, Msg: "invalid YAML: " + se.Message}
}

// unclosedFlow returns the innermost '[' or '{' of tokens that no ']' or '}' closes (nil when
// all are closed) and the deepest flow nesting seen.
func unclosedFlow(tokens token.Tokens) (*token.Token, int) {
	var open []*token.Token
	depth := 0
	for _, t := range tokens {
		switch t.Type {
		case token.SequenceStartType, token.MappingStartType:
			open = append(open, t)
			depth = max(depth, len(open))
		case token.SequenceEndType, token.MappingEndType:
			if len(open) > 0 {
				open = open[:len(open)-1]
			}
		}
	}
	if len(open) == 0 {
		return nil, depth
	}
	return open[len(open)-1], depth
}
