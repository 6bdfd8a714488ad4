package console

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/sagaflow/sagaflow/engine/httpapi"
)

// Cookies of the console, both HttpOnly, SameSite=Strict, scoped to Prefix, Secure over TLS.
const (
	// sessionCookie holds the API token a browser signed in with.
	sessionCookie = "sagaflow_session"
	// browserCookie holds a random secret per browser when there is no sign-in (no Auth): the
	// CSRF tokens are bound to it.
	browserCookie = "sagaflow_browser"
	// csrfField is the form field of the CSRF token.
	csrfField = "csrf"
	// sessionLifetime is how long a sign-in lasts.
	sessionLifetime = 12 * time.Hour
)

// user is who a request comes from: the token's holder, or "console" without sign-in.
type user struct {
	Name string
	Role httpapi.Role
	// csrf is the token every POST form of this session carries.
	csrf string
}

// CanOperate reports whether the user may act (cancel, redrive, retry, resolve, replay, purge).
func (u *user) CanOperate() bool { return u.Role.Allows(httpapi.RoleOperator) }

// user returns the request's user, or false when it has not signed in (or its token is no longer
// valid). Without an Auth everyone is an admin named "console"; the browser is given its secret
// cookie on first sight so its forms can carry a CSRF token.
func (c *Console) user(w http.ResponseWriter, r *http.Request) (*user, bool) {
	if c.cfg.Auth == nil {
		secret := ""
		if ck, err := r.Cookie(browserCookie); err == nil && len(ck.Value) == 64 {
			secret = ck.Value
		} else if w != nil {
			secret = randomHex()
			setCookie(w, r, browserCookie, secret, 0)
		}
		return &user{Name: "console", Role: httpapi.RoleAdmin, csrf: csrfToken(secret)}, true
	}
	ck, err := r.Cookie(sessionCookie)
	if err != nil || ck.Value == "" {
		return nil, false
	}
	p, ok := c.cfg.Auth.Check(ck.Value)
	if !ok {
		return nil, false
	}
	return &user{Name: p.Name, Role: p.Role, csrf: csrfToken(ck.Value)}, true
}

// csrfToken derives the CSRF token of a session from its secret (the token signed in with, or the
// browser's secret cookie): another site can read neither, so it cannot forge the token, and every
// replica computes the same one without shared state.
func csrfToken(secret string) string {
	if secret == "" {
		return ""
	}
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte("sagaflow console csrf v1"))
	return hex.EncodeToString(m.Sum(nil))
}

func randomHex() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return hex.EncodeToString(b)
}

func setCookie(w http.ResponseWriter, r *http.Request, name, value string, maxAge time.Duration) {
	ck := &http.Cookie{Name: name, Value: value, Path: Prefix, HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil}
	switch {
	case maxAge > 0:
		ck.MaxAge = int(maxAge.Seconds())
	case maxAge < 0:
		ck.MaxAge = -1
	}
	http.SetCookie(w, ck)
}

// action wraps a POST handler: it refuses (403) a request without a user, with a missing or wrong
// CSRF token, or from a user whose role is below need.
func (c *Console) action(need httpapi.Role, fn func(w http.ResponseWriter, r *http.Request, u *user)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, maxForm)
		u, ok := c.user(nil, r)
		if !ok {
			c.forbidden(w, r, "sign in first: this action needs a signed-in "+string(need))
			return
		}
		got := r.PostFormValue(csrfField)
		if u.csrf == "" || subtle.ConstantTimeCompare([]byte(got), []byte(u.csrf)) != 1 {
			c.log.WarnContext(r.Context(), "refused a forged or stale form", "path", r.URL.Path, "actor", u.Name, "client", r.RemoteAddr)
			c.forbidden(w, r, "this form is stale or was not sent by the console (CSRF token missing or wrong): reload the page and try again")
			return
		}
		if !u.Role.Allows(need) {
			c.forbidden(w, r, "role "+string(u.Role)+" of "+u.Name+" cannot do this: it needs "+string(need))
			return
		}
		fn(w, r, u)
	}
}

// maxForm bounds a form's body: a reason and a corrected input, not a file upload.
const maxForm = 1 << 20

// loginView is the sign-in page's content.
type loginView struct {
	Next string
}

func (c *Console) loginPage(w http.ResponseWriter, r *http.Request) {
	if c.cfg.Auth == nil {
		http.Redirect(w, r, "/ui/sagas", http.StatusSeeOther)
		return
	}
	c.render(w, r, http.StatusOK, "login", nil, view{Title: "Sign in", Content: loginView{Next: safeNext(r.URL.Query().Get("next"))}})
}

// login checks the pasted token with the API's Auth and keeps it in the session cookie.
func (c *Console) login(w http.ResponseWriter, r *http.Request) {
	if c.cfg.Auth == nil {
		http.Redirect(w, r, "/ui/sagas", http.StatusSeeOther)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxForm)
	token := strings.TrimSpace(r.PostFormValue("token"))
	next := safeNext(r.PostFormValue("next"))
	p, ok := c.cfg.Auth.Check(token)
	if token == "" || !ok {
		c.log.LogAttrs(r.Context(), slog.LevelWarn, "console sign-in refused", slog.String("client", r.RemoteAddr))
		c.render(w, r, http.StatusUnauthorized, "login", nil, view{Title: "Sign in", Error: "unknown token: paste an API token of the auth file (sagaflow auth new-token)",
			Content: loginView{Next: next}})
		return
	}
	c.log.LogAttrs(r.Context(), slog.LevelInfo, "console sign-in", slog.String("actor", p.Name), slog.String("role", string(p.Role)), slog.String("client", r.RemoteAddr))
	setCookie(w, r, sessionCookie, token, sessionLifetime)
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (c *Console) logout(w http.ResponseWriter, r *http.Request, _ *user) {
	setCookie(w, r, sessionCookie, "", -1)
	http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
}

// safeNext keeps a post-sign-in destination inside the console (no open redirect).
func safeNext(next string) string {
	u, err := url.Parse(next)
	if err != nil || u.Scheme != "" || u.Host != "" || !strings.HasPrefix(u.Path, Prefix) || strings.HasPrefix(next, "//") {
		return "/ui/sagas"
	}
	return u.RequestURI()
}

// audit writes the one audit line of an action, in the API's shape (see httpapi): who, what, on
// which saga or dead letter, why, from where, and how it ended.
func (c *Console) audit(r *http.Request, u *user, action, reason string, err error, target ...slog.Attr) {
	attrs := []slog.Attr{
		slog.String("actor", u.Name), slog.String("on_behalf_of", ""), slog.String("action", action),
		slog.String("reason", reason), slog.String("client", r.RemoteAddr), slog.String("via", "console"),
	}
	attrs = append(attrs, target...)
	if err != nil {
		attrs = append(attrs, slog.String("outcome", "error"), slog.String("err", err.Error()))
	} else {
		attrs = append(attrs, slog.String("outcome", "ok"))
	}
	c.log.LogAttrs(r.Context(), slog.LevelInfo, "audit", attrs...)
}
