#!/usr/bin/env bash
# The Debian package, with man pages and completions made by the binary it holds.
#
#   scripts/package-deb.sh [OUTDIR]      (default: target/debian)
#
# Builds release (offline, from vendor/, in the offline source archive's tree),
# writes one man page per command and the bash, zsh and fish completions from
# that binary into target/release/deb-assets/ (never into git), then packages
# with `cargo deb --no-build` ([package.metadata.deb] in Cargo.toml). Needs
# cargo-deb (`cargo install cargo-deb --locked`) and dpkg-dev (dpkg-shlibdeps
# states the libraries' package versions). Prints the .deb's path.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
command -v cargo-deb >/dev/null || { echo "needs cargo-deb: cargo install cargo-deb --locked" >&2; exit 2; }

cargo build --release --locked
release=${CARGO_TARGET_DIR:-target}/release
assets=$release/deb-assets
rm -rf "$assets"
mkdir -p "$assets/man" "$assets/completions"
"$release/ferry" -q man --out "$assets/man"
gzip -9n "$assets"/man/*.1
"$release/ferry" completions bash >"$assets/completions/ferry"
"$release/ferry" completions zsh >"$assets/completions/_ferry"
"$release/ferry" completions fish >"$assets/completions/ferry.fish"

out=()
[ $# -gt 0 ] && mkdir -p "$1" && out=(--output "$1")
cargo deb --no-build --strip "${out[@]}"
