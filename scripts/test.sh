#!/usr/bin/env bash
# `make test`: the whole suite against PostgreSQL and Redis on 127.0.0.1 (started if they are
# down), a real libvirtd with real TCG guests, and headless Debian Chromium.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

"$ROOT/scripts/install-deps.sh" --test
"$ROOT/scripts/start-services.sh" --postgres
"$ROOT/scripts/build-golden-image.sh" "$DEMO_IMAGE"

if [ -z "${DATABASE_URL:-}" ]; then
  if psql -h 127.0.0.1 -U postgres -d postgres -tAc 'select 1' >/dev/null 2>&1; then
    export DATABASE_URL="postgres://postgres@127.0.0.1:5432/vdi"
  else
    # A stock Debian cluster wants a password over TCP: make a role for the tests.
    su postgres -c "psql -q -c \"DO \\\$\\\$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname='vdi_test') THEN CREATE ROLE vdi_test LOGIN CREATEDB PASSWORD 'vdi_test'; END IF; END \\\$\\\$;\""
    export DATABASE_URL="postgres://vdi_test:vdi_test@127.0.0.1:5432/vdi"
  fi
fi
export VDI_TEST_GOLDEN_IMAGE="$DEMO_IMAGE"
# Tests set their own Redis database and domain name prefix (tests/conftest.py).


export VDI_VAR_DIR="${VDI_TEST_VAR_DIR:-$ROOT/var/test}"

start=$(date +%s)
set +e
"$PY" -m pytest "$@"
status=$?
set -e
echo "test suite took $(( $(date +%s) - start )) s"
exit $status
