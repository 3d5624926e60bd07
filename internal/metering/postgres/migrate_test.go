package postgres

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"testing/fstest"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
)

// appliedVersions lists schema_migrations' versions in dsn's schema.
func appliedVersions(t *testing.T, dsn string) []int {
	t.Helper()
	schema := dsn[strings.LastIndex(dsn, "=")+1:]
	rows, err := adminPool(t).Query(context.Background(),
		"SELECT version FROM "+schema+".schema_migrations ORDER BY version")
	if err != nil {
		t.Fatalf("read versions: %v", err)
	}
	defer rows.Close()
	var out []int
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			t.Fatalf("scan: %v", err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("read versions: %v", err)
	}
	return out
}

// wantAllVersions fails unless each version was applied exactly once.
func wantAllVersions(t *testing.T, dsn string) {
	t.Helper()
	got := appliedVersions(t, dsn)
	if len(got) != SchemaVersion() {
		t.Fatalf("applied versions: got %v, want 1..%d once each", got, SchemaVersion())
	}
	for i, v := range got {
		if v != i+1 {
			t.Fatalf("applied versions: got %v, want 1..%d once each", got, SchemaVersion())
		}
	}
}

func TestMigrateIdempotent(t *testing.T) {
	dsn := freshDSN(t)
	ctx := context.Background()
	for i := range 3 {
		if err := Migrate(ctx, dsn); err != nil {
			t.Fatalf("migrate %d: %v", i, err)
		}
	}
	wantAllVersions(t, dsn)

	// A store opened on the migrated schema works; opening it migrates
	// nothing more.
	s := openStore(t, dsn, metering.Options{}, PoolOptions{})
	mustProvision(t, s, 1, 5, 0)
	wantAllVersions(t, dsn)
}

// TestMigrateConcurrent: replicas starting together migrate once.
func TestMigrateConcurrent(t *testing.T) {
	dsn := freshDSN(t)
	const n = 6
	errs := make([]error, n)
	stores := make([]*Store, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			if i%2 == 0 {
				errs[i] = Migrate(context.Background(), dsn)
				return
			}
			stores[i], errs[i] = Open(context.Background(), dsn, metering.Options{},
				PoolOptions{MaxConns: 2})
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("replica %d: %v", i, err)
		}
	}
	for _, s := range stores {
		if s != nil {
			t.Cleanup(func() { _ = s.Close() })
		}
	}
	wantAllVersions(t, dsn)
}

// TestSkipMigrate: with SkipMigrate, Open refuses an unmigrated schema
// and accepts a migrated one.
func TestSkipMigrate(t *testing.T) {
	dsn := freshDSN(t)
	ctx := context.Background()
	_, err := Open(ctx, dsn, metering.Options{}, PoolOptions{SkipMigrate: true})
	if !errors.Is(err, errNotMigrated) {
		t.Fatalf("open unmigrated: got %v, want errNotMigrated", err)
	}
	if err := Migrate(ctx, dsn); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	s := openStore(t, dsn, metering.Options{}, PoolOptions{SkipMigrate: true})
	mustProvision(t, s, 1, 5, 0)
}

// TestSchemaNewer: a schema migrated by a newer binary is refused, by
// Migrate and by Open with or without SkipMigrate, and left alone.
func TestSchemaNewer(t *testing.T) {
	dsn := freshDSN(t)
	ctx := context.Background()
	if err := Migrate(ctx, dsn); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	schema := dsn[strings.LastIndex(dsn, "=")+1:]
	_, err := adminPool(t).Exec(ctx, "INSERT INTO "+schema+
		".schema_migrations (version, name) VALUES ($1, 'future')", SchemaVersion()+1)
	if err != nil {
		t.Fatalf("insert future version: %v", err)
	}
	if err := Migrate(ctx, dsn); !errors.Is(err, errSchemaNewer) {
		t.Errorf("migrate: got %v, want errSchemaNewer", err)
	}
	for _, skip := range []bool{false, true} {
		_, err := Open(ctx, dsn, metering.Options{}, PoolOptions{SkipMigrate: skip})
		if !errors.Is(err, errSchemaNewer) {
			t.Errorf("open (skip migrate %v): got %v, want errSchemaNewer", skip, err)
		}
	}
}

// TestMigrateNoSchema: a search_path naming no schema is a clear error.
func TestMigrateNoSchema(t *testing.T) {
	adminPool(t)
	err := Migrate(context.Background(), testServer+"&search_path=no_such_schema_here")
	if err == nil || !strings.Contains(err.Error(), "no schema selected") {
		t.Errorf("got %v, want a no schema selected error", err)
	}
}

func TestLoadMigrations(t *testing.T) {
	file := func(s string) *fstest.MapFile { return &fstest.MapFile{Data: []byte(s)} }
	tests := []struct {
		name    string
		files   fstest.MapFS
		want    []int
		wantErr string
	}{
		{name: "in order", files: fstest.MapFS{
			"m/0002_b.sql": file("SELECT 2"), "m/0001_a.sql": file("SELECT 1"),
			"m/README": file("not a migration"),
		}, want: []int{1, 2}},
		{name: "gap", files: fstest.MapFS{
			"m/0001_a.sql": file("SELECT 1"), "m/0003_c.sql": file("SELECT 3"),
		}, wantErr: "want version 2"},
		{name: "repeat", files: fstest.MapFS{
			"m/0001_a.sql": file("SELECT 1"), "m/0001_b.sql": file("SELECT 1"),
		}, wantErr: "want version 2"},
		{name: "empty file", files: fstest.MapFS{"m/0001_a.sql": file(" \n")},
			wantErr: "is empty"},
		{name: "bad name", files: fstest.MapFS{"m/1_a.sql": file("SELECT 1")},
			wantErr: "want NNNN_name.sql"},
		{name: "none", files: fstest.MapFS{}, wantErr: "no migrations"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ms, err := loadMigrations(tt.files, "m")
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %v, want an error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("load: %v", err)
			}
			var got []int
			for _, m := range ms {
				got = append(got, m.version)
			}
			if len(got) != len(tt.want) || got[0] != tt.want[0] || got[1] != tt.want[1] {
				t.Errorf("versions: got %v, want %v", got, tt.want)
			}
		})
	}

	// The embedded set itself is sound.
	if _, err := loadMigrations(migrationFiles, "migrations"); err != nil {
		t.Errorf("embedded migrations: %v", err)
	}
}

func TestParseMigrationName(t *testing.T) {
	tests := []struct {
		file    string
		version int
		name    string
		ok      bool
	}{
		{"0001_init.sql", 1, "init", true},
		{"0012_add_refund_index.sql", 12, "add_refund_index", true},
		{"000000009_x.sql", 9, "x", true},
		{"0000_zero.sql", 0, "", false},
		{"001_short.sql", 0, "", false},
		{"0001_Upper.sql", 0, "", false},
		{"0001_.sql", 0, "", false},
		{"0001_init.txt", 0, "", false},
		{"00a1_init.sql", 0, "", false},
		{"0001-init.sql", 0, "", false},
	}
	for _, tt := range tests {
		v, name, err := parseMigrationName(tt.file)
		if (err == nil) != tt.ok || v != tt.version || name != tt.name {
			t.Errorf("%q: got %d, %q, %v; want %d, %q, ok %v",
				tt.file, v, name, err, tt.version, tt.name, tt.ok)
		}
	}
}

func FuzzParseMigrationName(f *testing.F) {
	for _, s := range []string{"0001_init.sql", "1_a.sql", "9999999999_x.sql", "_.sql", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, file string) {
		v, name, err := parseMigrationName(file)
		if err != nil {
			if v != 0 || name != "" {
				t.Fatalf("%q: error %v with results %d, %q", file, err, v, name)
			}
			return
		}
		if v <= 0 || name == "" || !strings.HasSuffix(file, "_"+name+".sql") {
			t.Fatalf("%q: accepted as %d, %q", file, v, name)
		}
	})
}
