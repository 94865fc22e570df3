package gateway

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/smallstep/certificates/acme"
	acmenosql "github.com/smallstep/certificates/acme/db/nosql"

	"github.com/certlocker/caddy-certlocker/storage"
)

// reqState is what the gateway learns about one request before and while
// smallstep handles it. It travels in the request context as a pointer, so
// the DB methods smallstep calls can read and fill it.
type reqState struct {
	host   string
	remote string
	// urlSecret and urlToken are set on the per-token directory
	urlSecret string
	urlToken  *storage.Token
	// eabToken and macKey are set on the EAB directory once the binding
	// verified (with the current or, during a grace, the previous key)
	eabToken string
	macKey   []byte

	mu sync.Mutex
	// accountTokens are the tokens of the accounts this request used,
	// read once per request (accountToken)
	accountTokens map[string]*storage.Token
}

type stateKey struct{}

func stateFrom(ctx context.Context) *reqState {
	s, _ := ctx.Value(stateKey{}).(*reqState)
	if s == nil {
		return &reqState{}
	}
	return s
}

// db is smallstep's acme.DB for the gateway: its stock nosql implementation
// on our store, with the token rules around it. EAB keys are tokens;
// accounts are bound to a token atomically with their creation, up to the
// token's limit; challenges and authorizations for names in scope are
// created valid; anything outside scope is refused before it is stored.
type db struct {
	acme.DB
	g *Gateway
}

func newDB(g *Gateway) (*db, error) {
	inner, err := acmenosql.New(stateDB{st: g.store})
	if err != nil {
		return nil, fmt.Errorf("opening the gateway's ACME state: %w", err)
	}
	return &db{DB: inner, g: g}, nil
}

// accountToken returns the active token an account is bound to. It is
// read once per request: a new order asks for every challenge,
// authorization and the order itself.
func (d *db) accountToken(ctx context.Context, accountID string) (*storage.Token, error) {
	s := stateFrom(ctx)
	s.mu.Lock()
	t := s.accountTokens[accountID]
	s.mu.Unlock()
	if t == nil {
		var err error
		if t, err = d.readAccountToken(ctx, accountID); err != nil {
			return nil, err
		}
		s.mu.Lock()
		if s.accountTokens == nil {
			s.accountTokens = map[string]*storage.Token{}
		}
		s.accountTokens[accountID] = t
		s.mu.Unlock()
	}
	if st := State(t, d.g.clock()); st != StateActive {
		return nil, acme.NewDetailedError(acme.ErrorUnauthorizedType, "token %s is %s", t.ID, st)
	}
	return t, nil
}

func (d *db) readAccountToken(ctx context.Context, accountID string) (*storage.Token, error) {
	id, err := d.g.store.Tokens().AccountToken(ctx, accountID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, acme.NewError(acme.ErrorUnauthorizedType, "account %s is bound to no token", accountID)
	}
	if err != nil {
		return nil, err
	}
	t, err := d.g.store.Tokens().Get(ctx, id)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, acme.NewError(acme.ErrorUnauthorizedType, "the token of account %s was deleted", accountID)
	}
	if err != nil {
		return nil, err
	}
	return t, nil
}

// inScope refuses a name the account's token does not cover.
func (d *db) inScope(ctx context.Context, accountID, name string) (*storage.Token, error) {
	t, err := d.accountToken(ctx, accountID)
	if err != nil {
		return nil, err
	}
	scope, err := NewScope(t.Names)
	if err != nil || scope.Empty() || !scope.Covers(name) {
		return nil, acme.NewDetailedError(acme.ErrorRejectedIdentifierType, "%s is outside the scope of token %s", name, t.ID)
	}
	return t, nil
}

// GetExternalAccountKey returns the token whose ID is keyID as an EAB key,
// never bound (one token binds several accounts), with the MAC key the
// binding verified with. It records the token for CreateAccount.
func (d *db) GetExternalAccountKey(ctx context.Context, provisionerID, keyID string) (*acme.ExternalAccountKey, error) {
	s := stateFrom(ctx)
	t, err := d.g.store.Tokens().Get(ctx, keyID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, acme.NewError(acme.ErrorUnauthorizedType, "unknown EAB key ID")
	}
	if err != nil {
		return nil, err
	}
	keys := MACKeys(t, d.g.clock())
	if len(keys) == 0 {
		return nil, acme.NewDetailedError(acme.ErrorUnauthorizedType, "token %s is %s", t.ID, State(t, d.g.clock()))
	}
	mac := keys[0]
	if s.eabToken == t.ID && s.macKey != nil {
		mac = s.macKey
	}
	s.eabToken = t.ID
	return &acme.ExternalAccountKey{ID: t.ID, ProvisionerID: provisionerID, Reference: t.ID, HmacKey: mac, CreatedAt: t.CreatedAt}, nil
}

// UpdateExternalAccountKey keeps nothing: the binding was recorded with
// the account.
func (d *db) UpdateExternalAccountKey(context.Context, string, *acme.ExternalAccountKey) error {
	return nil
}

// GetExternalAccountKeyByAccountID returns the account's token as its key.
func (d *db) GetExternalAccountKeyByAccountID(ctx context.Context, provisionerID, accountID string) (*acme.ExternalAccountKey, error) {
	t, err := d.accountToken(ctx, accountID)
	if err != nil {
		return nil, err
	}
	return &acme.ExternalAccountKey{ID: t.ID, ProvisionerID: provisionerID, Reference: t.ID, AccountID: accountID}, nil
}

var errTokensOnly = errors.New("EAB keys are certificate tokens: manage them with the admin API")

func (d *db) CreateExternalAccountKey(context.Context, string, string) (*acme.ExternalAccountKey, error) {
	return nil, errTokensOnly
}
func (d *db) GetExternalAccountKeys(context.Context, string, string, int) ([]*acme.ExternalAccountKey, string, error) {
	return nil, "", errTokensOnly
}
func (d *db) GetExternalAccountKeyByReference(context.Context, string, string) (*acme.ExternalAccountKey, error) {
	return nil, errTokensOnly
}
func (d *db) DeleteExternalAccountKey(context.Context, string, string) error { return errTokensOnly }

// CreateAccount stores the account and binds it to its token in one
// transaction: the token of the verified EAB, or of the per-token URL.
// Over the token's limit nothing is stored.
func (d *db) CreateAccount(ctx context.Context, acc *acme.Account) error {
	s := stateFrom(ctx)
	var t *storage.Token
	switch {
	case s.eabToken != "":
		var err error
		if t, err = d.g.store.Tokens().Get(ctx, s.eabToken); err != nil {
			return err
		}
	case s.urlToken != nil:
		t = s.urlToken
	default:
		return acme.NewError(acme.ErrorUnauthorizedType, "an account needs a token: EAB, or the token's own directory")
	}
	if st := State(t, d.g.clock()); st != StateActive {
		return acme.NewDetailedError(acme.ErrorUnauthorizedType, "token %s is %s", t.ID, st)
	}
	max := t.Spec.MaxAccounts
	if max <= 0 {
		max = DefaultMaxAccounts
	}
	err := d.g.store.InTx(ctx, func(tx storage.Store) error {
		inner, err := acmenosql.New(stateDB{st: tx})
		if err != nil {
			return err
		}
		if err := inner.CreateAccount(ctx, acc); err != nil {
			return err
		}
		return tx.Tokens().BindAccount(ctx, t.ID, acc.ID, max)
	})
	if errors.Is(err, storage.ErrLimit) {
		d.g.use(ctx, t, "token.refused", map[string]any{"reason": "account limit", "max_accounts": max})
		return acme.NewDetailedError(acme.ErrorUnauthorizedType, "token %s has its %d accounts bound already", t.ID, max)
	}
	if err != nil {
		return err
	}
	d.g.use(ctx, t, "token.account_bound", map[string]any{"account_id": acc.ID})
	return nil
}

// A nonce is, base64url, its creation time (8 bytes of Unix seconds), 16
// random bytes and an HMAC of both (16 bytes) under a key every node of
// the store shares (nonceKey): issuing one writes nothing; using one
// checks the MAC (a nonce the gateway never issued is refused without a
// write), refuses one older than nonceTTL, then records it as used with
// an insert that exactly one request, on any node, wins (a replay is
// refused everywhere). A used nonce is recorded under its time (11 hex
// digits) and random part, so that expired ones are removed by key range
// without reading them.
const (
	noncesBucket = "nonces"
	nonceTTL     = time.Hour
	// keysBucket holds the gateway's own keys (sealed like all ACME state)
	keysBucket  = "gateway_keys"
	nonceKeyKey = "nonce_mac"
)

func nonceKeyAt(t time.Time) string { return fmt.Sprintf("%011x", t.Unix()) }

// nonceKey returns the nonces' MAC key, shared by every node of the store:
// the first node that needs it adds it (one wins), the others read it.
func (g *Gateway) nonceKey(ctx context.Context) ([]byte, error) {
	g.nonceMu.Lock()
	defer g.nonceMu.Unlock()
	if g.nonceMAC != nil {
		return g.nonceMAC, nil
	}
	ctx = context.WithoutCancel(ctx)
	k, err := g.store.ACME().Get(ctx, keysBucket, nonceKeyKey)
	if errors.Is(err, storage.ErrNotFound) {
		fresh := make([]byte, 32)
		if _, err := rand.Read(fresh); err != nil {
			return nil, err
		}
		if _, err := g.store.ACME().Add(ctx, keysBucket, nonceKeyKey, fresh); err != nil {
			return nil, fmt.Errorf("storing the nonce key: %w", err)
		}
		k, err = g.store.ACME().Get(ctx, keysBucket, nonceKeyKey)
	}
	if err != nil {
		return nil, fmt.Errorf("reading the nonce key: %w", err)
	}
	if len(k) < 32 {
		return nil, errors.New("reading the nonce key: it is too short")
	}
	g.nonceMAC = k
	return k, nil
}

func nonceMAC(key, stamp []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("certlocker acme nonce\x00"))
	m.Write(stamp)
	return m.Sum(nil)[:16]
}

// CreateNonce returns a new replay nonce; it stores nothing.
func (d *db) CreateNonce(ctx context.Context) (acme.Nonce, error) {
	key, err := d.g.nonceKey(ctx)
	if err != nil {
		return "", err
	}
	now := d.g.clock()
	raw := binary.BigEndian.AppendUint64(make([]byte, 0, 40), uint64(now.Unix()))
	raw = append(raw, make([]byte, 16)...)
	if _, err := rand.Read(raw[8:24]); err != nil {
		return "", err
	}
	raw = append(raw, nonceMAC(key, raw[:24])...)
	d.g.expireNonces(ctx, now)
	return acme.Nonce(base64.RawURLEncoding.EncodeToString(raw)), nil
}

// DeleteNonce uses a nonce once, also across nodes and concurrent requests.
func (d *db) DeleteNonce(ctx context.Context, nonce acme.Nonce) error {
	key, err := d.g.nonceKey(ctx)
	if err != nil {
		return err
	}
	raw, err := base64.RawURLEncoding.DecodeString(string(nonce))
	if err != nil || len(raw) != 40 || !hmac.Equal(raw[24:], nonceMAC(key, raw[:24])) {
		return acme.NewError(acme.ErrorBadNonceType, "nonce is unknown or used")
	}
	at := time.Unix(int64(binary.BigEndian.Uint64(raw[:8])), 0)
	if at.Before(d.g.clock().Add(-nonceTTL)) {
		return acme.NewError(acme.ErrorBadNonceType, "nonce expired")
	}
	used := nonceKeyAt(at) + "-" + base64.RawURLEncoding.EncodeToString(raw[8:24])
	fresh, err := d.g.store.ACME().Add(ctx, noncesBucket, used, nil)
	if err != nil {
		return err
	}
	if !fresh {
		return acme.NewError(acme.ErrorBadNonceType, "nonce is unknown or used")
	}
	return nil
}

// CreateChallenge creates the challenge valid: the upstream CA validates
// the token's names, not the edge.
func (d *db) CreateChallenge(ctx context.Context, ch *acme.Challenge) error {
	// a wildcard's challenge names its base: the authorization (created
	// next, knowing it is a wildcard) and the order are checked in full
	if _, err := d.inScope(ctx, ch.AccountID, ch.Value); err != nil {
		if _, werr := d.inScope(ctx, ch.AccountID, "*."+ch.Value); ch.Type != acme.DNS01 || werr != nil {
			return err
		}
	}
	// the stock store creates every challenge pending: validate it in the
	// same transaction (one commit, and never a pending one left behind)
	return d.g.store.InTx(ctx, func(tx storage.Store) error {
		inner, err := acmenosql.New(stateDB{st: tx})
		if err != nil {
			return err
		}
		if err := inner.CreateChallenge(ctx, ch); err != nil {
			return err
		}
		ch.Status = acme.StatusValid
		ch.ValidatedAt = d.g.clock().UTC().Format(time.RFC3339)
		return inner.UpdateChallenge(ctx, ch)
	})
}

// CreateAuthorization creates the authorization valid, for names in scope.
// One without challenges is refused: smallstep offers dns-01 for every DNS
// name (only dns-01 for a wildcard, RFC 8555 §7.1.4) and http-01 for names
// and IPs, so none should come, and an empty list breaks clients.
func (d *db) CreateAuthorization(ctx context.Context, az *acme.Authorization) error {
	if len(az.Challenges) == 0 {
		return acme.NewErrorISE("authorization for %s has no challenges", az.Identifier.Value)
	}
	name := az.Identifier.Value
	if az.Wildcard && !strings.HasPrefix(name, "*.") {
		name = "*." + name
	}
	if _, err := d.inScope(ctx, az.AccountID, name); err != nil {
		return err
	}
	az.Status = acme.StatusValid
	return d.DB.CreateAuthorization(ctx, az)
}

// CreateOrder checks the whole order against the scope again (fail-closed)
// and records the order as a use of the token.
func (d *db) CreateOrder(ctx context.Context, o *acme.Order) error {
	var t *storage.Token
	for _, id := range o.Identifiers {
		var err error
		if t, err = d.inScope(ctx, o.AccountID, id.Value); err != nil {
			return err
		}
	}
	if err := d.DB.CreateOrder(ctx, o); err != nil {
		return err
	}
	if t != nil {
		names := make([]string, 0, len(o.Identifiers))
		for _, id := range o.Identifiers {
			names = append(names, id.Value)
		}
		d.g.use(ctx, t, "token.order", map[string]any{"order_id": o.ID, "identifiers": names})
	}
	return nil
}

var _ acme.DB = (*db)(nil)

// CreateCertificate stores the certificate of an order. A fresh re-pull
// serves a certificate already stored for an earlier order: its serial
// index keeps pointing at the first record (revocation finds the same
// certificate either way).
func (d *db) CreateCertificate(ctx context.Context, cert *acme.Certificate) error {
	if cert.Leaf != nil {
		if _, err := d.DB.GetCertificateBySerial(ctx, cert.Leaf.SerialNumber.String()); err == nil {
			inner, err := acmenosql.New(keepSerial{stateDB{st: d.g.store}})
			if err != nil {
				return err
			}
			return inner.CreateCertificate(ctx, cert)
		}
	}
	return d.DB.CreateCertificate(ctx, cert)
}

// keepSerial is the state store with the serial index left as it is.
type keepSerial struct{ stateDB }

func (k keepSerial) CmpAndSwap(bucket, key, oldValue, newValue []byte) ([]byte, bool, error) {
	if string(bucket) == "acme_serial_certs_index" && oldValue == nil {
		if v, err := k.stateDB.Get(bucket, key); err == nil {
			return v, true, nil
		}
	}
	return k.stateDB.CmpAndSwap(bucket, key, oldValue, newValue)
}
