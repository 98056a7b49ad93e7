#!/usr/bin/env bash
# Builds the offline install bundle: release binaries of relayd and relayctl plus everything an
# air-gapped machine needs, as dist/relayd-<version>-<target>.tar.gz (and its .sha256).
#
#   examples/packaging/build-bundle.sh [--out DIR]
#
# Needs the Rust toolchain and the crates already fetched (cargo fetch) or a vendor directory;
# honours CARGO_TARGET_DIR. On the target machine:
#   tar xzf relayd-<version>-<target>.tar.gz && cd relayd-<version>-<target> && sudo ./install.sh
set -euo pipefail

repo="$(cd "$(dirname "$0")/../.." && pwd)"
out="$repo/dist"
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --out=*) out="${1#--out=}"; shift ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "build-bundle.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

cd "$repo"
version="$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml)"
target="$(rustc -vV | sed -n 's/^host: //p')"
name="relayd-$version-$target"
target_dir="${CARGO_TARGET_DIR:-$repo/target}"

echo "== building $name (cargo build --release --locked)"
cargo build --release --locked -p relayd -p relayctl

mkdir -p "$out"
out="$(cd "$out" && pwd)"
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
dir="$stage/$name"
mkdir -p "$dir"
install -m 0755 "$target_dir/release/relayd" "$target_dir/release/relayctl" "$dir/"
install -m 0644 examples/relayd.service examples/relayd.toml examples/custom-models.json "$dir/"
install -m 0644 examples/packaging/README.bundle.md "$dir/README.md"
install -m 0755 examples/packaging/install.sh "$dir/install.sh"
(cd "$dir" && sha256sum relayd relayctl relayd.service relayd.toml custom-models.json install.sh README.md > SHA256SUMS)

tarball="$out/$name.tar.gz"
# Stable owner and order, so the tarball does not depend on who built it.
tar -C "$stage" --owner=0 --group=0 --numeric-owner --sort=name -czf "$tarball" "$name"
(cd "$out" && sha256sum "$name.tar.gz" > "$name.tar.gz.sha256")
echo "== $tarball"
cat "$dir/SHA256SUMS"
