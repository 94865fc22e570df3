package admin

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"testing"
)

// TestAPIReachesStateThroughServices: the admin API is the product's API;
// validation, audit and group scoping live in the module services, so no
// file of this package (tests included) calls the app's Store().
func TestAPIReachesStateThroughServices(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil || len(files) == 0 {
		t.Fatalf("no Go files: %v", err)
	}
	fset := token.NewFileSet()
	for _, name := range files {
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			if c, ok := n.(*ast.CallExpr); ok {
				if sel, ok := c.Fun.(*ast.SelectorExpr); ok && sel.Sel.Name == "Store" && len(c.Args) == 0 {
					t.Errorf("%s: Store() called; use the module service (app.Workflows(), app.IssuerRegistry(), app.DNS(), app.Certificates(), app.AuditLog)", fset.Position(c.Pos()))
				}
			}
			return true
		})
	}
}
