package acmetest

import (
	"context"
	"testing"
	"time"
)

func TestDNSPublishDelay(t *testing.T) {
	s := NewDNSServer(t, "example.test")
	gates := map[string]chan struct{}{}
	s.SetPublishDelay(func(name, value string) <-chan struct{} {
		ch := make(chan struct{})
		gates[value] = ch
		return ch
	})
	s.AddTXT("_acme-challenge.example.test", "a", "b")
	if got := s.TXT("_acme-challenge.example.test"); len(got) != 0 {
		t.Fatalf("served before the delay: %v", got)
	}
	s.AddTXT("_acme-challenge.example.test", "a") // already pending: not delayed twice
	if len(gates) != 2 {
		t.Fatalf("%d delays asked for, want 2", len(gates))
	}
	if !s.DeleteTXT("_acme-challenge.example.test", "b") {
		t.Fatal("deleting a pending record reported nothing deleted")
	}
	close(gates["a"])
	close(gates["b"])
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := s.WaitTXT(ctx, "_acme-challenge.example.test", "a"); err != nil {
		t.Fatal(err)
	}
	// "b" was deleted while pending: opening its gate serves nothing
	s.SetPublishDelay(nil)
	s.AddTXT("other.example.test", "now")
	if got := s.TXT("_acme-challenge.example.test"); len(got) != 1 || got[0] != "a" {
		t.Fatalf("served %v, want only a", got)
	}
	if got := s.TXT("other.example.test"); len(got) != 1 || got[0] != "now" {
		t.Fatalf("without a delay: %v", got)
	}
}
