// Checking an issuer Spec before anything reaches the CA or the store.

package issuers

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"net/mail"
	"net/url"
	"slices"
	"strings"

	"github.com/certlocker/caddy-certlocker/storage"
)

// Spec is what an operator gives to create an issuer.
type Spec struct {
	Name string
	// CatalogID picks the CA from the catalog; "custom" (or empty with a
	// DirectoryURL) for any RFC 8555 directory.
	CatalogID string
	// DirectoryURL is the directory of a custom issuer, or overrides a
	// catalog entry's (a regional endpoint).
	DirectoryURL string
	// DirectoryParams fill a templated catalog URL (HARICA's {account}).
	DirectoryParams map[string]string
	// Contacts are email addresses, with or without "mailto:".
	Contacts       []string
	EABKeyID       string
	EABMACKey      storage.Secret
	AccountKeyType string
	Profile        string
	PreferredChain string
	CustomRootsPEM string
	Group          string
	// AgreeTerms agrees to the CA's terms of service; required when the
	// directory publishes terms.
	AgreeTerms bool
}

// draft is a checked Spec, ready to register or store.
type draft struct {
	iss   *storage.Issuer
	entry CatalogEntry
	agree bool
}

// check validates spec without contacting the CA.
func (s *Service) check(spec Spec) (*draft, error) {
	if !storage.ValidName(spec.Name) {
		return nil, invalid("name", "name must be "+storage.NameRule)
	}
	if !storage.ValidGroup(spec.Group) {
		return nil, invalid("group", "group must be "+storage.GroupRule)
	}
	catalogID := spec.CatalogID
	if catalogID == "" {
		if spec.DirectoryURL == "" {
			return nil, invalid("catalog_id", "give catalog_id (GET /certlocker/catalog lists them) or directory_url for a custom directory")
		}
		catalogID = CustomCatalogID
	}
	entry, ok := LookupCatalog(catalogID)
	if !ok {
		return nil, invalid("catalog_id", "unknown catalog_id %q: GET /certlocker/catalog lists the CAs", catalogID)
	}
	if entry.Retired {
		return nil, invalid("catalog_id", "%s is retired and takes no new issuers: %s", entry.Name, entry.Warning)
	}
	dirURL := spec.DirectoryURL
	if dirURL == "" {
		if entry.ID == CustomCatalogID {
			return nil, invalid("directory_url", "a custom issuer needs directory_url, the https URL of an RFC 8555 ACME directory")
		}
		u, err := entry.resolveURL(spec.DirectoryParams)
		if err != nil {
			return nil, invalid("directory_params", "%v", err)
		}
		dirURL = u
	} else if len(spec.DirectoryParams) > 0 {
		return nil, invalid("directory_params", "directory_params fill a catalog URL template; they cannot be combined with directory_url")
	}
	if err := checkDirectoryURL(dirURL); err != nil {
		return nil, err
	}
	contacts, err := normalizeContacts(spec.Contacts)
	if err != nil {
		return nil, err
	}
	keyType := spec.AccountKeyType
	if keyType == "" {
		keyType = DefaultKeyType
	}
	if !slices.Contains(KeyTypes, keyType) {
		return nil, invalid("account_key_type", "account_key_type %q is not supported: use one of %s", keyType, strings.Join(KeyTypes, ", "))
	}
	eabKID := strings.TrimSpace(spec.EABKeyID)
	mac, err := normalizeMAC(spec.EABMACKey)
	if err != nil {
		return nil, err
	}
	switch {
	case eabKID != "" && mac.IsZero():
		return nil, invalid("eab_mac_key", "eab_key_id is set but eab_mac_key is missing: external account binding needs both")
	case eabKID == "" && !mac.IsZero():
		return nil, invalid("eab_key_id", "eab_mac_key is set but eab_key_id is missing: external account binding needs both")
	case eabKID == "" && entry.EAB == EABRequired:
		return nil, invalid("eab_key_id", "%s requires external account binding: set eab_key_id and eab_mac_key. %s", entry.Name, strings.Join(entry.Setup, " "))
	}
	if spec.CustomRootsPEM != "" {
		if _, err := parseRoots(spec.CustomRootsPEM); err != nil {
			return nil, err
		}
	}
	if len(spec.Profile) > 128 || len(spec.PreferredChain) > 256 {
		return nil, invalid("profile", "profile or preferred_chain is too long")
	}
	return &draft{entry: entry, agree: spec.AgreeTerms, iss: &storage.Issuer{
		Name: spec.Name, CatalogID: entry.ID, DirectoryURL: dirURL, Contacts: contacts,
		EABKeyID: eabKID, EABMACKey: mac, AccountKeyType: keyType, Profile: spec.Profile,
		PreferredChain: spec.PreferredChain, CustomRootsPEM: strings.TrimSpace(spec.CustomRootsPEM), Group: spec.Group,
		Status: StatusUnregistered,
	}}, nil
}

func checkDirectoryURL(s string) error {
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return invalid("directory_url", "directory_url is not a URL: %v", err)
	case u.Scheme != "https":
		return invalid("directory_url", "directory_url must be an https URL (RFC 8555 requires TLS), not %q", s)
	case u.Host == "" || u.Hostname() == "":
		return invalid("directory_url", "directory_url %q has no host", s)
	case u.User != nil:
		return invalid("directory_url", "directory_url must not contain user information")
	case u.Fragment != "":
		return invalid("directory_url", "directory_url must not contain a fragment")
	}
	return nil
}

func normalizeContacts(in []string) ([]string, error) {
	var out []string
	for _, c := range in {
		c = strings.TrimSpace(c)
		addr := strings.TrimPrefix(c, "mailto:")
		if strings.Contains(addr, ":") && !strings.Contains(addr, "@") {
			return nil, invalid("contacts", "contact %q: only email addresses (mailto:) are supported", c)
		}
		a, err := mail.ParseAddress(addr)
		if err != nil || a.Address != addr || a.Name != "" {
			return nil, invalid("contacts", "contact %q is not an email address", c)
		}
		m := "mailto:" + addr
		if !slices.Contains(out, m) {
			out = append(out, m)
		}
	}
	return out, nil
}

// normalizeMAC accepts the MAC key as CAs hand it out: base64url with or
// without padding, or standard base64, and returns it as unpadded base64url.
func normalizeMAC(mac storage.Secret) (storage.Secret, error) {
	s := strings.TrimSpace(string(mac.Reveal()))
	if s == "" {
		return storage.Secret{}, nil
	}
	s = strings.NewReplacer("+", "-", "/", "_").Replace(strings.TrimRight(s, "="))
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) == 0 {
		return storage.Secret{}, invalid("eab_mac_key", "eab_mac_key is not base64url, as CAs issue it (value not shown)")
	}
	return storage.NewSecret([]byte(s)), nil
}

func parseRoots(pemText string) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	rest := []byte(pemText)
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, invalid("custom_roots_pem", "custom_roots_pem holds a %s block; give only CERTIFICATE blocks", block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, invalid("custom_roots_pem", "custom_roots_pem: parsing certificate: %v", err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, invalid("custom_roots_pem", "custom_roots_pem holds no PEM certificate")
	}
	return certs, nil
}

// checkAgainstMeta checks what only the directory can tell: EAB, profiles
// and terms.
func checkAgainstMeta(iss *storage.Issuer, m DirectoryMeta, agree bool) error {
	if m.ExternalAccountRequired && iss.EABKeyID == "" {
		return invalid("eab_key_id", "the CA at %s requires external account binding: set eab_key_id and eab_mac_key", iss.DirectoryURL)
	}
	if iss.Profile != "" {
		if len(m.Profiles) == 0 {
			return invalid("profile", "the CA offers no certificate profiles; leave profile empty")
		}
		if _, ok := m.Profiles[iss.Profile]; !ok {
			return invalid("profile", "the CA offers no profile %q; it offers %s", iss.Profile, strings.Join(m.ProfileNames(), ", "))
		}
	}
	if m.TermsOfService != "" && !agree {
		return invalid("agree_terms", "the CA's terms of service must be agreed to: read %s and set agree_terms to true", m.TermsOfService)
	}
	return nil
}
