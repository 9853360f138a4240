package component

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
)

// blockingTransport answers every request with "0" once release lets it,
// counting the requests that have reached it.
type blockingTransport struct {
	mu      sync.Mutex
	entered int
	release chan struct{}
}

func (b *blockingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	b.mu.Lock()
	b.entered++
	b.mu.Unlock()
	<-b.release
	return &http.Response{StatusCode: 200, Status: "200 OK", Body: io.NopCloser(strings.NewReader("0")),
		Header: http.Header{}, Request: r}, nil
}

func (b *blockingTransport) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.entered
}

// ejabberd 23.01 runs a send_stanza's PEP publish inside the HTTP request,
// and two concurrent node creations can abort each other while the API
// still answers 0: the client must never have two writes in flight.
func TestSendStanzaOneAtATime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tr := &blockingTransport{release: make(chan struct{})}
		a := newAPIClient("http://ejabberd.invalid/api", &http.Client{Transport: tr})
		const calls = 4
		errs := make(chan error, calls)
		for range calls {
			go func() {
				errs <- a.sendStanza(context.Background(), "alice@example.com", "alice@example.com", elem(nsClient, "iq"))
			}()
		}
		for i := range calls {
			synctest.Wait() // every caller is blocked: in the transport or waiting its turn
			if n := tr.count(); n != i+1 {
				t.Fatalf("%d send_stanza requests sent with %d answered, want %d: only one in flight", n, i, i+1)
			}
			tr.release <- struct{}{}
			if err := <-errs; err != nil {
				t.Errorf("sendStanza: %v", err)
			}
		}
	})
}
