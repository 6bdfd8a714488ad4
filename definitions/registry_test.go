package definitions_test

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/sagaflow/sagaflow/definitions"
	"github.com/sagaflow/sagaflow/saga"
)

func mustBuild(t testing.TB, name string, version int, command string) *saga.Definition {
	t.Helper()
	d, err := definitions.New(name, version).Step("only", "svc", command).Build()
	require.NoError(t, err)
	return d
}

func TestRegistry(t *testing.T) {
	t.Parallel()

	t.Run("GetLatestList", func(t *testing.T) {
		t.Parallel()
		r := definitions.NewRegistry()
		require.Empty(t, r.List())
		for _, d := range []*saga.Definition{
			mustBuild(t, "billing", 2, "Two"),
			mustBuild(t, "billing", 10, "Ten"),
			mustBuild(t, "audit", 1, "One"),
			mustBuild(t, "billing", 1, "One"),
		} {
			require.NoError(t, r.Register(d))
		}

		d, err := r.Get("billing", 2)
		require.NoError(t, err)
		require.Equal(t, mustBuild(t, "billing", 2, "Two"), d)
		_, err = r.Get("billing", 3)
		require.ErrorIs(t, err, definitions.ErrNotFound)
		_, err = r.Get("nothing", 1)
		require.ErrorIs(t, err, definitions.ErrNotFound)

		d, err = r.Latest("billing")
		require.NoError(t, err)
		require.Equal(t, 10, d.Version, "versions compare as numbers")
		_, err = r.Latest("nothing")
		require.ErrorIs(t, err, definitions.ErrNotFound)

		var ids []string
		for _, d := range r.List() {
			ids = append(ids, fmt.Sprintf("%s@%d", d.Name, d.Version))
		}
		require.Equal(t, []string{"audit@1", "billing@1", "billing@2", "billing@10"}, ids)
	})

	t.Run("Conflict", func(t *testing.T) {
		t.Parallel()
		r := definitions.NewRegistry()
		require.NoError(t, r.Register(mustBuild(t, "billing", 1, "Charge")))
		err := r.Register(mustBuild(t, "billing", 1, "Capture"))
		require.ErrorIs(t, err, definitions.ErrConflict)
		require.EqualError(t, err, "register billing version 1: a different body is already registered: conflicting definition")
		d, err := r.Get("billing", 1)
		require.NoError(t, err)
		require.Equal(t, "Charge", d.Steps[0].Command, "the first body stays")
	})

	t.Run("IdenticalTwice", func(t *testing.T) {
		t.Parallel()
		r := definitions.NewRegistry()
		require.NoError(t, r.Register(mustBuild(t, "billing", 1, "Charge")))
		require.NoError(t, r.Register(mustBuild(t, "billing", 1, "Charge")))
		require.Len(t, r.List(), 1)
	})

	t.Run("Invalid", func(t *testing.T) {
		t.Parallel()
		r := definitions.NewRegistry()
		err := r.Register(&saga.Definition{Name: "billing"})
		require.ErrorIs(t, err, definitions.ErrInvalid)
		require.ErrorIs(t, r.Register(nil), definitions.ErrInvalid)
		require.Empty(t, r.List())
	})

	t.Run("StoresACopy", func(t *testing.T) {
		t.Parallel()
		r := definitions.NewRegistry()
		d, err := definitions.New("billing", 1).Trigger("events.a.b", "id").Step("only", "svc", "Do").Build()
		require.NoError(t, err)
		require.NoError(t, r.Register(d))
		d.Steps[0].Command = "Changed"
		d.Trigger.Key = "changed"
		got, err := r.Get("billing", 1)
		require.NoError(t, err)
		require.Equal(t, "Do", got.Steps[0].Command)
		require.Equal(t, "id", got.Trigger.Key)
	})

	t.Run("Concurrent", func(t *testing.T) {
		t.Parallel()
		r := definitions.NewRegistry()
		defs := make([]*saga.Definition, 20)
		for i := range defs {
			defs[i] = mustBuild(t, fmt.Sprintf("def-%d", i%4), i/4+1, "Do")
		}
		var wg sync.WaitGroup
		for g := range 8 {
			wg.Go(func() {
				for i := range defs {
					d := defs[(i+g)%len(defs)]
					if err := r.Register(d); err != nil {
						t.Errorf("register: %v", err)
					}
					if _, err := r.Get(d.Name, d.Version); err != nil {
						t.Errorf("get: %v", err)
					}
					if _, err := r.Latest(d.Name); err != nil {
						t.Errorf("latest: %v", err)
					}
					_ = r.List()
				}
			})
		}
		wg.Wait()
		require.Len(t, r.List(), 20)
		latest, err := r.Latest("def-3")
		require.NoError(t, err)
		require.Equal(t, 5, latest.Version)
	})
}

func TestRegistryLoadDir(t *testing.T) {
	t.Parallel()

	t.Run("Good", func(t *testing.T) {
		t.Parallel()
		r := definitions.NewRegistry()
		require.NoError(t, r.LoadDir("testdata/good"))
		var ids []string
		for _, d := range r.List() {
			ids = append(ids, fmt.Sprintf("%s@%d", d.Name, d.Version))
		}
		require.Equal(t, []string{"loan-payout@1", "order-fulfilment@1", "payment-capture@2", "ping@1", "refund-request@3", "subscription-renewal@12"}, ids)
		require.NoError(t, r.LoadDir("testdata/good"), "loading the same files again is a no-op")
	})

	t.Run("AllOrNothing", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		write := func(name, src string) {
			require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(src), 0o600))
		}
		one := "name: a\nversion: 1\nsteps: [{name: s, service: svc, command: Do}]\n"
		write("a.yaml", one)
		write("a-copy.yml", one)
		write("notes.txt", "not a definition")
		require.NoError(t, os.Mkdir(filepath.Join(dir, "sub.yaml"), 0o700))
		write("b.json", `{"name": "b", "version": 1, "steps": [{"name": "s", "service": "svc", "command": "Do"}], "extra": 1}`)
		write("c.yaml", "name: a\nversion: 1\nsteps: [{name: s, service: svc, command: Other}]\n")

		r := definitions.NewRegistry()
		err := r.LoadDir(dir)
		require.ErrorIs(t, err, definitions.ErrInvalid)
		require.ErrorIs(t, err, definitions.ErrConflict)
		require.Contains(t, err.Error(), filepath.Join(dir, "b.json")+":1:90: extra: unknown field")
		require.Contains(t, err.Error(), filepath.Join(dir, "c.yaml")+": a version 1 differs from "+filepath.Join(dir, "a-copy.yml"))
		require.Empty(t, r.List(), "nothing is registered when a file fails")

		require.NoError(t, os.Remove(filepath.Join(dir, "b.json")))
		require.NoError(t, os.Remove(filepath.Join(dir, "c.yaml")))
		require.NoError(t, r.LoadDir(dir))
		require.Len(t, r.List(), 1)

		other := definitions.NewRegistry()
		require.NoError(t, other.Register(mustBuild(t, "a", 1, "Different")))
		err = other.LoadDir(dir)
		require.ErrorIs(t, err, definitions.ErrConflict)
		require.Contains(t, err.Error(), filepath.Join(dir, "a-copy.yml")+": register a version 1")
	})

	t.Run("MissingDir", func(t *testing.T) {
		t.Parallel()
		err := definitions.NewRegistry().LoadDir(filepath.Join(t.TempDir(), "missing"))
		require.ErrorIs(t, err, os.ErrNotExist)
	})
}
