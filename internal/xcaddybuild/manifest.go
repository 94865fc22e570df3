package main

import (
	"encoding/json"
	"fmt"
	"os"
)

// Manifest is xcaddy.json.
type Manifest struct {
	CaddyVersion  string   `json:"caddy_version"`
	XcaddyVersion string   `json:"xcaddy_version"`
	Output        string   `json:"output"`
	Modules       []Module `json:"modules"`
}

// Module is one plugin module built in.
type Module struct {
	Module  string `json:"module"`
	Version string `json:"version"`
	// Replace is a local path the module is built from.
	Replace string `json:"replace,omitempty"`
	Why     string `json:"why,omitempty"`
}

// Load reads and checks a manifest.
func Load(path string) (*Manifest, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading manifest: %w", err)
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("decoding %s: %w", path, err)
	}
	if m.CaddyVersion == "" || m.XcaddyVersion == "" || len(m.Modules) == 0 {
		return nil, fmt.Errorf("%s: caddy_version, xcaddy_version and modules are required", path)
	}
	for i, mod := range m.Modules {
		if mod.Module == "" || mod.Version == "" {
			return nil, fmt.Errorf("%s: modules[%d] needs module and version", path, i)
		}
	}
	return &m, nil
}

// Args are xcaddy's arguments for the manifest.
func (m *Manifest) Args() []string {
	args := []string{"build", m.CaddyVersion}
	for _, mod := range m.Modules {
		w := mod.Module + "@" + mod.Version
		if mod.Replace != "" {
			w += "=" + mod.Replace
		}
		args = append(args, "--with", w)
	}
	if m.Output != "" {
		args = append(args, "--output", m.Output)
	}
	return args
}
