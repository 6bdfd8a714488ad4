package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/user"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/sagaflow/sagaflow/engine"
	"github.com/sagaflow/sagaflow/engine/httpapi"
	"github.com/sagaflow/sagaflow/saga"
)

// defaultAPI is where "sagaflow dev" and "sagaflow serve" listen by default.
const defaultAPI = "http://127.0.0.1:8080"

// opsFlags are the flags shared by the operator commands, which talk to a running server's API.
type opsFlags struct {
	api    string
	output string
	conn   clientFlags
}

func (o *opsFlags) register(c *cobra.Command) {
	c.Flags().StringVar(&o.api, "api", defaultAPI, "URL of the Sagaflow HTTP API")
	c.Flags().StringVarP(&o.output, "output", "o", "text", "output format: text or json")
	o.conn.register(c)
	bindEnv(c)
	prev := c.PreRunE
	c.PreRunE = func(cmd *cobra.Command, args []string) error {
		if err := prev(cmd, args); err != nil {
			return err
		}
		if o.output != "text" && o.output != "json" {
			return usageError{fmt.Errorf("--output %q: want text or json", o.output)}
		}
		return o.conn.build()
	}
}

func (o *opsFlags) client() *httpapi.Client {
	who := "cli"
	if u, err := user.Current(); err == nil {
		who = "cli:" + u.Username
	}
	return httpapi.NewClient(o.api, who, o.conn.hc).WithToken(o.conn.token)
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func newStartCmd() *cobra.Command {
	var o opsFlags
	var key, input, idem string
	var version int
	c := &cobra.Command{
		Use:   "start DEFINITION",
		Short: "Start a saga",
		Example: `  sagaflow start order-fulfilment --key order-42 \
    --input '{"order_id":"order-42","customer":"c-1","items":[{"sku":"sku-1","qty":1}],"amount_cents":1999}'
  sagaflow start order-fulfilment --key order-42 --input @order.json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			raw := []byte(input)
			if name, ok := strings.CutPrefix(input, "@"); ok {
				b, err := os.ReadFile(name)
				if err != nil {
					return fmt.Errorf("read --input: %w", err)
				}
				raw = b
			}
			if len(raw) > 0 && !json.Valid(raw) {
				return usageError{fmt.Errorf("--input is not valid JSON")}
			}
			id, err := o.client().Start(cmd.Context(), httpapi.StartRequest{
				Definition: args[0], Version: version, BusinessKey: key, Input: raw, IdempotencyKey: idem,
			})
			if err != nil {
				return err
			}
			if o.output == "json" {
				return printJSON(cmd.OutOrStdout(), httpapi.StartResponse{ID: id})
			}
			fmt.Fprintln(cmd.OutOrStdout(), id)
			return nil
		},
	}
	c.Flags().StringVar(&key, "key", "", "business key (an order id) to find the saga by")
	c.Flags().StringVar(&input, "input", "", "saga input: JSON, or @FILE to read it from a file")
	c.Flags().StringVar(&idem, "idempotency-key", "", "a repeated start with the same key returns the same saga")
	c.Flags().IntVar(&version, "version", 0, "definition version (default: the latest)")
	o.register(c)
	return c
}

func newListCmd() *cobra.Command {
	var o opsFlags
	var f engine.Filter
	var since, until string
	c := &cobra.Command{
		Use:   "list",
		Short: "List sagas, newest first",
		Long: `List prints a page of saga summaries, newest first (no input or step outputs: "sagaflow show"
has them). --since and --until select by start time: a duration before now ("24h", "90m") or an
RFC 3339 time. When more sagas match, the cursor of the next page is printed to stderr.`,
		Example: `  sagaflow list --status failed
  sagaflow list --needs-attention
  sagaflow list --definition order-fulfilment --version 2 --since 24h
  sagaflow list --since 2026-11-28T00:00:00Z --until 2026-11-29T00:00:00Z
  sagaflow list --definition order-fulfilment --key order-42 -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := startRange(&f, since, until, time.Now()); err != nil {
				return err
			}
			resp, err := o.client().ListSagas(cmd.Context(), f)
			if err != nil {
				return err
			}
			if o.output == "json" {
				return printJSON(cmd.OutOrStdout(), resp)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tDEFINITION\tKEY\tSTATUS\tSTEP\tAGE\tLAST ERROR")
			for _, in := range resp.Sagas {
				status := string(in.Status)
				if in.NeedsAttention {
					status += " (needs attention)"
				}
				fmt.Fprintf(tw, "%s\t%s v%d\t%s\t%s\t%s\t%s\t%s\n", safe(in.ID), safe(in.Definition), in.Version, dash(in.BusinessKey),
					status, dash(in.StepName), age(in.CreatedAt), dash(truncate(in.LastError, 60)))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if resp.Next != "" {
				fmt.Fprintf(cmd.ErrOrStderr(), "more: --before %s\n", resp.Next)
			}
			return nil
		},
	}
	c.Flags().StringVar(&f.Status, "status", "", "only sagas with this status (running, compensating, completed, compensated, failed)")
	c.Flags().StringVar(&f.Definition, "definition", "", "only sagas of this definition")
	c.Flags().IntVar(&f.Version, "version", 0, "only sagas of this definition version (default: every version)")
	c.Flags().StringVar(&since, "since", "", `only sagas started at or after this: a duration before now ("24h") or an RFC 3339 time`)
	c.Flags().StringVar(&until, "until", "", `only sagas started before this: a duration before now ("1h") or an RFC 3339 time`)
	c.Flags().StringVar(&f.BusinessKey, "key", "", "only sagas with this business key")
	c.Flags().BoolVar(&f.NeedsAttention, "needs-attention", false, "only sagas in the operator's queue (for example after a late effect), whatever their status")
	c.Flags().IntVar(&f.Limit, "limit", 50, "at most this many sagas (1..1000)")
	c.Flags().StringVar(&f.Before, "before", "", "page cursor: sagas older than this id")
	o.register(c)
	return c
}

func newShowCmd() *cobra.Command {
	var o opsFlags
	var key, def, traceURL string
	var historyLimit int
	var all bool
	c := &cobra.Command{
		Use:   "show [ID]",
		Short: "Show a saga: status, steps with attempts and errors, compensations, history",
		Example: `  sagaflow show 0196a1b2-...
  sagaflow show --key order-42 --definition order-fulfilment`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl := o.client()
			var inst *engine.Instance
			var err error
			switch {
			case len(args) == 1 && key == "":
				inst, err = cl.Get(cmd.Context(), args[0])
			case len(args) == 0 && key != "" && def != "":
				inst, err = cl.GetByKey(cmd.Context(), def, key)
			case len(args) == 0 && key != "":
				// No definition given: the key must name exactly one saga.
				resp, lerr := cl.ListSagas(cmd.Context(), engine.Filter{BusinessKey: key, Limit: 2})
				if lerr != nil {
					return lerr
				}
				switch len(resp.Sagas) {
				case 0:
					return fmt.Errorf("no saga has business key %q", key)
				case 1:
					inst, err = cl.Get(cmd.Context(), resp.Sagas[0].ID)
				default:
					return fmt.Errorf("several sagas have business key %q: add --definition", key)
				}
			default:
				return usageError{fmt.Errorf("give a saga ID or --key (not both)")}
			}
			if err != nil {
				return err
			}
			if historyLimit < 1 || historyLimit > httpapi.MaxHistoryLimit {
				return usageError{fmt.Errorf("--history-limit %d: want 1..%d", historyLimit, httpapi.MaxHistoryLimit)}
			}
			var hist []engine.HistoryEntry
			var next string
			if all {
				hist, err = cl.History(cmd.Context(), inst.ID)
			} else {
				var page httpapi.HistoryResponse
				page, err = cl.HistoryPage(cmd.Context(), inst.ID, engine.HistoryParams{Limit: historyLimit})
				hist, next = page.History, page.Next
			}
			if err != nil {
				return err
			}
			if o.output == "json" {
				return printJSON(cmd.OutOrStdout(), struct {
					*engine.Instance
					History     []engine.HistoryEntry `json:"history"`
					HistoryNext string                `json:"history_next,omitempty"`
				}{inst, hist, next})
			}
			if err := printInstance(cmd.OutOrStdout(), inst, hist, traceURL); err != nil {
				return err
			}
			if next != "" {
				_, err = fmt.Fprintf(cmd.OutOrStdout(), "(history shows the first %d entries; --all shows every one)\n", len(hist))
			}
			return err
		},
	}
	c.Flags().IntVar(&historyLimit, "history-limit", 200, "show at most this many history entries, the oldest first")
	c.Flags().BoolVar(&all, "all", false, "show the whole history, however long")
	c.Flags().StringVar(&traceURL, "trace-url", "", "link template of a trace in your tracing UI, {trace_id} replaced, e.g. http://jaeger:16686/trace/{trace_id}")
	c.Flags().StringVar(&key, "key", "", "find the saga by business key")
	c.Flags().StringVar(&def, "definition", "", "with --key: the definition the saga runs")
	o.register(c)
	return c
}

func newOperationCmd(name, short string, op func(*httpapi.Client) func(ctx context.Context, id, reason string) (*engine.Instance, error)) *cobra.Command {
	var o opsFlags
	var reason string
	c := &cobra.Command{
		Use:   name + " ID",
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			inst, err := op(o.client())(cmd.Context(), args[0], reason)
			if err != nil {
				return err
			}
			if o.output == "json" {
				return printJSON(cmd.OutOrStdout(), inst)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: %s\n", inst.ID, inst.Status)
			return nil
		},
	}
	c.Flags().StringVar(&reason, "reason", "", "why, recorded in the saga's history")
	o.register(c)
	return c
}

func newCancelCmd() *cobra.Command {
	return newOperationCmd("cancel", "Cancel a running saga: its completed steps are compensated",
		func(c *httpapi.Client) func(context.Context, string, string) (*engine.Instance, error) {
			return c.Cancel
		})
}

func newRedriveCmd() *cobra.Command {
	return newOperationCmd("redrive", "Resume a failed saga where it stopped (its compensation, or its halted forward step), with a fresh retry budget",
		func(c *httpapi.Client) func(context.Context, string, string) (*engine.Instance, error) {
			return c.Redrive
		})
}

func newResolveCmd() *cobra.Command {
	return newOperationCmd("resolve", "Take a saga out of the operator's queue once its late effect is dealt with (clears needs attention)",
		func(c *httpapi.Client) func(context.Context, string, string) (*engine.Instance, error) {
			return c.Resolve
		})
}

func printInstance(w io.Writer, in *engine.Instance, hist []engine.HistoryEntry, traceURL string) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "Saga:\t%s\n", safe(in.ID))
	fmt.Fprintf(tw, "Definition:\t%s v%d\n", safe(in.Definition), in.Version)
	fmt.Fprintf(tw, "Business key:\t%s\n", dash(in.BusinessKey))
	fmt.Fprintf(tw, "Status:\t%s\n", in.Status)
	if in.NeedsAttention {
		fmt.Fprintf(tw, "Needs attention:\t%s\n", in.Attention)
	}
	fmt.Fprintf(tw, "Started:\t%s\n", in.CreatedAt.Format(time.RFC3339Nano))
	if !in.FinishedAt.IsZero() {
		fmt.Fprintf(tw, "Finished:\t%s (%s)\n", in.FinishedAt.Format(time.RFC3339Nano), in.FinishedAt.Sub(in.CreatedAt).Round(time.Millisecond))
	} else if !in.Deadline.IsZero() {
		fmt.Fprintf(tw, "Waiting:\t%s of %s, attempt %d, until %s\n", in.Phase, currentStep(&in.Instance), in.Attempt, in.Deadline.Format(time.RFC3339Nano))
	}
	if in.TraceID != "" {
		fmt.Fprintf(tw, "Trace:\t%s\n", in.TraceID)
		if traceURL != "" {
			fmt.Fprintf(tw, "Trace link:\t%s\n", strings.ReplaceAll(traceURL, "{trace_id}", in.TraceID))
		}
	}
	if in.LastError != "" {
		fmt.Fprintf(tw, "Last error:\t%s\n", safe(in.LastError))
	}
	fmt.Fprintln(tw, "\nSTEP\tSTATUS\tATTEMPTS\tDURATION\tCOMPENSATION\tERROR")
	for _, s := range in.Steps {
		comp := "-"
		if s.CompensationAttempts > 0 {
			comp = fmt.Sprintf("%d attempt(s) %s", s.CompensationAttempts, span(s.CompensationStartedAt, s.CompensationFinishedAt))
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\n", safe(s.Name), s.Status, s.Attempts, span(s.StartedAt, s.FinishedAt), comp, dash(s.LastError))
	}
	fmt.Fprintln(tw, "\nHISTORY\tAT\tKIND\tSTEP\tATTEMPT\tACTION\tOUTCOME\tDETAIL")
	for _, h := range hist {
		attempt := "-"
		if h.Attempt > 0 {
			attempt = fmt.Sprint(h.Attempt)
		}
		detail := string(h.Detail)
		var compact bytes.Buffer
		if json.Compact(&compact, h.Detail) == nil {
			detail = compact.String() // the API indents its JSON; a table row is one line
		}
		if h.Actor != "" {
			detail = "by " + h.Actor + " " + detail
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", h.Seq, h.At.Format("15:04:05.000"), h.Kind, dash(h.Step), attempt,
			dash(h.Action), dash(h.Outcome), dash(truncate(detail, 100)))
	}
	return tw.Flush()
}

func currentStep(in *saga.Instance) string {
	if in.Step >= 0 && in.Step < len(in.Steps) {
		return safe(in.Steps[in.Step].Name)
	}
	return "-"
}

// startRange sets f's start-time range from --since and --until: a duration before now or an
// RFC 3339 time each, empty for no bound.
func startRange(f *engine.Filter, since, until string, now time.Time) error {
	for _, b := range []struct {
		flag, value string
		to          *time.Time
	}{{"--since", since, &f.StartedAfter}, {"--until", until, &f.StartedBefore}} {
		if b.value == "" {
			continue
		}
		if d, err := time.ParseDuration(b.value); err == nil && d > 0 {
			*b.to = now.Add(-d)
			continue
		}
		t, err := time.Parse(time.RFC3339Nano, b.value)
		if err != nil {
			return usageError{fmt.Errorf("%s %q: want a positive duration before now (24h, 90m) or an RFC 3339 time", b.flag, b.value)}
		}
		*b.to = t
	}
	return nil
}

func span(from, to time.Time) string {
	switch {
	case from.IsZero():
		return "-"
	case to.IsZero():
		return "running"
	default:
		return to.Sub(from).Round(time.Millisecond).String()
	}
}

func age(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return time.Since(t).Round(time.Second).String()
}

// dash returns "-" for an empty field, else the field made safe for a terminal (see safe).
func dash(s string) string {
	if s == "" {
		return "-"
	}
	return safe(s)
}

func truncate(s string, n int) string {
	if len([]rune(s)) <= n {
		return s
	}
	return string([]rune(s)[:n-1]) + "…"
}
