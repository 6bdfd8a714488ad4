// Command sagaflow is Sagaflow's one binary: the development server, the production server and
// relay, migrations, the operator commands and the definition tools. Run "sagaflow --help" for the
// list.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

// Exit codes: 0 success, 1 the command failed, 2 it was called wrongly (usage printed).
const (
	exitFailure = 1
	exitUsage   = 2
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes the command line args and returns the process exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRootCmd()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return 0
	}
	var ue usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "Error: %v\n\n", err)
		if cmd == nil {
			cmd = root
		}
		fmt.Fprint(stderr, cmd.UsageString())
		return exitUsage
	}
	var ce exitError
	if errors.As(err, &ce) {
		// The command already printed what went wrong.
		return ce.code
	}
	fmt.Fprintf(stderr, "Error: %v\n", err)
	return exitFailure
}

// usageError marks a wrongly called command: the usage is printed and the exit code is 2.
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

// exitError ends the process with code after the command printed its own report.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// usageArgs wraps a cobra argument validator so that its complaints exit with code 2.
func usageArgs(v cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := v(cmd, args); err != nil {
			return usageError{err}
		}
		return nil
	}
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "sagaflow",
		Short: "Event-driven workflow and saga orchestrator",
		Long: `Sagaflow runs business workflows as sagas over NATS JetStream: every message goes out
exactly once through a transactional outbox, failed steps are compensated in reverse order,
and every instance is traced across services with OpenTelemetry.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cmd.Help()
		},
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(newVersionCmd(), newDefinitionsCmd(),
		newStartCmd(), newListCmd(), newShowCmd(), newCancelCmd(), newRedriveCmd(), newRetryCmd(), newResolveCmd(), newDLQCmd(),
		newServeCmd(), newRelayCmd(), newMigrateCmd(), newDevCmd(), newBenchCmd(), newAuthCmd())
	for _, c := range root.Commands() {
		setUsageArgs(c)
	}
	return root
}

// setUsageArgs makes every subcommand's argument errors usage errors (exit 2).
func setUsageArgs(c *cobra.Command) {
	if c.Args != nil {
		c.Args = usageArgs(c.Args)
	} else if c.HasSubCommands() {
		// A command group: run alone it prints its help; with an argument that names none of its
		// subcommands it is a usage error (cobra would print the help and exit 0).
		c.Args = usageArgs(func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return fmt.Errorf("unknown command %q for %q", args[0], cmd.CommandPath())
			}
			return nil
		})
		if c.RunE == nil && c.Run == nil {
			c.RunE = func(cmd *cobra.Command, _ []string) error { return cmd.Help() }
		}
	}
	for _, sub := range c.Commands() {
		setUsageArgs(sub)
	}
}
