// pause: the sandbox ("infra") process of every pod on the stackhub test node.
// It holds the pod's namespaces open, reaps orphaned children, and exits on SIGINT/SIGTERM.
// Built statically (CGO_ENABLED=0) and packed into a one-layer image by mkimage.py, because no
// registry (registry.k8s.io/pause) is reachable here.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range sigs {
		if s == syscall.SIGCHLD {
			for {
				var ws syscall.WaitStatus
				pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
				if pid <= 0 || err != nil {
					break
				}
			}
			continue
		}
		os.Exit(0)
	}
}
