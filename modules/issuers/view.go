package issuers

import (
	"encoding/json"
	"time"

	"github.com/certlocker/caddy-certlocker/storage"
)

// View is an issuer as the admin API and the UI show it: everything but
// the secrets, of which only their presence is told.
type View struct {
	ID              string         `json:"id"`
	Name            string         `json:"name"`
	CatalogID       string         `json:"catalog_id"`
	CatalogName     string         `json:"catalog_name,omitempty"`
	DirectoryURL    string         `json:"directory_url"`
	Contacts        []string       `json:"contacts"`
	EABKeyID        string         `json:"eab_key_id,omitempty"`
	EABMACKeySet    bool           `json:"eab_mac_key_set"`
	AccountKeyType  string         `json:"account_key_type"`
	AccountURL      string         `json:"account_url,omitempty"`
	Profile         string         `json:"profile,omitempty"`
	PreferredChain  string         `json:"preferred_chain,omitempty"`
	CustomRootsPEM  string         `json:"custom_roots_pem,omitempty"`
	Group           string         `json:"group,omitempty"`
	Status          string         `json:"status"`
	LastMessage     string         `json:"last_message,omitempty"`
	ManagedBy       string         `json:"managed_by"`
	Meta            *DirectoryMeta `json:"meta,omitempty"`
	TermsAgreed     string         `json:"terms_agreed,omitempty"`
	TermsAgreedAt   *time.Time     `json:"terms_agreed_at,omitempty"`
	RegisteredAt    *time.Time     `json:"registered_at,omitempty"`
	KeyRolledAt     *time.Time     `json:"key_rolled_at,omitempty"`
	MetaRefreshedAt *time.Time     `json:"meta_refreshed_at,omitempty"`
	CheckedAt       *time.Time     `json:"checked_at,omitempty"`
	RolloverPending bool           `json:"rollover_pending,omitempty"`
	CreatedAt       time.Time      `json:"created_at"`
	UpdatedAt       time.Time      `json:"updated_at"`
	Version         int64          `json:"version"`
}

// NewView returns the public view of iss.
func NewView(iss *storage.Issuer) View {
	v := View{ID: iss.ID, Name: iss.Name, CatalogID: iss.CatalogID, DirectoryURL: iss.DirectoryURL,
		Contacts: iss.Contacts, EABKeyID: iss.EABKeyID, EABMACKeySet: !iss.EABMACKey.IsZero(),
		AccountKeyType: iss.AccountKeyType, AccountURL: iss.AccountURL, Profile: iss.Profile,
		PreferredChain: iss.PreferredChain, CustomRootsPEM: iss.CustomRootsPEM, Group: iss.Group,
		Status: iss.Status, LastMessage: iss.LastMessage, ManagedBy: iss.ManagedBy, TermsAgreed: iss.TermsAgreed,
		TermsAgreedAt: timePtr(iss.TermsAgreedAt), RegisteredAt: timePtr(iss.RegisteredAt), KeyRolledAt: timePtr(iss.KeyRolledAt),
		MetaRefreshedAt: timePtr(iss.MetaRefreshedAt), CheckedAt: timePtr(iss.CheckedAt),
		RolloverPending: !iss.NextAccountKey.IsZero(), CreatedAt: iss.CreatedAt, UpdatedAt: iss.UpdatedAt, Version: iss.Version}
	if v.Contacts == nil {
		v.Contacts = []string{}
	}
	if e, ok := LookupCatalog(iss.CatalogID); ok {
		v.CatalogName = e.Name
	}
	if len(iss.Meta) > 0 && string(iss.Meta) != "{}" {
		var m DirectoryMeta
		if json.Unmarshal(iss.Meta, &m) == nil {
			v.Meta = &m
		}
	}
	return v
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}
