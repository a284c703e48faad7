// etcd for the stackhub test node: the etcd server's own entry point (etcdmain), built from the
// Go module proxy as go.etcd.io/etcd/server/v3.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
