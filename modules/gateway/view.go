package gateway

import (
	"strings"
	"time"

	"github.com/certlocker/caddy-certlocker/storage"
)

// View is a token as the API shows it: never a secret, except the
// credentials of a create or rotate response.
type View struct {
	ID            string               `json:"id"`
	Type          string               `json:"type"`
	Name          string               `json:"name,omitempty"`
	Description   string               `json:"description,omitempty"`
	CertificateID string               `json:"certificate_id,omitempty"`
	Names         []string             `json:"names"`
	IssuerID      string               `json:"issuer_id"`
	Identifiers   []storage.Identifier `json:"identifiers"`
	State         string               `json:"state"`
	Group         string               `json:"group,omitempty"`
	MaxAccounts   int                  `json:"max_accounts"`
	MinRSABits    int                  `json:"min_rsa_bits"`
	AllowedCurves []string             `json:"allowed_curves,omitempty"`
	AllowBundle   bool                 `json:"allow_bundle"`
	ExpiresAt     *time.Time           `json:"expires_at,omitempty"`
	GraceUntil    *time.Time           `json:"previous_secrets_valid_until,omitempty"`
	LastUsedAt    *time.Time           `json:"last_used_at,omitempty"`
	RevokedAt     *time.Time           `json:"revoked_at,omitempty"`
	CreatedAt     time.Time            `json:"created_at"`
	UpdatedAt     time.Time            `json:"updated_at"`
	EABKeyID      string               `json:"eab_key_id"`
	// EABHMACKey and DirectoryPath are set only in the response that
	// made them (create, rotate).
	EABHMACKey    string `json:"eab_hmac_key,omitempty"`
	DirectoryPath string `json:"directory_path,omitempty"`
	// Clients are ready-to-paste configurations per edge client; the
	// secrets are filled in only where they are shown.
	Clients map[string]string `json:"clients"`
}

// NewView shows t; creds, if given, are the credentials just made. base is
// the gateway's public base URL (scheme and host).
func NewView(t *storage.Token, creds *Credentials, base string, now time.Time) View {
	v := View{ID: t.ID, Type: t.Type, Name: t.Name, Description: t.Description, CertificateID: t.CertificateID,
		Names: t.Names, IssuerID: t.Spec.IssuerID, Identifiers: t.Spec.Identifiers, State: State(t, now), Group: t.Group,
		MaxAccounts: t.Spec.MaxAccounts, MinRSABits: t.Spec.MinRSABits, AllowedCurves: t.Spec.AllowedCurves,
		AllowBundle: t.Spec.AllowBundle, CreatedAt: t.CreatedAt, UpdatedAt: t.UpdatedAt, EABKeyID: t.ID}
	if v.Names == nil {
		v.Names = []string{}
	}
	opt := func(tm time.Time) *time.Time {
		if tm.IsZero() {
			return nil
		}
		return &tm
	}
	v.ExpiresAt, v.LastUsedAt, v.RevokedAt = opt(t.ExpiresAt), opt(t.LastUsedAt), opt(t.RevokedAt)
	if now.Before(t.GraceUntil) {
		v.GraceUntil = opt(t.GraceUntil)
	}
	mac, dir := "<eab_hmac_key>", TokenPathPrefix+"<url_secret>/directory"
	if creds != nil {
		v.EABHMACKey, v.DirectoryPath = creds.EABHMACKey, creds.DirectoryPath
		mac, dir = creds.EABHMACKey, creds.DirectoryPath
	}
	v.Clients = Recipes(base, t, mac, dir)
	return v
}

// Recipes are the edge clients' configurations for the token: EAB at the
// gateway's directory, or the per-token directory for clients without EAB.
func Recipes(base string, t *storage.Token, mac, tokenDir string) map[string]string {
	base = strings.TrimSuffix(base, "/")
	if base == "" {
		base = "https://certlocker.example.com"
	}
	dir := base + DirectoryPath
	names := t.Names
	first := ""
	if len(names) > 0 {
		first = names[0]
	}
	var d, lego strings.Builder
	for _, n := range names {
		d.WriteString(" -d " + n)
		lego.WriteString(" --domains " + n)
	}
	return map[string]string{
		"haproxy_3_3": "acme certlocker\n    directory " + base + tokenDir + "\n    account-key /etc/haproxy/certlocker.account.key\n    challenge http-01\n    keytype ECDSA\n    curves P-384\n",
		"haproxy_3_4": "acme certlocker\n    directory " + dir + "\n    eab-kid " + t.ID + "\n    eab-hmac-key " + mac + "\n    challenge http-01\n    keytype ECDSA\n",
		"win_acme":    "wacs.exe --baseuri " + dir + " --eab-key-identifier " + t.ID + " --eab-key " + mac + " --source manual --host " + strings.Join(names, ","),
		"certbot":     "certbot certonly --server " + dir + " --eab-kid " + t.ID + " --eab-hmac-key " + mac + " --manual --manual-auth-hook true --preferred-challenges http --agree-tos -m ops@example.com" + d.String(),
		"lego":        "lego --server " + dir + " --eab --kid " + t.ID + " --hmac " + mac + " --email ops@example.com --accept-tos --http" + lego.String() + " run",
		"acme_sh":     "acme.sh --register-account --server " + dir + " --eab-kid " + t.ID + " --eab-hmac-key " + mac + "\nacme.sh --issue --server " + dir + " --standalone" + d.String(),
		"caddy":       first + " {\n\ttls {\n\t\tca " + dir + "\n\t\teab " + t.ID + " " + mac + "\n\t}\n}\n# or globally: { acme_ca " + dir + "\n#   acme_eab {\n#     key_id " + t.ID + "\n#     mac_key " + mac + "\n#   } }\n",
	}
}
