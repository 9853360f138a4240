package component

import (
	"fmt"
)

// WritePath is how the component writes one kind of data on the users'
// behalf on the current stream.
type WritePath string

// The write paths.
const (
	// PathOff: disabled by configuration (sync.reach false, sync.vcard off).
	PathOff WritePath = "off"
	// PathPrivilegedIQ: XEP-0356 version 2 privileged IQs (Prosody with
	// mod_privilege, ejabberd >= 24.10).
	PathPrivilegedIQ WritePath = "privileged-iq"
	// PathEjabberdAPI: ejabberd's HTTP admin API send_stanza (ejabberd
	// 23.01, which grants no IQ permission), confirmed by reading back
	// where the data is readable.
	PathEjabberdAPI WritePath = "ejabberd-api"
	// PathNone: enabled but impossible with the current grants and
	// configuration; every sync counts result="skipped".
	PathNone WritePath = "none"
)

// vCard formats.
const (
	FormatVCard4    = "vcard4"     // XEP-0292, PEP node urn:xmpp:vcard4
	FormatVCardTemp = "vcard-temp" // XEP-0054
)

// Plan says which path each kind of data takes on a stream, as chosen from
// the XEP-0356 grants and the configuration by PlanWrites.
type Plan struct {
	Reach WritePath
	VCard WritePath
	// VCardFormat is FormatVCard4 or FormatVCardTemp when VCard is a path
	// that writes, else "".
	VCardFormat string
}

// String returns e.g. "reach=privileged-iq vcard=privileged-iq(vcard4)".
func (p Plan) String() string {
	v := string(p.VCard)
	if p.VCardFormat != "" {
		v += "(" + p.VCardFormat + ")"
	}
	return fmt.Sprintf("reach=%s vcard=%s", p.Reach, v)
}

// PlanWrites chooses the write paths for the grants p and the sync
// configuration s, for `cusax-gw check` and for every stream:
//
//   - reach: privileged IQ when pubsub set is granted; else the ejabberd
//     API when s.EjabberdAPI is set; else none.
//   - vCard: privileged IQ on the vCard4 PEP node when pubsub get and set
//     are granted and the operator also granted the vCard4 namespace (which
//     only servers that implement XEP-0292, like Prosody, are configured
//     for); else privileged vcard-temp when vcard-temp get and set are
//     granted; else vcard-temp through the ejabberd API; else none.
//
// A read-modify-write needs to read, so the privileged vCard paths need
// both get and set. Nothing is planned that the advert did not grant.
func PlanWrites(p Privileges, s SyncConfig) Plan {
	s = s.withDefaults()
	var pl Plan
	switch {
	case !s.Reach:
		pl.Reach = PathOff
	case p.Version == 2 && p.CanIQ(NSPubSub, "set"):
		pl.Reach = PathPrivilegedIQ
	case s.EjabberdAPI != "":
		pl.Reach = PathEjabberdAPI
	default:
		pl.Reach = PathNone
	}
	_, vcard4 := p.IQ[NSVCard4]
	switch {
	case s.VCard == VCardOff:
		pl.VCard = PathOff
	case p.Version == 2 && vcard4 && p.CanIQ(NSPubSub, "get") && p.CanIQ(NSPubSub, "set"):
		pl.VCard, pl.VCardFormat = PathPrivilegedIQ, FormatVCard4
	case p.Version == 2 && p.CanIQ(NSVCard, "get") && p.CanIQ(NSVCard, "set"):
		pl.VCard, pl.VCardFormat = PathPrivilegedIQ, FormatVCardTemp
	case s.EjabberdAPI != "":
		pl.VCard, pl.VCardFormat = PathEjabberdAPI, FormatVCardTemp
	default:
		pl.VCard = PathNone
	}
	return pl
}

// Plan returns the write paths of the current stream (see PlanWrites).
func (c *Component) Plan() Plan {
	return PlanWrites(c.Privileges(), c.cfg.Sync)
}
