package issuers

import (
	"crypto/x509/pkix"
	_ "embed"
	"encoding/json"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"
)

// catalogJSON is the built-in catalog of ACME CAs.
//
//go:embed catalog.json
var catalogJSON []byte

// EAB requirements of a catalog entry.
const (
	EABNone     = "none"
	EABRequired = "required"
	EABOptional = "optional"
)

// Catalog environments.
const (
	EnvProduction = "production"
	EnvStaging    = "staging"
	EnvCustom     = "custom"
)

// CustomCatalogID is the catalog entry for any RFC 8555 directory.
const CustomCatalogID = "custom"

// CatalogEntry describes one ACME CA (or one of its directories) that an
// operator can pick when creating an issuer.
type CatalogEntry struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	Vendor      string `json:"vendor,omitempty"`
	Environment string `json:"environment"`
	// StagingID and ProductionID link an environment to its twin.
	StagingID    string `json:"staging_id,omitempty"`
	ProductionID string `json:"production_id,omitempty"`
	// DirectoryURL is the ACME directory; it may hold {param} parts
	// filled from Params (HARICA's per-account URL). Empty for "custom".
	DirectoryURL string         `json:"directory_url,omitempty"`
	Params       []CatalogParam `json:"params,omitempty"`
	Website      string         `json:"website,omitempty"`
	// EAB is whether external account binding is required, optional or
	// not used.
	EAB        string   `json:"eab"`
	Validation []string `json:"validation"`
	// Setup is what the operator must do or obtain before the first
	// order, shown when the entry is selected.
	Setup []string     `json:"setup"`
	Notes CatalogNotes `json:"notes"`
	// Warning is shown prominently (distrust, retirement).
	Warning string `json:"warning,omitempty"`
	// Retired entries are kept to recognise existing certificates; new
	// issuers cannot use them.
	Retired       bool     `json:"retired,omitempty"`
	CAAIdentities []string `json:"caa_identities,omitempty"`
	// Match identifies certificates issued by this CA.
	Match IssuerMatch `json:"match"`
	// DuplicateLimit is what the CA documents about duplicate
	// certificates (certificates for exactly the same set of names): its
	// published limit, or None with a note when it documents none. Every
	// entry but "custom" says one or the other.
	DuplicateLimit *DuplicateLimit `json:"duplicate_certificate_limit,omitempty"`
}

// DuplicateLimit is at most Count certificates for exactly the same set of
// names within Window (a Go duration, e.g. "168h"); or, with None, that the
// CA publishes no such limit (Note says what was checked, Source where).
type DuplicateLimit struct {
	Count  int    `json:"count,omitempty"`
	Window string `json:"window,omitempty"`
	None   bool   `json:"none,omitempty"`
	Note   string `json:"note,omitempty"`
	Source string `json:"source,omitempty"`
}

// Limit returns the count and window to pace by; 0, 0 when the CA
// documents none.
func (l *DuplicateLimit) Limit() (int, time.Duration) {
	if l == nil || l.None || l.Count < 1 || l.WindowDuration() <= 0 {
		return 0, 0
	}
	return l.Count, l.WindowDuration()
}

// WindowDuration parses Window.
func (l DuplicateLimit) WindowDuration() time.Duration {
	d, _ := time.ParseDuration(l.Window)
	return d
}

// CatalogParam is one {name} part of a templated directory URL.
type CatalogParam struct {
	Name        string `json:"name"`
	Default     string `json:"default,omitempty"`
	Description string `json:"description"`
}

// CatalogNotes are facts an operator weighs when choosing a CA.
type CatalogNotes struct {
	ValidationReuse string   `json:"validation_reuse"`
	Wildcard        string   `json:"wildcard"`
	Profiles        []string `json:"profiles,omitempty"`
	ARI             bool     `json:"ari"`
	KeyTypes        []string `json:"key_types"`
	Other           []string `json:"other,omitempty"`
}

// IssuerMatch recognises a certificate's issuer: its organization must be
// one of Organizations (case-insensitive); when CommonNames is set, the
// issuer common name must also contain one of them (case-insensitive),
// which tells apart directories of one CA (Sectigo DV, OV and EV).
type IssuerMatch struct {
	Organizations []string `json:"organizations,omitempty"`
	CommonNames   []string `json:"common_names,omitempty"`
}

// catalog is the parsed built-in catalog, in file order.
var catalog = mustParseCatalog(catalogJSON)

func mustParseCatalog(b []byte) []CatalogEntry {
	entries, err := parseCatalog(b)
	if err != nil {
		panic("issuers: built-in catalog: " + err.Error())
	}
	return entries
}

var catalogIDRe = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

// parseCatalog decodes and checks a catalog file.
func parseCatalog(b []byte) ([]CatalogEntry, error) {
	var f struct {
		Version int            `json:"version"`
		Entries []CatalogEntry `json:"entries"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("decoding catalog: %w", err)
	}
	seen := map[string]bool{}
	for _, e := range f.Entries {
		switch {
		case !catalogIDRe.MatchString(e.ID):
			return nil, fmt.Errorf("entry %q: invalid id", e.ID)
		case seen[e.ID]:
			return nil, fmt.Errorf("entry %q: duplicate id", e.ID)
		case e.Name == "" || len(e.Setup) == 0:
			return nil, fmt.Errorf("entry %q: name and setup are required", e.ID)
		case !slices.Contains([]string{EABNone, EABRequired, EABOptional}, e.EAB):
			return nil, fmt.Errorf("entry %q: eab must be none, required or optional", e.ID)
		case !slices.Contains([]string{EnvProduction, EnvStaging, EnvCustom}, e.Environment):
			return nil, fmt.Errorf("entry %q: unknown environment %q", e.ID, e.Environment)
		case e.Environment != EnvCustom && e.DirectoryURL == "":
			return nil, fmt.Errorf("entry %q: directory_url is required", e.ID)
		}
		if l := e.DuplicateLimit; l != nil {
			switch {
			case l.None && (l.Count != 0 || l.Window != "" || l.Note == ""):
				return nil, fmt.Errorf("entry %q: duplicate_certificate_limit none takes a note and no count or window", e.ID)
			case !l.None && (l.Count < 1 || l.WindowDuration() <= 0):
				return nil, fmt.Errorf("entry %q: duplicate_certificate_limit needs a positive count and window, or none with a note", e.ID)
			}
		}
		seen[e.ID] = true
		if e.DirectoryURL != "" {
			sample, err := e.resolveURL(nil)
			if err != nil {
				// templated without defaults: check the shape with placeholders
				params := map[string]string{}
				for _, p := range e.Params {
					params[p.Name] = "x"
				}
				if sample, err = e.resolveURL(params); err != nil {
					return nil, fmt.Errorf("entry %q: %w", e.ID, err)
				}
			}
			if u, err := url.Parse(sample); err != nil || u.Scheme != "https" || u.Host == "" {
				return nil, fmt.Errorf("entry %q: directory_url is not an https URL", e.ID)
			}
		}
	}
	for _, e := range f.Entries {
		for _, twin := range []string{e.StagingID, e.ProductionID} {
			if twin != "" && !seen[twin] {
				return nil, fmt.Errorf("entry %q: links to unknown entry %q", e.ID, twin)
			}
		}
	}
	return f.Entries, nil
}

// Catalog returns the built-in catalog, in display order. The slice is a
// copy.
func Catalog() []CatalogEntry { return slices.Clone(catalog) }

// LookupCatalog returns the catalog entry with the given ID.
func LookupCatalog(id string) (CatalogEntry, bool) {
	for _, e := range catalog {
		if e.ID == id {
			return e, true
		}
	}
	return CatalogEntry{}, false
}

var paramRe = regexp.MustCompile(`\{([a-z_]+)\}`)

// resolveURL fills the entry's templated directory URL from params (or the
// parameters' defaults). Values are path-escaped, so a value cannot change
// the URL's host or add path segments.
func (e CatalogEntry) resolveURL(params map[string]string) (string, error) {
	var missing []string
	out := paramRe.ReplaceAllStringFunc(e.DirectoryURL, func(m string) string {
		name := m[1 : len(m)-1]
		v := strings.TrimSpace(params[name])
		if v == "" {
			for _, p := range e.Params {
				if p.Name == name {
					v = p.Default
				}
			}
		}
		if v == "" {
			missing = append(missing, name)
			return m
		}
		return url.PathEscape(v)
	})
	if len(missing) > 0 {
		return "", fmt.Errorf("the %s directory URL needs directory_params %s", e.Name, strings.Join(missing, ", "))
	}
	return out, nil
}

// MatchIssuer returns the catalog entry whose CA issued a certificate with
// the given issuer name. Entries whose common-name hints match win over an
// entry of the same organization without hints (Sectigo OV over Sectigo
// DV); staging entries match only their own staging organization names.
func MatchIssuer(issuer pkix.Name) (catalogID string, ok bool) {
	cn := " " + strings.ToLower(issuer.CommonName) + " "
	fallback := ""
	for _, e := range catalog {
		if !orgMatches(e.Match.Organizations, issuer.Organization) {
			continue
		}
		if len(e.Match.CommonNames) == 0 {
			if fallback == "" {
				fallback = e.ID
			}
			continue
		}
		for _, hint := range e.Match.CommonNames {
			if strings.Contains(cn, strings.ToLower(hint)) {
				return e.ID, true
			}
		}
	}
	return fallback, fallback != ""
}

func orgMatches(want, have []string) bool {
	for _, h := range have {
		h = strings.TrimSpace(h)
		for _, w := range want {
			// "Actalis S.p.A./03358520967": an organization may carry a
			// registration number after a slash.
			if strings.EqualFold(h, w) || (len(h) > len(w) && strings.EqualFold(h[:len(w)], w) && h[len(w)] == '/') {
				return true
			}
		}
	}
	return false
}
