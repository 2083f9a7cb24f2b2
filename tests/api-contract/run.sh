#!/usr/bin/env bash
# The admin API against its own OpenAPI document, with schemathesis: starts
# the built `mirrorhost serve` on a free port with a fresh data dir and runs
# every phase (examples, coverage, fuzzing, stateful) with the admin token.
# schemathesis comes from PyPI into a virtual environment beside the build.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$repo/target}"
venv="$target/schemathesis-venv"

(cd "$repo" && cargo build --quiet --bin mirrorhost)
[ -x "$venv/bin/st" ] || {
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "schemathesis==4.32.5"
}
data="$(mktemp -d)"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
token="contract-token-0123456789"
MIRRORHOST_ADMIN_TOKEN="$token" "$target/debug/mirrorhost" serve \
    --data-dir "$data" --listen "127.0.0.1:$port" > "$data/serve.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$port/healthz" > /dev/null && break
    sleep 0.1
done
api() {
    curl -sf -X "$1" -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
        -d "$3" "http://127.0.0.1:$port/api/v1$2" > /dev/null
}
api POST /mirrors/pull '{"project_id": "test/app", "url": "https://git.example.com/test/app.git", "enabled": false}'
api POST /mirrors/1/runs '{"success": false, "duration_ms": 1200, "error": "upstream timed out"}'
cd "$here"
"$venv/bin/st" run "http://127.0.0.1:$port/api/openapi.json" \
    -H "Authorization: Bearer $token" --seed 1 --no-color "$@"
