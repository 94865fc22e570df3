package workflow

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/certlocker/caddy-certlocker/storage"
)

// Migration re-issues a selection of certificates on another ACME client:
// "CA migration in bulk". At least one selector is required.
type Migration struct {
	// Selectors: certificates of this ACME client, group and/or domain.
	FromIssuerID string
	Group        string
	Domain       string
	// ToIssuerID is the ACME client to move to.
	ToIssuerID string
	// PerMinute paces the new orders to the target CA's limits: the i-th
	// starts i/PerMinute minutes from now. Default: 10.
	PerMinute int
	// DNSProviderID answers dns-01 for wildcard names of certificates
	// that were imported (issued ones keep their own challenges).
	DNSProviderID string
	// Actor is recorded in the audit entry of each workflow started.
	Actor string
}

// MigrationResult lists what a migration started and skipped.
type MigrationResult struct {
	Workflows []*storage.Workflow `json:"-"`
	Skipped   []MigrationSkip     `json:"skipped"`
}

// MigrationSkip is a certificate left alone, and why.
type MigrationSkip struct {
	CertificateID string `json:"certificate_id"`
	Reason        string `json:"reason"`
}

// Migrate starts one workflow per selected active certificate on the
// target ACME client, paced, each linked to the certificate it replaces
// (which is marked renewed once its successor is issued).
func (e *Engine) Migrate(ctx context.Context, m Migration) (*MigrationResult, error) {
	if m.FromIssuerID == "" && m.Group == "" && m.Domain == "" {
		return nil, invalid("from_issuer_id", "select certificates by from_issuer_id, group or domain")
	}
	if m.ToIssuerID == "" {
		return nil, invalid("to_issuer_id", "to_issuer_id is required")
	}
	if m.ToIssuerID == m.FromIssuerID {
		return nil, invalid("to_issuer_id", "to_issuer_id is the ACME client the certificates already use")
	}
	if m.PerMinute < 0 {
		return nil, invalid("per_minute", "per_minute must be positive")
	}
	if m.PerMinute == 0 {
		m.PerMinute = 10
	}
	res := &MigrationResult{Skipped: []MigrationSkip{}}
	step := time.Minute / time.Duration(m.PerMinute)
	start := e.opts.Clock()
	cursor := ""
	for {
		certs, next, err := e.opts.Store.Certificates().List(ctx, storage.CertificateFilter{IssuerID: m.FromIssuerID, Group: m.Group,
			Domain: m.Domain, Status: storage.CertStatusActive}, storage.Page{Cursor: cursor, Limit: 500})
		if err != nil {
			return res, err
		}
		for _, c := range certs {
			if c.IssuerID == m.ToIssuerID {
				res.Skipped = append(res.Skipped, MigrationSkip{CertificateID: c.ID, Reason: "already on the target ACME client"})
				continue
			}
			req, reason, err := e.migrationRequest(ctx, c, m)
			if err != nil {
				return res, err
			}
			if reason != "" {
				res.Skipped = append(res.Skipped, MigrationSkip{CertificateID: c.ID, Reason: reason})
				continue
			}
			req.StartAt = start.Add(time.Duration(len(res.Workflows)) * step)
			w, err := e.createSuccessor(ctx, c.ID, req, true)
			switch {
			case err != nil:
				res.Skipped = append(res.Skipped, MigrationSkip{CertificateID: c.ID, Reason: e.skipReason(c, m, err)})
			case w == nil:
				res.Skipped = append(res.Skipped, MigrationSkip{CertificateID: c.ID, Reason: "a renewal or migration of it is already under way"})
			default:
				res.Workflows = append(res.Workflows, w)
			}
		}
		if next == "" {
			return res, nil
		}
		cursor = next
	}
}

// skipReason says why a certificate's workflow could not start: a refused
// request in its own words; anything else (the store failing) is logged
// here and named only, since its text can hold hosts or SQL.
func (e *Engine) skipReason(c *storage.Certificate, m Migration, err error) string {
	var inv *InvalidError
	if errors.As(err, &inv) {
		return inv.Message
	}
	e.log.Error("starting a migration workflow", zap.String("certificate_id", c.ID), zap.String("issuer_id", m.ToIssuerID),
		zap.Error(err))
	return fmt.Sprintf("starting its workflow failed; see the log of node %s (certificate_id %s)", e.opts.Node, c.ID)
}

func (e *Engine) migrationRequest(ctx context.Context, c *storage.Certificate, m Migration) (Request, string, error) {
	req := Request{IssuerID: m.ToIssuerID, Trigger: TriggerMigration, Group: c.Group, PreviousCertificateID: c.ID, Actor: m.Actor}
	if c.WorkflowID != "" {
		prev, err := e.opts.Store.Workflows().Get(ctx, c.WorkflowID)
		if err == nil {
			req.Identifiers = append([]storage.Identifier(nil), prev.Identifiers...)
			req.KeyType, req.ParentID = prev.KeyType, prev.ID
			return req, "", nil
		}
	}
	for _, n := range c.Names {
		id := storage.Identifier{Value: n}
		if strings.HasPrefix(n, "*.") {
			if m.DNSProviderID == "" {
				return req, fmt.Sprintf("%s is a wildcard: give dns_provider_id to migrate imported wildcard certificates", n), nil
			}
			id.Challenge, id.DNSProviderID = ChallengeDNS01, m.DNSProviderID
		}
		req.Identifiers = append(req.Identifiers, id)
	}
	if len(req.Identifiers) == 0 {
		return req, "the certificate names no hosts", nil
	}
	return req, "", nil
}
