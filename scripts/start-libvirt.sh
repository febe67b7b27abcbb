#!/usr/bin/env bash
# Start virtlogd and libvirtd on a machine without systemd (containers, CI) unless a libvirtd
# already answers, then the desktops' NAT network (scripts/start-nat-network.sh). Without
# virtlogd, starting a domain hangs ~50 s and then fails.
set -euo pipefail
here="$(dirname "$0")"

if virsh -c qemu:///system version >/dev/null 2>&1; then
  exec "$here/start-nat-network.sh"
fi
mkdir -p /var/log/libvirt /run/libvirt /var/lib/libvirt/qemu
if [ -e /dev/kvm ]; then
  chgrp kvm /dev/kvm 2>/dev/null || true
  chmod 660 /dev/kvm 2>/dev/null || true
fi
# By their pid files, not by name: a second daemon of this machine's own
# (scripts/start-second-libvirtd.sh) must not pass for this one.
daemon_running() { [ -f "/run/$1.pid" ] && kill -0 "$(cat "/run/$1.pid")" 2>/dev/null; }
daemon_running virtlogd || virtlogd -d
daemon_running libvirtd || libvirtd -d
for _ in $(seq 1 50); do
  if virsh -c qemu:///system version >/dev/null 2>&1; then
    echo "libvirtd is running"
    exec "$here/start-nat-network.sh"
  fi
  sleep 0.2
done
echo "libvirtd did not answer on qemu:///system within 10 s; see /var/log/libvirt/" >&2
exit 1
