package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/sagaflow/sagaflow/engine"
)

// Client calls the API. It is safe for concurrent use.
type Client struct {
	base  string
	http  *http.Client
	actor string
	token string
}

// NewClient returns a client of the API at baseURL (for example "http://127.0.0.1:8080"). actor is
// sent as X-Sagaflow-Actor (empty: none). hc may be nil for http.DefaultClient.
func NewClient(baseURL, actor string, hc *http.Client) *Client {
	if hc == nil {
		hc = http.DefaultClient
	}
	return &Client{base: strings.TrimRight(baseURL, "/"), http: hc, actor: actor}
}

// WithToken returns a copy of c that sends token as "Authorization: Bearer <token>" (empty: none).
func (c *Client) WithToken(token string) *Client {
	cp := *c
	cp.token = token
	return &cp
}

// APIError is an error answer of the API.
type APIError struct {
	Status int
	Body   Error
}

func (e *APIError) Error() string {
	return fmt.Sprintf("%s (HTTP %d)", e.Body.Message, e.Status)
}

// Start starts a saga and returns its id.
func (c *Client) Start(ctx context.Context, req StartRequest) (string, error) {
	var resp StartResponse
	err := c.do(ctx, http.MethodPost, "/v1/sagas", req, &resp)
	return resp.ID, err
}

// Get returns one instance.
func (c *Client) Get(ctx context.Context, id string) (*engine.Instance, error) {
	var inst engine.Instance
	if err := c.do(ctx, http.MethodGet, "/v1/sagas/"+url.PathEscape(id), nil, &inst); err != nil {
		return nil, err
	}
	return &inst, nil
}

// GetByKey returns the instance of definition with the business key.
func (c *Client) GetByKey(ctx context.Context, definition, key string) (*engine.Instance, error) {
	var inst engine.Instance
	p := "/v1/definitions/" + url.PathEscape(definition) + "/sagas/" + url.PathEscape(key)
	if err := c.do(ctx, http.MethodGet, p, nil, &inst); err != nil {
		return nil, err
	}
	return &inst, nil
}

// ListSagas returns a page of saga summaries, newest first, selected by f (its Before is the cursor,
// its Limit the page size: 0 for the server's default); resp.Next is the cursor of the next page.
func (c *Client) ListSagas(ctx context.Context, f engine.Filter) (ListResponse, error) {
	q := selectionQuery(f)
	for k, v := range map[string]string{"status": f.Status, "before": f.Before} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if f.Limit > 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	var resp ListResponse
	err := c.do(ctx, http.MethodGet, "/v1/sagas?"+q.Encode(), nil, &resp)
	return resp, err
}

// CountSagas returns how many sagas f selects in each status (f's Status, Before and Limit are
// not sent: a count covers every status and page).
func (c *Client) CountSagas(ctx context.Context, f engine.Filter) (CountsResponse, error) {
	var resp CountsResponse
	err := c.do(ctx, http.MethodGet, "/v1/sagas/counts?"+selectionQuery(f).Encode(), nil, &resp)
	return resp, err
}

// selectionQuery encodes the filters the list and the counts share.
func selectionQuery(f engine.Filter) url.Values {
	q := url.Values{}
	for k, v := range map[string]string{"definition": f.Definition, "business_key": f.BusinessKey} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if f.Version > 0 {
		q.Set("version", strconv.Itoa(f.Version))
	}
	if f.NeedsAttention {
		q.Set("needs_attention", "true")
	}
	if !f.StartedAfter.IsZero() {
		q.Set("started_after", f.StartedAfter.Format(time.RFC3339Nano))
	}
	if !f.StartedBefore.IsZero() {
		q.Set("started_before", f.StartedBefore.Format(time.RFC3339Nano))
	}
	return q
}

// History returns an instance's whole timeline, page by page.
func (c *Client) History(ctx context.Context, id string) ([]engine.HistoryEntry, error) {
	var all []engine.HistoryEntry
	after := int64(0)
	for {
		page, err := c.HistoryPage(ctx, id, engine.HistoryParams{After: after, Limit: MaxHistoryLimit})
		if err != nil {
			return nil, err
		}
		all = append(all, page.History...)
		if page.Next == "" || len(page.History) == 0 {
			return all, nil
		}
		after = page.History[len(page.History)-1].Seq
	}
}

// HistoryPage returns one page of an instance's timeline: the entries after p.After, at most
// p.Limit (0: the server's default, DefaultHistoryLimit). Next is set when more may follow.
func (c *Client) HistoryPage(ctx context.Context, id string, p engine.HistoryParams) (HistoryResponse, error) {
	q := url.Values{}
	if p.After > 0 {
		q.Set("after", strconv.FormatInt(p.After, 10))
	}
	if p.Limit > 0 {
		q.Set("limit", strconv.Itoa(p.Limit))
	}
	path := "/v1/sagas/" + url.PathEscape(id) + "/history"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var resp HistoryResponse
	err := c.do(ctx, http.MethodGet, path, nil, &resp)
	return resp, err
}

// Cancel cancels a running saga (its completed steps are compensated) and returns it.
func (c *Client) Cancel(ctx context.Context, id, reason string) (*engine.Instance, error) {
	return c.operation(ctx, id, "cancel", reason)
}

// Redrive resumes a failed saga with a fresh retry budget and returns it.
func (c *Client) Redrive(ctx context.Context, id, reason string) (*engine.Instance, error) {
	return c.operation(ctx, id, "redrive", reason)
}

// Resolve takes a saga out of the operator's queue (clears needs_attention) and returns it.
func (c *Client) Resolve(ctx context.Context, id, reason string) (*engine.Instance, error) {
	return c.operation(ctx, id, "resolve", reason)
}

func (c *Client) operation(ctx context.Context, id, op, reason string) (*engine.Instance, error) {
	var inst engine.Instance
	if err := c.do(ctx, http.MethodPost, "/v1/sagas/"+url.PathEscape(id)+"/"+op, OperationRequest{Reason: reason}, &inst); err != nil {
		return nil, err
	}
	return &inst, nil
}

// Definitions lists the definitions the server knows.
func (c *Client) Definitions(ctx context.Context) (DefinitionsResponse, error) {
	var resp DefinitionsResponse
	err := c.do(ctx, http.MethodGet, "/v1/definitions", nil, &resp)
	return resp, err
}

func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.actor != "" {
		req.Header.Set(ActorHeader, c.actor)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, c.base+path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("%s %s: read answer: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		ae := &APIError{Status: resp.StatusCode}
		if json.Unmarshal(data, &ae.Body) != nil || ae.Body.Message == "" {
			ae.Body = Error{Message: strings.TrimSpace(string(data)), Code: "http"}
		}
		return ae
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%s %s: decode answer: %w", method, path, err)
	}
	return nil
}
