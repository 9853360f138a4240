package component

import (
	"encoding/xml"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strings"
)

// XEP-0356 namespaces and the IQ payload namespaces cusax-gw needs.
const (
	NSPrivilege1 = "urn:xmpp:privilege:1"
	NSPrivilege2 = "urn:xmpp:privilege:2"

	NSPubSub = "http://jabber.org/protocol/pubsub"
	NSVCard  = "vcard-temp"
	NSVCard4 = "urn:ietf:params:xml:ns:vcard-4.0"
)

// Privileges is what the server granted the component with its XEP-0356
// advert on the current stream. The zero value means no advert (yet).
//
// The string fields hold the advertised type attribute verbatim ("" when the
// perm was absent): Roster none|get|set|both, Message none|outgoing,
// Presence none|managed_entity|roster. Prefer the Can… methods, which only
// accept values the XEP defines.
type Privileges struct {
	// Version is the XEP-0356 namespace version of the advert, 1 or 2; 0 if
	// none arrived.
	Version  int
	Roster   string
	Presence string
	Message  string
	// IQ maps a payload namespace to get|set|both (version 2 only).
	IQ map[string]string
}

// CanIQ reports whether the component may send privileged IQs of type typ
// ("get" or "set") with a payload in namespace ns.
func (p Privileges) CanIQ(ns, typ string) bool {
	return grants(p.IQ[ns], typ)
}

// CanRoster reports whether the component may get or set ("get", "set")
// users' rosters.
func (p Privileges) CanRoster(typ string) bool {
	return grants(p.Roster, typ)
}

// CanMessage reports whether the component may send messages on behalf of
// the server (type "outgoing").
func (p Privileges) CanMessage() bool { return p.Message == "outgoing" }

// CanPresence reports whether the server forwards users' presence to the
// component (type "managed_entity", or "roster" which includes it).
func (p Privileges) CanPresence() bool {
	return p.Presence == "managed_entity" || p.Presence == "roster"
}

// Granted maps each access label of cusax_xmpp_privilege to whether it is
// granted: roster (get or set), presence (managed_entity or roster), message
// (outgoing), iq_pubsub (set on NSPubSub, needed to publish PEP items) and
// iq_vcard (set on NSVCard or NSVCard4, needed to write vCards).
func (p Privileges) Granted() map[string]bool {
	return map[string]bool{
		AccessRoster:   p.CanRoster("get") || p.CanRoster("set"),
		AccessPresence: p.CanPresence(),
		AccessMessage:  p.CanMessage(),
		AccessPubSub:   p.CanIQ(NSPubSub, "set"),
		AccessVCard:    p.CanIQ(NSVCard, "set") || p.CanIQ(NSVCard4, "set"),
	}
}

// Clone returns a deep copy of p.
func (p Privileges) Clone() Privileges {
	p.IQ = maps.Clone(p.IQ)
	return p
}

// String returns a one-line summary such as
// "v2 roster=get presence=managed_entity message=outgoing iq=[vcard-temp=both]",
// or "none" for the zero value. Namespaces are sorted.
func (p Privileges) String() string {
	if p.Version == 0 {
		return "none"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "v%d roster=%s presence=%s message=%s iq=[%s]",
		p.Version, orNone(p.Roster), orNone(p.Presence), orNone(p.Message), p.iqString())
	return b.String()
}

// LogValue logs p as a group of its fields.
func (p Privileges) LogValue() slog.Value {
	return slog.GroupValue(
		slog.Int("version", p.Version),
		slog.String("roster", orNone(p.Roster)),
		slog.String("presence", orNone(p.Presence)),
		slog.String("message", orNone(p.Message)),
		slog.String("iq", p.iqString()),
	)
}

func (p Privileges) iqString() string {
	var parts []string
	for _, ns := range slices.Sorted(maps.Keys(p.IQ)) {
		parts = append(parts, ns+"="+orNone(p.IQ[ns]))
	}
	return strings.Join(parts, " ")
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// grants reports whether an advertised type ("get", "set", "both") allows
// an operation of type typ ("get" or "set").
func grants(advertised, typ string) bool {
	if typ != "get" && typ != "set" {
		return false
	}
	return advertised == typ || advertised == "both"
}

// parsePrivilege reads tokens from r until it has consumed the first
// XEP-0356 <privilege/> element (namespace version 1 or 2, at any depth, so
// r may start at the enclosing <message/>) and returns its grants.
//
// Every <perm/> and every <namespace/> inside the privilege element counts,
// however deep: Prosody's mod_privilege forgets to close each <namespace/>,
// so the namespaces of <perm access='iq'> arrive nested inside each other.
// Elements in other namespaces are ignored. It returns ErrNoPrivilege if r
// ends without a privilege element, and never panics on malformed input.
func parsePrivilege(r xml.TokenReader) (Privileges, error) {
	var (
		p       Privileges
		ns      string
		depth   int // depth inside <privilege/>, 0 while outside
		iqDepth int // depth of the enclosing <perm access='iq'/>, 0 if none
	)
	for {
		tok, err := r.Token()
		if err != nil && err != io.EOF {
			return Privileges{}, fmt.Errorf("component: parse privilege advert: %w", err)
		}
		switch t := tok.(type) {
		case xml.StartElement:
			if depth == 0 {
				if t.Name.Local == "privilege" && (t.Name.Space == NSPrivilege1 || t.Name.Space == NSPrivilege2) {
					ns = t.Name.Space
					p.Version = 1
					if ns == NSPrivilege2 {
						p.Version = 2
					}
					depth = 1
				}
				break
			}
			depth++
			if t.Name.Space != ns {
				break
			}
			switch t.Name.Local {
			case "perm":
				if iqDepth != 0 {
					break
				}
				typ := attrValue(t, "type")
				switch attrValue(t, "access") {
				case "roster":
					p.Roster = typ
				case "presence":
					p.Presence = typ
				case "message":
					p.Message = typ
				case "iq":
					iqDepth = depth
					if p.IQ == nil {
						p.IQ = make(map[string]string)
					}
				}
			case "namespace":
				if iqDepth == 0 {
					break
				}
				if n := attrValue(t, "ns"); n != "" {
					p.IQ[n] = attrValue(t, "type")
				}
			}
		case xml.EndElement:
			if depth == 0 {
				break
			}
			if depth == iqDepth {
				iqDepth = 0
			}
			depth--
			if depth == 0 {
				return p, nil
			}
		}
		if err == io.EOF {
			if depth > 0 {
				return Privileges{}, fmt.Errorf("component: parse privilege advert: %w", io.ErrUnexpectedEOF)
			}
			return Privileges{}, ErrNoPrivilege
		}
	}
}

func attrValue(start xml.StartElement, local string) string {
	for _, a := range start.Attr {
		if a.Name.Local == local && a.Name.Space == "" {
			return strings.TrimSpace(a.Value)
		}
	}
	return ""
}
