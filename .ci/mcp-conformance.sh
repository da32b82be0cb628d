#!/usr/bin/env bash
# The official MCP conformance suite (npm @modelcontextprotocol/conformance) against
# `loop-orchestrator mcp --http` on a fresh instance. Called by .ci/run.
#
# The suite needs Node 22; the npm package node@22 brings it (a binary shipped in a registry
# package, nothing else is downloaded). Both are installed under target/mcp-conformance/.
# Scenarios that call the suite's own fixture tools, prompts and resources (test_simple_text,
# test://static-text, ...) or optional capabilities this server does not offer (logging,
# completion, resource subscriptions) are listed in .ci/mcp-conformance-expected.yml; the
# run fails on any other failure, and on a listed scenario that starts passing (so the list
# and README's table stay true).
set -euo pipefail
cd "$(dirname "$0")/.."

command -v npm >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm; }

version=0.1.16
tools="target/mcp-conformance"
if [ ! -x "$tools/node_modules/.bin/conformance" ] || [ ! -x "$tools/node_modules/.bin/node" ]; then
    mkdir -p "$tools"
    npm install --prefix "$tools" --no-audit --no-fund --loglevel=error \
        "@modelcontextprotocol/conformance@$version" node@22 >/dev/null
fi
export PATH="$PWD/$tools/node_modules/.bin:$PATH"
echo "== MCP conformance $version with node $(node --version)"

cargo build --locked --quiet --bin loop-orchestrator
bin="$PWD/target/debug/loop-orchestrator"
work="$(mktemp -d)"
server=""
cleanup() {
    if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
"$bin" init "$work/instance" >/dev/null
env -u LOOP_ORCHESTRATOR_MCP_TOKEN "$bin" --dir "$work/instance" mcp --http 127.0.0.1:0 \
    2>"$work/server.log" &
server=$!
url=""
for _ in $(seq 1 100); do
    url="$(sed -n 's/^mcp: serving //p' "$work/server.log")"
    [ -n "$url" ] && break
    kill -0 "$server" 2>/dev/null || { cat "$work/server.log"; exit 1; }
    sleep 0.1
done
[ -n "$url" ] || { echo "the server did not start"; cat "$work/server.log"; exit 1; }

conformance server --url "$url" --expected-failures .ci/mcp-conformance-expected.yml \
    -o "$work/results" | sed -n '/=== SUMMARY ===/,$p'
