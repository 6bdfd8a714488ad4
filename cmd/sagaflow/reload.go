package main

import (
	"context"
	"log/slog"
	"os"
	"strings"

	"github.com/jmoiron/sqlx"

	"github.com/sagaflow/sagaflow/definitions"
	"github.com/sagaflow/sagaflow/engine"
)

// definitionsLoader keeps the registry a node runs in step with its --definitions directory and
// the engine's catalog of versions (engine.SyncDefinitions): at start, and on every SIGHUP.
type definitionsLoader struct {
	dir string
	db  *sqlx.DB
	reg *definitions.Registry
	log *slog.Logger
}

// load reads every file of the directory — all of them valid, or nothing changes — and syncs them
// with the registry and the catalog: new versions are registered, versions that unfinished sagas
// use and no file provides any more come back from the catalog, and a file that changed a version
// sagas run on is refused. It logs what it restored, and what no one can restore.
func (l *definitionsLoader) load(ctx context.Context) (engine.DefinitionSync, error) {
	files := definitions.NewRegistry()
	if err := files.LoadDir(l.dir); err != nil {
		return engine.DefinitionSync{}, err
	}
	sync, err := engine.SyncDefinitions(ctx, l.db, l.reg, files.List())
	if err != nil {
		return sync, err
	}
	if len(sync.Restored) > 0 {
		l.log.WarnContext(ctx, "definition versions loaded from the database: their files are gone but sagas still run on them",
			"versions", sync.Restored, "dir", l.dir)
	}
	if len(sync.Changed) > 0 {
		l.log.WarnContext(ctx, "definition files changed a version no saga runs on: stored anew; a version already loaded keeps its old body until a restart",
			"versions", sync.Changed, "dir", l.dir)
	}
	if len(sync.Missing) > 0 {
		l.log.ErrorContext(ctx, "definition versions unknown: sagas run on them but neither a file nor the database holds them; put their files back",
			"versions", sync.Missing, "dir", l.dir)
	}
	return sync, nil
}

// reload is load on SIGHUP: on success it records an audit line naming what it added; on failure
// it keeps the set already loaded and logs every problem (an invalid file as FILE:LINE:COL).
func (l *definitionsLoader) reload(ctx context.Context) error {
	sync, err := l.load(ctx)
	if err != nil {
		for _, problem := range strings.Split(err.Error(), "\n") { // one line per problem
			l.log.ErrorContext(ctx, "definitions reload refused, the loaded definitions stay", "dir", l.dir, "err", escapeControls(problem))
		}
		return err
	}
	l.log.InfoContext(ctx, "definitions reloaded", "audit", "definitions.reload", "actor", "SIGHUP", "dir", l.dir,
		"added", sync.Added, "restored", sync.Restored, "versions", len(l.reg.List()))
	return nil
}

// watch reloads on every signal from hup until ctx is done.
func (l *definitionsLoader) watch(ctx context.Context, hup <-chan os.Signal) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			_ = l.reload(ctx) // logged
		}
	}
}
