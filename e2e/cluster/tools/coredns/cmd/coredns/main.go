// Command coredns is a CoreDNS with only the plugins the e2e cluster's DNS uses
// (e2e/cluster/clusterdns.py): kubernetes (cluster.local from the API server), bind (one
// address), errors and log. Leaving out the other ~50 plugins (cloud backends, etcd, forward,
// ...) keeps the build small: the kubernetes plugin's client-go is most of what is left.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/log"
)

// The order in which a query passes the plugins a server block names; a Corefile may only name
// plugins listed here.
var directives = []string{
	"bind",
	"errors",
	"log",
	"kubernetes",
}

func init() {
	dnsserver.Directives = directives
}

func main() {
	coremain.Run()
}
