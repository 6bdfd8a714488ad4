package httpapi

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"

	goccy "github.com/goccy/go-yaml"
)

// Role is what a token may do. Each role can do everything the ones before it can.
type Role string

// The roles: a viewer reads (GET), an operator also starts, cancels, redrives, retries, resolves
// and replays or purges dead letters, an admin may do everything.
const (
	RoleViewer   Role = "viewer"
	RoleOperator Role = "operator"
	RoleAdmin    Role = "admin"
)

// Allows reports whether a holder of role r may do what needs role need (an admin may do what an
// operator may, an operator what a viewer may). An unknown role allows nothing.
func (r Role) Allows(need Role) bool { return r.rank() > 0 && r.rank() >= need.rank() }

func (r Role) rank() int {
	switch r {
	case RoleViewer:
		return 1
	case RoleOperator:
		return 2
	case RoleAdmin:
		return 3
	}
	return 0
}

// Credential is one API token of an auth file: its holder's name (recorded as the actor of what it
// does), its role and the SHA-256 of the token in lowercase hex. The token itself is never stored.
type Credential struct {
	Name   string `json:"name" yaml:"name"`
	Role   Role   `json:"role" yaml:"role"`
	SHA256 string `json:"sha256" yaml:"sha256"`
}

// AuthFile is the file "sagaflow serve --auth-file" reads, YAML or JSON.
type AuthFile struct {
	Tokens []Credential `json:"tokens" yaml:"tokens"`
}

// Auth checks the bearer tokens of API requests. Build it with NewAuth or LoadAuth.
type Auth struct {
	creds []credential
}

type credential struct {
	name string
	role Role
	hash [sha256.Size]byte
}

// NewAuth checks the credentials (every problem reported at once) and returns their checker.
func NewAuth(creds []Credential) (*Auth, error) {
	var errs []error
	a := &Auth{}
	names := map[string]bool{}
	for i, c := range creds {
		var cr credential
		if c.Name == "" {
			errs = append(errs, fmt.Errorf("tokens[%d].name: required", i))
		} else if names[c.Name] {
			errs = append(errs, fmt.Errorf("tokens[%d].name %q: duplicate", i, c.Name))
		}
		names[c.Name] = true
		if c.Role.rank() == 0 {
			errs = append(errs, fmt.Errorf("tokens[%d].role %q: want viewer, operator or admin", i, c.Role))
		}
		b, err := hex.DecodeString(c.SHA256)
		if err != nil || len(b) != sha256.Size {
			errs = append(errs, fmt.Errorf("tokens[%d].sha256: want 64 hex digits (the SHA-256 of the token)", i))
		} else {
			copy(cr.hash[:], b)
		}
		cr.name, cr.role = c.Name, c.Role
		a.creds = append(a.creds, cr)
	}
	if len(creds) == 0 {
		errs = append(errs, errors.New("tokens: at least one is required"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrAuthConfig, err)
	}
	return a, nil
}

// LoadAuth reads an auth file (YAML or JSON; JSON is YAML too).
func LoadAuth(path string) (*Auth, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read auth file: %w", err)
	}
	var f AuthFile
	if err := goccy.UnmarshalWithOptions(b, &f, goccy.Strict()); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrAuthConfig, path, err)
	}
	a, err := NewAuth(f.Tokens)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return a, nil
}

// HashToken returns the SHA-256 of token in lowercase hex, the form an auth file stores. A fast
// hash is enough: tokens are 32 random bytes, so there is no dictionary to try and 2^256 guesses
// to make; a slow hash protects guessable secrets (passwords), which these are not.
func HashToken(token string) string {
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:])
}

// NewToken returns a new random token: 32 bytes from crypto/rand, hex-encoded, "sft_" first so a
// leaked one is easy to recognise in a scan.
func NewToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (it crashes the program instead)
	return "sft_" + hex.EncodeToString(b)
}

// Principal is who an authenticated request comes from.
type Principal struct {
	Name string
	Role Role
}

type principalKey struct{}

// PrincipalFrom returns the principal of an authenticated request's context.
func PrincipalFrom(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	return p, ok
}

// Check returns the principal of token and true, or false when no credential has it. It compares
// the token's hash with every credential's in constant time (the loop does not stop at a match, so
// the time says nothing about which one matched). The API's Middleware and the web console's
// sign-in (internal/console) both check tokens with it.
func (a *Auth) Check(token string) (Principal, bool) {
	h := sha256.Sum256([]byte(token))
	var found Principal
	ok := 0
	for _, c := range a.creds {
		if subtle.ConstantTimeCompare(h[:], c.hash[:]) == 1 {
			found, ok = Principal{Name: c.name, Role: c.role}, 1
		}
	}
	return found, ok == 1
}

// openPaths are served without a token: probes and the scraper must not need one, and the OpenAPI
// document describes the routes without revealing any data.
var openPaths = map[string]bool{"/healthz": true, "/readyz": true, "/metrics": true, "/openapi.json": true}

// Middleware requires a valid bearer token on every request but /healthz, /readyz, /metrics and
// /openapi.json:
// none or an unknown one is a 401 (with WWW-Authenticate: Bearer), a role too low for the request a
// 403. GET and HEAD need viewer, every other method operator. The principal is in the request's
// context for actor and audit. A nil *Auth lets every request through (no authentication).
func (a *Auth) Middleware(next http.Handler) http.Handler {
	if a == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if openPaths[r.URL.Path] {
			next.ServeHTTP(w, r)
			return
		}
		token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		token = strings.TrimSpace(token)
		p, known := a.Check(token)
		if !ok || token == "" || !known {
			w.Header().Set("WWW-Authenticate", `Bearer realm="sagaflow"`)
			writeJSON(w, http.StatusUnauthorized, Error{Message: "authentication required: send Authorization: Bearer <token>", Code: "unauthorized"})
			return
		}
		need := RoleOperator
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			need = RoleViewer
		}
		if p.Role.rank() < need.rank() {
			writeJSON(w, http.StatusForbidden, Error{
				Message: fmt.Sprintf("%s %s needs role %s; token %q has %s", r.Method, r.URL.Path, need, p.Name, p.Role), Code: "forbidden"})
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, p)))
	})
}

// actor is who the history records for a request: the authenticated token's name, with a
// caller-supplied X-Sagaflow-Actor only as "on behalf of" (a caller cannot claim to be someone
// else). Without authentication (dev, --insecure-no-auth) it is the header, or "api".
func actor(r *http.Request) string {
	name, behalf := actorParts(r)
	if behalf != "" {
		return name + " (on behalf of " + behalf + ")"
	}
	return name
}

// actorParts returns the actor's name and whom it acts for (empty when no one else).
func actorParts(r *http.Request) (name, behalf string) {
	hdr := strings.TrimSpace(r.Header.Get(ActorHeader))
	if p, ok := PrincipalFrom(r.Context()); ok {
		if hdr == p.Name {
			hdr = ""
		}
		return p.Name, hdr
	}
	if hdr == "" {
		return "api", ""
	}
	return hdr, ""
}

// audit writes the one audit line of an operator action: who (the authenticated actor, and whom
// it acts for), what, on which saga or dead letters, why, from where, and how it ended. Every
// state-changing handler calls it once, after the action, so the line says whether it took effect.
func (h *handler) audit(r *http.Request, action, reason string, err error, target ...slog.Attr) {
	name, behalf := actorParts(r)
	attrs := []slog.Attr{
		slog.String("actor", name), slog.String("on_behalf_of", behalf), slog.String("action", action),
		slog.String("reason", reason), slog.String("client", r.RemoteAddr),
	}
	attrs = append(attrs, target...)
	if err != nil {
		attrs = append(attrs, slog.String("outcome", "error"), slog.String("err", err.Error()))
	} else {
		attrs = append(attrs, slog.String("outcome", "ok"))
	}
	h.log.LogAttrs(r.Context(), slog.LevelInfo, "audit", attrs...)
}
