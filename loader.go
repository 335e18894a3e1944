package sqsadapter

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strings"
)

// LoadBlueprints parses and validates every file of fsys whose path matches
// pattern (fs.Glob syntax: "blueprints/*.json", "data/*/*.json"), in path
// order. It works with embed.FS and os.DirFS alike:
//
//	//go:embed blueprints/*.json
//	var blueprintFiles embed.FS
//
//	bps, err := sqsadapter.LoadBlueprints(blueprintFiles, "blueprints/*.json")
//
// A blueprint without an "id" is named after its file, as Flowcraft's
// loader does: the base name without its extension ("data/201.json" is
// blueprint "201"), so a subflow's "blueprintId" can name the file. A
// blueprint with an "id" keeps it; ParseBlueprint stays strict and requires
// one.
//
// It fails when the pattern is malformed or matches no file, when two files
// define the same id and version, or when any file does not parse or
// validate; the error names every such file, and each file's error keeps its
// type (errors.As finds a *BlueprintError, errors.Is ErrInvalidBlueprint).
func LoadBlueprints(fsys fs.FS, pattern string) ([]*Blueprint, error) {
	names, err := fs.Glob(fsys, pattern)
	if err != nil {
		return nil, fmt.Errorf("%w: pattern %q: %w", ErrInvalidBlueprint, pattern, err)
	}
	var (
		bps  []*Blueprint
		errs []error
		seen = make(map[planKey]string) // id and version -> file
	)
	for _, name := range names {
		b, err := loadBlueprint(fsys, name)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
			continue
		}
		if b == nil { // a directory
			continue
		}
		k := planKey{b.ID, b.Version()}
		if first, dup := seen[k]; dup {
			errs = append(errs, fmt.Errorf("%s: %w: blueprint %q version %q is also defined by %s",
				name, ErrInvalidBlueprint, k.id, k.version, first))
			continue
		}
		seen[k] = name
		bps = append(bps, b)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if len(bps) == 0 {
		return nil, fmt.Errorf("%w: no blueprint file matches %q", ErrInvalidBlueprint, pattern)
	}
	return bps, nil
}

// loadBlueprint reads and validates one file; it returns nil, nil for a
// directory.
func loadBlueprint(fsys fs.FS, name string) (*Blueprint, error) {
	info, err := fs.Stat(fsys, name)
	if err != nil {
		return nil, err
	}
	if info.IsDir() {
		return nil, nil
	}
	data, err := fs.ReadFile(fsys, name)
	if err != nil {
		return nil, err
	}
	var b Blueprint
	if err := b.UnmarshalJSON(data); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidBlueprint, err)
	}
	if b.ID == "" {
		base := path.Base(name)
		b.ID = strings.TrimSuffix(base, path.Ext(base))
	}
	if err := b.Validate(); err != nil {
		return nil, err
	}
	return &b, nil
}
