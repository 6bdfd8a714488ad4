package engine

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/sagaflow/sagaflow/definitions"
	"github.com/sagaflow/sagaflow/internal/sqldb"
	"github.com/sagaflow/sagaflow/saga"
)

// The definition catalog: every definition version the orchestrator registers is stored in
// sagaflow_definitions (its parsed body and a hash of it), so that
//   - a saga finishes on the version it started with even after that version's file was removed:
//     SyncDefinitions loads it from the table;
//   - a file that changed while sagas run on its version is refused, naming the version and how
//     many sagas run on it: the change needs a new version.

// DefinitionSync is what SyncDefinitions did.
type DefinitionSync struct {
	// Added lists the versions ("name v1") registered now that the registry did not hold.
	Added []string
	// Restored lists the versions loaded from the database because unfinished sagas use them and
	// no file provides them any more.
	Restored []string
	// Changed lists the versions whose file changed while no saga ran on them: the catalog took the
	// new body; a registry that already held the version keeps running the old one until a restart.
	Changed []string
	// Missing lists the versions unfinished sagas use that neither a file nor the database holds
	// (sagas started before the catalog existed): those sagas cannot go on until the file is back.
	Missing []string
}

// ChangedDefinitionError reports a definition file whose body differs from the version already
// registered (or stored) under its name and version while sagas run on it. It matches
// definitions.ErrConflict.
type ChangedDefinitionError struct {
	Name    string
	Version int
	// Unfinished is the number of running, compensating or failed sagas on the version.
	Unfinished int64
}

func (e *ChangedDefinitionError) Error() string {
	return fmt.Sprintf("definition %s version %d changed while %d saga(s) run on it: a running saga finishes on the version it "+
		"started with, so give the change a new version (or restore the file)", e.Name, e.Version, e.Unfinished)
}

// Is matches definitions.ErrConflict.
func (e *ChangedDefinitionError) Is(target error) bool { return target == definitions.ErrConflict }

// DefinitionHash is the hash the catalog keeps of def: the SHA-256 of its JSON encoding, so
// formatting and comments in its file do not count as a change.
func DefinitionHash(def *saga.Definition) (string, error) {
	b, err := json.Marshal(def)
	if err != nil {
		return "", fmt.Errorf("encode definition %s version %d: %w", def.Name, def.Version, err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

type storedDefinition struct {
	Name         string    `db:"name"`
	Version      int       `db:"version"`
	Body         []byte    `db:"body"`
	Hash         string    `db:"hash"`
	RegisteredAt time.Time `db:"registered_at"`
}

type versionKey struct {
	name    string
	version int
}

func (k versionKey) String() string { return fmt.Sprintf("%s v%d", k.name, k.version) }

// SyncDefinitions registers the definitions read from files in reg and in the database's catalog,
// and loads into reg, from the catalog, every version that unfinished sagas use and that neither
// reg nor files provide. It is all or nothing: when a file changed a version that sagas run on (a
// *ChangedDefinitionError, one per version, joined) nothing is registered. A changed version that
// no unfinished saga uses is stored anew — but never replaced in reg, which keeps the body it
// runs: restart to use it. Versions reg holds and files no longer provide stay in reg: SyncDefinitions
// never drops one.
//
// Call it at start, after Migrate and before the Engine runs, and again to reload the files (with
// the same reg). It is safe to run from several replicas at once.
func SyncDefinitions(ctx context.Context, db *sqlx.DB, reg *definitions.Registry, files []*saga.Definition) (DefinitionSync, error) {
	var out DefinitionSync
	hashes := make(map[versionKey]string, len(files))
	for _, d := range files {
		h, err := DefinitionHash(d)
		if err != nil {
			return out, err
		}
		hashes[versionKey{d.Name, d.Version}] = h
	}
	var add, restore []*saga.Definition
	err := sqldb.InTx(ctx, db, func(tx *sqlx.Tx) error {
		out, add, restore = DefinitionSync{}, nil, nil
		stored, err := loadCatalog(ctx, tx)
		if err != nil {
			return err
		}
		unfinished, err := countByVersion(ctx, tx, true)
		if err != nil {
			return err
		}
		var errs []error
		for _, d := range files {
			k := versionKey{d.Name, d.Version}
			h := hashes[k]
			changed := false
			if s, ok := stored[k]; ok && s.Hash != h {
				changed = true
			}
			if cur, err := reg.Get(d.Name, d.Version); err == nil {
				if ch, err := DefinitionHash(cur); err == nil && ch != h {
					changed = true
				}
			}
			if changed {
				if n := unfinished[k].total(); n > 0 {
					errs = append(errs, &ChangedDefinitionError{Name: d.Name, Version: d.Version, Unfinished: n})
					continue
				}
				out.Changed = append(out.Changed, k.String())
			}
			if _, err := reg.Get(d.Name, d.Version); err != nil {
				add = append(add, d)
			}
			if !changed && stored[k] != nil {
				continue
			}
			body, err := json.Marshal(d)
			if err != nil {
				return fmt.Errorf("encode definition %s: %w", k, err)
			}
			if err := upsertCatalog(ctx, tx, k, body, h); err != nil {
				return err
			}
		}
		if len(errs) > 0 {
			return errors.Join(errs...)
		}
		// Versions unfinished sagas use that no file provides: from the catalog.
		for k := range unfinished {
			if _, inFiles := hashes[k]; inFiles {
				continue
			}
			if _, err := reg.Get(k.name, k.version); err == nil {
				continue
			}
			s, ok := stored[k]
			if !ok {
				out.Missing = append(out.Missing, k.String())
				continue
			}
			d := new(saga.Definition)
			if err := json.Unmarshal(s.Body, d); err != nil {
				return fmt.Errorf("decode stored definition %s: %w", k, err)
			}
			if err := definitions.Validate(d); err != nil {
				return fmt.Errorf("stored definition %s: %w", k, err)
			}
			restore = append(restore, d)
		}
		return nil
	})
	if err != nil {
		return DefinitionSync{}, err
	}
	// Registered once the catalog committed: reg never holds what the database does not.
	for _, d := range add {
		if err := reg.Register(d); err != nil {
			return out, fmt.Errorf("register %s version %d: %w", d.Name, d.Version, err)
		}
		out.Added = append(out.Added, versionKey{d.Name, d.Version}.String())
	}
	for _, d := range restore {
		if err := reg.Register(d); err != nil {
			return out, fmt.Errorf("register stored definition %s version %d: %w", d.Name, d.Version, err)
		}
		out.Restored = append(out.Restored, versionKey{d.Name, d.Version}.String())
	}
	slices.Sort(out.Restored)
	slices.Sort(out.Missing)
	slices.Sort(out.Changed)
	return out, nil
}

func loadCatalog(ctx context.Context, q sqlx.QueryerContext) (map[versionKey]*storedDefinition, error) {
	var rows []storedDefinition
	if err := sqlx.SelectContext(ctx, q, &rows, `SELECT name, version, body, hash, registered_at FROM sagaflow_definitions`); err != nil {
		return nil, fmt.Errorf("read stored definitions: %w", sqldb.Translate(err))
	}
	out := make(map[versionKey]*storedDefinition, len(rows))
	for i := range rows {
		out[versionKey{rows[i].Name, rows[i].Version}] = &rows[i]
	}
	return out, nil
}

func upsertCatalog(ctx context.Context, tx *sqlx.Tx, k versionKey, body []byte, hash string) error {
	q := tx.Rebind(`INSERT INTO sagaflow_definitions (name, version, body, hash, registered_at) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (name, version) DO UPDATE SET body = excluded.body, hash = excluded.hash, registered_at = excluded.registered_at`)
	if _, err := tx.ExecContext(ctx, q, k.name, k.version, string(body), hash, time.Now().UTC()); err != nil {
		return fmt.Errorf("store definition %s: %w", k, sqldb.Translate(err))
	}
	return nil
}

// VersionCounts counts a definition version's sagas per status.
type VersionCounts struct {
	Running      int64 `json:"running"`
	Compensating int64 `json:"compensating"`
	Failed       int64 `json:"failed"`
	Completed    int64 `json:"completed"`
	Compensated  int64 `json:"compensated"`
}

// total is the number of unfinished sagas: running, compensating and failed.
func (c VersionCounts) total() int64 { return c.Running + c.Compensating + c.Failed }

func (c *VersionCounts) add(status string, n int64) {
	switch saga.Status(status) {
	case saga.StatusRunning:
		c.Running += n
	case saga.StatusCompensating:
		c.Compensating += n
	case saga.StatusFailed:
		c.Failed += n
	case saga.StatusCompleted:
		c.Completed += n
	case saga.StatusCompensated:
		c.Compensated += n
	}
}

// countByVersion counts the sagas of every definition version per status; only the unfinished
// ones with unfinished.
func countByVersion(ctx context.Context, q sqlx.QueryerContext, unfinished bool) (map[versionKey]VersionCounts, error) {
	var rows []struct {
		Definition string `db:"definition"`
		Version    int    `db:"version"`
		Status     string `db:"status"`
		N          int64  `db:"n"`
	}
	query := `SELECT definition, version, status, COUNT(*) AS n FROM sagaflow_instances`
	if unfinished {
		query += ` WHERE status IN ('running', 'compensating', 'failed')`
	}
	query += ` GROUP BY definition, version, status`
	if err := sqlx.SelectContext(ctx, q, &rows, query); err != nil {
		return nil, fmt.Errorf("count sagas per definition version: %w", sqldb.Translate(err))
	}
	out := map[versionKey]VersionCounts{}
	for _, r := range rows {
		k := versionKey{r.Definition, r.Version}
		c := out[k]
		c.add(r.Status, r.N)
		out[k] = c
	}
	return out, nil
}

// DefinitionVersion is one version of a definition the engine runs, with its sagas per status.
type DefinitionVersion struct {
	Name    string `json:"name"`
	Version int    `json:"version"`
	// Hash is the SHA-256 of the version's JSON encoding (DefinitionHash).
	Hash string `json:"hash"`
	// RegisteredAt is when the version was first stored in the catalog (or last replaced, when
	// its file changed while no saga ran on it); zero when it is not stored.
	RegisteredAt time.Time `json:"registered_at,omitzero"`
	// Counts are the version's sagas per status.
	Counts VersionCounts `json:"counts"`
}

// DefinitionVersions lists every version the engine's registry holds, sorted by name and version,
// with the number of its sagas in each status.
func (e *Engine) DefinitionVersions(ctx context.Context) ([]DefinitionVersion, error) {
	counts, err := countByVersion(ctx, e.cfg.DB, false)
	if err != nil {
		return nil, err
	}
	stored, err := loadCatalog(ctx, e.cfg.DB)
	if err != nil {
		return nil, err
	}
	defs := e.cfg.Definitions.List()
	out := make([]DefinitionVersion, 0, len(defs))
	for _, d := range defs {
		k := versionKey{d.Name, d.Version}
		h, err := DefinitionHash(d)
		if err != nil {
			return nil, err
		}
		v := DefinitionVersion{Name: d.Name, Version: d.Version, Hash: h, Counts: counts[k]}
		if s, ok := stored[k]; ok {
			v.RegisteredAt = s.RegisteredAt.UTC()
		}
		out = append(out, v)
	}
	slices.SortFunc(out, func(a, b DefinitionVersion) int {
		return cmp.Or(strings.Compare(a.Name, b.Name), cmp.Compare(a.Version, b.Version))
	})
	return out, nil
}
