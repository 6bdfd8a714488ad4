package console

import (
	"cmp"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/sagaflow/sagaflow/internal/dlq"
)

// dlqQuery is the dead-letter list's filter as the form sends it.
type dlqQuery struct {
	Subject, Reason, SagaID string
}

func (q dlqQuery) link(before uint64) string {
	v := url.Values{}
	for k, s := range map[string]string{"subject": q.Subject, "reason": q.Reason, "saga_id": q.SagaID} {
		if s != "" {
			v.Set(k, s)
		}
	}
	if before > 0 {
		v.Set("before", strconv.FormatUint(before, 10))
	}
	if len(v) == 0 {
		return "/ui/dlq"
	}
	return "/ui/dlq?" + v.Encode()
}

// dlqView is the dead-letter list's content.
type dlqView struct {
	Enabled  bool
	Query    dlqQuery
	Messages []dlq.Message
	Next     string
	First    string
	Paged    bool
}

func (c *Console) deadLetters(r *http.Request, _ *user) (string, view, error) {
	qs := r.URL.Query()
	q := dlqQuery{Subject: qs.Get("subject"), Reason: qs.Get("reason"), SagaID: qs.Get("saga_id")}
	v := dlqView{Enabled: c.cfg.DLQ != nil, Query: q, First: q.link(0)}
	if c.cfg.DLQ == nil {
		return "dlq", view{Title: "Dead letters", Nav: "dlq", Content: v}, nil
	}
	p := dlq.ListParams{Subject: q.Subject, Reason: q.Reason, SagaID: q.SagaID, Limit: SagasPerPage}
	if s := qs.Get("before"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return "", view{}, badRequest(fmt.Sprintf("before %q: want a sequence number", s))
		}
		p.Before, v.Paged = n, true
	}
	page, err := c.cfg.DLQ.List(r.Context(), p)
	if err != nil {
		return "", view{}, err
	}
	v.Messages = page.Messages
	if page.Next > 0 {
		v.Next = q.link(page.Next)
	}
	return "dlq", view{Title: "Dead letters", Nav: "dlq", Content: v}, nil
}

// deadLetterView is one dead letter, whole.
type deadLetterView struct {
	Msg     *dlq.Message
	Payload document
	Headers []header
}

// header is one header line of a dead letter.
type header struct{ Name, Value string }

func (c *Console) deadLetter(r *http.Request, _ *user) (string, view, error) {
	seq, err := c.seq(r)
	if err != nil {
		return "", view{}, err
	}
	m, err := c.cfg.DLQ.Get(r.Context(), seq)
	if err != nil {
		return "", view{}, err
	}
	v := deadLetterView{Msg: m, Payload: prettyJSON([]byte(m.Payload))}
	for name, values := range m.Headers {
		for _, val := range values {
			v.Headers = append(v.Headers, header{Name: name, Value: val})
		}
	}
	slices.SortFunc(v.Headers, func(a, b header) int {
		return cmp.Or(strings.Compare(a.Name, b.Name), strings.Compare(a.Value, b.Value))
	})
	return "deadletter", view{Title: fmt.Sprintf("Dead letter %d", seq), Nav: "dlq", Content: v}, nil
}

// seq reads the {seq} of the path; without a dead-letter queue every sequence is unknown.
func (c *Console) seq(r *http.Request) (uint64, error) {
	if c.cfg.DLQ == nil {
		return 0, notFound("this node has no dead-letter queue")
	}
	seq, err := strconv.ParseUint(r.PathValue("seq"), 10, 64)
	if err != nil || seq == 0 {
		return 0, notFound(fmt.Sprintf("dead letter %q: want a sequence number", r.PathValue("seq")))
	}
	return seq, nil
}

// changeDeadLetter replays or purges one dead letter.
func (c *Console) changeDeadLetter(w http.ResponseWriter, r *http.Request, u *user) {
	seq, err := c.seq(r)
	if err != nil {
		c.fail(w, r, u, err)
		return
	}
	op := r.PathValue("op")
	reason := strings.TrimSpace(r.PostFormValue("reason"))
	opts := dlq.ChangeOpts{Actor: u.Name, Reason: reason}
	var change func() ([]dlq.Changed, error)
	switch op {
	case "replay":
		change = func() ([]dlq.Changed, error) { return c.cfg.DLQ.Replay(r.Context(), []uint64{seq}, opts) }
	case "purge":
		change = func() ([]dlq.Changed, error) { return c.cfg.DLQ.Purge(r.Context(), []uint64{seq}, opts) }
	default:
		c.fail(w, r, u, notFound(fmt.Sprintf("no action %q on a dead letter (replay, purge)", op)))
		return
	}
	if reason == "" {
		c.fail(w, r, u, badRequest(op+": a reason is required"))
		return
	}
	_, err = change()
	c.audit(r, u, "dlq_"+op, reason, err, slog.Any("seqs", []uint64{seq}), slog.Bool("dry_run", false))
	if err != nil {
		c.fail(w, r, u, fmt.Errorf("%s dead letter %d: %w", op, seq, err))
		return
	}
	http.Redirect(w, r, "/ui/dlq?done="+op, http.StatusSeeOther)
}
