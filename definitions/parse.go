package definitions

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/sagaflow/sagaflow/saga"
)

// Parse decodes and validates one definition in YAML (or JSON, which is YAML) and fills every
// default. filename is used only in error messages.
//
// It returns nil and an ErrorList, matching ErrInvalid, that holds every problem of the file sorted
// by position: unknown fields, wrong types, duplicate keys, values out of range, missing fields. A
// file larger than 1 MiB, a file holding more than one YAML document, and any use of YAML anchors,
// aliases, merge keys (<<) or tags are rejected outright, before any value is decoded.
func Parse(filename string, src []byte) (*saga.Definition, error) {
	if len(src) > maxFileSize {
		return nil, ErrorList{{File: filename, Line: 1, Column: 1,
			Msg: fmt.Sprintf("file is too large: %d bytes, at most %d (1 MiB)", len(src), maxFileSize)}}
	}
	root, err := readDocument(filename, src)
	if err != nil {
		return nil, err
	}
	if err := checkStructure(filename, root); err != nil {
		return nil, err
	}
	d := newDecoder(filename)
	s := d.definition(root)
	def := s.resolve(d.report)
	if err := d.errs.err(); err != nil {
		return nil, err
	}
	return def, nil
}

// ParseFile reads the file at path and parses it with Parse. It reads at most 1 MiB and one byte,
// so a huge file is rejected without being read whole. An error reading the file does not match
// ErrInvalid.
func ParseFile(path string) (*saga.Definition, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read definition: %w", err)
	}
	defer f.Close()
	src, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read definition: %w", err)
	}
	return Parse(path, src)
}

// readDocument parses src into a tree of YAML nodes and returns the root value of its only
// document. Parsing into yaml.Node builds the tree as written: an alias stays one node that points
// at its anchor and is never expanded, so the tree is at most as large as the input.
func readDocument(filename string, src []byte) (*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(src))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, emptyDocument(filename)
		}
		return nil, syntaxError(filename, src, err)
	}
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case err == nil:
		return nil, ErrorList{{File: filename, Line: next.Line, Column: next.Column,
			Msg: "only one YAML document is allowed: put each definition in its own file"}}
	case !errors.Is(err, io.EOF):
		return nil, syntaxError(filename, src, err)
	}
	if len(doc.Content) != 1 {
		return nil, emptyDocument(filename)
	}
	root := doc.Content[0]
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" && root.Style&yaml.TaggedStyle == 0 {
		return nil, emptyDocument(filename)
	}
	return root, nil
}

func emptyDocument(filename string) error {
	return ErrorList{{File: filename, Line: 1, Column: 1, Msg: "empty document: a definition needs name, version and steps"}}
}

// checkStructure rejects the YAML features that a definition never needs and that hostile input
// uses: anchors and aliases (an alias bomb expands exponentially in any decoder that follows them),
// merge keys, which are aliases in disguise, and explicit tags (!!binary, custom tags). It walks
// the tree without following aliases, so its cost is linear in the input, and reports each use
// with its position (the first maxErrors of them).
func checkStructure(filename string, root *yaml.Node) error {
	var (
		errs    ErrorList
		omitted int      // errors past maxErrors: the walk is in document order, so they come last
		path    []string // field path segments of the node being visited
		walk    func(n *yaml.Node)
	)
	add := func(n *yaml.Node, format string, arg string) {
		if len(errs) == maxErrors {
			omitted++
			return
		}
		errs = append(errs, &Error{File: filename, Line: n.Line, Column: n.Column, Field: strings.Join(path, ""),
			Msg: fmt.Sprintf(format, arg)})
	}
	walk = func(n *yaml.Node) {
		if n.Anchor != "" {
			add(n, "YAML anchors are not allowed (&%s): write the value out in full", n.Anchor)
		}
		if n.Style&yaml.TaggedStyle != 0 {
			add(n, "YAML tags are not allowed (%s)", n.Tag)
		}
		switch n.Kind {
		case yaml.AliasNode:
			add(n, "YAML aliases are not allowed (*%s): write the value out in full", n.Value)
		case yaml.SequenceNode:
			for i, c := range n.Content {
				path = append(path, "["+strconv.Itoa(i)+"]")
				walk(c)
				path = path[:len(path)-1]
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				seg := k.Value
				if len(path) > 0 {
					seg = "." + seg
				}
				path = append(path, seg)
				if k.Kind == yaml.ScalarNode && k.Tag == "!!merge" {
					add(k, "YAML merge keys (%s) are not allowed: write the fields out in full", k.Value)
				}
				walk(k)
				walk(v)
				path = path[:len(path)-1]
			}
		}
	}
	walk(root)
	return errs.errOmitting(omitted)
}
