#!/bin/sh
# Installs relayd from this unpacked bundle. POSIX sh; run as root on the target machine:
#
#   ./install.sh [--root DIR] [--no-systemctl]
#
#   --root DIR      install under DIR instead of / (a staging or test root); no user is created
#                   and systemctl is not called
#   --no-systemctl  do not run `systemctl daemon-reload`
#
# Verifies SHA256SUMS first and stops on any mismatch. Creates the `relayd` system user and
# group if absent. Installs relayd and relayctl to /usr/local/bin, the unit to
# /etc/systemd/system/relayd.service, the example config to /etc/relayd/relayd.toml ONLY if that
# file does not exist yet. Never touches an existing config or the data directory
# /var/lib/relayd (systemd creates it on first start): re-running it is how you upgrade.
set -eu

root=""
use_systemctl=yes
while [ $# -gt 0 ]; do
  case "$1" in
    --root) [ $# -ge 2 ] || { echo "install.sh: --root needs a directory" >&2; exit 2; }
            root="$2"; shift 2 ;;
    --root=*) root="${1#--root=}"; shift ;;
    --no-systemctl) use_systemctl=no; shift ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [ -n "$root" ]; then
  mkdir -p "$root"
  root="$(cd "$root" && pwd)"
  use_systemctl=no
fi

here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"

note() { printf 'install.sh: %s\n' "$*"; }

# 1. Integrity first: nothing is installed from a damaged or tampered bundle.
if ! command -v sha256sum >/dev/null 2>&1; then
  echo "install.sh: sha256sum not found; cannot verify the bundle" >&2
  exit 1
fi
if ! sha256sum -c --quiet SHA256SUMS; then
  echo "install.sh: checksum mismatch (see above); nothing was installed" >&2
  exit 1
fi
note "checksums verified ($(wc -l < SHA256SUMS | tr -d ' ') files)"

# 2. The service user.
am_root=no
[ "$(id -u)" = 0 ] && am_root=yes
if [ -n "$root" ]; then
  note "--root given: not creating the relayd user (create it on the target machine)"
elif [ "$am_root" = no ]; then
  note "not root: not creating the relayd user; run as root to install for real"
else
  if ! getent group relayd >/dev/null 2>&1; then
    groupadd --system relayd
    note "created group relayd"
  fi
  if ! getent passwd relayd >/dev/null 2>&1; then
    useradd --system --gid relayd --home-dir /var/lib/relayd --no-create-home \
      --shell /usr/sbin/nologin --comment "relayd LLM relay" relayd
    note "created user relayd"
  else
    note "user relayd exists"
  fi
fi

# 3. Binaries, unit and docs: always replaced (this is the upgrade path).
install -d -m 0755 "$root/usr/local/bin" "$root/etc/systemd/system" \
  "$root/usr/local/share/doc/relayd"
install -m 0755 relayd relayctl "$root/usr/local/bin/"
install -m 0644 relayd.service "$root/etc/systemd/system/relayd.service"
install -m 0644 README.md custom-models.json relayd.toml "$root/usr/local/share/doc/relayd/"
note "installed $root/usr/local/bin/relayd, $root/usr/local/bin/relayctl"
note "installed $root/etc/systemd/system/relayd.service"

# 4. The config: only when there is none. An existing one is the operator's, never ours.
install -d -m 0755 "$root/etc/relayd"
config="$root/etc/relayd/relayd.toml"
if [ -e "$config" ]; then
  note "kept existing $config (the new example is in $root/usr/local/share/doc/relayd/relayd.toml)"
else
  install -m 0640 relayd.toml "$config"
  if [ -z "$root" ] && [ "$am_root" = yes ]; then
    chown root:relayd "$config"
  fi
  note "installed example config $config"
fi

# 5. The data directory is never created, changed or removed here.
if [ -d "$root/var/lib/relayd" ]; then
  note "kept existing data directory $root/var/lib/relayd"
fi

if [ "$use_systemctl" = yes ] && command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  note "systemctl daemon-reload done"
fi

cat <<NEXT

Next steps:
  1. Edit $config (listen address, store); set secrets such as RELAYD_ENCRYPTION_KEY in
     /etc/relayd/relayd.env (mode 0600) if you do not want them generated in /var/lib/relayd.
  2. systemctl enable --now relayd        # first start generates /var/lib/relayd/admin.token
  3. systemctl status relayd; journalctl -u relayd
  4. sudo sh -c 'relayctl --token "\$(cat /var/lib/relayd/admin.token)" status'
  Reload the config:  systemctl reload relayd     Upgrade: unpack a newer bundle, run
  ./install.sh again, then systemctl restart relayd (the data is kept).
NEXT
