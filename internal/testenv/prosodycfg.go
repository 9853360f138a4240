package testenv

import (
	"fmt"
	"path/filepath"
	"strings"
)

// ProsodyConfigOptions are the inputs of ProsodyConfig.
type ProsodyConfigOptions struct {
	// Dir is the server's directory: prosody.pid, data/, certs/ and
	// prosody.sock are written under it. It should be absolute.
	Dir string
	// Domain is the VirtualHost; Component the XEP-0114 component's domain
	// and Secret its secret.
	Domain, Component, Secret string
	// C2SPort and ComponentPort are the listeners' ports on 127.0.0.1.
	C2SPort, ComponentPort int
	// Privileged grants the component the XEP-0356 permissions cusax-gw
	// asks for (see ProsodyOptions.Privileged).
	Privileged bool
}

// ProsodyConfig returns the prosody.cfg.lua of the rig's Prosody: every
// listener on 127.0.0.1, no s2s or HTTP, cleartext c2s with SASL PLAIN,
// PEP and vCard modules, and the component. StartProsody runs it, and
// scripts/rig/prosody.sh (through scripts/rig/prosodycfg) writes the same
// one for the demo, so the two cannot drift apart.
func ProsodyConfig(o ProsodyConfigOptions) (string, error) {
	if o.Dir == "" || o.Domain == "" || o.Component == "" || o.Secret == "" {
		return "", fmt.Errorf("testenv: ProsodyConfig needs Dir, Domain, Component and Secret")
	}
	if o.C2SPort < 1 || o.C2SPort > 65535 || o.ComponentPort < 1 || o.ComponentPort > 65535 {
		return "", fmt.Errorf("testenv: ProsodyConfig: ports %d and %d must be 1..65535", o.C2SPort, o.ComponentPort)
	}
	var conf strings.Builder
	err := prosodyConfig.Execute(&conf, map[string]any{
		"PIDFile":       filepath.Join(o.Dir, "prosody.pid"),
		"DataPath":      filepath.Join(o.Dir, "data"),
		"CertDir":       filepath.Join(o.Dir, "certs"),
		"AdminSocket":   filepath.Join(o.Dir, "prosody.sock"),
		"C2SPort":       o.C2SPort,
		"ComponentPort": o.ComponentPort,
		"Domain":        o.Domain,
		"Component":     o.Component,
		"Secret":        o.Secret,
		"Privileged":    o.Privileged,
	})
	if err != nil {
		return "", fmt.Errorf("testenv: prosody config: %w", err)
	}
	return conf.String(), nil
}
