// Command etcd is etcd's own server entry point (go.etcd.io/etcd/v3's main.go), built here
// against the go.etcd.io/etcd/server/v3 version that k8s.io/kubernetes v1.37.2 requires.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
