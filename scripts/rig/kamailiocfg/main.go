// Command kamailiocfg prints the test rig's Kamailio configuration (a
// registrar and record-routing proxy on 127.0.0.1) for scripts/demo.sh, so
// that the demo's PBX stand-in is exactly the one the tests run against.
//
//	go run ./scripts/rig/kamailiocfg -host 127.0.0.2 -port 5070 -domain localhost \
//		-number +15551230001=alice,+15551230002=bob > kamailio.cfg
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/cusax-gw/cusax-gw/internal/testenv"
)

func main() {
	host := flag.String("host", "127.0.0.1", "loopback address to listen on")
	port := flag.Int("port", 5070, "UDP and TCP port")
	domains := flag.String("domain", "", "comma-separated SIP domains served besides the address")
	numbers := flag.String("number", "", "comma-separated NUMBER=user pairs: dialled numbers routed to users")
	flag.Parse()
	nums := map[string]string{}
	for _, pair := range strings.Split(*numbers, ",") {
		if pair = strings.TrimSpace(pair); pair == "" {
			continue
		}
		num, user, ok := strings.Cut(pair, "=")
		if !ok {
			fmt.Fprintf(os.Stderr, "kamailiocfg: -number %q: want NUMBER=user\n", pair)
			os.Exit(2)
		}
		nums[num] = user
	}
	var ds []string
	for _, d := range strings.Split(*domains, ",") {
		if d = strings.TrimSpace(d); d != "" {
			ds = append(ds, d)
		}
	}
	conf, err := testenv.KamailioConfigWith(*host, *port, ds, nums)
	if err != nil {
		fmt.Fprintln(os.Stderr, "kamailiocfg:", err)
		os.Exit(1)
	}
	fmt.Print(conf)
}
