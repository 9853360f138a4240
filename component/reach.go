package component

import (
	"slices"
	"strings"

	"github.com/cusax-gw/cusax-gw/identity"
)

// PEP nodes and namespaces written by the sync engine.
const (
	NodeReach  = "urn:xmpp:reach:0" // XEP-0152 PEP node (same as NSReach)
	NodeVCard4 = "urn:xmpp:vcard4"  // XEP-0292 PEP node

	nsPubSubErrors = "http://jabber.org/protocol/pubsub#errors"
	nsDataForms    = "jabber:x:data"
	nsClient       = "jabber:client"
	nsForward      = "urn:xmpp:forward:0"
	nsStanzas      = "urn:ietf:params:xml:ns:xmpp-stanzas"
	itemCurrent    = "current"
)

// reachURIs returns the XEP-0152 addresses of id in order of preference:
// its SIP AORs, then its numbers as tel: URIs. A zero id gives none.
func reachURIs(id identity.Identity) []string {
	out := make([]string, 0, len(id.SIP)+len(id.Tel))
	out = append(out, id.SIP...)
	for _, t := range id.Tel {
		out = append(out, "tel:"+t)
	}
	return out
}

// reachElement builds <reach xmlns='urn:xmpp:reach:0'><addr uri='…'/>…</reach>;
// with no URIs it is the empty <reach/> that clears reachability.
func reachElement(uris []string) *node {
	r := elem(NSReach, "reach")
	for _, u := range uris {
		r.Kids = append(r.Kids, elem(NSReach, "addr").withAttr("uri", u))
	}
	return r
}

// parseReach returns the addr URIs of a <reach/> element (nil if r is nil).
func parseReach(r *node) []string {
	var out []string
	for _, a := range r.elements() {
		if a.Name.Local == "addr" && a.Name.Space == NSReach {
			if u := strings.TrimSpace(a.attr("uri")); u != "" {
				out = append(out, u)
			}
		}
	}
	return out
}

// reachEqual reports whether the published addresses equal the wanted ones,
// order included (it is the order of preference).
func reachEqual(have, want []string) bool { return slices.Equal(have, want) }

// publishOptions returns the XEP-0060 publish-options form that asks for
// pubsub#access_model = model.
func publishOptions(model string) *node {
	x := elem(nsDataForms, "x").withAttr("type", "submit")
	x.Kids = append(x.Kids,
		elem(nsDataForms, "field", elem(nsDataForms, "value", "http://jabber.org/protocol/pubsub#publish-options")).
			withAttr("var", "FORM_TYPE").withAttr("type", "hidden"),
		elem(nsDataForms, "field", elem(nsDataForms, "value", model)).withAttr("var", "pubsub#access_model"),
	)
	return elem(NSPubSub, "publish-options", x)
}

// publishPayload returns the <pubsub/> payload that publishes item as
// id 'current' on node, with publish-options for access model when model
// is not empty.
func publishPayload(nodeName string, item *node, model string) *node {
	p := elem(NSPubSub, "pubsub",
		elem(NSPubSub, "publish", elem(NSPubSub, "item", item).withAttr("id", itemCurrent)).withAttr("node", nodeName))
	if model != "" {
		p.Kids = append(p.Kids, publishOptions(model))
	}
	return p
}

// itemsPayload returns the <pubsub/> payload that asks for item 'current'
// of node.
func itemsPayload(nodeName string) *node {
	return elem(NSPubSub, "pubsub",
		elem(NSPubSub, "items", elem(NSPubSub, "item").withAttr("id", itemCurrent)).withAttr("node", nodeName))
}

// parseItems returns the payload of item 'current' (or of the only item)
// in an items result (<pubsub><items><item>PAYLOAD</item></items></pubsub>),
// nil if the node holds none.
func parseItems(pubsub *node) *node {
	items := pubsub.child(NSPubSub, "items")
	var first *node
	for _, it := range items.elements() {
		if it.Name.Local != "item" {
			continue
		}
		if p := it.elements(); len(p) > 0 {
			if it.attr("id") == itemCurrent {
				return p[0]
			}
			if first == nil {
				first = p[0]
			}
		}
	}
	return first
}
