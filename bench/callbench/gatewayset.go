package main

import (
	"fmt"
	"strings"

	"go.yaml.in/yaml/v3"
)

// gatewaySets is the repeatable -gateway-set flag: section.key=value
// pairs written over the generated gateway configuration, so a setting can
// be compared without editing the harness (-gateway-set
// sip.transaction_linger=2s).
type gatewaySets []string

func (s *gatewaySets) String() string { return strings.Join(*s, ",") }

func (s *gatewaySets) Set(v string) error {
	path, _, ok := strings.Cut(v, "=")
	if !ok || path == "" || strings.HasPrefix(path, ".") || strings.HasSuffix(path, ".") || strings.Contains(path, "..") {
		return fmt.Errorf("%q: want section.key=value", v)
	}
	*s = append(*s, v)
	return nil
}

// apply returns conf (YAML) with every pair of s set; a value is read as
// YAML (2s, 300, true, [a, b]).
func (s gatewaySets) apply(conf []byte) ([]byte, error) {
	if len(s) == 0 {
		return conf, nil
	}
	var root map[string]any
	if err := yaml.Unmarshal(conf, &root); err != nil {
		return nil, fmt.Errorf("generated gateway config: %w", err)
	}
	for _, kv := range s {
		path, raw, _ := strings.Cut(kv, "=")
		var val any
		if err := yaml.Unmarshal([]byte(raw), &val); err != nil {
			return nil, fmt.Errorf("-gateway-set %s: value: %w", kv, err)
		}
		keys := strings.Split(path, ".")
		m := root
		for _, k := range keys[:len(keys)-1] {
			next, ok := m[k].(map[string]any)
			if !ok {
				if _, exists := m[k]; exists {
					return nil, fmt.Errorf("-gateway-set %s: %s is not a section", kv, k)
				}
				next = map[string]any{}
				m[k] = next
			}
			m = next
		}
		m[keys[len(keys)-1]] = val
	}
	return yaml.Marshal(root)
}
