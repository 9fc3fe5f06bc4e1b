#!/usr/bin/env bash
# The whole test suite, on a fresh machine or an old one:
#
#   ./scripts/test.sh [extra arguments for cargo test]
#
# 1. Makes sure <repo>/.venv holds Chroma (chromadb==$CHROMA_VERSION, default
#    1.5.9): creates the venv with python3 -m venv and pip-installs chromadb,
#    only if it is missing or has another version. The integration tests start
#    real Chroma servers from <repo>/.venv/bin/chroma.
# 2. Makes sure the npm packages the tests drive are installed as their
#    package-lock.json pins them (`npm ci` if not; needs Node.js and npm):
#    the official JS client (tests/js) and the status page's browser driver
#    (tests/browser).
#    Makes sure <repo>/.venv-schemathesis holds schemathesis
#    ($SCHEMATHESIS_VERSION, default 4.32.5) for the schema-driven test.
# 3. Runs `cargo test --workspace --no-fail-fast` (unit, property, crash,
#    integration and CLI tests), then the gateway suite (tests/gateway.rs,
#    the official Python and JS clients included) once more through a
#    follower of a second gateway (CHROMA_HA_SUITE_THROUGH=follower). Any failing test
#    fails this script.
#
# Environment: PYTHON (interpreter used to create the venv, default python3),
# CHROMA_VERSION (default 1.5.9).
set -euo pipefail

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
    exit 0
fi

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

CHROMA_VERSION="${CHROMA_VERSION:-1.5.9}"
PYTHON="${PYTHON:-python3}"
VENV="$ROOT/.venv"

# shellcheck source=lib/chroma_venv.sh
source "$ROOT/scripts/lib/chroma_venv.sh"

ensure_chroma() {
    local have
    have="$(installed_chroma_version)"
    if [[ "$have" == "$CHROMA_VERSION" ]]; then
        echo "test.sh: chromadb $have found in $VENV"
        return 0
    fi
    echo "test.sh: installing chromadb==$CHROMA_VERSION into $VENV (found: ${have:-none})"
    install_chroma || true
    have="$(installed_chroma_version)"
    if [[ "$have" != "$CHROMA_VERSION" ]]; then
        echo "test.sh: chromadb $CHROMA_VERSION did not install (found: ${have:-none})" >&2
        exit 1
    fi
    echo "test.sh: chromadb $have installed"
}

# The npm packages the tests drive, exactly as each package-lock.json pins
# them: the official JS client (tests/js, npm chromadb) and the status
# page's browser driver (tests/browser, playwright-core, which downloads no
# browser). `npm ci` runs only when node_modules lacks the pinned version.
# Without Node.js those tests would fail, so this stops here and says how
# to install it.
ensure_npm_package() {
    local dir="$ROOT/$1" package="$2" pinned have
    if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
        echo "test.sh: Node.js and npm are needed for the tests in $1 (Debian: apt-get install nodejs npm)" >&2
        exit 1
    fi
    pinned="$(cd "$dir" && node -p "require('./package.json').dependencies['$package']")"
    have="$(cd "$dir" && node -p "require('./node_modules/$package/package.json').version" 2>/dev/null || true)"
    if [[ "$have" == "$pinned" ]]; then
        echo "test.sh: $package $have found in $1/node_modules"
        return 0
    fi
    echo "test.sh: npm ci --prefix $1 ($package $pinned; found: ${have:-none})"
    npm ci --prefix "$dir" --no-audit --no-fund </dev/null
}

# schemathesis (PyPI) for the schema-driven test (tests/schema_driven.rs),
# in a venv of its own so its dependencies never meet chromadb's.
SCHEMATHESIS_VERSION="${SCHEMATHESIS_VERSION:-4.32.5}"
ensure_schemathesis() {
    local venv="$ROOT/.venv-schemathesis" have
    have="$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("schemathesis"))' 2>/dev/null || true)"
    if [[ "$have" == "$SCHEMATHESIS_VERSION" ]]; then
        echo "test.sh: schemathesis $have found in $venv"
        return 0
    fi
    echo "test.sh: installing schemathesis==$SCHEMATHESIS_VERSION into $venv (found: ${have:-none})"
    [[ -x "$venv/bin/python" ]] || "$PYTHON" -m venv "$venv"
    "$venv/bin/python" -m pip install -q "schemathesis==$SCHEMATHESIS_VERSION" </dev/null
}

ensure_chroma
ensure_schemathesis
ensure_npm_package tests/js chromadb
ensure_npm_package tests/browser playwright-core
export ANONYMIZED_TELEMETRY=False

echo "test.sh: cargo test --workspace --no-fail-fast $*"
start=$SECONDS
failed=0
cargo test --workspace --no-fail-fast "$@" || failed=1
echo "test.sh: the gateway suite through a follower (CHROMA_HA_SUITE_THROUGH=follower)"
CHROMA_HA_SUITE_THROUGH=follower cargo test -p chroma-ha --test gateway --no-fail-fast "$@" || failed=1
if [[ "$failed" -ne 0 ]]; then
    echo "test.sh: tests failed after $((SECONDS - start)) s" >&2
    exit 1
fi
echo "test.sh: all tests passed in $((SECONDS - start)) s"
