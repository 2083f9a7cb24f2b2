#!/bin/sh
# The PostgreSQL pass: the service crate's tests (its unit tests, every store
# test among them, and every e2e test) once more, with each store on
# PostgreSQL in the database MIRRORHOST_TEST_POSTGRES names (a URL such as
# postgres://root@127.0.0.1:5432/test). The test binaries are the ones the
# SQLite pass built; tests/fixtures/postgres.rs gives each store a schema.
set -eu
if [ -z "${MIRRORHOST_TEST_POSTGRES:-}" ]; then
    echo "PostgreSQL runs skipped: MIRRORHOST_TEST_POSTGRES names no database (.ci/run sets it)" >&2
    exit 0
fi
MIRRORHOST_TEST_DATABASE_URL="$MIRRORHOST_TEST_POSTGRES" exec cargo test -p mirrorhost --lib --test e2e
