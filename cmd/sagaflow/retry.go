package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/sagaflow/sagaflow/engine/httpapi"
)

func newRetryCmd() *cobra.Command {
	var o opsFlags
	var reason, patchFile, inputFile string
	c := &cobra.Command{
		Use:   "retry ID",
		Short: "Retry a failed saga's halted forward step, optionally with a corrected input (fix and continue)",
		Long: `Retry sends the halted forward step of a failed saga again, with a fresh retry budget, and the
saga continues from there. --input-patch applies a JSON merge patch (RFC 7386) to the saga's input;
--input replaces it. The retry, its reason and the input before and after are recorded in the saga's
history.

Only a saga failed on a halted step can be retried (a step that failed after the point of no return,
or one that cannot be undone and timed out on every attempt). A compensated saga cannot (its
compensations ran), nor one whose compensation failed (redrive it).`,
		Example: `  sagaflow retry 0192f0c4-... --reason "customer sent the VAT number" --input-patch patch.json
  echo '{"address":{"zip":"75001"}}' | sagaflow retry 0192f0c4-... --reason "zip fixed" --input-patch -`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if reason == "" {
				return usageError{fmt.Errorf("--reason is required: it is recorded in the saga's history")}
			}
			if patchFile != "" && inputFile != "" {
				return usageError{fmt.Errorf("--input-patch and --input exclude each other")}
			}
			req := httpapi.RetryRequest{Reason: reason}
			var err error
			if req.InputPatch, err = readJSONArg(cmd.InOrStdin(), "--input-patch", patchFile); err != nil {
				return err
			}
			if req.Input, err = readJSONArg(cmd.InOrStdin(), "--input", inputFile); err != nil {
				return err
			}
			inst, err := o.client().RetryStep(cmd.Context(), args[0], req)
			if err != nil {
				return err
			}
			if o.output == "json" {
				return printJSON(cmd.OutOrStdout(), inst)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: %s (retrying %s)\n", inst.ID, inst.Status, currentStep(&inst.Instance))
			return nil
		},
	}
	c.Flags().StringVar(&reason, "reason", "", "why, recorded in the saga's history (required)")
	c.Flags().StringVar(&patchFile, "input-patch", "", "FILE (or - for stdin) holding a JSON merge patch of the saga's input")
	c.Flags().StringVar(&inputFile, "input", "", "FILE (or - for stdin) holding the saga's new input")
	o.register(c)
	return c
}

// readJSONArg reads the JSON document a flag names (a file, or - for stdin); nil when the flag is
// empty.
func readJSONArg(stdin io.Reader, flag, name string) (json.RawMessage, error) {
	var b []byte
	var err error
	switch name {
	case "":
		return nil, nil
	case "-":
		b, err = io.ReadAll(io.LimitReader(stdin, 1<<20))
	default:
		b, err = os.ReadFile(name)
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", flag, err)
	}
	if !json.Valid(b) {
		return nil, usageError{fmt.Errorf("%s %s is not valid JSON", flag, name)}
	}
	return json.RawMessage(b), nil
}
