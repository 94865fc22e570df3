package issuers

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// maxDirectoryBytes caps the size of a directory document.
const maxDirectoryBytes = 1 << 20

// DirectoryMeta is what an ACME directory says about its CA, as CertLocker
// shows it: RFC 8555 §7.1.1 meta plus what the directory's endpoints
// reveal (ARI, key rollover, pre-authorization).
type DirectoryMeta struct {
	TermsOfService          string   `json:"terms_of_service,omitempty"`
	Website                 string   `json:"website,omitempty"`
	CAAIdentities           []string `json:"caa_identities,omitempty"`
	ExternalAccountRequired bool     `json:"external_account_required"`
	// Profiles maps profile names to their descriptions (often a URL).
	Profiles map[string]string `json:"profiles,omitempty"`
	// ARI is whether the directory has a renewalInfo endpoint (RFC 9773).
	ARI bool `json:"ari"`
	// KeyChange is whether account key rollover is offered.
	KeyChange bool `json:"key_change"`
	// PreAuthorization is whether newAuthz is offered.
	PreAuthorization bool `json:"pre_authorization"`
}

// ProfileNames returns the offered profile names, sorted.
func (m DirectoryMeta) ProfileNames() []string {
	return slices.Sorted(maps.Keys(m.Profiles))
}

// ParseDirectory reads an ACME directory document. It accepts the shapes
// real CAs publish: unknown keys (Let's Encrypt adds a random one), a
// missing meta object, profiles as a name-to-description map or with
// description objects, caaIdentities as a list or a single string, and
// externalAccountRequired as a boolean or "true"/"false". It fails when the
// document is not an ACME directory (newNonce, newAccount and newOrder are
// required).
func ParseDirectory(b []byte) (DirectoryMeta, error) {
	var d struct {
		NewNonce    string          `json:"newNonce"`
		NewAccount  string          `json:"newAccount"`
		NewOrder    string          `json:"newOrder"`
		NewAuthz    string          `json:"newAuthz"`
		KeyChange   string          `json:"keyChange"`
		RenewalInfo string          `json:"renewalInfo"`
		Meta        json.RawMessage `json:"meta"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		return DirectoryMeta{}, fmt.Errorf("the directory is not JSON: %v", err)
	}
	var missing []string
	for k, v := range map[string]string{"newNonce": d.NewNonce, "newAccount": d.NewAccount, "newOrder": d.NewOrder} {
		if v == "" {
			missing = append(missing, k)
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		return DirectoryMeta{}, fmt.Errorf("the document is not an ACME directory: it has no %s", strings.Join(missing, ", "))
	}
	m := DirectoryMeta{ARI: d.RenewalInfo != "", KeyChange: d.KeyChange != "", PreAuthorization: d.NewAuthz != ""}
	if len(d.Meta) == 0 || string(d.Meta) == "null" {
		return m, nil
	}
	var raw struct {
		TermsOfService          json.RawMessage `json:"termsOfService"`
		Website                 json.RawMessage `json:"website"`
		CAAIdentities           json.RawMessage `json:"caaIdentities"`
		ExternalAccountRequired json.RawMessage `json:"externalAccountRequired"`
		Profiles                json.RawMessage `json:"profiles"`
	}
	if err := json.Unmarshal(d.Meta, &raw); err != nil {
		return m, fmt.Errorf("the directory's meta is not an object: %v", err)
	}
	m.TermsOfService = looseString(raw.TermsOfService)
	m.Website = looseString(raw.Website)
	m.CAAIdentities = looseStrings(raw.CAAIdentities)
	m.ExternalAccountRequired = looseBool(raw.ExternalAccountRequired)
	m.Profiles = looseProfiles(raw.Profiles)
	return m, nil
}

func looseString(b json.RawMessage) string {
	var s string
	if json.Unmarshal(b, &s) == nil {
		return strings.TrimSpace(s)
	}
	return ""
}

func looseStrings(b json.RawMessage) []string {
	var list []string
	if json.Unmarshal(b, &list) == nil {
		return slices.DeleteFunc(list, func(s string) bool { return strings.TrimSpace(s) == "" })
	}
	if s := looseString(b); s != "" {
		return []string{s}
	}
	return nil
}

func looseBool(b json.RawMessage) bool {
	var v bool
	if json.Unmarshal(b, &v) == nil {
		return v
	}
	v, _ = strconv.ParseBool(looseString(b))
	return v
}

func looseProfiles(b json.RawMessage) map[string]string {
	var obj map[string]json.RawMessage
	if json.Unmarshal(b, &obj) != nil || len(obj) == 0 {
		// a list of names
		names := looseStrings(b)
		if len(names) == 0 {
			return nil
		}
		out := make(map[string]string, len(names))
		for _, n := range names {
			out[n] = ""
		}
		return out
	}
	out := make(map[string]string, len(obj))
	for name, v := range obj {
		desc := looseString(v)
		if desc == "" {
			var o struct {
				Description string `json:"description"`
			}
			if json.Unmarshal(v, &o) == nil {
				desc = o.Description
			}
		}
		out[name] = desc
	}
	return out
}

// errUnreachable marks a directory that could not be fetched.
var errUnreachable = errors.New("directory unreachable")

// fetchDirectory GETs and parses the directory with client.
func fetchDirectory(ctx context.Context, client *http.Client, directoryURL, userAgent string) (DirectoryMeta, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, directoryURL, nil)
	if err != nil {
		return DirectoryMeta{}, fmt.Errorf("%w: %w", errUnreachable, err)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", userAgent)
	resp, err := client.Do(req)
	if err != nil {
		return DirectoryMeta{}, fmt.Errorf("%w: %w", errUnreachable, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxDirectoryBytes+1))
	if err != nil {
		return DirectoryMeta{}, fmt.Errorf("%w: reading the directory: %v", errUnreachable, err)
	}
	if resp.StatusCode != http.StatusOK {
		return DirectoryMeta{}, fmt.Errorf("%w: the server answered HTTP %d", errUnreachable, resp.StatusCode)
	}
	if len(body) > maxDirectoryBytes {
		return DirectoryMeta{}, fmt.Errorf("%w: the directory is larger than %d bytes", errUnreachable, maxDirectoryBytes)
	}
	return ParseDirectory(bytes.TrimSpace(body))
}
