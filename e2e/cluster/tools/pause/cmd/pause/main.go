// Command pause is a pod sandbox's first process, built here because no registry holding
// registry.k8s.io/pause is reachable. Like the upstream pause it holds the pod's namespaces,
// reaps the zombies it inherits as PID 1, and exits at once on SIGINT or SIGTERM (PID 1 gets no
// default signal handling, so without handlers the runtime would wait for its SIGKILL).
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range signals {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var status syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
