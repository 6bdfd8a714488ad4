package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"

	"github.com/sagaflow/sagaflow/definitions"
	"github.com/sagaflow/sagaflow/engine"
	"github.com/sagaflow/sagaflow/internal/natstest"
	"github.com/sagaflow/sagaflow/internal/pgtest"
	"github.com/sagaflow/sagaflow/internal/sqldb"
	"github.com/sagaflow/sagaflow/internal/sqlitetest"
	"github.com/sagaflow/sagaflow/outbox"
	"github.com/sagaflow/sagaflow/participant"
	"github.com/sagaflow/sagaflow/saga"
)

// TestDMLOnlyRole sets PostgreSQL up as deploy/postgres/roles.sql says (an owner that migrates, an
// app role with DML rights only) and runs an orchestrator node as the app role: a saga completes,
// the schema check passes, and the role can change no table.
func TestDMLOnlyRole(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	admin, err := sqlx.Open("postgres", pgtest.BaseDSN(t))
	require.NoError(t, err)
	t.Cleanup(func() { _ = admin.Close() })
	admin.SetMaxOpenConns(1)

	// deploy/postgres/roles.sql, with names unique to this test (roles are cluster-wide).
	b := make([]byte, 5)
	_, _ = rand.Read(b)
	suffix := hex.EncodeToString(b)
	owner, app, schema := "sf_owner_"+suffix, "sf_app_"+suffix, "sf_roles_"+suffix
	sql, err := os.ReadFile("../../deploy/postgres/roles.sql")
	require.NoError(t, err)
	script := strings.NewReplacer("sagaflow_owner", owner, "sagaflow_app", app, "SCHEMA sagaflow", "SCHEMA "+schema,
		"search_path = sagaflow", "search_path = "+schema, ":owner_password", "'pw'", ":app_password", "'pw'").Replace(string(sql))
	t.Cleanup(func() {
		bg := context.Background()
		_, _ = admin.ExecContext(bg, `DROP SCHEMA IF EXISTS `+schema+` CASCADE`)
		for _, r := range []string{app, owner} {
			_, _ = admin.ExecContext(bg, `DROP OWNED BY `+r)
			_, _ = admin.ExecContext(bg, `DROP ROLE IF EXISTS `+r)
		}
	})
	for _, stmt := range strings.Split(script, ";") {
		if strings.TrimSpace(stripSQLComments(stmt)) == "" || strings.Contains(stmt, "REVOKE CREATE ON SCHEMA public") {
			continue // the shared test server's public schema is left as it is
		}
		_, err := admin.ExecContext(ctx, stmt)
		require.NoError(t, err, stmt)
	}

	ownerDB := openAs(t, owner, schema)
	require.ErrorIs(t, engine.CheckMigrations(ctx, ownerDB), outbox.ErrMigrationsPending, "an empty schema is behind")
	require.NoError(t, engine.Migrate(ctx, ownerDB))

	appDB := openAs(t, app, schema)
	require.NoError(t, engine.CheckMigrations(ctx, appDB), "the app role can check the schema")
	_, err = appDB.ExecContext(ctx, `CREATE TABLE intruder (id int)`)
	require.ErrorContains(t, err, "permission denied")
	_, err = appDB.ExecContext(ctx, `ALTER TABLE sagaflow_instances ADD COLUMN intruder int`)
	require.ErrorContains(t, err, "must be owner")
	require.Error(t, engine.Migrate(ctx, appDB), "the app role cannot migrate")

	// An orchestrator node and a participant; the node runs as the app role.
	srv := natstest.New(t, nil)
	def, err := definitions.New("roles", 1).Step("only", "svc", "Do").Build()
	require.NoError(t, err)
	reg := definitions.NewRegistry()
	require.NoError(t, reg.Register(def))
	node, err := New(ctx, Config{DB: appDB, NATS: srv.Connect(t), Definitions: reg, Orchestrator: true, Relay: true})
	require.NoError(t, err)
	run(t, node.Run)
	pdb := sqlitetest.New(t)
	require.NoError(t, participant.Migrate(ctx, pdb))
	p, err := participant.New(pdb, srv.JetStream(t), &participant.Config{Service: "svc"})
	require.NoError(t, err)
	p.Handle("Do", func(context.Context, *sqlx.Tx, participant.Command) (participant.Result, error) {
		return participant.Success(map[string]int{"done": 1}), nil
	})
	require.NoError(t, p.Start(ctx))
	t.Cleanup(func() { require.NoError(t, p.Stop(context.Background())) })

	id, err := node.Engine().Start(ctx, "roles", "k-1", json.RawMessage(`{}`), engine.StartOptions{})
	require.NoError(t, err)
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	inst, err := node.Engine().Wait(wctx, id)
	require.NoError(t, err)
	require.Equal(t, saga.StatusCompleted, inst.Status)
}

// openAs opens the test server as role, its search_path on schema, the way production opens it.
func openAs(t *testing.T, role, schema string) *sqlx.DB {
	t.Helper()
	u, err := url.Parse(pgtest.BaseDSN(t))
	require.NoError(t, err)
	u.User = url.User(role)
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	db, err := sqlx.Open("postgres", sqldb.PostgresDSN(u.String()))
	require.NoError(t, err)
	db.SetMaxOpenConns(4)
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// run runs fn until the test ends and checks it returned nil.
func run(t *testing.T, fn func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.WithoutCancel(t.Context()))
	done := make(chan error, 1)
	go func() { done <- fn(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
}

func stripSQLComments(s string) string {
	var b strings.Builder
	for line := range strings.Lines(s) {
		if !strings.HasPrefix(strings.TrimSpace(line), "--") {
			b.WriteString(line)
		}
	}
	return b.String()
}
