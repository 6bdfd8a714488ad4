package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// envPrefix starts the environment variable of every flag of the server commands: --nats-url is
// SAGAFLOW_NATS_URL. A flag given on the command line wins over its variable.
const envPrefix = "SAGAFLOW_"

// envName returns the environment variable that sets flag name.
func envName(name string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// bindEnv makes every flag of cmd settable from its SAGAFLOW_* variable and names the variable in
// the flag's help. It is a dozen lines, so it is written here rather than pulling in viper.
func bindEnv(cmd *cobra.Command) {
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if f.Name == "help" {
			return
		}
		f.Usage += fmt.Sprintf(" [$%s]", envName(f.Name))
	})
	prev := cmd.PreRunE
	cmd.PreRunE = func(c *cobra.Command, args []string) error {
		var errs []string
		c.Flags().VisitAll(func(f *pflag.Flag) {
			v, ok := os.LookupEnv(envName(f.Name))
			if !ok || f.Changed || f.Name == "help" {
				return
			}
			if err := c.Flags().Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Sprintf("%s=%q: %v", envName(f.Name), v, err))
			}
		})
		if len(errs) > 0 {
			return usageError{fmt.Errorf("bad environment: %s", strings.Join(errs, "; "))}
		}
		if prev != nil {
			return prev(c, args)
		}
		return nil
	}
}
