package component

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// ProbeEjabberdAPI checks, for `cusax-gw check`, that the ejabberd HTTP
// admin API at base (xmpp.ejabberd_api, e.g. "http://127.0.0.1:5280/api")
// answers and lets this host call send_stanza, without routing anything: it
// calls send_stanza with no arguments, which ejabberd rejects as a bad
// request only after the permission check. A nil client uses a plain one.
func ProbeEjabberdAPI(ctx context.Context, base string, hc *http.Client) error {
	if hc == nil {
		hc = &http.Client{Timeout: DefaultSyncTimeout}
	}
	u := strings.TrimRight(base, "/") + "/send_stanza"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader([]byte("{}")))
	if err != nil {
		return fmt.Errorf("component: ejabberd api %s: %w", base, err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("component: ejabberd api %s unreachable: %w", base, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	switch resp.StatusCode {
	case http.StatusBadRequest:
		return nil // permitted; the arguments were (deliberately) missing
	case http.StatusUnauthorized, http.StatusForbidden:
		return fmt.Errorf("component: ejabberd api %s: send_stanza not permitted for this host (api_permissions): %s", base, resp.Status)
	case http.StatusNotFound:
		return fmt.Errorf("component: ejabberd api %s: no such endpoint (request_handlers /api: mod_http_api, module mod_admin_extra): %s", base, resp.Status)
	default:
		return fmt.Errorf("component: ejabberd api %s: unexpected answer %s: %s", base, resp.Status, bytes.TrimSpace(body))
	}
}
