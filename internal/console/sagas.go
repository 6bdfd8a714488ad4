package console

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sagaflow/sagaflow/engine"
	"github.com/sagaflow/sagaflow/saga"
)

// Page sizes.
const (
	// SagasPerPage is the length of a page of the saga list.
	SagasPerPage = 50
	// HistoryPerPage is the length of a page of a saga's history.
	HistoryPerPage = 50
)

// statuses are the saga statuses in the order the list shows their counts.
var statuses = []saga.Status{saga.StatusRunning, saga.StatusCompensating, saga.StatusFailed, saga.StatusCompleted, saga.StatusCompensated}

// inputTime is the form of the datetime-local inputs of the list's time range, read as UTC.
const inputTime = "2006-01-02T15:04"

// listQuery is the list's filter as the form sends it.
type listQuery struct {
	Definition, Version, Status, Key, From, To string
	Attention                                  bool
}

// filter turns the query into the engine's filter, naming the field of anything malformed.
func (q listQuery) filter() (engine.Filter, error) {
	f := engine.Filter{Definition: q.Definition, Status: q.Status, BusinessKey: q.Key, NeedsAttention: q.Attention, Limit: SagasPerPage}
	if q.Version != "" {
		v, err := strconv.Atoi(q.Version)
		if err != nil || v < 1 {
			return f, badRequest(fmt.Sprintf("version %q: want a whole number from 1", q.Version))
		}
		f.Version = v
	}
	if q.Status != "" && !slices.Contains(statuses, saga.Status(q.Status)) {
		return f, badRequest(fmt.Sprintf("status %q: want running, compensating, failed, completed or compensated", q.Status))
	}
	if err := engine.CheckBusinessKey(q.Key); err != nil {
		return f, badRequest("business key: " + err.Error())
	}
	var err error
	if f.StartedAfter, err = parseInputTime("from", q.From); err != nil {
		return f, err
	}
	if f.StartedBefore, err = parseInputTime("to", q.To); err != nil {
		return f, err
	}
	return f, nil
}

func parseInputTime(field, s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.ParseInLocation(inputTime, s, time.UTC)
	if err != nil {
		if t, err = time.Parse(time.RFC3339, s); err != nil {
			return time.Time{}, badRequest(fmt.Sprintf("%s %q: want a time like 2026-01-31T13:45 (UTC)", field, s))
		}
	}
	return t.UTC(), nil
}

// values encodes the query for links (a page, a status count), without the empty fields.
func (q listQuery) values() url.Values {
	v := url.Values{}
	for k, s := range map[string]string{"definition": q.Definition, "version": q.Version, "status": q.Status, "key": q.Key, "from": q.From, "to": q.To} {
		if s != "" {
			v.Set(k, s)
		}
	}
	if q.Attention {
		v.Set("attention", "1")
	}
	return v
}

// link returns the list's URL for q with the status replaced and, when before is set, that page.
func (q listQuery) link(status saga.Status, before string) string {
	q.Status = string(status)
	v := q.values()
	if before != "" {
		v.Set("before", before)
	}
	if len(v) == 0 {
		return "/ui/sagas"
	}
	return "/ui/sagas?" + v.Encode()
}

// statusCount is one status of the list's counts.
type statusCount struct {
	Status  saga.Status
	Count   int64
	Link    string
	Current bool
}

// sagasView is the list page's content.
type sagasView struct {
	Query       listQuery
	Definitions []string
	Statuses    []saga.Status
	Counts      []statusCount
	Total       int64
	AllLink     string
	Sagas       []engine.Summary
	Next        string
	First       string
	Paged       bool
}

func (c *Console) sagas(r *http.Request, _ *user) (string, view, error) {
	qs := r.URL.Query()
	q := listQuery{Definition: qs.Get("definition"), Version: qs.Get("version"), Status: qs.Get("status"), Key: qs.Get("key"),
		From: qs.Get("from"), To: qs.Get("to"), Attention: qs.Get("attention") == "1"}
	v := sagasView{Query: q, Statuses: statuses, Definitions: c.definitionNames()}
	f, err := q.filter()
	if err != nil {
		return "", view{}, err
	}
	f.Before = qs.Get("before")
	sums, err := c.cfg.Engine.Summaries(r.Context(), f)
	if err != nil {
		return "", view{}, err
	}
	counts, err := c.cfg.Engine.CountByStatus(r.Context(), f)
	if err != nil {
		return "", view{}, err
	}
	for _, s := range statuses {
		v.Counts = append(v.Counts, statusCount{Status: s, Count: counts[s], Link: q.link(s, ""), Current: q.Status == string(s)})
		v.Total += counts[s]
	}
	v.AllLink = q.link("", "")
	v.Sagas = sums
	if len(sums) == SagasPerPage {
		v.Next = q.link(saga.Status(q.Status), sums[len(sums)-1].ID)
	}
	v.Paged = f.Before != ""
	v.First = q.link(saga.Status(q.Status), "")
	return "sagas", view{Title: "Sagas", Nav: "sagas", Content: v}, nil
}

// definitionNames lists the names of the registered definitions, sorted, once each.
func (c *Console) definitionNames() []string {
	var names []string
	for _, d := range c.cfg.Definitions.List() {
		if !slices.Contains(names, d.Name) {
			names = append(names, d.Name)
		}
	}
	slices.Sort(names)
	return names
}

// stepView is one step of a saga's timeline.
type stepView struct {
	saga.StepState
	Index                int
	Service, Command     string
	Compensation         string
	Current              bool
	Duration, CompDuring string
	Output               document
	HasOutput            bool
}

// compensationView is one compensation, in the order it ran (or will run).
type compensationView struct {
	Step     string
	Command  string
	Status   saga.StepStatus
	Attempts int
	Started  time.Time
	Finished time.Time
	Duration string
	Pending  bool
}

// sagaView is the detail page's content.
type sagaView struct {
	Inst          *engine.Instance
	Input         document
	Steps         []stepView
	Compensations []compensationView
	History       []historyView
	HistoryNext   string
	HistoryFirst  string
	HistoryPaged  bool
	TraceURL      string
	CurrentStep   string
	CanCancel     bool
	CanRedrive    bool
	CanRetry      bool
	CanResolve    bool
	RetryStep     string
}

// historyView is one history entry with its detail pretty-printed.
type historyView struct {
	engine.HistoryEntry
	Details string
}

func (c *Console) saga(r *http.Request, u *user) (string, view, error) {
	id := r.PathValue("id")
	inst, err := c.cfg.Engine.Get(r.Context(), id)
	if err != nil {
		return "", view{}, err
	}
	var after int64
	if s := r.URL.Query().Get("after"); s != "" {
		if after, err = strconv.ParseInt(s, 10, 64); err != nil || after < 0 {
			return "", view{}, badRequest(fmt.Sprintf("after %q: want a history sequence number", s))
		}
	}
	hist, err := c.cfg.Engine.HistoryPage(r.Context(), id, engine.HistoryParams{After: after, Limit: HistoryPerPage})
	if err != nil {
		return "", view{}, err
	}
	v := sagaView{Inst: inst, Input: prettyJSON(inst.Data.Input), HistoryPaged: after > 0, HistoryFirst: "/ui/sagas/" + url.PathEscape(id) + "#history"}
	for _, h := range hist {
		v.History = append(v.History, historyView{HistoryEntry: h, Details: string(h.Detail)})
	}
	if len(hist) == HistoryPerPage {
		v.HistoryNext = fmt.Sprintf("/ui/sagas/%s?after=%d#history", url.PathEscape(id), hist[len(hist)-1].Seq)
	}
	// A version no longer registered still shows what the instance stores: timeline takes a nil def.
	def, _ := c.cfg.Definitions.Get(inst.Definition, inst.Version)
	v.Steps, v.Compensations = timeline(inst, def)
	if inst.Step >= 0 && inst.Step < len(inst.Steps) {
		v.CurrentStep = inst.Steps[inst.Step].Name
	}
	if c.cfg.TraceURL != "" && inst.TraceID != "" {
		v.TraceURL = strings.ReplaceAll(c.cfg.TraceURL, "{trace_id}", url.PathEscape(inst.TraceID))
	}
	if u.CanOperate() {
		v.CanCancel = inst.Status == saga.StatusRunning
		v.CanRedrive = inst.Status == saga.StatusFailed
		v.CanResolve = inst.NeedsAttention
		if inst.Status == saga.StatusFailed && inst.Step >= 0 && inst.Step < len(inst.Steps) && inst.Steps[inst.Step].Status == saga.StepHalted {
			v.CanRetry, v.RetryStep = true, inst.Steps[inst.Step].Name
		}
	}
	return "saga", view{Title: "Saga " + printable(inst.BusinessKey), Nav: "sagas", Content: v}, nil
}

// timeline builds the steps and the compensations of inst; def may be nil (a version no longer
// registered): the steps then show what the instance stores.
func timeline(inst *engine.Instance, def *saga.Definition) ([]stepView, []compensationView) {
	steps := make([]stepView, 0, len(inst.Steps))
	var comps []compensationView
	for i, st := range inst.Steps {
		sv := stepView{StepState: st, Index: i + 1, Current: i == inst.Step && !inst.Status.Finished(),
			Duration: since(st.StartedAt, st.FinishedAt), CompDuring: since(st.CompensationStartedAt, st.CompensationFinishedAt)}
		if def != nil && i < len(def.Steps) {
			sv.Service, sv.Command, sv.Compensation = def.Steps[i].Service, def.Steps[i].Command, def.Steps[i].Compensation
		}
		if out, ok := inst.Data.Steps[st.Name]; ok {
			sv.Output, sv.HasOutput = prettyJSON(out), true
		}
		steps = append(steps, sv)
		if st.CompensationAttempts > 0 {
			comps = append(comps, compensationView{Step: st.Name, Command: sv.Compensation, Status: st.Status, Attempts: st.CompensationAttempts,
				Started: st.CompensationStartedAt, Finished: st.CompensationFinishedAt, Duration: sv.CompDuring})
		}
	}
	// The compensations that ran, in the order they started; then those still to run, in order.
	slices.SortStableFunc(comps, func(a, b compensationView) int { return a.Started.Compare(b.Started) })
	for _, i := range inst.ToCompensate {
		if i < 0 || i >= len(steps) || inst.Steps[i].CompensationAttempts > 0 {
			continue
		}
		comps = append(comps, compensationView{Step: steps[i].Name, Command: steps[i].Compensation, Status: saga.StepPending, Pending: true})
	}
	return steps, comps
}

// operate runs an operator action on a saga and goes back to it with the outcome.
func (c *Console) operate(w http.ResponseWriter, r *http.Request, u *user) {
	id, op := r.PathValue("id"), r.PathValue("op")
	reason := strings.TrimSpace(r.PostFormValue("reason"))
	back := "/ui/sagas/" + url.PathEscape(id)
	var run func() error
	switch op {
	case "cancel":
		run = func() error { return c.cfg.Engine.Cancel(r.Context(), id, u.Name, reason) }
	case "redrive":
		run = func() error { return c.cfg.Engine.Redrive(r.Context(), id, u.Name, reason) }
	case "resolve":
		run = func() error { return c.cfg.Engine.Resolve(r.Context(), id, u.Name, reason) }
	case "retry":
		opts := &engine.RetryOpts{Actor: u.Name, Reason: reason}
		if patch := strings.TrimSpace(r.PostFormValue("input_patch")); patch != "" {
			opts.InputPatch = []byte(patch)
		}
		run = func() error { return c.cfg.Engine.RetryStep(r.Context(), id, opts) }
	default:
		c.fail(w, r, u, notFound(fmt.Sprintf("no action %q on a saga (cancel, redrive, retry, resolve)", op)))
		return
	}
	if reason == "" {
		c.fail(w, r, u, badRequest(op+": a reason is required"))
		return
	}
	err := run()
	c.audit(r, u, op, reason, err, slog.String("saga_id", id))
	if err != nil {
		c.fail(w, r, u, fmt.Errorf("%s saga %s: %w", op, id, err))
		return
	}
	http.Redirect(w, r, back+"?done="+op, http.StatusSeeOther)
}

// flashes are the messages shown after an action (?done=<action>): fixed texts, so a link cannot
// make the console say something else.
var flashes = map[string]string{
	"cancel":  "Cancelled: the saga compensates what it did.",
	"redrive": "Redriven: the saga resumes with a fresh retry budget.",
	"resolve": "Resolved: the saga left the operator's queue.",
	"retry":   "Retried: the halted step runs again.",
	"replay":  "Replayed: the message is back on its subject.",
	"purge":   "Purged: the message is gone from the dead-letter queue.",
}

// notFound is a page or action that does not exist.
type notFound string

func (n notFound) Error() string { return string(n) }
