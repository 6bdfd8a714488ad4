package bus

import (
	"fmt"
	"regexp"
	"strings"
)

// Namespace names one Sagaflow installation on a NATS account shared with others. It prefixes the
// stream names, the subjects and the durable consumer names, so installations never see each
// other's messages. The empty Namespace (the default) is today's names exactly. With namespace
// "acme":
//
//	stream   SAGA_COMMANDS           → ACME_SAGA_COMMANDS  (upper case, '-' → '_')
//	subject  saga.cmd.<svc>.<cmd>    → acme.saga.cmd.<svc>.<cmd>
//	durable  sagaflow-orchestrator   → acme-sagaflow-orchestrator
type Namespace string

// namespaceRE is the form of a non-empty Namespace: [a-z0-9-], 1..32 characters.
var namespaceRE = regexp.MustCompile(`^[a-z0-9-]{1,32}$`)

// Validate reports whether n is empty or of the form [a-z0-9-], 1..32 characters, and not
// "events" (its subjects, events.saga.cmd.> and so on, would overlap the unprefixed EVENTS stream's
// events.>, which JetStream refuses).
func (n Namespace) Validate() error {
	if n != "" && !namespaceRE.MatchString(string(n)) {
		return fmt.Errorf("namespace %q: must be 1 to 32 of [a-z0-9-]", string(n))
	}
	if n == "events" {
		return fmt.Errorf("namespace %q: reserved (its subjects would overlap the EVENTS stream of an installation without a namespace)", string(n))
	}
	return nil
}

// Stream returns the name of stream (one of the Stream constants) in n.
func (n Namespace) Stream(name string) string {
	if n == "" {
		return name
	}
	return strings.ToUpper(strings.ReplaceAll(string(n), "-", "_")) + "_" + name
}

// Subject returns subject (or subject prefix, or filter) s in n.
func (n Namespace) Subject(s string) string {
	if n == "" {
		return s
	}
	return string(n) + "." + s
}

// Durable returns the name of the durable consumer name in n.
func (n Namespace) Durable(name string) string {
	if n == "" {
		return name
	}
	return string(n) + "-" + name
}

// streams returns the streams of n with the subject filter each captures.
func (n Namespace) streams() []streamSubject {
	out := make([]streamSubject, len(streamSubjects))
	for i, s := range streamSubjects {
		out[i] = streamSubject{n.Stream(s.name), n.Subject(s.subject)}
	}
	return out
}

// StreamNames returns the names of Sagaflow's streams in n.
func (n Namespace) StreamNames() []string {
	var names []string
	for _, s := range n.streams() {
		names = append(names, s.name)
	}
	return names
}

// OwnSubject reports whether one of Sagaflow's streams in n captures subject (see OwnSubject).
func (n Namespace) OwnSubject(subject string) bool {
	for _, s := range n.streams() {
		prefix := strings.TrimSuffix(s.subject, ">")
		if len(subject) > len(prefix) && strings.HasPrefix(subject, prefix) {
			return true
		}
	}
	return false
}

// StreamOf returns the stream of n that captures subject, or false when none of them does.
func (n Namespace) StreamOf(subject string) (string, bool) {
	for _, s := range n.streams() {
		if strings.HasPrefix(subject, strings.TrimSuffix(s.subject, ">")) {
			return s.name, true
		}
	}
	return "", false
}

// namespaceOf returns the namespace a stream configuration created by EnsureStreams belongs to,
// read from its subject filter, and the unprefixed stream name.
func namespaceOf(c streamSubject) (Namespace, string, bool) {
	for _, s := range streamSubjects {
		prefix, ok := strings.CutSuffix(c.subject, s.subject)
		if !ok {
			continue
		}
		if prefix == "" {
			return "", s.name, c.name == s.name
		}
		n := Namespace(strings.TrimSuffix(prefix, "."))
		if strings.HasSuffix(prefix, ".") && n.Validate() == nil && n.Stream(s.name) == c.name {
			return n, s.name, true
		}
	}
	return "", "", false
}
