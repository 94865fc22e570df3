package inventory

import (
	"encoding/json"
	"math"
	"time"

	"github.com/certlocker/caddy-certlocker/storage"
)

// View is a certificate as the API and UI show it: never its private key.
type View struct {
	ID          string    `json:"id"`
	CommonName  string    `json:"common_name"`
	Names       []string  `json:"names"`
	Issuer      string    `json:"issuer"`
	IssuerID    string    `json:"issuer_id,omitempty"`
	CatalogID   string    `json:"catalog_id,omitempty"`
	WorkflowID  string    `json:"workflow_id,omitempty"`
	Profile     string    `json:"profile,omitempty"`
	Source      string    `json:"source"`
	Serial      string    `json:"serial"`
	Fingerprint string    `json:"fingerprint_sha256"`
	NotBefore   time.Time `json:"not_before"`
	NotAfter    time.Time `json:"not_after"`
	KeyType     string    `json:"key_type"`
	Rating      string    `json:"rating"`
	Group       string    `json:"group,omitempty"`
	Status      string    `json:"status"`
	// Expiry is the expiry bucket now: expired, within_7d, within_30d, ok.
	Expiry string `json:"expiry"`
	// DaysLeft is the whole days until NotAfter (negative once expired).
	DaysLeft      int       `json:"days_left"`
	Renewal       Renewal   `json:"renewal"`
	HasPrivateKey bool      `json:"has_private_key"`
	CreatedAt     time.Time `json:"created_at"`
	UpdatedAt     time.Time `json:"updated_at"`
	// Metadata is the full parsed metadata and rating breakdown (detail
	// views only).
	Metadata *Metadata `json:"metadata,omitempty"`
}

// View renders c at the service's current time; detail adds the metadata.
func (s *Service) View(c *storage.Certificate, detail bool) View {
	now := s.now()
	v := View{
		ID: c.ID, CommonName: c.CommonName, Names: c.Names, Issuer: c.IssuerDN, IssuerID: c.IssuerID,
		CatalogID: c.CatalogID, WorkflowID: c.WorkflowID, Profile: c.Profile, Source: c.Source, Serial: c.Serial,
		Fingerprint: c.Fingerprint, NotBefore: c.NotBefore, NotAfter: c.NotAfter, KeyType: c.KeyType, Rating: c.Rating,
		Group: c.Group, Status: c.Status, Expiry: ExpiryBucket(c.NotAfter, now),
		DaysLeft: int(math.Floor(c.NotAfter.Sub(now).Hours() / 24)), Renewal: RenewalStatus(c, now),
		HasPrivateKey: !c.PrivateKey.IsZero(), CreatedAt: c.CreatedAt, UpdatedAt: c.UpdatedAt,
	}
	if v.Names == nil {
		v.Names = []string{}
	}
	if detail {
		var m Metadata
		if err := json.Unmarshal(c.Meta, &m); err == nil {
			v.Metadata = &m
		}
	}
	return v
}
