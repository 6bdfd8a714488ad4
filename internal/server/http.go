package server

import (
	"net/http"
	"time"
)

// HTTPLimits bounds what one client can hold of an HTTP server, so slow or hostile clients cannot
// pile up connections (a client that drips its headers a byte at a time is cut off after
// ReadHeaderTimeout). A zero field means its default.
type HTTPLimits struct {
	// ReadHeaderTimeout bounds reading a request's headers; default 5s.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading a whole request, body included; default 30s.
	ReadTimeout time.Duration
	// WriteTimeout bounds writing a response; default 60s.
	WriteTimeout time.Duration
	// IdleTimeout closes a keep-alive connection idle this long; default 120s.
	IdleTimeout time.Duration
	// MaxHeaderBytes caps a request's headers (431 beyond it); default 64 KiB.
	MaxHeaderBytes int
}

func (l HTTPLimits) withDefaults() HTTPLimits {
	if l.ReadHeaderTimeout <= 0 {
		l.ReadHeaderTimeout = 5 * time.Second
	}
	if l.ReadTimeout <= 0 {
		l.ReadTimeout = 30 * time.Second
	}
	if l.WriteTimeout <= 0 {
		l.WriteTimeout = 60 * time.Second
	}
	if l.IdleTimeout <= 0 {
		l.IdleTimeout = 120 * time.Second
	}
	if l.MaxHeaderBytes <= 0 {
		l.MaxHeaderBytes = 64 << 10
	}
	return l
}

// NewHTTPServer returns a server for h with limits applied: every HTTP listener of Sagaflow (the
// API, the relay's metrics and health) is built here.
func NewHTTPServer(h http.Handler, limits HTTPLimits) *http.Server {
	l := limits.withDefaults()
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: l.ReadHeaderTimeout,
		ReadTimeout:       l.ReadTimeout,
		WriteTimeout:      l.WriteTimeout,
		IdleTimeout:       l.IdleTimeout,
		MaxHeaderBytes:    l.MaxHeaderBytes,
	}
}
