// Command apicount counts the exported top-level identifiers of a Go
// package — every exported const, var, func and type name, each name of a
// grouped declaration counted once — and fails when there are more than
// -max. The test command runs it on the root package, so that the public
// API stays small enough to hold in one's head.
//
//	go run ./internal/cmd/apicount -max 70 .
package main

import (
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

func main() {
	limit := flag.Int("max", 0, "fail when the count is over this (0: no limit)")
	verbose := flag.Bool("v", false, "list the identifiers")
	flag.Parse()
	dir := flag.Arg(0)
	if dir == "" {
		dir = "."
	}
	kinds, err := count(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "apicount:", err)
		os.Exit(2)
	}
	total := 0
	var parts []string
	for _, k := range []string{"const", "var", "func", "type"} {
		total += len(kinds[k])
		parts = append(parts, fmt.Sprintf("%d %ss", len(kinds[k]), k))
		if *verbose {
			slices.Sort(kinds[k])
			fmt.Printf("%s: %s\n", k, strings.Join(kinds[k], " "))
		}
	}
	fmt.Printf("apicount: %s exports %d top-level identifiers (%s)", dir, total, strings.Join(parts, ", "))
	if *limit > 0 {
		fmt.Printf(", limit %d", *limit)
	}
	fmt.Println()
	if *limit > 0 && total > *limit {
		os.Exit(1)
	}
}

// count returns the exported top-level names of the package in dir, by
// kind, test files excluded.
func count(dir string) (map[string][]string, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		return nil, err
	}
	kinds := map[string][]string{}
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.SkipObjectResolution)
		if err != nil {
			return nil, err
		}
		for _, d := range f.Decls {
			switch d := d.(type) {
			case *ast.FuncDecl:
				if d.Recv == nil && d.Name.IsExported() {
					kinds["func"] = append(kinds["func"], d.Name.Name)
				}
			case *ast.GenDecl:
				for _, s := range d.Specs {
					switch s := s.(type) {
					case *ast.TypeSpec:
						if s.Name.IsExported() {
							kinds["type"] = append(kinds["type"], s.Name.Name)
						}
					case *ast.ValueSpec:
						for _, n := range s.Names {
							if n.IsExported() {
								kinds[d.Tok.String()] = append(kinds[d.Tok.String()], n.Name)
							}
						}
					}
				}
			}
		}
	}
	return kinds, nil
}
