#!/usr/bin/env bash
# A second, independent libvirt daemon on this machine: a second hypervisor host for the tests
# and the demo. It runs in a mount namespace of its own, where its own directories are mounted
# over /run/libvirt, /var/lib/libvirt, /etc/libvirt and /var/log/libvirt, so it has its own
# sockets, domain state, configuration and host UUID (libvirt refuses migration between two
# daemons with the same UUID). Disk files elsewhere (/var/lib/vdi) are seen by both: shared
# storage, as live migration needs. Prints its URI; safe to run again.
#
#   scripts/start-second-libvirtd.sh [NAME]   ->  qemu+unix:///system?socket=/var/lib/vdi/hosts/NAME/run/libvirt-sock
#   scripts/start-second-libvirtd.sh --stop [NAME]
set -euo pipefail

stop=0
if [ "${1:-}" = "--stop" ]; then stop=1; shift; fi
NAME="${1:-host-b}"
BASE="${VDI_SECOND_LIBVIRTD_BASE:-/var/lib/vdi/hosts}/$NAME"
URI="qemu+unix:///system?socket=$BASE/run/libvirt-sock"

if [ "$stop" = 1 ]; then
  for daemon in libvirtd virtlogd; do
    if [ -f "$BASE/run/$daemon.pid" ]; then
      kill "$(cat "$BASE/run/$daemon.pid")" 2>/dev/null || true
    fi
  done
  exit 0
fi

umask 022  # `make run` runs with 077: QEMU (as libvirt-qemu) must reach its files as on the first daemon
mkdir -p "$BASE/run" "$BASE/lib/qemu" "$BASE/log" "$BASE/etc"
chmod 711 "$BASE"
# Each directory as the first daemon has its own (owners and modes matter: QEMU runs as libvirt-qemu).
for pair in run:/run/libvirt lib:/var/lib/libvirt lib/qemu:/var/lib/libvirt/qemu log:/var/log/libvirt etc:/etc/libvirt; do
  chown --reference="${pair#*:}" "$BASE/${pair%%:*}"
  chmod --reference="${pair#*:}" "$BASE/${pair%%:*}"
done
if virsh -c "$URI" version >/dev/null 2>&1; then
  echo "$URI"
  exit 0
fi
if [ ! -f "$BASE/etc/libvirtd.conf" ]; then
  cp -a /etc/libvirt/. "$BASE/etc/"
  # Its own definitions (none yet) and its own identity.
  rm -f "$BASE"/etc/qemu/*.xml "$BASE"/etc/storage/*.xml "$BASE"/etc/storage/autostart/*.xml
  echo "host_uuid = \"$(cat /proc/sys/kernel/random/uuid)\"" >> "$BASE/etc/libvirtd.conf"
fi
# Console and migration ports of its own: separate machines each have all of theirs, but two
# daemons in one network namespace would hand the same VNC port to two guests (a desktop
# arriving by live migration while another one, or its own source, listens there).
slot=$(( $(printf '%s' "$NAME" | cksum | cut -d' ' -f1) % 40 ))
sed -i '/^remote_display_port_m\(in\|ax\)\|^migration_port_m\(in\|ax\)/d' "$BASE/etc/qemu.conf"
cat >> "$BASE/etc/qemu.conf" <<CONF
remote_display_port_min = $(( 20000 + slot * 1000 ))
remote_display_port_max = $(( 20999 + slot * 1000 ))
migration_port_min = $(( 49300 + slot * 20 ))
migration_port_max = $(( 49319 + slot * 20 ))
CONF
# No libvirt networks of its own: it shares the first daemon's network namespace, where the
# first daemon's bridges (vdi-nat) already are; its desktops join them as bridges (a pool's
# network per host). A copy taken before this rule may hold them: drop them too.
rm -f "$BASE"/etc/qemu/networks/*.xml "$BASE"/etc/qemu/networks/autostart/*.xml
rm -f "$BASE"/run/*.pid "$BASE"/run/*sock*

unshare --mount --propagation private /bin/sh -ec "
  mount --bind '$BASE/run' /run/libvirt
  mount --bind '$BASE/lib' /var/lib/libvirt
  mount --bind '$BASE/etc' /etc/libvirt
  mount --bind '$BASE/log' /var/log/libvirt
  virtlogd -d -p '$BASE/run/virtlogd.pid'
  libvirtd -d -p '$BASE/run/libvirtd.pid'
"
for _ in $(seq 1 50); do
  if virsh -c "$URI" version >/dev/null 2>&1; then
    echo "$URI"
    exit 0
  fi
  sleep 0.2
done
echo "the second libvirtd ($NAME) did not answer on $URI within 10 s; see $BASE/log/" >&2
exit 1
