package challengezone

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/certlocker/caddy-certlocker/storage"
)

func init() {
	caddy.RegisterModule(ACMEDNSHandler{})
	httpcaddyfile.RegisterHandlerDirective("certlocker_acme_dns", parseACMEDNSHandler)
	httpcaddyfile.RegisterDirectiveOrder("certlocker_acme_dns", httpcaddyfile.Before, "redir")
}

// ACMEDNSHandler serves an acme-dns-compatible update API
// (github.com/joohoi/acme-dns), so that cert-manager, lego, certbot's and
// acme.sh's acme-dns clients can use CertLocker as their acme-dns: a
// client registers once (POST /register) and gets a subdomain of a
// challenge zone with credentials scoped to it; its owner CNAMEs
// _acme-challenge.<name> to that subdomain; the client then sets the TXT
// value of its subdomain (POST /update) and CertLocker's DNS server
// answers it, on every node. Other paths go to the next handler.
//
// The API is off unless this handler is configured (module ID
// http.handlers.certlocker_acme_dns). Registration is open to whoever can
// reach the handler: restrict it with Caddy matchers (remote_ip) or turn
// it off (register false) and register through the admin API. Passwords
// are sealed at rest; every registration and update is audited.
//
// Caddyfile: inside a site block
//
//	certlocker_acme_dns <zone> {
//		register on|off
//		allow_from <cidr>...
//	}
type ACMEDNSHandler struct {
	// Zone is the challenge zone (one of apps.certlocker.challenge_zones)
	// registrations get their subdomain in.
	Zone string `json:"zone"`

	// Register allows POST /register. Default: true (as acme-dns).
	Register *bool `json:"register,omitempty"`

	// AllowFrom are networks (CIDR) every registration must come from
	// and may narrow with its own allowfrom. Default: any.
	AllowFrom []string `json:"allow_from,omitempty"`

	store  storage.Store
	zones  storage.ChallengeZoneStore
	node   string
	logger *zap.Logger
	now    func() time.Time
}

// CaddyModule returns the Caddy module information.
func (ACMEDNSHandler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.certlocker_acme_dns",
		New: func() caddy.Module { return new(ACMEDNSHandler) },
	}
}

// appView is what the certlocker app offers the handler (asserted, not
// imported: the app imports this package).
type appView interface {
	Store() storage.Store
	Node() string
	ChallengeZoneNames() []string
}

// Provision finds the certlocker app and checks the zone is one it serves.
func (h *ACMEDNSHandler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	h.now = time.Now
	v, err := ctx.AppIfConfigured("certlocker")
	if err != nil {
		return fmt.Errorf("certlocker_acme_dns needs the certlocker app: %w", err)
	}
	app, ok := v.(appView)
	if !ok {
		return errors.New("certlocker_acme_dns: the certlocker app offers no store")
	}
	zone, err := CanonicalZone(h.Zone)
	if err != nil {
		return fmt.Errorf("certlocker_acme_dns: zone: %w", err)
	}
	h.Zone = strings.TrimSuffix(zone, ".")
	if !slices.Contains(app.ChallengeZoneNames(), h.Zone) {
		return fmt.Errorf("certlocker_acme_dns: zone %s is not among apps.certlocker.challenge_zones (%s)", h.Zone,
			strings.Join(app.ChallengeZoneNames(), ", "))
	}
	if _, err := parseNets(h.AllowFrom); err != nil {
		return fmt.Errorf("certlocker_acme_dns: allow_from: %w", err)
	}
	h.store, h.node = app.Store(), app.Node()
	h.zones = storage.ChallengeZoneOf(h.store)
	if h.zones == nil {
		return errors.New("certlocker_acme_dns: the storage backend has no challenge zone store")
	}
	return nil
}

// ServeHTTP implements caddyhttp.MiddlewareHandler.
func (h *ACMEDNSHandler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	switch {
	case r.URL.Path == "/register" && r.Method == http.MethodPost:
		h.register(w, r)
	case r.URL.Path == "/update" && r.Method == http.MethodPost:
		h.update(w, r)
	case r.URL.Path == "/health" && r.Method == http.MethodGet:
		w.WriteHeader(http.StatusOK)
	default:
		return next.ServeHTTP(w, r)
	}
	return nil
}

// RegisterResponse is the answer to POST /register (acme-dns's shape).
type RegisterResponse struct {
	Username   string   `json:"username"`
	Password   string   `json:"password"`
	FullDomain string   `json:"fulldomain"`
	Subdomain  string   `json:"subdomain"`
	AllowFrom  []string `json:"allowfrom"`
}

// registerRequest is the optional body of POST /register.
type registerRequest struct {
	AllowFrom []string `json:"allowfrom"`
}

// updateRequest is the body of POST /update.
type updateRequest struct {
	Subdomain string `json:"subdomain"`
	TXT       string `json:"txt"`
}

const maxBody = 4096

func (h *ACMEDNSHandler) register(w http.ResponseWriter, r *http.Request) {
	if h.Register != nil && !*h.Register {
		apiError(w, http.StatusForbidden, "registration_disabled")
		return
	}
	remote := remoteIP(r)
	base, _ := parseNets(h.AllowFrom)
	if len(base) > 0 && !contains(base, remote) {
		apiError(w, http.StatusUnauthorized, "forbidden")
		return
	}
	var req registerRequest
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody))
	if err == nil && len(strings.TrimSpace(string(body))) > 0 {
		err = json.Unmarshal(body, &req)
	}
	if err != nil {
		apiError(w, http.StatusBadRequest, "malformed_json_payload")
		return
	}
	nets, err := parseNets(req.AllowFrom)
	if err != nil {
		apiError(w, http.StatusBadRequest, "bad_allowfrom")
		return
	}
	for _, n := range nets {
		if len(base) > 0 && !slices.ContainsFunc(base, func(b *net.IPNet) bool { return b.Contains(n.IP) }) {
			apiError(w, http.StatusBadRequest, "bad_allowfrom")
			return
		}
	}
	allow := make([]string, 0, len(nets))
	for _, n := range nets {
		allow = append(allow, n.String())
	}
	if len(allow) == 0 && len(base) > 0 {
		allow = append(allow, h.AllowFrom...)
	}
	resp, err := Register(r.Context(), h.store, h.node, "", h.Zone, allow, remote)
	if err != nil {
		h.logger.Error("storing acme-dns registration", zap.Error(err))
		apiError(w, http.StatusInternalServerError, "db_error")
		return
	}
	h.logger.Info("acme-dns registration created", zap.String("username", resp.Username),
		zap.String("fqdn", resp.FullDomain), zap.String("remote_ip", remote.String()))
	writeAPI(w, http.StatusCreated, resp)
}

// Register creates an acme-dns registration in zone (a served challenge
// zone, without the trailing dot) whose updates may come from allow (CIDR;
// empty: anywhere), audited in the same transaction as made by actor
// (default "acme-dns:<username>") from remote (nil if not over HTTP). The
// response holds the password, which is never shown again.
func Register(ctx context.Context, st storage.Store, node, actor, zone string, allow []string, remote net.IP) (RegisterResponse, error) {
	nets, err := parseNets(allow)
	if err != nil {
		return RegisterResponse{}, err
	}
	clean := make([]string, 0, len(nets))
	for _, n := range nets {
		clean = append(clean, n.String())
	}
	reg := &storage.ACMEDNSRegistration{Username: newUUID(), Password: storage.NewSecret([]byte(newPassword())),
		Zone: zone, Subdomain: newUUID(), AllowFrom: clean}
	if actor == "" {
		actor = "acme-dns:" + reg.Username
	}
	err = st.InTx(ctx, func(tx storage.Store) error {
		zs := storage.ChallengeZoneOf(tx)
		if zs == nil {
			return errors.New("the storage backend has no challenge zone store")
		}
		if err := zs.CreateRegistration(ctx, reg); err != nil {
			return err
		}
		return audit(ctx, tx, node, actor, "acme_dns.register", reg, remote)
	})
	if err != nil {
		return RegisterResponse{}, fmt.Errorf("creating acme-dns registration: %w", err)
	}
	return RegisterResponse{Username: reg.Username, Password: string(reg.Password.Reveal()),
		FullDomain: reg.Subdomain + "." + reg.Zone, Subdomain: reg.Subdomain, AllowFrom: clean}, nil
}

var (
	uuidRe = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	// a dns-01 TXT value: the base64url SHA-256 of a key authorization
	txtRe = regexp.MustCompile(`^[A-Za-z0-9_-]{43}$`)
)

func (h *ACMEDNSHandler) update(w http.ResponseWriter, r *http.Request) {
	user, key := r.Header.Get("X-Api-User"), r.Header.Get("X-Api-Key")
	remote := remoteIP(r)
	deny := func(reason string) {
		h.logger.Warn("acme-dns update refused", zap.String("username", safeUser(user)), zap.String("reason", reason),
			zap.String("remote_ip", remote.String()))
		apiError(w, http.StatusUnauthorized, "forbidden")
	}
	if !uuidRe.MatchString(user) || key == "" {
		deny("no valid X-Api-User and X-Api-Key")
		return
	}
	reg, err := h.zones.GetRegistration(r.Context(), user)
	if errors.Is(err, storage.ErrNotFound) {
		deny("unknown user")
		return
	}
	if err != nil {
		h.logger.Error("reading acme-dns registration", zap.Error(err))
		apiError(w, http.StatusInternalServerError, "db_error")
		return
	}
	if subtle.ConstantTimeCompare(reg.Password.Reveal(), []byte(key)) != 1 {
		deny("wrong key")
		return
	}
	if nets, _ := parseNets(reg.AllowFrom); len(nets) > 0 && !contains(nets, remote) {
		deny("source not in allowfrom")
		return
	}
	var req updateRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, maxBody)).Decode(&req); err != nil {
		apiError(w, http.StatusBadRequest, "malformed_json_payload")
		return
	}
	if !uuidRe.MatchString(req.Subdomain) {
		apiError(w, http.StatusBadRequest, "bad_subdomain")
		return
	}
	if req.Subdomain != reg.Subdomain {
		deny("subdomain of another registration")
		return
	}
	if !txtRe.MatchString(req.TXT) {
		apiError(w, http.StatusBadRequest, "bad_txt")
		return
	}
	err = h.store.InTx(r.Context(), func(tx storage.Store) error {
		if err := storage.ChallengeZoneOf(tx).SetRegistrationTXT(r.Context(), reg.Username, req.TXT, h.now()); err != nil {
			return err
		}
		return audit(r.Context(), tx, h.node, "acme-dns:"+reg.Username, "acme_dns.update", reg, remote)
	})
	if err != nil {
		h.logger.Error("updating acme-dns registration", zap.Error(err))
		apiError(w, http.StatusInternalServerError, "db_error")
		return
	}
	if ce := h.logger.Check(zap.DebugLevel, "acme-dns record updated"); ce != nil {
		ce.Write(zap.String("username", reg.Username), zap.String("fqdn", reg.Subdomain+"."+reg.Zone))
	}
	writeAPI(w, http.StatusOK, map[string]string{"txt": req.TXT})
}

// audit appends an audit entry in tx; never the password.
func audit(ctx context.Context, tx storage.Store, node, actor, action string, reg *storage.ACMEDNSRegistration, remote net.IP) error {
	d := map[string]any{"zone": reg.Zone, "subdomain": reg.Subdomain}
	if remote != nil {
		d["remote_ip"] = remote.String()
	}
	if len(reg.AllowFrom) > 0 {
		d["allow_from"] = reg.AllowFrom
	}
	b, _ := json.Marshal(d)
	e := &storage.AuditEntry{Node: node, Actor: actor, Action: action, Target: reg.Username, Details: b}
	if remote != nil {
		e.Source = remote.String()
	}
	return tx.Audit().Append(ctx, e)
}

func apiError(w http.ResponseWriter, status int, code string) {
	writeAPI(w, status, map[string]string{"error": code})
}

func writeAPI(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func remoteIP(r *http.Request) net.IP {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	return net.ParseIP(host)
}

// safeUser is the X-Api-User header as logged: only if it is a UUID (a
// client that swapped the headers would otherwise log its key).
func safeUser(u string) string {
	if uuidRe.MatchString(u) {
		return u
	}
	return "(not a uuid)"
}

// CheckNetworks checks a list of networks (CIDR, or single addresses).
func CheckNetworks(in []string) error {
	_, err := parseNets(in)
	return err
}

func parseNets(in []string) ([]*net.IPNet, error) {
	var out []*net.IPNet
	for _, s := range in {
		s = strings.TrimSpace(s)
		if !strings.Contains(s, "/") {
			if ip := net.ParseIP(s); ip != nil {
				bits := 32
				if ip.To4() == nil {
					bits = 128
				}
				s = fmt.Sprintf("%s/%d", s, bits)
			}
		}
		_, n, err := net.ParseCIDR(s)
		if err != nil {
			return nil, fmt.Errorf("%q is not a network (CIDR)", s)
		}
		out = append(out, n)
	}
	return out, nil
}

func contains(nets []*net.IPNet, ip net.IP) bool {
	return ip != nil && slices.ContainsFunc(nets, func(n *net.IPNet) bool { return n.Contains(ip) })
}

func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// newPassword returns a 40-character API key, as acme-dns's.
func newPassword() string {
	var b [30]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func parseACMEDNSHandler(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	var a ACMEDNSHandler
	if err := a.UnmarshalCaddyfile(h.Dispenser); err != nil {
		return nil, err
	}
	return &a, nil
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens (see the
// type's documentation).
func (h *ACMEDNSHandler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	if !d.NextArg() {
		return d.ArgErr()
	}
	h.Zone = d.Val()
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		switch d.Val() {
		case "register":
			if !d.NextArg() {
				return d.ArgErr()
			}
			on := d.Val() == "on" || d.Val() == "true"
			if !on && d.Val() != "off" && d.Val() != "false" {
				return d.Errf("register must be on or off")
			}
			h.Register = &on
		case "allow_from":
			h.AllowFrom = append(h.AllowFrom, d.RemainingArgs()...)
			if len(h.AllowFrom) == 0 {
				return d.ArgErr()
			}
		default:
			return d.Errf("unrecognized subdirective: %s", d.Val())
		}
	}
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner           = (*ACMEDNSHandler)(nil)
	_ caddyhttp.MiddlewareHandler = (*ACMEDNSHandler)(nil)
	_ caddyfile.Unmarshaler       = (*ACMEDNSHandler)(nil)
)
