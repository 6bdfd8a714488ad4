package console_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/jmoiron/sqlx"

	"github.com/stretchr/testify/require"

	"github.com/sagaflow/sagaflow/definitions"
	"github.com/sagaflow/sagaflow/engine"
	"github.com/sagaflow/sagaflow/engine/httpapi"
	"github.com/sagaflow/sagaflow/internal/console"
	"github.com/sagaflow/sagaflow/internal/pgtest"
	"github.com/sagaflow/sagaflow/saga"
)

// The tokens of the tests' auth: a viewer and an operator.
const (
	viewerToken   = "sft_viewer_token_for_the_console_tests"
	operatorToken = "sft_operator_token_for_the_console_tests"
)

func testAuth(t *testing.T) *httpapi.Auth {
	t.Helper()
	a, err := httpapi.NewAuth([]httpapi.Credential{
		{Name: "vera", Role: httpapi.RoleViewer, SHA256: httpapi.HashToken(viewerToken)},
		{Name: "olga", Role: httpapi.RoleOperator, SHA256: httpapi.HashToken(operatorToken)},
	})
	require.NoError(t, err)
	return a
}

// plain is a console over a real engine on PostgreSQL that runs nothing: its sagas stay where
// Start puts them (running, their first command in the outbox), which is all these tests need.
type plain struct {
	srv *httptest.Server
	db  *sqlx.DB
	eng *engine.Engine
	reg *definitions.Registry
	url string
}

func setupPlain(t *testing.T, auth *httpapi.Auth) *plain {
	t.Helper()
	db := pgtest.New(t)
	db.SetMaxOpenConns(2)
	require.NoError(t, engine.Migrate(t.Context(), db))
	def, err := definitions.New("order", 1).
		Step("reserve-stock", "stock", "Reserve").Compensation("Release").
		Step("charge-card", "payment", "Charge").Compensation("Refund").Build()
	require.NoError(t, err)
	reg := definitions.NewRegistry()
	require.NoError(t, reg.Register(def))
	eng, err := engine.New(engine.Config{DB: db, Definitions: reg})
	require.NoError(t, err)
	c, err := console.New(console.Config{Engine: eng, Definitions: reg, Auth: auth, TraceURL: "http://jaeger.test/trace/{trace_id}"})
	require.NoError(t, err)
	mux := http.NewServeMux()
	mux.Handle(console.Prefix, c)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return &plain{srv: srv, db: db, eng: eng, reg: reg, url: srv.URL}
}

func (p *plain) start(t *testing.T, key string) string {
	t.Helper()
	id, err := p.eng.Start(t.Context(), "order", key, json.RawMessage(`{"amount":5}`), engine.StartOptions{})
	require.NoError(t, err)
	return id
}

// browser is an HTTP client with a cookie jar, signed in with token (none: not signed in).
func (p *plain) browser(t *testing.T, token string) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	c := &http.Client{Jar: jar}
	if token != "" {
		resp, err := c.PostForm(p.url+"/ui/login", url.Values{"token": {token}})
		require.NoError(t, err)
		body := read(t, resp)
		require.Equal(t, http.StatusOK, resp.StatusCode, body)
		require.Contains(t, body, "<h1>Sagas</h1>", "signing in lands on the saga list")
	}
	return c
}

func read(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(b)
}

func get(t *testing.T, c *http.Client, u string) (int, string) {
	t.Helper()
	resp, err := c.Get(u)
	require.NoError(t, err)
	body := read(t, resp)
	return resp.StatusCode, body
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([0-9a-f]+)"`)

// csrfOf returns the CSRF token of a page's forms.
func csrfOf(t *testing.T, body string) string {
	t.Helper()
	m := csrfRE.FindStringSubmatch(body)
	require.NotNil(t, m, "the page has a form with a CSRF token")
	return m[1]
}

func post(t *testing.T, c *http.Client, u string, form url.Values, header http.Header) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, u, strings.NewReader(form.Encode()))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := c.Do(req)
	require.NoError(t, err)
	body := read(t, resp)
	return resp.StatusCode, body
}

func TestEscaping(t *testing.T) {
	t.Parallel()
	p := setupPlain(t, nil)
	const hostile = `<script>alert("key")</script>&'`
	id := p.start(t, hostile)
	// The engine refuses control characters in a key it is given; a stored one (an older
	// version's, or the database edited by hand) and an error text may still carry them.
	stored := hostile + "\x1b[31mred\nsecond line\u202e"
	setStored(t, p, id, stored, "payment: card declined \x1b[0m<b>bold</b>")

	c := p.browser(t, "")
	for _, page := range []string{"/ui/sagas", "/ui/sagas/" + id, "/ui/sagas?key=" + url.QueryEscape(hostile)} {
		t.Run(strings.NewReplacer("/", "_", "?", "_").Replace(page), func(t *testing.T) {
			code, body := get(t, c, p.url+page)
			require.Equal(t, http.StatusOK, code, body)
			require.NotContains(t, body, `<script>alert`)
			require.NotContains(t, body, "<b>bold</b>")
			require.NotContains(t, body, "\x1b")
			require.NotContains(t, body, "\u202e")
			require.Contains(t, body, `&lt;script&gt;alert(&#34;key&#34;)&lt;/script&gt;&amp;&#39;`)
		})
	}
	_, body := get(t, c, p.url+"/ui/sagas/"+id)
	require.Contains(t, body, `\x1b[31mred\nsecond line\u202e`, "control characters are shown as escapes")
	require.Contains(t, body, `card declined \x1b[0m&lt;b&gt;bold&lt;/b&gt;`)
	require.Contains(t, body, `href="http://jaeger.test/trace/`, "the trace link")
}

func TestSignInAndRoles(t *testing.T) {
	t.Parallel()
	p := setupPlain(t, testAuth(t))
	id := p.start(t, "order-42")
	detail := p.url + "/ui/sagas/" + id

	t.Run("SignInRequired", func(t *testing.T) {
		c := p.browser(t, "")
		c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
		resp, err := c.Get(detail)
		require.NoError(t, err)
		read(t, resp)
		require.Equal(t, http.StatusSeeOther, resp.StatusCode)
		require.Equal(t, "/ui/login?next="+url.QueryEscape("/ui/sagas/"+id), resp.Header.Get("Location"))
		code, body := post(t, c, p.url+"/ui/login", url.Values{"token": {"sft_wrong"}}, nil)
		require.Equal(t, http.StatusUnauthorized, code)
		require.Contains(t, body, "unknown token")
	})
	t.Run("Cookie", func(t *testing.T) {
		c := p.browser(t, "")
		c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
		resp, err := c.PostForm(p.url+"/ui/login", url.Values{"token": {viewerToken}, "next": {"//evil.example/x"}})
		require.NoError(t, err)
		read(t, resp)
		require.Equal(t, "/ui/sagas", resp.Header.Get("Location"), "no redirect out of the console")
		ck := resp.Header.Get("Set-Cookie")
		for _, attr := range []string{"sagaflow_session=", "Path=/ui/", "HttpOnly", "SameSite=Strict"} {
			require.Contains(t, ck, attr)
		}
	})
	t.Run("ViewerSeesNoAction", func(t *testing.T) {
		c := p.browser(t, viewerToken)
		code, body := get(t, c, detail)
		require.Equal(t, http.StatusOK, code)
		require.Contains(t, body, "vera")
		require.NotContains(t, body, `data-action="cancel"`)
		// A forged POST: the viewer's own valid CSRF token, but not the role.
		code, body = post(t, c, detail+"/cancel", url.Values{"csrf": {csrfOf(t, body)}, "reason": {"try"}}, nil)
		require.Equal(t, http.StatusForbidden, code, body)
		require.Contains(t, body, "needs operator")
	})
	t.Run("OperatorCSRF", func(t *testing.T) {
		c := p.browser(t, operatorToken)
		code, body := get(t, c, detail)
		require.Equal(t, http.StatusOK, code)
		require.Contains(t, body, `data-action="cancel"`)
		csrf := csrfOf(t, body)
		for name, form := range map[string]url.Values{
			"NoToken":    {"reason": {"forged"}},
			"WrongToken": {"reason": {"forged"}, "csrf": {strings.Repeat("0", len(csrf))}},
		} {
			code, _ := post(t, c, detail+"/cancel", form, nil)
			require.Equal(t, http.StatusForbidden, code, name)
		}
		code, _ = post(t, c, detail+"/cancel", url.Values{"reason": {"forged"}, "csrf": {csrf}},
			http.Header{"Origin": {"http://evil.example"}, "Sec-Fetch-Site": {"cross-site"}})
		require.Equal(t, http.StatusForbidden, code, "a cross-origin POST")
		inst, err := p.eng.Get(t.Context(), id)
		require.NoError(t, err)
		require.Equal(t, saga.StatusRunning, inst.Status, "no forged request acted")

		code, body = post(t, c, detail+"/cancel", url.Values{"csrf": {csrf}, "reason": {"  "}}, nil)
		require.Equal(t, http.StatusBadRequest, code)
		require.Contains(t, body, "a reason is required")

		code, body = post(t, c, detail+"/cancel", url.Values{"csrf": {csrf}, "reason": {"customer asked"}}, nil)
		require.Equal(t, http.StatusOK, code, body)
		require.Contains(t, body, "Cancelled: the saga compensates")
		require.Contains(t, body, `id="saga-status">compensating<`)
		hist, err := p.eng.History(t.Context(), id)
		require.NoError(t, err)
		var cancel *engine.HistoryEntry
		for i := range hist {
			if hist[i].Kind == engine.HistoryCancel {
				cancel = &hist[i]
			}
		}
		require.NotNil(t, cancel)
		require.Equal(t, "olga", cancel.Actor, "the token's name is the actor")
		require.Contains(t, string(cancel.Detail), "customer asked")
	})
}

// setStored writes a business key and a last error as an older version could have stored them.
func setStored(t *testing.T, p *plain, id, key, lastErr string) {
	t.Helper()
	db := p.db
	_, err := db.ExecContext(t.Context(), db.Rebind(`UPDATE sagaflow_instances SET business_key = ?,
		state = jsonb_set(jsonb_set(state, '{business_key}', to_jsonb(?::text)), '{last_error}', to_jsonb(?::text)) WHERE id = ?`), key, key, lastErr, id)
	require.NoError(t, err)
}

func TestPagination(t *testing.T) {
	t.Parallel()
	p := setupPlain(t, nil)
	const n = 2*console.SagasPerPage + 7
	for i := range n {
		p.start(t, fmt.Sprintf("order-%03d", i))
	}
	c := p.browser(t, "")
	rowRE := regexp.MustCompile(`<span class="status status-running">running</span>`)
	nextRE := regexp.MustCompile(`<a href="([^"]+)" rel="next">Older</a>`)
	u := p.url + "/ui/sagas?definition=order"
	var keys []string
	for page := 1; ; page++ {
		code, body := get(t, c, u)
		require.Equal(t, http.StatusOK, code, body)
		require.Contains(t, body, fmt.Sprintf(`running <span class="n">%d</span>`, n), "the counts cover every page")
		rows := len(rowRE.FindAllString(body, -1))
		keys = append(keys, regexp.MustCompile(`>(order-\d{3})<`).FindAllString(body, -1)...)
		m := nextRE.FindStringSubmatch(body)
		if page < 3 {
			require.Equal(t, console.SagasPerPage, rows)
			require.NotNil(t, m, "page %d links to the next", page)
			u = p.url + strings.ReplaceAll(m[1], "&amp;", "&")
			continue
		}
		require.Equal(t, 7, rows)
		require.Nil(t, m, "the last page links to no next one")
		break
	}
	require.Len(t, keys, n)
	require.Equal(t, fmt.Sprintf(">order-%03d<", n-1), keys[0], "newest first")
	require.Equal(t, ">order-000<", keys[n-1])

	code, body := get(t, c, p.url+"/ui/sagas?key=order-007")
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, 1, len(rowRE.FindAllString(body, -1)), "search by business key")
	code, body = get(t, c, p.url+"/ui/sagas?status=completed")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, "No saga matches.")
	// A saga's history, from a cursor: the entries after it, and a link back to the first page.
	id := p.start(t, "order-history")
	seqRE := regexp.MustCompile(`<td>(\d+)</td><td>`)
	code, body = get(t, c, p.url+"/ui/sagas/"+id)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, [][]string{{"<td>1</td><td>", "1"}, {"<td>2</td><td>", "2"}}, seqRE.FindAllStringSubmatch(body, -1), "started, command")
	require.NotContains(t, body, "Later entries")
	code, body = get(t, c, p.url+"/ui/sagas/"+id+"?after=1")
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, [][]string{{"<td>2</td><td>", "2"}}, seqRE.FindAllStringSubmatch(body, -1))
	require.Contains(t, body, `>First</a>`)
	code, _ = get(t, c, p.url+"/ui/sagas/"+id+"?after=x")
	require.Equal(t, http.StatusBadRequest, code)

	code, _ = get(t, c, p.url+"/ui/sagas?status=bogus")
	require.Equal(t, http.StatusBadRequest, code)
	code, _ = get(t, c, p.url+"/ui/sagas?from=yesterday")
	require.Equal(t, http.StatusBadRequest, code)
}

func TestNoAuth(t *testing.T) {
	t.Parallel()
	p := setupPlain(t, nil)
	id := p.start(t, "order-1")
	c := p.browser(t, "")
	code, body := get(t, c, p.url+"/ui/sagas/"+id)
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, "No authentication:")
	code, _ = post(t, p.browser(t, ""), p.url+"/ui/sagas/"+id+"/cancel", url.Values{"csrf": {csrfOf(t, body)}, "reason": {"x"}}, nil)
	require.Equal(t, http.StatusForbidden, code, "another browser's CSRF token")
	code, body = post(t, c, p.url+"/ui/sagas/"+id+"/cancel", url.Values{"csrf": {csrfOf(t, body)}, "reason": {"x"}}, nil)
	require.Equal(t, http.StatusOK, code, body)
	hist, err := p.eng.History(context.WithoutCancel(t.Context()), id)
	require.NoError(t, err)
	require.True(t, slices.ContainsFunc(hist, func(h engine.HistoryEntry) bool { return h.Kind == engine.HistoryCancel && h.Actor == "console" }),
		"without sign-in the actor is the console")
}
