#!/usr/bin/env bash
# Start virtlogd and libvirtd on a machine without systemd (containers, CI) unless a libvirtd
# already answers. Without virtlogd, starting a domain hangs ~50 s and then fails.
set -euo pipefail

if virsh -c qemu:///system version >/dev/null 2>&1; then
  exit 0
fi
mkdir -p /var/log/libvirt /run/libvirt /var/lib/libvirt/qemu
if [ -e /dev/kvm ]; then
  chgrp kvm /dev/kvm 2>/dev/null || true
  chmod 660 /dev/kvm 2>/dev/null || true
fi
pgrep -x virtlogd >/dev/null || virtlogd -d
pgrep -x libvirtd >/dev/null || libvirtd -d
for _ in $(seq 1 50); do
  if virsh -c qemu:///system version >/dev/null 2>&1; then
    echo "libvirtd is running"
    exit 0
  fi
  sleep 0.2
done
echo "libvirtd did not answer on qemu:///system within 10 s; see /var/log/libvirt/" >&2
exit 1
