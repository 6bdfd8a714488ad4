package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/sagaflow/sagaflow/definitions"
)

func newDefinitionsCmd() *cobra.Command {
	c := &cobra.Command{
		Use:     "definitions",
		Aliases: []string{"defs"},
		Short:   "Work with workflow definitions",
	}
	c.AddCommand(newValidateCmd(), newDefinitionsListCmd())
	return c
}

func newValidateCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "validate FILE...",
		Short: "Check definition files and report every problem with its position",
		Long: `Validate parses and checks each definition file (YAML or JSON) without running anything.

For a valid file it prints one line "FILE: OK (NAME vVERSION, N steps)". For an invalid one it
prints every problem as "FILE:LINE:COL: FIELD: message" (the column is left out when the YAML
parser does not report one). The exit status is 0 when every file is valid and 1 otherwise.`,
		Example: `  sagaflow definitions validate examples/order/order-fulfilment.yaml
  sagaflow definitions validate definitions/*.yaml`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, files []string) error {
			out, errOut := cmd.OutOrStdout(), cmd.ErrOrStderr()
			failed := 0
			for _, f := range files {
				def, err := definitions.ParseFile(f)
				if err == nil {
					fmt.Fprintf(out, "%s: OK (%s v%d, %d steps)\n", f, def.Name, def.Version, len(def.Steps))
					continue
				}
				failed++
				var list definitions.ErrorList
				if errors.As(err, &list) {
					for _, e := range list {
						fmt.Fprintln(errOut, escapeControls(e.Error()))
					}
					continue
				}
				fmt.Fprintf(errOut, "%s: %s\n", f, escapeControls(err.Error()))
			}
			if failed > 0 {
				fmt.Fprintf(errOut, "%d of %d files invalid\n", failed, len(files))
				return exitError{code: exitFailure}
			}
			return nil
		},
	}
}
