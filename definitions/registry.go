package definitions

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"

	"github.com/sagaflow/sagaflow/saga"
)

// Registry holds the versions of every known definition. It is safe for concurrent use.
//
// Register stores a deep copy of what it is given; Get, Latest and List return the stored values
// themselves, shared by every caller, so they must be treated as immutable.
type Registry struct {
	mu   sync.RWMutex
	defs map[string]map[int]*saga.Definition // name → version → definition
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{defs: make(map[string]map[int]*saga.Definition)}
}

// Register validates d and stores a copy of it. Registering a body equal to the one already stored
// under the same name and version does nothing; a different body returns an error matching
// ErrConflict, and an invalid d one matching ErrInvalid.
func (r *Registry) Register(d *saga.Definition) error {
	if err := Validate(d); err != nil {
		return err
	}
	d = clone(d)
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.conflict(d); err != nil {
		return err
	}
	r.store(d)
	return nil
}

// conflict returns an error matching ErrConflict when a different body is stored under d's name
// and version. The caller holds r.mu.
func (r *Registry) conflict(d *saga.Definition) error {
	if old, ok := r.defs[d.Name][d.Version]; ok && !reflect.DeepEqual(old, d) {
		return fmt.Errorf("register %s version %d: a different body is already registered: %w", d.Name, d.Version, ErrConflict)
	}
	return nil
}

// store stores d, which is valid, free of conflicts and owned by the registry. The caller holds
// r.mu for writing.
func (r *Registry) store(d *saga.Definition) {
	versions := r.defs[d.Name]
	if versions == nil {
		versions = make(map[int]*saga.Definition)
		r.defs[d.Name] = versions
	}
	if _, ok := versions[d.Version]; !ok {
		versions[d.Version] = d
	}
}

// Get returns the definition with the given name and version, or an error matching ErrNotFound.
// The result is shared: do not modify it.
func (r *Registry) Get(name string, version int) (*saga.Definition, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	d, ok := r.defs[name][version]
	if !ok {
		return nil, fmt.Errorf("get %s version %d: %w", name, version, ErrNotFound)
	}
	return d, nil
}

// Latest returns the highest version of the definition named name, or an error matching
// ErrNotFound. The result is shared: do not modify it.
func (r *Registry) Latest(name string) (*saga.Definition, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var latest *saga.Definition
	for _, d := range r.defs[name] {
		if latest == nil || d.Version > latest.Version {
			latest = d
		}
	}
	if latest == nil {
		return nil, fmt.Errorf("latest %s: %w", name, ErrNotFound)
	}
	return latest, nil
}

// List returns every registered definition, sorted by name and then version. The definitions are
// shared: do not modify them.
func (r *Registry) List() []*saga.Definition {
	r.mu.RLock()
	var all []*saga.Definition
	for _, versions := range r.defs {
		for _, d := range versions {
			all = append(all, d)
		}
	}
	r.mu.RUnlock()
	slices.SortFunc(all, func(a, b *saga.Definition) int {
		return cmp.Or(strings.Compare(a.Name, b.Name), cmp.Compare(a.Version, b.Version))
	})
	return all
}

// LoadDir parses every *.yaml, *.yml and *.json file directly in dir (not in its subdirectories)
// and registers them all, or none: if any file is invalid or conflicts with a registered
// definition or with another file, it registers nothing and returns every problem, joined (invalid
// files match ErrInvalid, conflicts ErrConflict).
func (r *Registry) LoadDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("load definitions: %w", err)
	}
	type file struct {
		path string
		def  *saga.Definition
	}
	var (
		errs   []error
		loaded []file
		byID   = make(map[string]file) // "name@version" → the first file that holds it
	)
	for _, e := range entries {
		switch strings.ToLower(filepath.Ext(e.Name())) {
		case ".yaml", ".yml", ".json":
		default:
			continue
		}
		if e.IsDir() {
			continue
		}
		path := filepath.Join(dir, e.Name())
		d, err := ParseFile(path)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		id := fmt.Sprintf("%s@%d", d.Name, d.Version)
		if first, ok := byID[id]; ok {
			if !reflect.DeepEqual(first.def, d) {
				errs = append(errs, fmt.Errorf("%s: %s version %d differs from %s: %w", path, d.Name, d.Version, first.path, ErrConflict))
			}
			continue
		}
		byID[id] = file{path, d}
		loaded = append(loaded, file{path, d})
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, f := range loaded {
		if err := r.conflict(f.def); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", f.path, err))
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	for _, f := range loaded {
		r.store(f.def)
	}
	return nil
}
