"""The migration of the source of truth to CockroachDB (docs/migration.md): one module per phase."""
