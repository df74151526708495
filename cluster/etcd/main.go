// Command etcd is etcd's server, built from go.etcd.io/etcd/server/v3 in a module of its own so that
// etcd's dependencies never move the Kubernetes module's versions.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
