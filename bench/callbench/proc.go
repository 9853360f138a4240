//go:build linux

package main

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat;
// 100 on every Linux architecture Go supports.
const clockTicks = 100

// statFields returns the fields of /proc/<pid>/stat after the command
// name (field 3, the state, is index 0).
func statFields(pid int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	// The command name is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil, fmt.Errorf("callbench: /proc/%d/stat: no ')'", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return nil, fmt.Errorf("callbench: /proc/%d/stat: %d fields", pid, len(f))
	}
	return f, nil
}

// procCPU returns the user+system CPU time of every thread of pid (10 ms
// resolution).
func procCPU(pid int) (time.Duration, error) {
	f, err := statFields(pid)
	if err != nil {
		return 0, err
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("callbench: /proc/%d/stat: utime %q stime %q", pid, f[11], f[12])
	}
	return time.Duration((ut + st) * (1e9 / clockTicks)), nil
}

// groupPIDs returns the processes whose process group is pgid (Kamailio's
// attendant and its workers).
func groupPIDs(pgid int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		f, err := statFields(pid)
		if err != nil {
			continue
		}
		if g, _ := strconv.Atoi(f[2]); g == pgid {
			out = append(out, pid)
		}
	}
	return out
}

// statusKB returns a "Key:   N kB" value of /proc/<pid>/status (VmRSS,
// VmHWM) or /proc/<pid>/smaps_rollup (Pss) in bytes.
func statusKB(path, key string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	for l := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(l, key+":"); ok {
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
	return 0, fmt.Errorf("callbench: %s: no %s", path, key)
}

// peakRSS returns VmHWM, the peak resident set of pid.
func peakRSS(pid int) (int64, error) {
	return statusKB(fmt.Sprintf("/proc/%d/status", pid), "VmHWM")
}

// pss returns the proportional set size of pid: shared pages divided
// among the processes sharing them, so that a sum over processes counts
// Kamailio's shared memory once.
func pss(pid int) (int64, error) {
	return statusKB(fmt.Sprintf("/proc/%d/smaps_rollup", pid), "Pss")
}

// nofile is the open-file limit the systems get: deploy/cusax-gw.service's
// LimitNOFILE. The gateway holds four sockets per call in progress.
const nofile = 65536

// raiseNofile raises the open-file limit to nofile (as root, the hard one
// too; otherwise the soft one to the hard one). Children (the gateway,
// Kamailio, rtpengine, SIPp) inherit it: Go restores the original soft
// limit in children unless the program set it.
func raiseNofile() {
	var rl unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &rl) != nil {
		return
	}
	if rl.Max < nofile {
		want := unix.Rlimit{Cur: nofile, Max: nofile}
		if unix.Setrlimit(unix.RLIMIT_NOFILE, &want) == nil {
			return
		}
	}
	rl.Cur = min(rl.Max, max(rl.Cur, nofile))
	unix.Setrlimit(unix.RLIMIT_NOFILE, &rl)
}

// nofileLimit returns the soft open-file limit now.
func nofileLimit() uint64 {
	var rl unix.Rlimit
	unix.Getrlimit(unix.RLIMIT_NOFILE, &rl)
	return rl.Cur
}
