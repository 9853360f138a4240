//go:build linux

package main

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat;
// 100 on every Linux architecture Go supports.
const clockTicks = 100

// procCPU returns the user+system CPU time of every thread of pid, in
// nanoseconds (10 ms resolution).
func procCPU(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name is in parentheses and may hold spaces: fields count
	// from after the last ')'. utime and stime are fields 14 and 15.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("relaybench: /proc/%d/stat: no ')'", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("relaybench: /proc/%d/stat: %d fields", pid, len(f))
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("relaybench: /proc/%d/stat: utime %q stime %q", pid, f[11], f[12])
	}
	return (ut + st) * (1e9 / clockTicks), nil
}

// procRSS returns VmRSS of pid in bytes.
func procRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for l := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) != 2 || f[1] != "kB" {
				break
			}
			kb, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				break
			}
			return kb * 1024, nil
		}
	}
	return 0, fmt.Errorf("relaybench: /proc/%d/status: no VmRSS", pid)
}

// selfCPU returns the CPU time (user+system) of this process in ns.
func selfCPU() int64 {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// raiseNofile sets the soft open-file limit to the hard one. Calling
// Setrlimit ourselves also makes children (rtpengine, the relay) inherit
// it: Go restores the original soft limit in children unless the program
// set it.
func raiseNofile() {
	var rl unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &rl) == nil {
		rl.Cur = rl.Max
		unix.Setrlimit(unix.RLIMIT_NOFILE, &rl)
	}
}

// udpDrops returns the receive-queue drops of the IPv4 UDP sockets on
// 127.0.0.1 (/proc/net/udp), by local port.
func udpDrops() map[uint16]uint64 {
	b, err := os.ReadFile("/proc/net/udp")
	if err != nil {
		return nil
	}
	m := map[uint16]uint64{}
	for l := range strings.Lines(string(b)) {
		f := strings.Fields(l)
		if len(f) < 13 || !strings.HasPrefix(f[1], "0100007F:") {
			continue
		}
		port, err1 := strconv.ParseUint(strings.TrimPrefix(f[1], "0100007F:"), 16, 16)
		drops, err2 := strconv.ParseUint(f[len(f)-1], 10, 64)
		if err1 == nil && err2 == nil {
			m[uint16(port)] += drops
		}
	}
	return m
}

// dropsIn sums the growth of drops from before to after over the ports
// for which in is true.
func dropsIn(before, after map[uint16]uint64, in func(uint16) bool) uint64 {
	var n uint64
	for p, d := range after {
		if in(p) && d > before[p] {
			n += d - before[p]
		}
	}
	return n
}
