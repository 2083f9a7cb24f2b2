#!/usr/bin/env bash
# Tests the Python client against the built mirrorhost: installs the package
# into a virtual environment kept beside the Cargo build, checks its type
# hints, then runs pytest (extra arguments go to pytest).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$repo/target}"
venv="$target/python-client-venv"

(cd "$repo" && cargo build --quiet --bin mirrorhost)
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$here[test]"
# The type hints the package ships (py.typed) must hold.
(cd "$here" && "$venv/bin/python" -m mypy --strict --no-error-summary mirror_manager)
# From the tests directory, so `import mirror_manager` finds the installed copy.
cd "$here/tests"
MIRRORHOST_BIN="$target/debug/mirrorhost" CARGO_TARGET_DIR="$target" \
    "$venv/bin/python" -m pytest -q -p no:cacheprovider "$@"
