#!/usr/bin/env bash
# The offline source archive: one file that builds ferry with no network.
#
#   scripts/offline-source.sh [OUTDIR]      (default: target/offline)
#
# Writes OUTDIR/ferry-<version>-src.tar.gz: the sources of HEAD (`git archive`),
# a COMMIT stamp (so `ferry --version` names the commit without git history),
# and every dependency vendored under vendor/ with the .cargo/config.toml that
# points cargo at it. Build it with
#   tar -xzf ferry-<version>-src.tar.gz && cd ferry-<version>
#   cargo build --release --offline --locked
# Uncommitted changes are not in the archive (it holds HEAD). The archive is
# reproducible: the same commit and Cargo.lock give the same bytes.
set -euo pipefail
shopt -s inherit_errexit
repo=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$repo/target/offline}
mkdir -p "$out"
out=$(cd "$out" && pwd)
cd "$repo"

version=$(cargo pkgid --offline | sed 's/.*[#@]//')
commit=$(git rev-parse --short=12 HEAD)
name=ferry-$version
if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
  echo "note: uncommitted changes are not in the archive; it holds HEAD ($commit)" >&2
fi

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
git archive --format=tar --prefix="$name/" HEAD | tar -x -C "$stage"
tree=$stage/$name
printf '%s\n' "$commit" >"$tree/COMMIT"
mkdir -p "$tree/.cargo"
# cargo vendor prints the source replacement that makes cargo read vendor/.
if ! (cd "$tree" && cargo vendor --locked --versioned-dirs vendor) \
       >>"$tree/.cargo/config.toml" 2>"$stage/vendor.log"; then
  cat "$stage/vendor.log" >&2
  exit 1
fi

archive=$out/$name-src.tar.gz
tar --sort=name --format=gnu --owner=0 --group=0 --numeric-owner \
    --mtime="@$(git log -1 --format=%ct HEAD)" -C "$stage" -cf - "$name" \
  | gzip -n >"$archive.tmp"
mv "$archive.tmp" "$archive"
echo "$archive ($(du -h "$archive" | cut -f1), commit $commit)"
