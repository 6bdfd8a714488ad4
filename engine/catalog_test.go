package engine

import (
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"

	"github.com/sagaflow/sagaflow/definitions"
	"github.com/sagaflow/sagaflow/internal/dbtest"
	"github.com/sagaflow/sagaflow/saga"
)

// versioned is orderDefinition's saga at version v.
func versioned(t testing.TB, v int) *saga.Definition {
	t.Helper()
	d := orderDefinition(t, "shop", 30*time.Second)
	d.Version = v
	require.NoError(t, definitions.Validate(d))
	return d
}

// TestDefinitionLifecycle is issue 11, item 7: retiring a version's file never strands its sagas.
func TestDefinitionLifecycle(t *testing.T) {
	t.Parallel()

	t.Run("SagaOnRemovedVersionFinishesAfterRestart", func(t *testing.T) {
		t.Parallel()
		dbtest.Each(t, func(t *testing.T, db *sqlx.DB) {
			ctx := t.Context()
			v1 := versioned(t, 1)
			// First run: the files hold v1; a saga starts on it (its first command waits in the
			// outbox: this process stops before relaying it).
			reg1 := definitions.NewRegistry()
			first := newEngine(t, db, Config{Definitions: reg1})
			sync, err := SyncDefinitions(ctx, db, reg1, []*saga.Definition{v1})
			require.NoError(t, err)
			require.Equal(t, []string{"shop v1"}, sync.Added)
			id, err := first.Start(ctx, "shop", "o-1", nil, StartOptions{})
			require.NoError(t, err)

			// Restart with v1's file replaced by v2: v1 comes back from the catalog.
			v2 := versioned(t, 2)
			v2.Steps = v2.Steps[:2]
			reg2 := definitions.NewRegistry()
			sync, err = SyncDefinitions(ctx, db, reg2, []*saga.Definition{v2})
			require.NoError(t, err)
			require.Equal(t, []string{"shop v2"}, sync.Added)
			require.Equal(t, []string{"shop v1"}, sync.Restored)
			require.Empty(t, sync.Missing)
			latest, err := reg2.Latest("shop")
			require.NoError(t, err)
			require.Equal(t, 2, latest.Version, "new sagas start on the file's version")

			w := newWorld(t)
			e := w.startEngine(db, reg2, nil)
			for _, svc := range []string{"order", "inventory", "payment"} {
				w.participant(svc, succeed(`{}`))
			}
			inst := wait(t, e, id)
			require.Equal(t, saga.StatusCompleted, inst.Status)
			require.Equal(t, 1, inst.Version)
			require.Len(t, inst.Steps, 3, "finished on the version it started with")

			versions, err := e.DefinitionVersions(ctx)
			require.NoError(t, err)
			require.Len(t, versions, 2)
			require.Equal(t, "shop", versions[0].Name)
			require.Equal(t, 1, versions[0].Version)
			require.Equal(t, VersionCounts{Completed: 1}, versions[0].Counts)
			require.False(t, versions[0].RegisteredAt.IsZero())
			require.Equal(t, 2, versions[1].Version)
			require.Equal(t, VersionCounts{}, versions[1].Counts)
		})
	})

	t.Run("ChangedFileOfRunningVersionIsRefused", func(t *testing.T) {
		t.Parallel()
		dbtest.Each(t, func(t *testing.T, db *sqlx.DB) {
			ctx := t.Context()
			reg := definitions.NewRegistry()
			e := newEngine(t, db, Config{Definitions: reg})
			_, err := SyncDefinitions(ctx, db, reg, []*saga.Definition{versioned(t, 1)})
			require.NoError(t, err)
			for _, key := range []string{"o-1", "o-2"} {
				_, err := e.Start(ctx, "shop", key, nil, StartOptions{})
				require.NoError(t, err)
			}

			// The v1 file changes (a step's timeout), and a v3 file appears: all or nothing.
			changed := versioned(t, 1)
			changed.Steps[1].Timeout = time.Minute
			for name, fresh := range map[string]*definitions.Registry{"Restart": definitions.NewRegistry(), "Reload": reg} {
				_, err = SyncDefinitions(ctx, db, fresh, []*saga.Definition{changed, versioned(t, 3)})
				var ce *ChangedDefinitionError
				require.ErrorAs(t, err, &ce, name)
				require.ErrorIs(t, err, definitions.ErrConflict, name)
				require.Equal(t, ChangedDefinitionError{Name: "shop", Version: 1, Unfinished: 2}, *ce, name)
				require.ErrorContains(t, err, "definition shop version 1 changed while 2 saga(s) run on it", name)
				_, err = fresh.Get("shop", 3)
				require.ErrorIs(t, err, definitions.ErrNotFound, "%s: nothing registered", name)
			}
			running, err := reg.Get("shop", 1)
			require.NoError(t, err)
			require.Equal(t, 30*time.Second, running.Steps[1].Timeout, "the running version is untouched")

			// The same file again, even reformatted, is no change; a new version is welcome.
			sync, err := SyncDefinitions(ctx, db, reg, []*saga.Definition{versioned(t, 1), versioned(t, 3)})
			require.NoError(t, err)
			require.Equal(t, []string{"shop v3"}, sync.Added)
			versions, err := e.DefinitionVersions(ctx)
			require.NoError(t, err)
			require.Len(t, versions, 2)
			require.Equal(t, VersionCounts{Running: 2}, versions[0].Counts)
		})
	})

	t.Run("ChangedFileOfIdleVersionIsStoredAnew", func(t *testing.T) {
		t.Parallel()
		dbtest.Each(t, func(t *testing.T, db *sqlx.DB) {
			ctx := t.Context()
			reg := definitions.NewRegistry()
			newEngine(t, db, Config{Definitions: reg})
			_, err := SyncDefinitions(ctx, db, reg, []*saga.Definition{versioned(t, 1)})
			require.NoError(t, err)
			changed := versioned(t, 1)
			changed.Steps[1].Timeout = time.Minute

			// A reload: stored anew, but the loaded registry keeps the body it runs.
			sync, err := SyncDefinitions(ctx, db, reg, []*saga.Definition{changed})
			require.NoError(t, err)
			require.Equal(t, []string{"shop v1"}, sync.Changed)
			loaded, err := reg.Get("shop", 1)
			require.NoError(t, err)
			require.Equal(t, 30*time.Second, loaded.Steps[1].Timeout)

			// A restart runs the new body, and it is no change any more.
			fresh := definitions.NewRegistry()
			sync, err = SyncDefinitions(ctx, db, fresh, []*saga.Definition{changed})
			require.NoError(t, err)
			require.Empty(t, sync.Changed)
			loaded, err = fresh.Get("shop", 1)
			require.NoError(t, err)
			require.Equal(t, time.Minute, loaded.Steps[1].Timeout)
		})
	})

	t.Run("UnknownVersionIsReportedMissing", func(t *testing.T) {
		t.Parallel()
		dbtest.Each(t, func(t *testing.T, db *sqlx.DB) {
			ctx := t.Context()
			// A saga started before the catalog existed: its version was never stored.
			reg := registry(t, versioned(t, 1))
			e := newEngine(t, db, Config{Definitions: reg})
			_, err := e.Start(ctx, "shop", "o-1", nil, StartOptions{})
			require.NoError(t, err)
			sync, err := SyncDefinitions(ctx, db, definitions.NewRegistry(), []*saga.Definition{versioned(t, 2)})
			require.NoError(t, err)
			require.Equal(t, []string{"shop v1"}, sync.Missing)
			require.Empty(t, sync.Restored)
		})
	})
}
