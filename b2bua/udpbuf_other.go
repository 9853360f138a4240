//go:build !linux

package b2bua

import "net"

func setSockReadBuffer(c *net.UDPConn, want int) int {
	if c.SetReadBuffer(want) != nil {
		return 0
	}
	return want
}

func socketInode(net.PacketConn) uint64 { return 0 }

func readUDPDrops([]uint64) map[uint64]float64 { return nil }
