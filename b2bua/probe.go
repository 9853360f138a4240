package b2bua

import (
	"context"
	"fmt"
	"net"
	"strconv"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// ProbePBX sends one OPTIONS request to the PBX (a SIP URI such as
// "sip:127.0.0.1:5070" or "sip:pbx.example.com;transport=tcp") and returns
// its final response's status code and reason. Any final response means the
// PBX is alive; ctx bounds the wait.
func ProbePBX(ctx context.Context, pbx, userAgent string) (int, string, error) {
	var uri sip.Uri
	if err := sip.ParseUri(pbx, &uri); err != nil {
		return 0, "", fmt.Errorf("b2bua: sip.pbx %q: %w", pbx, err)
	}
	transport := uri.UriParams.GetOr("transport", "udp")
	port := uri.Port
	if port == 0 {
		port = 5060
		if uri.Scheme == "sips" || transport == "tls" {
			port = 5061
		}
	}
	// Learn the local address toward the PBX, for Via and From (no packet
	// is sent by a UDP "dial").
	host := "127.0.0.1"
	if c, err := net.Dial("udp", net.JoinHostPort(uri.Host, strconv.Itoa(port))); err == nil {
		host, _, _ = net.SplitHostPort(c.LocalAddr().String())
		c.Close()
	}
	ua, err := sipgo.NewUA(sipgo.WithUserAgent(userAgent), sipgo.WithUserAgentHostname(host))
	if err != nil {
		return 0, "", fmt.Errorf("b2bua: %w", err)
	}
	defer ua.Close()
	client, err := sipgo.NewClient(ua, sipgo.WithClientHostname(host), sipgo.WithClientNAT())
	if err != nil {
		return 0, "", fmt.Errorf("b2bua: %w", err)
	}

	req := sip.NewRequest(sip.OPTIONS, uri)
	req.AppendHeader(sip.NewHeader("Accept", "application/sdp"))
	res, err := client.Do(ctx, req)
	if err != nil {
		return 0, "", fmt.Errorf("b2bua: OPTIONS %s: %w", pbx, err)
	}
	return int(res.StatusCode), res.Reason, nil
}
