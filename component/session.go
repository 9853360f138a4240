package component

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"mellium.im/xmlstream"
	"mellium.im/xmpp"
	"mellium.im/xmpp/component"
	"mellium.im/xmpp/ping"
	"mellium.im/xmpp/stanza"
	"mellium.im/xmpp/stream"
)

// closeTimeout bounds a graceful close: after sending </stream:stream> the
// component waits this long for the server's before dropping the connection.
const closeTimeout = 2 * time.Second

// connect dials Config.Server and performs the XEP-0114 handshake.
func (c *Component) connect(ctx context.Context) (net.Conn, *xmpp.Session, error) {
	conn, err := c.dial(ctx, "tcp", c.cfg.Server)
	if err != nil {
		return nil, nil, fmt.Errorf("component: connect to %s: %w", c.cfg.Server, err)
	}
	hctx, cancel := context.WithTimeout(ctx, c.cfg.HandshakeTimeout)
	defer cancel()
	// NewSession does not reliably abort a blocked read when its ctx ends (it
	// sets a past deadline and clears it again at once), so the handshake
	// gets its own guard: the connection is closed when hctx ends. The
	// session itself is given a ctx that never ends, so that mellium's
	// deadline juggling cannot interfere.
	abort := context.AfterFunc(hctx, func() { _ = conn.Close() })
	sess, err := component.NewSession(context.WithoutCancel(hctx), c.addr, []byte(c.cfg.Secret), conn)
	if !abort() && err == nil {
		// The guard fired as the handshake completed: the connection is gone.
		err = hctx.Err()
	}
	if err != nil {
		_ = conn.Close()
		return nil, nil, c.handshakeError(ctx, hctx, err)
	}
	return conn, sess, nil
}

// handshakeError turns an error of component.NewSession into one that names
// the server and says what happened. mellium's errors never hold the secret.
func (c *Component) handshakeError(ctx, hctx context.Context, err error) error {
	var se stream.Error
	switch {
	case errors.As(err, &se):
		return newHandshakeError(c.cfg.Server, se)
	case ctx.Err() == nil && errors.Is(hctx.Err(), context.DeadlineExceeded):
		return fmt.Errorf("component: handshake with %s: no answer within %s: %w",
			c.cfg.Server, c.cfg.HandshakeTimeout, context.DeadlineExceeded)
	case isEOF(err):
		return fmt.Errorf("component: handshake with %s: connection closed by server: %w", c.cfg.Server, err)
	default:
		return fmt.Errorf("component: handshake with %s: %w", c.cfg.Server, err)
	}
}

// isEOF reports whether err means that the peer closed the connection.
func isEOF(err error) bool {
	var syn *xml.SyntaxError
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.As(err, &syn) && syn.Msg == "unexpected EOF"
}

// serve runs the stream until it fails or ctx is done: Session.Serve with
// the mux, the keepalive, and a closer that ends the stream and the
// connection. It waits for the three goroutines and returns the error that
// ended the stream (never nil); a keepalive failure wins over the error it
// then causes in Serve.
func (c *Component) serve(ctx context.Context, sess *xmpp.Session, conn net.Conn) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		serveErr error
		served   = make(chan struct{})
		failure  = failure{cancel: cancel}
	)
	wg.Go(func() {
		defer close(served)
		defer cancel()
		serveErr = c.serveErr(sess.Serve(c.mux))
	})
	wg.Go(func() {
		c.keepalive(ctx, sess, failure.set)
	})
	wg.Go(func() {
		<-ctx.Done()
		c.closeStream(sess, conn, served)
	})
	if c.cfg.Identities != nil {
		wg.Go(func() { c.syncLoop(ctx, sessionSender{sess}) })
	}
	wg.Wait()
	if err := failure.get(); err != nil {
		return err
	}
	return serveErr
}

// failure records the first reason why the component itself ends a stream
// and cancels the stream's context. It is safe for concurrent use.
type failure struct {
	cancel context.CancelFunc
	mu     sync.Mutex
	err    error
}

func (f *failure) set(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err == nil {
		f.err = err
		f.cancel()
	}
}

func (f *failure) get() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

// serveErr describes why Session.Serve returned.
func (c *Component) serveErr(err error) error {
	var se stream.Error
	switch {
	case err == nil:
		return ErrStreamClosed
	case errors.As(err, &se):
		return fmt.Errorf("component: stream error from %s: %s: %w", c.cfg.Server, describe(se), err)
	case isEOF(err):
		return fmt.Errorf("component: connection to %s lost: %w", c.cfg.Server, err)
	default:
		return fmt.Errorf("component: serve: %w", err)
	}
}

// closeStream sends </stream:stream>, waits until Serve has returned (the
// server answered with its own </stream:stream>) and closes the connection.
// If that takes longer than closeTimeout, for instance because a write is
// stuck on a dead peer, it closes the connection at once, which unblocks
// everything.
func (c *Component) closeStream(sess *xmpp.Session, conn net.Conn, served <-chan struct{}) {
	kill := time.AfterFunc(c.closeTimeout, func() { _ = conn.Close() })
	defer kill.Stop()
	_ = sess.Close() // a no-op if Serve already closed the output stream
	<-served
	_ = conn.Close()
}

// keepalive pings Config.Domain every KeepaliveInterval until ctx is done.
// Any reply, even an IQ error, proves that the stream works; when a ping
// gets no reply within one interval, or cannot be sent, keepalive reports
// it to fail, which ends the stream.
func (c *Component) keepalive(ctx context.Context, sess *xmpp.Session, fail func(error)) {
	t := time.NewTicker(c.cfg.KeepaliveInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := c.ping(ctx, sess, fail)
		switch {
		case err == nil:
			continue
		case ctx.Err() != nil: // stopping, or ping already reported its timeout
		case errors.Is(err, context.DeadlineExceeded):
			fail(c.errNoReply())
		default:
			fail(fmt.Errorf("component: keepalive ping to %s: %w", c.domain, err))
		}
		return
	}
}

func (c *Component) errNoReply() error {
	return fmt.Errorf("component: keepalive: no reply from %s within %s: %w",
		c.domain, c.cfg.KeepaliveInterval, context.DeadlineExceeded)
}

// ping sends one XEP-0199 ping from the component to Config.Domain and
// waits for the reply. SendIQ returns a nil error for type='error' replies;
// for a keepalive that is fine: any reply will do.
//
// The timeout is enforced apart from SendIQ, which waits for the session's
// write lock regardless of its ctx: behind a write stuck on a dead peer it
// would wait forever. When the interval passes without a reply, fail ends
// the stream (and closeStream, the connection) even if SendIQ is stuck.
func (c *Component) ping(ctx context.Context, sess *xmpp.Session, fail func(error)) error {
	pctx, cancel := context.WithTimeout(ctx, c.cfg.KeepaliveInterval)
	defer cancel()
	stop := context.AfterFunc(pctx, func() {
		if ctx.Err() == nil {
			fail(c.errNoReply())
		}
	})
	defer stop() // runs before cancel: a ping that got its reply fails nothing
	iq := stanza.IQ{Type: stanza.GetIQ, From: c.addr, To: c.domain}
	resp, err := sess.SendIQ(pctx, iq.Wrap(xmlstream.Wrap(nil,
		xml.StartElement{Name: xml.Name{Space: ping.NS, Local: "ping"}})))
	if err != nil {
		return err
	}
	// Close at once: Serve blocks until the reply reader is closed.
	return resp.Close()
}
