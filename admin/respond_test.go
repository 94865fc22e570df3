package admin

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/certlocker/caddy-certlocker/storage"
)

type sample struct {
	Name     string         `json:"name"`
	Contacts []string       `json:"contacts"`
	TTL      int            `json:"ttl"`
	Wait     caddy.Duration `json:"wait"`
	Steps    []struct {
		After caddy.Duration `json:"after"`
	} `json:"steps"`
}

func TestDecodeJSON(t *testing.T) {
	cases := map[string]struct {
		body, contentType string
		status            int
		field             string
	}{
		"ok":             {`{"name":"le","ttl":60}`, "application/json", 0, ""},
		"ok no type":     {`{"name":"le"}`, "", 0, ""},
		"empty":          {``, "application/json", 400, ""},
		"not json":       {`name=le`, "application/json", 400, ""},
		"truncated":      {`{"name":`, "application/json", 400, ""},
		"unknown field":  {`{"nam":"le"}`, "application/json", 400, "nam"},
		"wrong type":     {`{"ttl":"sixty"}`, "application/json", 400, "ttl"},
		"wrong nested":   {`{"contacts":[1]}`, "application/json", 400, "contacts"},
		"two values":     {`{"name":"a"}{"name":"b"}`, "application/json", 400, ""},
		"form type":      {`{"name":"le"}`, "application/x-www-form-urlencoded", 415, ""},
		"too large":      {`{"name":"` + strings.Repeat("a", MaxBodyBytes) + `"}`, "application/json", 413, ""},
		"charset suffix": {`{"name":"le"}`, "application/json; charset=utf-8", 0, ""},
		"bad duration":   {`{"name":"le","wait":"soon"}`, "application/json", 400, "wait"},
		"nested":         {`{"steps":[{"after":"1s"},{"after":"later"}]}`, "application/json", 400, "steps[1].after"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			req := httptest.NewRequest("POST", "/certlocker/x", strings.NewReader(c.body))
			if c.contentType != "" {
				req.Header.Set("Content-Type", c.contentType)
			}
			rec := httptest.NewRecorder()
			var v sample
			err := decodeJSON(rec, req, &v)
			if c.status == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v is not an API error", err)
			}
			if e.Status != c.status || e.Field != c.field || e.Message == "" {
				t.Fatalf("got %d field %q %q; want %d field %q", e.Status, e.Field, e.Message, c.status, c.field)
			}
		})
	}
}

func TestWriteErrorMapsStorageErrors(t *testing.T) {
	cases := map[string]struct {
		err    error
		status int
	}{
		"not found":  {fmt.Errorf("getting issuer x: %w", storage.ErrNotFound), 404},
		"duplicate":  {fmt.Errorf("creating issuer: %w", storage.ErrDuplicate), 409},
		"conflict":   {storage.ErrConflict, 409},
		"in use":     {storage.ErrInUse, 409},
		"cursor":     {storage.ErrInvalidCursor, 400},
		"api error":  {BadRequest("name", "name is required"), 400},
		"unexpected": {errors.New("disk on fire"), 500},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			writeError(rec, zap.NewNop(), c.err)
			if rec.Code != c.status {
				t.Fatalf("status %d, want %d", rec.Code, c.status)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
				t.Fatalf("content type %q", ct)
			}
			var body map[string]string
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || body["error"] == "" {
				t.Fatalf("body %q is not a JSON error", rec.Body.String())
			}
			if c.status == 500 && strings.Contains(rec.Body.String(), "disk on fire") {
				t.Fatalf("the 500 echoes the error: %s", rec.Body.String())
			}
		})
	}
}
