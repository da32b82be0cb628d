#!/usr/bin/env bash
# Builds the Debian package into target/debian/: the release binary, both units, the
# sysusers.d and tmpfiles.d entries, the README ([package.metadata.deb] in Cargo.toml).
#
#   contrib/package.sh            # then: sudo dpkg -i target/debian/loop-orchestrator_*.deb
#
# When the binary can write its man page and shell completions (`loop-orchestrator man`,
# `loop-orchestrator completions SHELL`), they are generated into target/assets/ and the
# `full` variant packages them as well; until then the package is built without them.
# Extra arguments go to cargo deb (e.g. --output DIR). Needs cargo-deb:
# `cargo install --locked cargo-deb`.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked --bin loop-orchestrator
bin=$(cargo metadata --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/release/loop-orchestrator

# Paths as [package.metadata.deb.variants.full] names them.
assets=target/assets
rm -rf "$assets"
mkdir -p "$assets"
generate() { # generate FILE ARGS...: the binary's output, kept only when it succeeds
    "$bin" "${@:2}" >"$assets/$1" 2>/dev/null && [ -s "$assets/$1" ]
}
variant=()
if generate loop-orchestrator.1 man &&
    generate loop-orchestrator.bash completions bash &&
    generate _loop-orchestrator completions zsh &&
    generate loop-orchestrator.fish completions fish; then
    variant=(--variant full)
else
    rm -rf "$assets"
    echo "package.sh: this binary has no \`man\`/\`completions\` yet; packaging without them" >&2
fi

cargo deb --no-build --locked "${variant[@]}" "$@"
