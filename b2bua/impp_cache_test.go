package b2bua

import (
	"strconv"
	"testing"
)

// TestImppCache: cached values are imppValue's, for valid and invalid JIDs,
// and the cache holds at most two generations.
func TestImppCache(t *testing.T) {
	var c imppCache
	for _, jid := range []string{"alice@example.com", "Bob@Example.COM", "not a jid", "@x", "alice@example.com", "not a jid"} {
		if got, want := c.value(jid), imppValue(jid); got != want {
			t.Errorf("value(%q) = %q, want %q", jid, got, want)
		}
	}
	if got := c.value("alice@example.com"); got != "<xmpp:alice@example.com>;purpose=impp" {
		t.Errorf("value(alice) = %q", got)
	}
	for i := range 3 * imppCacheSize {
		jid := "u" + strconv.Itoa(i) + "@example.com"
		if got, want := c.value(jid), "<xmpp:"+jid+">;purpose=impp"; got != want {
			t.Fatalf("value(%q) = %q, want %q", jid, got, want)
		}
	}
	if n := len(c.cur) + len(c.prev); n > 2*imppCacheSize {
		t.Errorf("%d values cached, want at most %d", n, 2*imppCacheSize)
	}
}
