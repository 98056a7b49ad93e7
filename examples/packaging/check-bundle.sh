#!/usr/bin/env bash
# End-to-end check of the offline bundle, as an operator would use it, without touching the
# machine: builds the bundle (release build, takes minutes; not part of `cargo test`), unpacks it
# into a temporary directory, verifies the checksums (and that a tampered file is refused),
# installs into a temporary root twice (the second run must keep an edited config), starts the
# installed relayd with the installed config and checks /healthz, then stops it with SIGTERM.
#
#   examples/packaging/check-bundle.sh [--bundle FILE]   # --bundle: skip the build, check FILE
set -euo pipefail

repo="$(cd "$(dirname "$0")/../.." && pwd)"
work="$(mktemp -d)"
pid=""
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; fi
  rm -rf "$work"
}
trap cleanup EXIT
step() { printf '\n== %s\n' "$*"; }

bundle=""
if [ "${1:-}" = "--bundle" ]; then bundle="$2"; fi
if [ -z "$bundle" ]; then
  step "build the bundle"
  "$repo/examples/packaging/build-bundle.sh" --out "$work/dist"
  bundle="$(ls "$work"/dist/relayd-*.tar.gz)"
fi

step "unpack $(basename "$bundle") and verify its checksums"
(cd "$(dirname "$bundle")" && sha256sum -c "$(basename "$bundle").sha256") || true
mkdir -p "$work/unpacked"
tar -C "$work/unpacked" -xzf "$bundle"
dir="$(ls -d "$work"/unpacked/relayd-*)"
ls -l "$dir"
(cd "$dir" && sha256sum -c SHA256SUMS)

step "a tampered bundle is refused before anything is installed"
cp -r "$dir" "$work/tampered"
echo "# tampered" >> "$work/tampered/relayd.toml"
if "$work/tampered/install.sh" --root "$work/tampered-root" --no-systemctl; then
  echo "FAIL: install.sh accepted a tampered bundle"; exit 1
fi
[ ! -e "$work/tampered-root/usr/local/bin/relayd" ] || { echo "FAIL: installed anyway"; exit 1; }
echo "ok: refused, nothing installed"

root="$work/root"
step "install.sh --root $root --no-systemctl (first run)"
"$dir/install.sh" --root "$root" --no-systemctl
(cd "$root" && find . -type f -o -type l | sort)

step "edit the installed config, install again: the edit is kept"
config="$root/etc/relayd/relayd.toml"
sed -i 's/^max_body_bytes = .*/max_body_bytes = 16777216  # edited by the operator/' "$config"
"$dir/install.sh" --root "$root" --no-systemctl
grep -q "edited by the operator" "$config" || { echo "FAIL: install.sh overwrote the config"; exit 1; }
echo "ok: $(grep -n 'edited by the operator' "$config")"

if command -v systemd-analyze >/dev/null 2>&1; then
  # The host's units (sysinit.target, /bin/kill) are needed for verify, and the binary must
  # exist: check a copy of the installed unit whose ExecStart points into the temporary root.
  step "systemd-analyze verify (installed unit, ExecStart pointed at the temporary root)"
  mkdir -p "$work/verify"
  sed "s#^ExecStart=/usr/local/bin/relayd#ExecStart=$root/usr/local/bin/relayd#" \
    "$root/etc/systemd/system/relayd.service" > "$work/verify/relayd.service"
  systemd-analyze verify "$work/verify/relayd.service" && echo "ok: verify clean"
  step "systemd-analyze security --offline=yes (exposure score, lower is better)"
  systemd-analyze security --offline=yes --root="$root" relayd.service | tail -n 3 || true
fi

step "start the installed relayd with the installed config"
data="$work/data"
log="$work/relayd.log"
"$root/usr/local/bin/relayd" --version
"$root/usr/local/bin/relayd" --config "$config" --listen 127.0.0.1:0 --data-dir "$data" 2>"$log" &
pid=$!
addr=""
for _ in $(seq 1 300); do
  addr="$(sed -n 's/.*listening on \([0-9.:]*\).*/\1/p' "$log" | head -n 1)"
  [ -n "$addr" ] && break
  kill -0 "$pid" 2>/dev/null || { cat "$log"; echo "FAIL: relayd exited"; exit 1; }
  sleep 0.1
done
[ -n "$addr" ] || { cat "$log"; echo "FAIL: relayd did not start"; exit 1; }
echo "listening on $addr"
printf 'GET /healthz -> '; curl -fsS "http://$addr/healthz"
printf 'GET /readyz  -> '; curl -fsS "http://$addr/readyz"
"$root/usr/local/bin/relayctl" --server "http://$addr" --token "$(cat "$data/admin.token")" status

step "SIGTERM: drains and exits 0"
kill -TERM "$pid"
status=0
wait "$pid" || status=$?
pid=""
sed 's/\x1b\[[0-9;]*m//g' "$log"
echo "exit status: $status"
[ "$status" = 0 ] || { echo "FAIL"; exit 1; }

step "bundle check passed"
