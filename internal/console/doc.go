// Package console is Sagaflow's web console for operators, served under /ui/ by the HTTP listener
// of "sagaflow serve" and "sagaflow dev" (internal/server mounts it beside the API).
//
// It is server-rendered: html/template (which escapes everything it prints, by context) over the
// engine's, the definition registry's and the dead-letter queue's Go APIs, with its templates,
// stylesheet and one small hand-written script embedded in the binary, so building Sagaflow needs
// no Node toolchain. The pages:
//
//   - /ui/sagas: the sagas, newest first, filtered by definition, version, status, needs-attention,
//     start-time range and business key, with counts per status and cursor pagination;
//   - /ui/sagas/{id}: one saga: its status, input and step outputs (pretty-printed, collapsible,
//     capped in size), its steps as a timeline with the compensations in the order they ran, its
//     history page by page, a link to its trace (Config.TraceURL), and the operator actions its
//     state and the viewer's role allow (cancel, redrive, retry the halted step, resolve);
//   - /ui/definitions: every definition version, its steps drawn as a flow (forward row,
//     compensation row beneath) and its sagas per status;
//   - /ui/dlq and /ui/dlq/{seq}: the dead letters, inspected, replayed and purged.
//
// # Live updates
//
// The script polls the page it shows (2 s, doubling up to 30 s while the server does not answer,
// paused while the tab is hidden) and swaps the regions marked data-live in place, so a saga's
// status and timeline move without a reload; a region holding the keyboard focus or an open form
// is left alone.
//
// # Authentication and roles
//
// With an Auth, a browser signs in by pasting an API token, checked by the same httpapi.Auth as
// the API; the token is kept in an HttpOnly, SameSite=Strict cookie (Secure over TLS) scoped to
// /ui/, and its holder's name is the actor recorded in the history and the audit log. Viewers
// read; operators (and admins) also act. Every action is a POST form carrying a CSRF token bound
// to the session and is refused (403) when the token is missing or wrong, when the request comes
// from another origin (http.CrossOriginProtection), or when the role does not allow it. Every
// action requires a reason. Without an Auth (dev, --insecure-no-auth) the console needs no sign-in
// and says so in a banner on every page; the CSRF check still applies.
package console
