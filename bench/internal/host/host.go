// Package host reads what the benchmark harnesses (bench/relaybench,
// bench/callbench) report about the machine, and pins their processes.
// Linux only.
package host

import (
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// PinSelf binds every thread of this process to cpu. Threads created later
// inherit the mask of the thread that creates them, so the whole process
// stays there.
func PinSelf(cpu int) error {
	var set unix.CPUSet
	set.Set(cpu)
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return err
	}
	for _, e := range ents {
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if err := unix.SchedSetaffinity(tid, &set); err != nil && err != unix.ESRCH {
			return fmt.Errorf("sched_setaffinity(%d, cpu %d): %w", tid, cpu, err)
		}
	}
	return nil
}

// Loadavg returns the first three fields of /proc/loadavg, or "?".
func Loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], "/")
}

// CPUTimes returns the busy and total jiffies of all CPUs (/proc/stat).
func CPUTimes() (busy, total uint64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	l, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(l)
	if len(f) < 5 || f[0] != "cpu" {
		return 0, 0
	}
	for i, v := range f[1:] {
		n, _ := strconv.ParseUint(v, 10, 64)
		total += n
		if i != 3 && i != 4 { // idle, iowait
			busy += n
		}
	}
	return busy, total
}

// MachineBusy returns the fraction of all CPUs busy during d (everything
// running on the machine: measure while the harness itself is idle), or
// NaN when /proc/stat cannot tell.
func MachineBusy(d time.Duration) float64 {
	b0, t0 := CPUTimes()
	time.Sleep(d)
	b1, t1 := CPUTimes()
	if t1 <= t0 {
		return math.NaN()
	}
	return float64(b1-b0) / float64(t1-t0)
}
