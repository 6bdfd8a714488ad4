package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/sagaflow/sagaflow/engine/httpapi"
)

// The "sagaflow dlq" commands: the dead-letter stream SAGA_DLQ through the API's /v1/dlq routes.

func newDLQCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "dlq",
		Short: "Read, replay and purge dead-lettered messages (SAGA_DLQ)",
		Long: `Messages Sagaflow could not handle wait in the JetStream stream SAGA_DLQ with the reason.
List them, show one, replay them to their original subject (with a new message id) once the
cause is fixed, or purge them. See docs/observability.md, "Dead letters".`,
	}
	c.AddCommand(newDLQListCmd(), newDLQShowCmd(), newDLQChangeCmd("replay"), newDLQChangeCmd("purge"))
	return c
}

// dlqFilterFlags registers the filter flags; reasonFlag names the reason-substring filter.
func dlqFilterFlags(c *cobra.Command, f *httpapi.DLQFilter, reasonFlag string) {
	c.Flags().StringVar(&f.Subject, "subject", "", "only messages from this subject; NATS wildcards: saga.cmd.payments.>")
	c.Flags().StringVar(&f.Reason, reasonFlag, "", "only messages whose reason contains this (any case)")
	c.Flags().StringVar(&f.SagaID, "saga", "", "only messages of this saga id")
	c.Flags().StringVar(&f.Since, "since", "", "only messages dead-lettered since: a duration (1h) or an RFC 3339 time")
	c.Flags().StringVar(&f.OlderThan, "older-than", "", "only messages dead-lettered before: a duration (24h) or an RFC 3339 time")
}

// jsonFlag adds --json, short for --output json.
func jsonFlag(c *cobra.Command, o *opsFlags) {
	var asJSON bool
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON (same as --output json)")
	prev := c.PreRunE
	c.PreRunE = func(cmd *cobra.Command, args []string) error {
		if err := prev(cmd, args); err != nil {
			return err
		}
		if asJSON {
			o.output = "json"
		}
		return nil
	}
}

func newDLQListCmd() *cobra.Command {
	var o opsFlags
	var f httpapi.DLQFilter
	var before uint64
	var limit int
	c := &cobra.Command{
		Use:   "list",
		Short: "List dead letters, newest first",
		Example: `  sagaflow dlq list
  sagaflow dlq list --subject 'saga.cmd.payments.>' --since 1h
  sagaflow dlq list --saga 0196a1b2-... --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			resp, err := o.client().DLQList(cmd.Context(), f, before, limit)
			if err != nil {
				return err
			}
			if o.output == "json" {
				return printJSON(cmd.OutOrStdout(), resp)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "SEQ\tTIME\tSUBJECT\tSAGA\tSTEP\tDELIVERIES\tREASON")
			for _, m := range resp.Messages {
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%d\t%s\n", m.Seq, m.Time.Local().Format(time.DateTime), dash(oneLine(m.Subject)),
					dash(oneLine(m.SagaID)), dash(oneLine(m.Step)), m.Deliveries, dash(truncate(oneLine(m.Reason), 100)))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if resp.Next != 0 {
				fmt.Fprintf(cmd.ErrOrStderr(), "more: --before %d\n", resp.Next)
			}
			return nil
		},
	}
	dlqFilterFlags(c, &f, "reason")
	c.Flags().Uint64Var(&before, "before", 0, "page cursor: messages older than this sequence")
	c.Flags().IntVar(&limit, "limit", 50, "at most this many messages (1..1000)")
	o.register(c)
	jsonFlag(c, &o)
	return c
}

func newDLQShowCmd() *cobra.Command {
	var o opsFlags
	c := &cobra.Command{
		Use:     "show SEQ",
		Short:   "Show a dead letter whole: why, its headers and its payload",
		Example: `  sagaflow dlq show 42`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			seqs, err := parseSeqs(args)
			if err != nil {
				return err
			}
			m, err := o.client().DLQGet(cmd.Context(), seqs[0])
			if err != nil {
				return err
			}
			if o.output == "json" {
				return printJSON(cmd.OutOrStdout(), m)
			}
			return printDeadLetter(cmd.OutOrStdout(), m)
		},
	}
	o.register(c)
	jsonFlag(c, &o)
	return c
}

func newDLQChangeCmd(op string) *cobra.Command {
	var o opsFlags
	var f httpapi.DLQFilter
	var reason string
	var dryRun bool
	short, example, done := "Republish dead letters to their original subject (new message id) and remove them from SAGA_DLQ",
		`  sagaflow dlq replay 42 43 --reason "payments handler fixed in v1.4.2"
  sagaflow dlq replay --subject 'saga.cmd.payments.>' --since 2h --reason "bank outage over" --dry-run`, "replayed"
	if op == "purge" {
		short, example, done = "Delete dead letters from SAGA_DLQ",
			`  sagaflow dlq purge 42 --reason "duplicate order, refunded by hand"
  sagaflow dlq purge --older-than 720h --subject 'events.>' --reason "monthly cleanup" --dry-run`, "purged"
	}
	c := &cobra.Command{
		Use:     op + " [SEQ...]",
		Short:   short,
		Example: example,
		Args:    cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if strings.TrimSpace(reason) == "" {
				return usageError{fmt.Errorf("--reason is required: say why, it goes into the audit log")}
			}
			req := httpapi.DLQChangeRequest{Reason: reason, DryRun: dryRun}
			switch {
			case len(args) > 0 && f != (httpapi.DLQFilter{}):
				return usageError{fmt.Errorf("give sequences or filter flags, not both")}
			case len(args) > 0:
				seqs, err := parseSeqs(args)
				if err != nil {
					return err
				}
				req.Seqs = seqs
			case f != (httpapi.DLQFilter{}):
				req.Filter = &f
			default:
				return usageError{fmt.Errorf("give the sequences to %s, or filter flags (--subject, --saga, --match-reason, --since, --older-than)", op)}
			}
			cl := o.client()
			call := cl.DLQReplay
			if op == "purge" {
				call = cl.DLQPurge
			}
			resp, err := call(cmd.Context(), req)
			if err != nil {
				return err
			}
			if o.output == "json" {
				return printJSON(cmd.OutOrStdout(), resp)
			}
			verb := done
			if resp.DryRun {
				verb = "would be " + done + " (dry run)"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%d message(s) %s\n", len(resp.Messages), verb)
			if len(resp.Messages) > 0 {
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
				header := "SEQ\tSUBJECT\tSAGA\tSTEP"
				if op == "replay" {
					header += "\tNEW MESSAGE ID"
				}
				fmt.Fprintln(tw, header)
				for _, m := range resp.Messages {
					row := fmt.Sprintf("%d\t%s\t%s\t%s", m.Seq, dash(oneLine(m.Subject)), dash(oneLine(m.SagaID)), dash(oneLine(m.Step)))
					if op == "replay" {
						row += "\t" + m.NewMessageID
					}
					fmt.Fprintln(tw, row)
				}
				if err := tw.Flush(); err != nil {
					return err
				}
			}
			if resp.More {
				fmt.Fprintf(cmd.ErrOrStderr(), "more messages match: run the command again\n")
			}
			return nil
		},
	}
	dlqFilterFlags(c, &f, "match-reason")
	why := "why (required): recorded in the audit log"
	if op == "replay" {
		why += " and the replayed messages' headers"
	}
	c.Flags().StringVar(&reason, "reason", "", why)
	c.Flags().BoolVar(&dryRun, "dry-run", false, "show what would be "+done+", change nothing")
	o.register(c)
	jsonFlag(c, &o)
	return c
}

// parseSeqs reads stream sequences (positive integers).
func parseSeqs(args []string) ([]uint64, error) {
	seqs := make([]uint64, 0, len(args))
	for _, a := range args {
		n, err := strconv.ParseUint(a, 10, 64)
		if err != nil || n == 0 {
			return nil, usageError{fmt.Errorf("%q is not a message sequence (a positive integer, the SEQ column of sagaflow dlq list)", a)}
		}
		seqs = append(seqs, n)
	}
	return seqs, nil
}

func printDeadLetter(w io.Writer, m *httpapi.DLQMessage) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "Seq:\t%d\n", m.Seq)
	fmt.Fprintf(tw, "Dead-lettered:\t%s\n", m.Time.Local().Format(time.RFC3339Nano))
	fmt.Fprintf(tw, "Subject:\t%s\n", dash(oneLine(m.Subject)))
	fmt.Fprintf(tw, "Message id:\t%s\n", dash(oneLine(m.MessageID)))
	fmt.Fprintf(tw, "Saga:\t%s\n", dash(oneLine(m.SagaID)))
	fmt.Fprintf(tw, "Definition:\t%s\n", dash(oneLine(m.Definition)))
	fmt.Fprintf(tw, "Step:\t%s\n", dash(oneLine(m.Step)))
	fmt.Fprintf(tw, "Action:\t%s\n", dash(oneLine(m.Action)))
	fmt.Fprintf(tw, "Deliveries:\t%d\n", m.Deliveries)
	fmt.Fprintf(tw, "Reason:\t%s\n", dash(oneLine(m.Reason)))
	fmt.Fprintln(tw, "\nHEADER\tVALUE")
	keys := make([]string, 0, len(m.Headers))
	for k := range m.Headers {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		for _, v := range m.Headers[k] {
			fmt.Fprintf(tw, "%s\t%s\n", oneLine(k), oneLine(v))
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "\nPayload (%d bytes):\n", m.PayloadSize)
	var pretty bytes.Buffer
	if json.Indent(&pretty, []byte(m.Payload), "", "  ") == nil {
		fmt.Fprintln(w, pretty.String())
		return nil
	}
	fmt.Fprintln(w, escapeKeepLines(m.Payload))
	return nil
}

// oneLine escapes control characters (newlines, tabs, terminal escapes) so a value stays on its
// line and cannot drive the terminal.
func oneLine(s string) string { return escapeControls(s) }

// escapeKeepLines is escapeControls keeping newlines and tabs, for a payload shown whole.
func escapeKeepLines(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		parts := strings.Split(l, "\t")
		for j := range parts {
			parts[j] = escapeControls(parts[j])
		}
		lines[i] = strings.Join(parts, "\t")
	}
	return strings.Join(lines, "\n")
}
