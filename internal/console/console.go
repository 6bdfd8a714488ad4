package console

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strings"

	"github.com/sagaflow/sagaflow/definitions"
	"github.com/sagaflow/sagaflow/engine"
	"github.com/sagaflow/sagaflow/engine/httpapi"
	"github.com/sagaflow/sagaflow/internal/dlq"
	"github.com/sagaflow/sagaflow/saga"
)

// Prefix is the path the console is served under.
const Prefix = "/ui/"

// Engine is what the console needs of the orchestrator; *engine.Engine has it.
type Engine interface {
	Get(ctx context.Context, id string) (*engine.Instance, error)
	Summaries(ctx context.Context, f engine.Filter) ([]engine.Summary, error)
	CountByStatus(ctx context.Context, f engine.Filter) (engine.StatusCounts, error)
	HistoryPage(ctx context.Context, id string, p engine.HistoryParams) ([]engine.HistoryEntry, error)
	Cancel(ctx context.Context, id, actor, reason string) error
	Redrive(ctx context.Context, id, actor, reason string) error
	Resolve(ctx context.Context, id, actor, reason string) error
	RetryStep(ctx context.Context, id string, opts *engine.RetryOpts) error
	DefinitionVersions(ctx context.Context) ([]engine.DefinitionVersion, error)
}

// DLQ is what the console needs of the dead-letter queue; *dlq.Queue has it.
type DLQ interface {
	List(ctx context.Context, p dlq.ListParams) (dlq.Page, error)
	Get(ctx context.Context, seq uint64) (*dlq.Message, error)
	Replay(ctx context.Context, seqs []uint64, opts dlq.ChangeOpts) ([]dlq.Changed, error)
	Purge(ctx context.Context, seqs []uint64, opts dlq.ChangeOpts) ([]dlq.Changed, error)
}

// Config configures the console.
type Config struct {
	// Engine is the orchestrator the console reads and acts on. Required.
	Engine Engine
	// Definitions are the definitions the engine runs; nil: none.
	Definitions *definitions.Registry
	// DLQ is the dead-letter queue; nil: the dead-letter pages say there is none.
	DLQ DLQ
	// Auth checks the tokens browsers sign in with (the API's); nil: no sign-in, everyone may act
	// (a banner says so).
	Auth *httpapi.Auth
	// TraceURL is the link to a saga's trace, with {trace_id} replaced by the saga's trace id (for
	// example "http://jaeger:16686/trace/{trace_id}"); empty: no link.
	TraceURL string
	// Logger receives the audit line of every action and the errors of failed pages; nil discards.
	Logger *slog.Logger
}

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Console is the console's http.Handler, to mount at Prefix.
type Console struct {
	cfg   Config
	log   *slog.Logger
	pages map[string]*template.Template
	mux   *http.ServeMux
}

// New returns the console for cfg. It fails only when cfg has no Engine or TraceURL is not a
// URL template with {trace_id}.
func New(cfg Config) (*Console, error) {
	if cfg.Engine == nil {
		return nil, errors.New("console config: Engine is required")
	}
	if cfg.TraceURL != "" && !strings.Contains(cfg.TraceURL, "{trace_id}") {
		return nil, fmt.Errorf("console config: TraceURL %q: want a URL with {trace_id} in it", cfg.TraceURL)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Definitions == nil {
		cfg.Definitions = definitions.NewRegistry()
	}
	pages, err := parsePages()
	if err != nil {
		return nil, err
	}
	c := &Console{cfg: cfg, log: cfg.Logger.With("component", "console"), pages: pages, mux: http.NewServeMux()}
	c.routes()
	return c, nil
}

func (c *Console) routes() {
	static, _ := fs.Sub(staticFS, "static") // the directory is embedded: Sub cannot fail
	c.mux.Handle("GET /ui/static/", http.StripPrefix("/ui/static/", http.FileServerFS(static)))
	c.mux.HandleFunc("GET /ui/{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/ui/sagas", http.StatusSeeOther)
	})
	c.mux.HandleFunc("GET /ui/login", c.loginPage)
	c.mux.HandleFunc("POST /ui/login", c.login)
	c.mux.HandleFunc("POST /ui/logout", c.action(httpapi.RoleViewer, c.logout))
	c.mux.HandleFunc("GET /ui/sagas", c.page(c.sagas))
	c.mux.HandleFunc("GET /ui/sagas/{id}", c.page(c.saga))
	c.mux.HandleFunc("POST /ui/sagas/{id}/{op}", c.action(httpapi.RoleOperator, c.operate))
	c.mux.HandleFunc("GET /ui/definitions", c.page(c.definitions))
	c.mux.HandleFunc("GET /ui/dlq", c.page(c.deadLetters))
	c.mux.HandleFunc("GET /ui/dlq/{seq}", c.page(c.deadLetter))
	c.mux.HandleFunc("POST /ui/dlq/{seq}/{op}", c.action(httpapi.RoleOperator, c.changeDeadLetter))
}

// ServeHTTP serves the console's pages; cross-origin POSTs are refused before any handler runs.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("X-Frame-Options", "DENY")
	if err := crossOrigin.Check(r); err != nil {
		c.forbidden(w, r, "this request comes from another site: "+err.Error())
		return
	}
	c.mux.ServeHTTP(w, r)
}

// crossOrigin refuses state-changing requests another site's page makes (Sec-Fetch-Site, Origin).
var crossOrigin = http.NewCrossOriginProtection()

// view is what every page template gets.
type view struct {
	Title   string
	Nav     string // the nav entry to mark current
	User    *user
	NoAuth  bool
	CSRF    string
	Flash   string
	Error   string
	Content any
}

// page wraps a GET handler: it finds the user (redirecting to the sign-in page when there is
// none) and renders the template the handler names with what it returns.
func (c *Console) page(fn func(r *http.Request, u *user) (string, view, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		u, ok := c.user(w, r)
		if !ok {
			http.Redirect(w, r, "/ui/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
			return
		}
		name, v, err := fn(r, u)
		if err != nil {
			c.fail(w, r, u, err)
			return
		}
		v.Flash = flashes[r.URL.Query().Get("done")]
		c.render(w, r, http.StatusOK, name, u, v)
	}
}

// render executes the page template name into a buffer, so a failing template sends a clean 500.
func (c *Console) render(w http.ResponseWriter, r *http.Request, status int, name string, u *user, v view) {
	v.User, v.NoAuth = u, c.cfg.Auth == nil
	if u != nil {
		v.CSRF = u.csrf
	}
	t, ok := c.pages[name]
	if !ok {
		panic("console: no page template " + name) // a programmer error: every name is a constant
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "layout", v); err != nil {
		c.log.ErrorContext(r.Context(), "render page", "page", name, "err", err)
		http.Error(w, "internal error: the page failed to render; the server's log has the cause", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = buf.WriteTo(w) // the client went away; nothing to do
}

// fail renders the error page with the status err calls for.
func (c *Console) fail(w http.ResponseWriter, r *http.Request, u *user, err error) {
	status := statusOf(err)
	msg := err.Error()
	if status == http.StatusInternalServerError {
		c.log.ErrorContext(r.Context(), "page failed", "path", r.URL.Path, "err", err)
		msg = "internal error: the page failed on the server; its log has the cause"
	}
	c.render(w, r, status, "error", u, view{Title: http.StatusText(status), Error: msg})
}

// forbidden answers 403 with the error page (no user: nothing of the session is shown).
func (c *Console) forbidden(w http.ResponseWriter, r *http.Request, msg string) {
	c.render(w, r, http.StatusForbidden, "error", nil, view{Title: "Forbidden", Error: msg})
}

// badRequest is an error in what the browser sent (a filter, a form).
type badRequest string

func (b badRequest) Error() string { return string(b) }

// statusOf maps an error to its HTTP status, as the API does.
func statusOf(err error) int {
	var br badRequest
	var nf notFound
	switch {
	case errors.As(err, &br), errors.Is(err, engine.ErrInvalidInput), errors.Is(err, dlq.ErrInvalidParams), errors.Is(err, dlq.ErrReasonRequired):
		return http.StatusBadRequest
	case errors.Is(err, engine.ErrTooLarge):
		return http.StatusRequestEntityTooLarge
	case errors.As(err, &nf), errors.Is(err, engine.ErrNotFound), errors.Is(err, definitions.ErrNotFound), errors.Is(err, dlq.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, saga.ErrFinished), errors.Is(err, saga.ErrCompensating), errors.Is(err, saga.ErrNotFailed),
		errors.Is(err, saga.ErrNotRetryable), errors.Is(err, saga.ErrNotCancellable), errors.Is(err, engine.ErrNoAttention),
		errors.Is(err, engine.ErrConflict), errors.Is(err, dlq.ErrNotReplayable):
		return http.StatusConflict
	}
	return http.StatusInternalServerError
}
