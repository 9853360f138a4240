//go:build linux

package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cusax-gw/cusax-gw/rtprelay"
)

// A system is one relay under test: our relay in a child process (one per
// engine), rtpengine, or none at all ("direct": the phones send to each
// other, the harness's own ceiling). Calls are set up through rtprelay's
// Media API, the same calls the b2bua makes.
type system interface {
	// pid is the relay process measured; 0 for direct.
	pid() int
	// media anchors calls; nil for direct.
	media() rtprelay.Media
	// close stops the process and waits for it.
	close() error
}

// Environment of the relay child: the harness re-executes itself with
// envRelay set to the engine name, and the child serves the control
// protocol on stdin/stdout.
const (
	envRelay = "RELAYBENCH_RELAY"
	envPorts = "RELAYBENCH_PORTS"
)

// The control protocol between the harness and the relay child: binary
// frames on its stdin and stdout, so that the child, the process whose
// memory is measured, makes no garbage of its own per call (JSON decoding
// made ~1 KB per message, counted in its RSS). A request is an op byte and
// three fields (call ID, tag, SDP), each a 4-byte big-endian length and the
// bytes; a response is a status byte (0 ok, 1 error) and one such field
// (the SDP, or the error text).
const (
	opPing byte = iota
	opOffer
	opAnswer
	opDelete
	opGC // return garbage to the OS, so RSS shows what is live
)

// ctlReq is one request.
type ctlReq struct {
	Op     byte
	CallID string
	Tag    string
	SDP    []byte
}

// ctlConn reads and writes frames with reused buffers.
type ctlConn struct {
	r   *bufio.Reader
	w   *bufio.Writer
	buf []byte
}

func newCtlConn(r io.Reader, w io.Writer) *ctlConn {
	return &ctlConn{r: bufio.NewReaderSize(r, 4096), w: bufio.NewWriterSize(w, 4096)}
}

func (c *ctlConn) putField(b []byte) {
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(b)))
	c.w.Write(n[:])
	c.w.Write(b)
}

// field reads one field into c.buf from off on and returns the buffer's
// new length.
func (c *ctlConn) field(off int) (int, error) {
	var n [4]byte
	if _, err := io.ReadFull(c.r, n[:]); err != nil {
		return 0, err
	}
	l := int(binary.BigEndian.Uint32(n[:]))
	if l > 1<<20 {
		return 0, fmt.Errorf("relaybench: control field of %d bytes", l)
	}
	c.buf = slices.Grow(c.buf[:off], l)[:off+l]
	_, err := io.ReadFull(c.r, c.buf[off:])
	return off + l, err
}

// writeReq sends q.
func (c *ctlConn) writeReq(q *ctlReq) error {
	c.w.WriteByte(q.Op)
	c.putField([]byte(q.CallID))
	c.putField([]byte(q.Tag))
	c.putField(q.SDP)
	return c.w.Flush()
}

// readReq reads a request: its op and its call ID, tag and SDP, which
// alias c.buf until the next read.
func (c *ctlConn) readReq() (op byte, callID, tag, sdp []byte, err error) {
	if op, err = c.r.ReadByte(); err != nil {
		return
	}
	var a, b, e int
	if a, err = c.field(0); err != nil {
		return
	}
	if b, err = c.field(a); err != nil {
		return
	}
	if e, err = c.field(b); err != nil {
		return
	}
	return op, c.buf[:a], c.buf[a:b], c.buf[b:e], nil
}

// writeResp sends a response: sdp, or err's text.
func (c *ctlConn) writeResp(sdp []byte, err error) error {
	if err != nil {
		c.w.WriteByte(1)
		c.putField([]byte(err.Error()))
	} else {
		c.w.WriteByte(0)
		c.putField(sdp)
	}
	return c.w.Flush()
}

// readResp reads a response; the SDP is a copy.
func (c *ctlConn) readResp() ([]byte, error) {
	st, err := c.r.ReadByte()
	if err != nil {
		return nil, err
	}
	n, err := c.field(0)
	if err != nil {
		return nil, err
	}
	if st != 0 {
		return nil, errors.New(string(c.buf[:n]))
	}
	return slices.Clone(c.buf[:n]), nil
}

// relayChild runs our relay with engine until stdin closes; it is the
// process whose CPU and memory are measured. Per call it allocates only
// what the b2bua would hold too: the call ID and tag strings (the call ID
// once per call, as the b2bua keeps it across offer, answer and delete).
func relayChild(engine string, stdin io.Reader, stdout io.Writer) error {
	pmin, pmax, err := parsePorts(os.Getenv(envPorts))
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	r, err := rtprelay.New(rtprelay.Config{
		Listen:  netip.AddrFrom4([4]byte{127, 0, 0, 1}),
		PortMin: pmin, PortMax: pmax,
		Timeout: 10 * time.Minute,
		Engine:  engine,
	}, log, rtprelay.NewMetrics(prometheus.NewRegistry()))
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	c := newCtlConn(stdin, stdout)
	var lastID string
	for {
		op, id, tag, sdp, err := c.readReq()
		if err != nil {
			break // stdin closed: the harness is done with us
		}
		if string(id) != lastID { // no allocation for the comparison
			lastID = string(id)
		}
		var out []byte
		switch op {
		case opPing:
		case opOffer:
			out, err = r.Offer(ctx, lastID, string(tag), sdp)
		case opAnswer:
			out, err = r.Answer(ctx, lastID, string(tag), sdp)
		case opDelete:
			err = r.Delete(lastID)
		case opGC:
			debug.FreeOSMemory()
		default:
			err = fmt.Errorf("unknown op %d", op)
		}
		if err := c.writeResp(out, err); err != nil {
			break
		}
	}
	cancel()
	return <-done
}

func parsePorts(s string) (int, int, error) {
	a, b, ok := strings.Cut(s, "-")
	pmin, err1 := strconv.Atoi(a)
	pmax, err2 := strconv.Atoi(b)
	if !ok || err1 != nil || err2 != nil || pmin%2 != 0 || pmax <= pmin {
		return 0, 0, fmt.Errorf("relaybench: port range %q: want EVEN-MAX", s)
	}
	return pmin, pmax, nil
}

// pinned returns the command line that runs argv on cpu (taskset), or argv
// itself when cpu < 0.
func pinned(cpu int, argv ...string) *exec.Cmd {
	if cpu >= 0 {
		argv = append([]string{"taskset", "-c", strconv.Itoa(cpu)}, argv...)
	}
	return exec.Command(argv[0], argv[1:]...)
}

// stopCmd sends SIGTERM, waits up to 5 s, then kills.
func stopCmd(cmd *exec.Cmd, waited <-chan error) error {
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-waited:
		return err
	case <-time.After(5 * time.Second):
		cmd.Process.Kill()
		return <-waited
	}
}

// ourRelay is rtprelay.Relay in a child process (the harness binary
// re-executed with envRelay), driven through ctlReq on its stdin.
type ourRelay struct {
	cmd    *exec.Cmd
	in     io.WriteCloser
	ctl    *ctlConn
	waited chan error
	stderr *os.File
}

func startOurRelay(engine string, cpu, pmin, pmax int, dir string) (*ourRelay, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := pinned(cpu, exe)
	cmd.Env = append(os.Environ(), envRelay+"="+engine, envPorts+fmt.Sprintf("=%d-%d", pmin, pmax))
	stderr, err := os.Create(filepath.Join(dir, "relay-"+engine+".log"))
	if err != nil {
		return nil, err
	}
	cmd.Stderr = stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		stderr.Close()
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		stderr.Close()
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		stderr.Close()
		return nil, fmt.Errorf("relaybench: start relay: %w", err)
	}
	r := &ourRelay{cmd: cmd, in: in, ctl: newCtlConn(out, in),
		waited: make(chan error, 1), stderr: stderr}
	go func() { r.waited <- cmd.Wait() }()
	if _, err := r.do(ctlReq{Op: opPing}); err != nil {
		r.close()
		return nil, fmt.Errorf("relaybench: relay %s did not start: %w (log: %s)", engine, err, stderr.Name())
	}
	return r, nil
}

func (r *ourRelay) do(q ctlReq) ([]byte, error) {
	if err := r.ctl.writeReq(&q); err != nil {
		return nil, err
	}
	return r.ctl.readResp()
}

func (r *ourRelay) pid() int              { return r.cmd.Process.Pid }
func (r *ourRelay) media() rtprelay.Media { return relayMedia{r} }

func (r *ourRelay) close() error {
	r.in.Close() // the child deletes its calls, closes its sockets and exits
	var err error
	select {
	case err = <-r.waited:
	case <-time.After(10 * time.Second):
		err = stopCmd(r.cmd, r.waited)
	}
	r.stderr.Close()
	return err
}

// relayMedia is rtprelay.Media over the control protocol.
type relayMedia struct{ r *ourRelay }

func (m relayMedia) Offer(_ context.Context, callID, tag string, sdp []byte) ([]byte, error) {
	return m.r.do(ctlReq{Op: opOffer, CallID: callID, Tag: tag, SDP: sdp})
}

func (m relayMedia) Answer(_ context.Context, callID, tag string, sdp []byte) ([]byte, error) {
	return m.r.do(ctlReq{Op: opAnswer, CallID: callID, Tag: tag, SDP: sdp})
}

func (m relayMedia) Delete(callID string) error {
	_, err := m.r.do(ctlReq{Op: opDelete, CallID: callID})
	return err
}

func (m relayMedia) Query(string) (rtprelay.Stats, error) {
	return rtprelay.Stats{}, errors.New("relaybench: query not supported")
}

// rtpengine is the rtpengine daemon in userspace mode (--table=-1), one
// worker thread, driven through rtprelay.NGClient.
type rtpengine struct {
	cmd    *exec.Cmd
	ng     *rtprelay.NGClient
	m      rtprelay.Media
	waited chan error
	stderr *os.File
}

func startRtpengine(path string, cpu, pmin, pmax int, dir string) (*rtpengine, error) {
	ngPort, err := freeUDPPort()
	if err != nil {
		return nil, err
	}
	ngAddr := "127.0.0.1:" + strconv.Itoa(ngPort)
	cmd := pinned(cpu, path,
		"--config-file=none",
		"--table=-1",
		"--interface=127.0.0.1",
		"--listen-ng="+ngAddr,
		"--foreground",
		"--log-stderr",
		"--log-level=4", // warnings: it logs every call at the default level
		"--pidfile="+filepath.Join(dir, "rtpengine.pid"),
		"--port-min="+strconv.Itoa(pmin),
		"--port-max="+strconv.Itoa(pmax),
		"--num-threads=1",
		"--timeout=600",
	)
	stderr, err := os.Create(filepath.Join(dir, "rtpengine.log"))
	if err != nil {
		return nil, err
	}
	cmd.Stderr, cmd.Stdout = stderr, stderr
	if err := cmd.Start(); err != nil {
		stderr.Close()
		return nil, fmt.Errorf("relaybench: start rtpengine: %w", err)
	}
	e := &rtpengine{cmd: cmd, waited: make(chan error, 1), stderr: stderr}
	go func() { e.waited <- cmd.Wait() }()
	e.ng, err = rtprelay.NewNGClient(ngAddr, rtprelay.NGOptions{Timeout: 200 * time.Millisecond, Retries: -1})
	if err != nil {
		e.close()
		return nil, err
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		err = e.ng.Ping(ctx)
		cancel()
		if err == nil {
			break
		}
		select {
		case werr := <-e.waited:
			e.waited <- werr
			e.close()
			return nil, fmt.Errorf("relaybench: rtpengine exited: %v (log: %s)", werr, stderr.Name())
		default:
		}
		if time.Now().After(deadline) {
			e.close()
			return nil, fmt.Errorf("relaybench: rtpengine does not answer ng ping: %w (log: %s)", err, stderr.Name())
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Replace the startup client (short timeout, no retries) by the
	// defaults the daemon uses.
	e.ng.Close()
	if e.ng, err = rtprelay.NewNGClient(ngAddr, rtprelay.NGOptions{}); err != nil {
		e.close()
		return nil, err
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	e.m = rtprelay.NewRtpengine(e.ng, log, rtprelay.NewMetrics(prometheus.NewRegistry()))
	return e, nil
}

func (e *rtpengine) pid() int              { return e.cmd.Process.Pid }
func (e *rtpengine) media() rtprelay.Media { return e.m }

func (e *rtpengine) close() error {
	if e.ng != nil {
		e.ng.Close()
	}
	err := stopCmd(e.cmd, e.waited)
	e.stderr.Close()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() == -1 { // ended by our SIGTERM
		err = nil
	}
	return err
}

// direct is no relay: the phones of a call send to each other.
type direct struct{}

func (direct) pid() int              { return 0 }
func (direct) media() rtprelay.Media { return nil }
func (direct) close() error          { return nil }
