package httpapi_test

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"

	"github.com/sagaflow/sagaflow/definitions"
	"github.com/sagaflow/sagaflow/engine"
	"github.com/sagaflow/sagaflow/engine/httpapi"
	"github.com/sagaflow/sagaflow/internal/dbtest"
)

// lockedBuffer is a log sink the handler writes and the test reads concurrently.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) lines() []map[string]any {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(b.buf.String()), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

// authTokens are the tokens of setupAuth's server, by role.
var authTokens = map[httpapi.Role]string{
	httpapi.RoleViewer: httpapi.NewToken(), httpapi.RoleOperator: httpapi.NewToken(), httpapi.RoleAdmin: httpapi.NewToken(),
}

// setupAuth serves the API of an engine on a real database behind the auth middleware, with one
// token per role (named "watcher", "ops-bot", "root"), and returns its URL and the audit log.
func setupAuth(t *testing.T, db *sqlx.DB) (*httptest.Server, *lockedBuffer) {
	t.Helper()
	require.NoError(t, engine.Migrate(t.Context(), db))
	reg := definitions.NewRegistry()
	def, err := definitions.New("transfer", 1).Step("debit", "bank", "Debit").Compensation("Credit").Build()
	require.NoError(t, err)
	require.NoError(t, reg.Register(def))
	e, err := engine.New(engine.Config{DB: db, Definitions: reg})
	require.NoError(t, err)
	auth, err := httpapi.NewAuth([]httpapi.Credential{
		{Name: "watcher", Role: httpapi.RoleViewer, SHA256: httpapi.HashToken(authTokens[httpapi.RoleViewer])},
		{Name: "ops-bot", Role: httpapi.RoleOperator, SHA256: httpapi.HashToken(authTokens[httpapi.RoleOperator])},
		{Name: "root", Role: httpapi.RoleAdmin, SHA256: httpapi.HashToken(authTokens[httpapi.RoleAdmin])},
	})
	require.NoError(t, err)
	logs := &lockedBuffer{}
	srv := httptest.NewServer(auth.Middleware(httpapi.NewHandler(e, reg, slog.New(slog.NewJSONHandler(logs, nil)))))
	t.Cleanup(srv.Close)
	return srv, logs
}

func TestAuthRejects(t *testing.T) {
	t.Parallel()
	dbtest.Each(t, func(t *testing.T, db *sqlx.DB) {
		srv, _ := setupAuth(t, db)
		ctx := t.Context()
		op := httpapi.NewClient(srv.URL, "", srv.Client()).WithToken(authTokens[httpapi.RoleOperator])
		id, err := op.Start(ctx, httpapi.StartRequest{Definition: "transfer", BusinessKey: "t-1"})
		require.NoError(t, err)

		for _, tt := range []struct {
			name, token, method, path string
			status                    int
			code                      string
		}{
			{"no token", "", http.MethodGet, "/v1/sagas", http.StatusUnauthorized, "unauthorized"},
			{"unknown token", httpapi.NewToken(), http.MethodGet, "/v1/sagas", http.StatusUnauthorized, "unauthorized"},
			{"empty token", " ", http.MethodGet, "/v1/sagas", http.StatusUnauthorized, "unauthorized"},
			{"no token, a write", "", http.MethodPost, "/v1/sagas/" + id + "/cancel", http.StatusUnauthorized, "unauthorized"},
			{"viewer cancels", authTokens[httpapi.RoleViewer], http.MethodPost, "/v1/sagas/" + id + "/cancel", http.StatusForbidden, "forbidden"},
			{"viewer starts", authTokens[httpapi.RoleViewer], http.MethodPost, "/v1/sagas", http.StatusForbidden, "forbidden"},
			{"viewer replays", authTokens[httpapi.RoleViewer], http.MethodPost, "/v1/dlq/replay", http.StatusForbidden, "forbidden"},
		} {
			t.Run(tt.name, func(t *testing.T) {
				req, err := http.NewRequestWithContext(ctx, tt.method, srv.URL+tt.path, strings.NewReader(`{}`))
				require.NoError(t, err)
				if tt.token != "" {
					req.Header.Set("Authorization", "Bearer "+tt.token)
				}
				resp, err := srv.Client().Do(req)
				require.NoError(t, err)
				defer resp.Body.Close()
				require.Equal(t, tt.status, resp.StatusCode)
				require.Equal(t, "application/json", resp.Header.Get("Content-Type"))
				if tt.status == http.StatusUnauthorized {
					require.True(t, strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer"), resp.Header)
				}
				var body httpapi.Error
				require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
				require.Equal(t, tt.code, body.Code)
			})
		}

		inst, err := op.Get(ctx, id)
		require.NoError(t, err)
		require.Equal(t, "running", string(inst.Status), "the refused cancel changed nothing")

		// Probes stay open.
		resp, err := srv.Client().Get(srv.URL + "/healthz")
		require.NoError(t, err)
		require.NoError(t, resp.Body.Close())
		require.Equal(t, http.StatusOK, resp.StatusCode)

		// A viewer reads.
		viewer := httpapi.NewClient(srv.URL, "", srv.Client()).WithToken(authTokens[httpapi.RoleViewer])
		_, err = viewer.Get(ctx, id)
		require.NoError(t, err)
	})
}

// TestAuthActor: the history and the audit line name the token, never what the caller claims; the
// claim is kept as "on behalf of".
func TestAuthActor(t *testing.T) {
	t.Parallel()
	dbtest.Each(t, func(t *testing.T, db *sqlx.DB) {
		srv, logs := setupAuth(t, db)
		ctx := t.Context()
		op := httpapi.NewClient(srv.URL, "alice", srv.Client()).WithToken(authTokens[httpapi.RoleOperator])
		id, err := op.Start(ctx, httpapi.StartRequest{Definition: "transfer", BusinessKey: "t-1"})
		require.NoError(t, err)
		claim := httpapi.NewClient(srv.URL, "admin@bank (approved)", srv.Client()).WithToken(authTokens[httpapi.RoleOperator])
		_, err = claim.Cancel(ctx, id, "customer asked")
		require.NoError(t, err)

		hist, err := op.History(ctx, id)
		require.NoError(t, err)
		actors := map[engine.HistoryKind]string{}
		for _, h := range hist {
			if h.Actor != "" {
				actors[h.Kind] = h.Actor
			}
		}
		require.Equal(t, "ops-bot (on behalf of alice)", actors[engine.HistoryStarted])
		require.Equal(t, "ops-bot (on behalf of admin@bank (approved))", actors[engine.HistoryCancel])

		var audits []map[string]any
		for _, l := range logs.lines() {
			if l["msg"] == "audit" {
				audits = append(audits, l)
			}
		}
		require.Len(t, audits, 2, "one line per action: %v", audits)
		require.Equal(t, "start", audits[0]["action"])
		require.Equal(t, id, audits[0]["saga_id"])
		c := audits[1]
		require.Equal(t, "INFO", c["level"])
		require.Equal(t, "cancel", c["action"])
		require.Equal(t, "ops-bot", c["actor"])
		require.Equal(t, "admin@bank (approved)", c["on_behalf_of"])
		require.Equal(t, id, c["saga_id"])
		require.Equal(t, "customer asked", c["reason"])
		require.Equal(t, "ok", c["outcome"])
		require.Contains(t, c["client"], "127.0.0.1:")

		// A refused action is audited too, with its outcome; a forbidden one never reaches a handler.
		_, err = op.Cancel(ctx, id, "again")
		require.Error(t, err)
		viewer := httpapi.NewClient(srv.URL, "", srv.Client()).WithToken(authTokens[httpapi.RoleViewer])
		_, err = viewer.Cancel(ctx, id, "not allowed")
		require.Error(t, err)
		audits = audits[:0]
		for _, l := range logs.lines() {
			if l["msg"] == "audit" {
				audits = append(audits, l)
			}
		}
		require.Len(t, audits, 3)
		require.Equal(t, "error", audits[2]["outcome"])
		require.Equal(t, "alice", audits[2]["on_behalf_of"])
	})
}

func TestNewAuthValidates(t *testing.T) {
	t.Parallel()
	good := httpapi.HashToken("x")
	for _, tt := range []struct {
		name  string
		creds []httpapi.Credential
		want  []string
	}{
		{"none", nil, []string{"at least one"}},
		{"all wrong", []httpapi.Credential{{Role: "root", SHA256: "abc"}}, []string{"tokens[0].name: required", `tokens[0].role "root"`, "tokens[0].sha256"}},
		{"duplicate", []httpapi.Credential{{Name: "a", Role: httpapi.RoleViewer, SHA256: good}, {Name: "a", Role: httpapi.RoleAdmin, SHA256: good}}, []string{`tokens[1].name "a": duplicate`}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := httpapi.NewAuth(tt.creds)
			require.ErrorIs(t, err, httpapi.ErrAuthConfig)
			for _, w := range tt.want {
				require.ErrorContains(t, err, w)
			}
		})
	}
	_, err := httpapi.NewAuth([]httpapi.Credential{{Name: "a", Role: httpapi.RoleAdmin, SHA256: good}})
	require.NoError(t, err)
}
