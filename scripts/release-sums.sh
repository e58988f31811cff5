#!/usr/bin/env bash
# Checksums and a signature a site can verify before it carries the files in.
#
#   scripts/release-sums.sh KEY DIR
#
# Writes DIR/SHA256SUMS for every other file in DIR (the .deb, the offline source
# archive) and signs it with the SSH key KEY, the way ferry signs commits but in
# its own namespace, so no commit signature can pass for a release's:
#   ssh-keygen -Y sign -f KEY -n ferry-dist SHA256SUMS  ->  SHA256SUMS.sig
# A site checks (docs/install.md), in DIR:
#   ssh-keygen -Y verify -f allowed_signers -I IDENTITY -n ferry-dist \
#     -s SHA256SUMS.sig < SHA256SUMS && sha256sum -c SHA256SUMS
set -euo pipefail
shopt -s inherit_errexit
[ $# -eq 2 ] || { echo "usage: $0 KEY DIR" >&2; exit 2; }
key=$(realpath "$1")
cd "$2"
rm -f SHA256SUMS SHA256SUMS.sig
files=()
for file in *; do
  [ -f "$file" ] && files+=("$file")
done
[ ${#files[@]} -gt 0 ] || { echo "no files to sum in $2" >&2; exit 2; }
sha256sum -- "${files[@]}" >SHA256SUMS
ssh-keygen -q -Y sign -f "$key" -n ferry-dist SHA256SUMS
cat SHA256SUMS
