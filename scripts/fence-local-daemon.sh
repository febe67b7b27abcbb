#!/usr/bin/env bash
# A fence agent for this machine's second libvirt daemons (scripts/start-second-libvirtd.sh), the
# tests' and the demo's second hypervisor: it powers that "host" off for certain. Every guest it
# runs (the QEMU processes whose pid files are in its run directory) is killed, then its daemons.
# Real hosts use their own fence agent (fence_ipmilan, fence_redfish, a PDU's) the same way:
# Host.fence_command, exit status 0 = fenced.
#
#   scripts/fence-local-daemon.sh NAME
set -euo pipefail

NAME="${1:?usage: $0 NAME}"
BASE="${VDI_SECOND_LIBVIRTD_BASE:-/var/lib/vdi/hosts}/$NAME"
[ -d "$BASE/run" ] || { echo "no such local daemon: $NAME" >&2; exit 2; }

for pidfile in "$BASE"/run/qemu/*.pid; do
  [ -f "$pidfile" ] || continue
  pid="$(cat "$pidfile")"
  # Only a QEMU process: a stale pid file must not kill whatever has that number now.
  if [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q '^[^ ]*qemu-system'; then
    kill -9 "$pid" 2>/dev/null || true
  fi
done
for daemon in libvirtd virtlogd; do
  if [ -f "$BASE/run/$daemon.pid" ]; then
    kill -9 "$(cat "$BASE/run/$daemon.pid")" 2>/dev/null || true
  fi
done
# Off for certain: no QEMU of that daemon is left.
for pidfile in "$BASE"/run/qemu/*.pid; do
  [ -f "$pidfile" ] || continue
  pid="$(cat "$pidfile")"
  for _ in $(seq 1 50); do
    [ -d "/proc/$pid" ] && grep -q qemu "/proc/$pid/comm" 2>/dev/null || break
    sleep 0.1
  done
  if [ -d "/proc/$pid" ] && grep -q qemu "/proc/$pid/comm" 2>/dev/null; then
    echo "guest process $pid of $NAME is still there" >&2
    exit 1
  fi
done
echo "fenced $NAME"
