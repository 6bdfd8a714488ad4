package main

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

func newDefinitionsListCmd() *cobra.Command {
	var o opsFlags
	c := &cobra.Command{
		Use:   "list",
		Short: "List the definition versions a running server runs, with their sagas per status",
		Long: `List asks a running server (its HTTP API) for every definition version it runs — from its files, or
loaded from the database because sagas still run on a version whose file is gone — and prints each
with the number of its sagas running, compensating, failed, completed and compensated. A version
with no running, compensating or failed saga can be retired: remove its file.`,
		Example: `  sagaflow definitions list
  sagaflow definitions list --api http://sagaflow:8080 -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			resp, err := o.client().Definitions(cmd.Context())
			if err != nil {
				return err
			}
			if o.output == "json" {
				return printJSON(cmd.OutOrStdout(), resp.Versions)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "DEFINITION\tVERSION\tRUNNING\tCOMPENSATING\tFAILED\tCOMPLETED\tCOMPENSATED\tREGISTERED\tHASH")
			for _, v := range resp.Versions {
				registered := "-"
				if !v.RegisteredAt.IsZero() {
					registered = v.RegisteredAt.Format(time.RFC3339)
				}
				hash := v.Hash
				if len(hash) > 12 {
					hash = hash[:12]
				}
				n := v.Counts
				fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%s\n", safe(v.Name), v.Version, n.Running, n.Compensating, n.Failed,
					n.Completed, n.Compensated, registered, hash)
			}
			return tw.Flush()
		},
	}
	o.register(c)
	return c
}
