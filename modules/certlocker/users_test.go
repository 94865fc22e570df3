package certlocker

import (
	"strings"
	"testing"
)

func TestCheckUsers(t *testing.T) {
	cases := map[string]struct {
		users []User
		field string // "" for valid
	}{
		"valid":        {[]User{{ID: "ops", Role: RoleAdmin}, {ID: "a", Role: RoleOperator, Groups: []string{"team-a"}}}, ""},
		"no ID":        {[]User{{Role: RoleAdmin}}, "users[0].id"},
		"twice":        {[]User{{ID: "a", Role: RoleViewer}, {ID: "a", Role: RoleAdmin}}, "users[1].id"},
		"unknown role": {[]User{{ID: "a", Role: "root"}}, "users[0].role"},
		"bad group":    {[]User{{ID: "a", Role: RoleViewer, Groups: []string{"team a"}}}, "users[0].groups[0]"},
		"empty group":  {[]User{{ID: "a", Role: RoleViewer, Groups: []string{""}}}, "users[0].groups[0]"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			err := checkUsers(c.users)
			if c.field == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.HasPrefix(err.Error(), c.field+":") {
				t.Fatalf("%v, want an error about %s", err, c.field)
			}
		})
	}
}
