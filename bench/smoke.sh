#!/usr/bin/env bash
# A few seconds of every benchmark, proving the harness still works (CI runs this; the
# figures it prints are not judged). The real run: cargo run --release -p bench -- all --write
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p loop-orchestrator -p bench
cargo run --release --locked -p bench -- all --smoke
# Cluster claims need a PostgreSQL (CI sets LOOP_TEST_POSTGRES).
if [ -n "${LOOP_TEST_POSTGRES:-}" ]; then cargo run --release --locked -p bench -- claims --seconds 1; fi
# MCP round trips over stdio and HTTP, a few calls.
cargo run --release --locked -p bench -- mcp --calls 20
# serve --metrics: scrapes, and figure 1 beside them (figure 10).
cargo run --release --locked -p bench -- metrics --smoke
