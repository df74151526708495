package main

import (
	"os"

	_ "k8s.io/client-go/plugin/pkg/client/auth" // client auth plugins, as upstream kubectl
	"k8s.io/component-base/cli"
	"k8s.io/component-base/logs"
	"k8s.io/kubectl/pkg/cmd"
	"k8s.io/kubectl/pkg/cmd/util"
)

// kubectl from the same Kubernetes release as the control plane (the PyPI kubectl lags behind).
func init() {
	register("kubectl", func([]string) int {
		// Verbosity is parsed before the command is built, as upstream kubectl's main does.
		logs.GlogSetter(cmd.GetLogVerbosity(os.Args)) //nolint:errcheck
		if err := cli.RunNoErrOutput(cmd.NewDefaultKubectlCommand()); err != nil {
			util.CheckErr(err) // prints the error and exits non-zero
		}
		return 0
	})
}
