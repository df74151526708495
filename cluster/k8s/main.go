// Command k8s is one multi-call binary holding the Kubernetes components the project runs locally
// (kube-apiserver, kube-controller-manager, kube-scheduler, kubectl) plus small project helpers
// (certs). Each component lives in its own file and registers itself from init(), so new subcommands
// (the node agent's kubelet-api, for instance) are added without editing this file.
//
// Usage: k8s <subcommand> [flags...], or call it through a symlink named after the subcommand.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// subcommands maps a subcommand name to its entry point, which returns the process exit code.
var subcommands = map[string]func(args []string) int{}

// register adds a subcommand; a duplicate name is a programming error.
func register(name string, run func(args []string) int) {
	if _, dup := subcommands[name]; dup {
		panic("k8s: subcommand registered twice: " + name)
	}
	subcommands[name] = run
}

func usage() {
	names := make([]string, 0, len(subcommands))
	for name := range subcommands {
		names = append(names, name)
	}
	sort.Strings(names)
	fmt.Fprintf(os.Stderr, "usage: k8s <subcommand> [flags...]\nsubcommands: %s\n", strings.Join(names, ", "))
}

func main() {
	// Called through a symlink named after a subcommand (kubectl -> k8s): run that subcommand.
	if run, ok := subcommands[filepath.Base(os.Args[0])]; ok {
		os.Exit(run(os.Args))
	}
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	run, ok := subcommands[os.Args[1]]
	if !ok {
		fmt.Fprintf(os.Stderr, "k8s: unknown subcommand %q\n", os.Args[1])
		usage()
		os.Exit(2)
	}
	// The component sees argv as if it had been started under its own name: cobra reads os.Args[1:].
	os.Args = append([]string{os.Args[1]}, os.Args[2:]...)
	os.Exit(run(os.Args))
}
