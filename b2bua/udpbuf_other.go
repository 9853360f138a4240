//go:build !linux

package b2bua

import "net"

func setSockReadBuffer(c *net.UDPConn, want int) int {
	if c.SetReadBuffer(want) != nil {
		return 0
	}
	return want
}
