package httpapi

import "errors"

// ErrAuthConfig reports an auth file or credential list that cannot be used (a missing name, an
// unknown role, a hash that is not 64 hex digits).
var ErrAuthConfig = errors.New("invalid auth configuration")
