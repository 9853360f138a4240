package component

import (
	"encoding/xml"

	"mellium.im/xmlstream"
	"mellium.im/xmpp/component"
	"mellium.im/xmpp/disco"
	"mellium.im/xmpp/disco/info"
	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/mux"
	"mellium.im/xmpp/ping"
	"mellium.im/xmpp/stanza"
	"mellium.im/xmpp/version"
)

// NSReach is the XEP-0152 reachability namespace, advertised as a feature.
const NSReach = "urn:xmpp:reach:0"

// softwareName is the name answered to XEP-0092 version queries.
const softwareName = "cusax-gw"

// discoIdentity is the component's XEP-0030 identity.
var discoIdentity = info.Identity{Category: "gateway", Type: "sip", Name: "CUSAX gateway"}

// features are the component's XEP-0030 features, in the order advertised.
var features = []string{disco.NSInfo, ping.NS, version.NS, NSReach}

// newMux returns the stanza router that Serve runs. Handlers run inside
// Session.Serve: they must never call the session's send methods (that
// deadlocks); they reply through their TokenReadEncoder and set From
// themselves, which component streams require. To handle more stanzas, add
// mux options here; features and identities that handlers implement through
// info.FeatureIter/IdentityIter show up in disco#info automatically.
func (c *Component) newMux() *mux.ServeMux {
	d := &discoHandler{c: c}
	m := mux.New(component.NSAccept,
		mux.Ident(staticIdentity{}),
		mux.Feature(staticFeatures{}),
		mux.IQ(stanza.GetIQ, xml.Name{Space: disco.NSInfo, Local: "query"}, d),
		mux.IQ(stanza.GetIQ, xml.Name{Space: disco.NSItems, Local: "query"}, d),
		mux.IQFunc(stanza.GetIQ, xml.Name{Space: ping.NS, Local: "ping"}, c.handlePing),
		mux.IQFunc(stanza.GetIQ, xml.Name{Space: version.NS, Local: "query"}, c.handleVersion),
		mux.MessageFunc(stanza.NormalMessage, xml.Name{Space: NSPrivilege1, Local: "privilege"}, c.handlePrivilege),
		mux.MessageFunc(stanza.NormalMessage, xml.Name{Space: NSPrivilege2, Local: "privilege"}, c.handlePrivilege),
		mux.PresenceFunc(stanza.AvailablePresence, xml.Name{}, c.handlePresence),
	)
	d.mux = m
	return m
}

// reply turns a received IQ into the header of its answer: swapped
// addresses, From never empty.
func (c *Component) reply(iq stanza.IQ, typ stanza.IQType) stanza.IQ {
	iq.From, iq.To = iq.To, iq.From
	if iq.From.Equal(jid.JID{}) {
		iq.From = c.addr
	}
	iq.Type = typ
	return iq
}

// handlePing answers XEP-0199 pings.
func (c *Component) handlePing(iq stanza.IQ, t xmlstream.TokenReadEncoder, _ *xml.StartElement) error {
	_, err := xmlstream.Copy(t, c.reply(iq, stanza.ResultIQ).Wrap(nil))
	return err
}

// handleVersion answers XEP-0092 software version queries.
func (c *Component) handleVersion(iq stanza.IQ, t xmlstream.TokenReadEncoder, _ *xml.StartElement) error {
	q := version.Query{Name: softwareName, Version: c.cfg.Version}
	_, err := xmlstream.Copy(t, c.reply(iq, stanza.ResultIQ).Wrap(q.TokenReader()))
	return err
}

// handlePrivilege receives the XEP-0356 advert (version 1 or 2) that the
// server sends right after the handshake. Adverts from anybody but the
// users' domain are ignored. A bad advert is logged, not returned: an error
// would end the stream.
func (c *Component) handlePrivilege(msg stanza.Message, t xmlstream.TokenReadEncoder) error {
	p, err := parsePrivilege(t)
	if err != nil {
		c.log.Warn("component privilege advert invalid", "peer", msg.From.String(), "err", err)
		return nil
	}
	if !msg.From.Equal(c.domain) {
		c.log.Warn("component privilege advert ignored", "peer", msg.From.String())
		c.addForeignAdvert(msg.From.String())
		return nil
	}
	c.setPrivileges(p)
	c.log.Info("component privileges", "peer", msg.From.String(), "privileges", p)
	return nil
}

// discoHandler answers XEP-0030 disco#info with everything the mux
// advertises and disco#items with an empty list. Unlike mellium's
// disco.Handle it writes synchronously, without a goroutine.
type discoHandler struct {
	c   *Component
	mux *mux.ServeMux
}

// HandleIQ implements mux.IQHandler.
func (d *discoHandler) HandleIQ(iq stanza.IQ, t xmlstream.TokenReadEncoder, start *xml.StartElement) error {
	if attrValue(*start, "node") != "" {
		e := stanza.Error{Type: stanza.Cancel, Condition: stanza.ItemNotFound}
		_, err := xmlstream.Copy(t, d.c.reply(iq, stanza.ErrorIQ).Wrap(e.TokenReader()))
		return err
	}
	var parts []xml.TokenReader
	if start.Name.Space == disco.NSInfo {
		seenIdent := make(map[info.Identity]bool)
		_ = d.mux.ForIdentities("", func(i info.Identity) error {
			if !seenIdent[i] {
				seenIdent[i] = true
				parts = append(parts, i.TokenReader())
			}
			return nil
		})
		seen := make(map[string]bool)
		_ = d.mux.ForFeatures("", func(f info.Feature) error {
			if !seen[f.Var] {
				seen[f.Var] = true
				parts = append(parts, f.TokenReader())
			}
			return nil
		})
	}
	q := xmlstream.Wrap(xmlstream.MultiReader(parts...), xml.StartElement{Name: start.Name})
	_, err := xmlstream.Copy(t, d.c.reply(iq, stanza.ResultIQ).Wrap(q))
	return err
}

type staticIdentity struct{}

// ForIdentities implements info.IdentityIter.
func (staticIdentity) ForIdentities(node string, f func(info.Identity) error) error {
	if node != "" {
		return nil
	}
	return f(discoIdentity)
}

type staticFeatures struct{}

// ForFeatures implements info.FeatureIter.
func (staticFeatures) ForFeatures(node string, f func(info.Feature) error) error {
	if node != "" {
		return nil
	}
	for _, v := range features {
		if err := f(info.Feature{Var: v}); err != nil {
			return err
		}
	}
	return nil
}
