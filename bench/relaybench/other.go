//go:build !linux

// Command relaybench measures the media relay against rtpengine; it needs
// Linux (see main.go).
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "relaybench: Linux only (taskset, /proc, SO_TIMESTAMPNS, recvmmsg)")
	os.Exit(1)
}
