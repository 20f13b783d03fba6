#!/usr/bin/env bash
# Checks systemd/notifyd.service and notifyd.socket: `systemd-analyze verify` must print nothing, and
# `systemd-analyze security --offline=true` must rate it 2.0 or lower ("OK").
# Installs systemd's tools when they are missing. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v systemd-analyze >/dev/null; then
  apt-get update -qq && apt-get install -y -qq systemd >/dev/null
fi

unit=notifyd.service
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# verify wants ExecStart's binary to exist; check the unit exactly as written but for that path.
sed "s|^ExecStart=/usr/bin/notifyd |ExecStart=/bin/true |" "$unit" > "$work/$unit"
if ! grep -q '^ExecStart=/bin/true ' "$work/$unit"; then
  echo "check.sh: ExecStart no longer starts with /usr/bin/notifyd; update this script" >&2
  exit 1
fi
cp notifyd.socket "$work/notifyd.socket"
out=$(systemd-analyze verify "$work/$unit" "$work/notifyd.socket" 2>&1) || { echo "$out" >&2; echo "systemd-analyze verify failed" >&2; exit 1; }
if [ -n "$out" ]; then
  echo "$out" >&2
  echo "systemd-analyze verify printed warnings" >&2
  exit 1
fi
echo "systemd-analyze verify: clean"

# systemd removes the service's RuntimeDirectory on every stop; a socket notifyd.socket listens on
# must not live there (it would vanish while the socket unit keeps listening) unless it is kept.
runtime=$(sed -n 's/^RuntimeDirectory=//p' "$unit")
listen=$(sed -n 's/^ListenStream=//p' notifyd.socket)
if [ -n "$runtime" ] && [[ "$listen" == /run/"$runtime"/* ]] && ! grep -q '^RuntimeDirectoryPreserve=yes' "$unit"; then
  echo "notifyd.socket listens on $listen inside RuntimeDirectory=$runtime, which systemd deletes on stop" >&2
  exit 1
fi
if ! grep -q '^SocketGroup=' notifyd.socket || ! grep -q '^SocketMode=0660' notifyd.socket; then
  echo "notifyd.socket needs SocketGroup= and SocketMode=0660 so a non-root group can connect" >&2
  exit 1
fi
echo "notifyd.socket: $listen survives service stops, group-accessible"

report=$(systemd-analyze security --offline=true "$unit" 2>&1)
score=$(printf '%s\n' "$report" | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p' | tail -n 1)
if [ -z "$score" ]; then
  echo "$report" >&2
  echo "could not read the exposure level" >&2
  exit 1
fi
echo "systemd-analyze security: exposure $score (must be <= 2.0)"
awk -v s="$score" 'BEGIN { exit !(s <= 2.0) }' || { echo "$report" >&2; exit 1; }
