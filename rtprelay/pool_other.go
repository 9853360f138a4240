//go:build !linux

package rtprelay

import (
	"errors"
	"net/netip"
)

// rawSupported: raw sockets serve the epoll engine only, which needs Linux.
const rawSupported = false

func bindRaw(netip.AddrPort) (int32, error) {
	return -1, errors.New("rtprelay: raw sockets need Linux")
}

func fdBudget() int { return 0 }

func closeFD(int32) {}

func drainFD(int32) int { return 0 }

func queued(int32, int32) bool { return false }

type drainScratch struct{}

func drainQueued([]int32, *drainScratch) {}
