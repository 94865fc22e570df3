package gateway

import (
	"errors"
	"testing"

	"github.com/certlocker/caddy-certlocker/storage"
)

// A caller restricted to some groups (the UI's operators and viewers) sees
// and acts only on tokens of those groups, as with every other resource.
func TestTokenGroupScope(t *testing.T) {
	e := newTokenEnv(t)
	admin := t.Context()
	mk := func(group, name string) *storage.Token {
		tok, _, err := e.svc.Create(admin, "admin", CreateRequest{Names: []string{name}, IssuerID: e.iss.ID, Group: group})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	a, b := mk("team-a", "a.example.com"), mk("team-b", "b.example.com")
	teamA := storage.WithGroups(admin, []string{"team-a"})

	if _, err := e.svc.Get(teamA, a.ID); err != nil {
		t.Fatalf("own token: %v", err)
	}
	if _, err := e.svc.Get(teamA, b.ID); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("another group's token: %v, want not found", err)
	}
	list, err := e.svc.List(teamA, ListFilter{})
	if err != nil || len(list) != 1 || list[0].ID != a.ID {
		t.Fatalf("list = %v, %v; want only %s", list, err, a.ID)
	}
	if list, err := e.svc.List(teamA, ListFilter{Group: "team-b"}); err != nil || len(list) != 0 {
		t.Fatalf("list of team-b = %v, %v; want none", list, err)
	}
	if all, err := e.svc.List(admin, ListFilter{}); err != nil || len(all) != 2 {
		t.Fatalf("admin list = %v, %v; want both", all, err)
	}
	for name, op := range map[string]func() error{
		"revoke":   func() error { _, err := e.svc.Revoke(teamA, "alice", b.ID); return err },
		"rotate":   func() error { _, _, err := e.svc.Rotate(teamA, "alice", b.ID, 0); return err },
		"delete":   func() error { return e.svc.Delete(teamA, "alice", b.ID) },
		"accounts": func() error { _, err := e.svc.Accounts(teamA, b.ID); return err },
	} {
		if err := op(); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("%s on another group's token: %v, want not found", name, err)
		}
	}
	if got, err := e.svc.Get(admin, b.ID); err != nil || got.Status != StateActive {
		t.Fatalf("team-b's token after team-a's attempts: %+v, %v", got, err)
	}
	// neither created nor moved into a group that is not the caller's
	var ie *InputError
	if _, _, err := e.svc.Create(teamA, "alice", CreateRequest{Names: []string{"c.example.com"}, IssuerID: e.iss.ID, Group: "team-b"}); !errors.As(err, &ie) || ie.Field != "group" {
		t.Fatalf("create in team-b: %v", err)
	}
	other := "team-b"
	if _, err := e.svc.Update(teamA, "alice", a.ID, UpdateRequest{Group: &other}); !errors.As(err, &ie) || ie.Field != "group" {
		t.Fatalf("move to team-b: %v", err)
	}
	if _, err := e.svc.Revoke(teamA, "alice", a.ID); err != nil {
		t.Fatalf("revoke own token: %v", err)
	}
}
