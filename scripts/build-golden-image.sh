#!/usr/bin/env bash
# Build a small bootable "golden" VDI guest disk image (qcow2).
#
# Usage: scripts/build-golden-image.sh [--force] OUTPUT.qcow2
#
# The image is a ~32 MB FAT "superfloppy" (no partition table) made bootable
# with syslinux. syslinux loads a Debian cloud kernel plus a busybox initramfs
# through the BIOS, so the guest boots no matter which bus the disk is attached
# to (virtio, IDE, ...). Everything runs from RAM; the disk is never mounted.
# The guest:
#   - brings its virtio NIC (eth0) up by DHCP when it has one (busybox udhcpc, which keeps
#     renewing the lease) and writes "VDI-GUEST-IP <address>" to the serial port,
#   - writes "VDI-GUEST-READY" to the serial port (ttyS0) once booted,
#   - shows a banner and an interactive busybox shell on the VGA console
#     (tty1), reading the PS/2 keyboard (so VNC keystrokes reach it).
#
# Built without root mounts (mkfs.vfat + mtools + syslinux --install on the
# image file), from Debian packages only. Works under QEMU TCG (-machine pc).
#
# Environment:
#   VDI_CACHE_DIR  where the downloaded kernel .deb is cached
#                  (default /var/cache/vdi)
set -euo pipefail

KERNEL_META_PKG="linux-image-cloud-amd64"
CACHE_DIR="${VDI_CACHE_DIR:-/var/cache/vdi}"
FAT_SIZE_KB=32768
KERNEL_CMDLINE="console=ttyS0 console=tty0 quiet loglevel=3 consoleblank=0 panic=10"
APT_LOCK_OPT=(-o DPkg::Lock::Timeout=900)
REQUIRED_PKGS=(busybox-static cpio dosfstools mtools syslinux syslinux-common qemu-utils)

log() { echo "[golden-image] $*"; }
die() { echo "[golden-image] ERROR: $*" >&2; exit 1; }

usage() {
    echo "Usage: $0 [--force] OUTPUT.qcow2" >&2
    exit 2
}

FORCE=0
OUTPUT=""
for arg in "$@"; do
    case "$arg" in
        --force|-f) FORCE=1 ;;
        -h|--help) usage ;;
        -*) echo "Unknown option: $arg" >&2; usage ;;
        *)
            [[ -z "$OUTPUT" ]] || usage
            OUTPUT="$arg"
            ;;
    esac
done
[[ -n "$OUTPUT" ]] || usage

if [[ -e "$OUTPUT" && "$FORCE" -eq 0 ]]; then
    log "$OUTPUT already exists; nothing to do (use --force to rebuild)"
    exit 0
fi

OUT_DIR="$(dirname -- "$OUTPUT")"
mkdir -p -- "$OUT_DIR"
OUTPUT_TMP="${OUTPUT}.tmp"

WORK=""
DL_TMP=""
cleanup() {
    [[ -n "$WORK" && -d "$WORK" ]] && rm -rf -- "$WORK"
    [[ -n "$DL_TMP" && -d "$DL_TMP" ]] && rm -rf -- "$DL_TMP"
    rm -f -- "$OUTPUT_TMP"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --------------------------------------------------------------------------
# 1. Host packages
# --------------------------------------------------------------------------
pkg_installed() {
    [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" == "install ok installed" ]]
}

missing=()
for p in "${REQUIRED_PKGS[@]}"; do
    pkg_installed "$p" || missing+=("$p")
done
if ((${#missing[@]})); then
    log "installing missing packages: ${missing[*]}"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y "${APT_LOCK_OPT[@]}" "${missing[@]}"; then
        log "apt-get install failed; running apt-get update and retrying"
        apt-get "${APT_LOCK_OPT[@]}" update
        DEBIAN_FRONTEND=noninteractive apt-get install -y "${APT_LOCK_OPT[@]}" "${missing[@]}"
    fi
fi

BUSYBOX=/bin/busybox
[[ -x "$BUSYBOX" ]] || die "$BUSYBOX not found (busybox-static)"
for tool in cpio gzip mkfs.vfat mcopy syslinux qemu-img dpkg-deb; do
    command -v "$tool" >/dev/null 2>&1 || die "required tool '$tool' not found"
done

# --------------------------------------------------------------------------
# 2. Kernel (.deb cached under $CACHE_DIR)
# --------------------------------------------------------------------------
resolve_kernel_pkg() {
    # The real versioned package the meta package depends on, e.g.
    # linux-image-6.1.0-56-cloud-amd64 (candidate version only).
    apt-cache depends "$KERNEL_META_PKG" 2>/dev/null \
        | awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }'
}

newest_cached() {
    # newest cached deb matching glob $1 (by version sort of file name)
    local f
    f="$(ls -1 "$CACHE_DIR"/$1 2>/dev/null | sort -V | tail -n 1 || true)"
    [[ -n "$f" ]] && echo "$f"
    return 0
}

mkdir -p -- "$CACHE_DIR"
KPKG="$(resolve_kernel_pkg || true)"
KDEB=""
if [[ -n "$KPKG" ]]; then
    KDEB="$(newest_cached "${KPKG}_*_amd64.deb")"
else
    # No package lists (or the meta package is unknown): fall back to any
    # cached cloud kernel before asking apt to refresh its lists.
    KDEB="$(newest_cached "linux-image-*-cloud-amd64_*_amd64.deb")"
    if [[ -z "$KDEB" ]]; then
        log "cannot resolve $KERNEL_META_PKG; running apt-get update"
        apt-get "${APT_LOCK_OPT[@]}" update
        KPKG="$(resolve_kernel_pkg || true)"
        [[ -n "$KPKG" ]] || die "cannot resolve the kernel package behind $KERNEL_META_PKG"
    fi
fi

if [[ -z "$KDEB" ]]; then
    log "downloading kernel package $KPKG into $CACHE_DIR"
    # Download into a scratch dir on the same filesystem, then move into the
    # cache, so an interrupted download never leaves a truncated .deb behind.
    DL_TMP="$(mktemp -d "$CACHE_DIR/.download.XXXXXX")"
    chmod 755 "$DL_TMP"
    # let apt's unprivileged _apt user write there (avoids the "unsandboxed" warning)
    chown _apt "$DL_TMP" 2>/dev/null || true
    if ! (cd "$DL_TMP" && apt-get "${APT_LOCK_OPT[@]}" download "$KPKG"); then
        log "apt-get download failed; running apt-get update and retrying"
        apt-get "${APT_LOCK_OPT[@]}" update
        KPKG="$(resolve_kernel_pkg || true)"
        [[ -n "$KPKG" ]] || die "cannot resolve the kernel package behind $KERNEL_META_PKG"
        (cd "$DL_TMP" && apt-get "${APT_LOCK_OPT[@]}" download "$KPKG")
    fi
    dl="$(ls -1 "$DL_TMP"/*.deb 2>/dev/null | head -n 1 || true)"
    [[ -n "$dl" ]] || die "apt-get download produced no .deb"
    dpkg-deb --info "$dl" >/dev/null || die "downloaded $dl is not a valid .deb"
    mv -f -- "$dl" "$CACHE_DIR/"
    KDEB="$CACHE_DIR/$(basename -- "$dl")"
    rm -rf -- "$DL_TMP"
    DL_TMP=""
else
    log "using cached kernel package $(basename -- "$KDEB")"
fi

WORK="$(mktemp -d /tmp/vdi-golden.XXXXXX)"
log "extracting kernel from $(basename -- "$KDEB")"
mkdir -p "$WORK/kpkg"
dpkg-deb -x "$KDEB" "$WORK/kpkg"
VMLINUZ="$(ls -1 "$WORK"/kpkg/boot/vmlinuz-* 2>/dev/null | head -n 1 || true)"
[[ -n "$VMLINUZ" && -s "$VMLINUZ" ]] || die "no boot/vmlinuz-* in $KDEB"
log "kernel: $(basename -- "$VMLINUZ")"

# --------------------------------------------------------------------------
# 3. Busybox initramfs
# --------------------------------------------------------------------------
log "building busybox initramfs"
ROOT="$WORK/initramfs"
mkdir -p "$ROOT"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,tmp,root,run,var/log}
chmod 1777 "$ROOT/tmp"
cp "$BUSYBOX" "$ROOT/bin/busybox"
chmod 755 "$ROOT/bin/busybox"
# One symlink per applet, at the path busybox itself would install it.
while read -r applet; do
    [[ -n "$applet" && "$applet" != "bin/busybox" ]] || continue
    mkdir -p "$ROOT/$(dirname -- "$applet")"
    [[ -e "$ROOT/$applet" || -L "$ROOT/$applet" ]] || ln -s /bin/busybox "$ROOT/$applet"
done < <("$BUSYBOX" --list-full)
[[ -e "$ROOT/bin/sh" ]] || ln -s /bin/busybox "$ROOT/bin/sh"

# The cloud kernel builds virtio as modules: without them the guest has no /dev/vda or
# /dev/vdb (its system and user-data disks). Listed in dependency order; the guest's init
# also retries, so a kernel whose dependencies differ still loads them all.
# virtio_net (the desktop's NIC) needs failover and net_failover; virtio_balloon lets the
# broker take memory back from an idle desktop (and reports the guest's memory figures).
VIRTIO_MODULES=(drivers/virtio/virtio_ring drivers/virtio/virtio drivers/virtio/virtio_pci_legacy_dev
                drivers/virtio/virtio_pci_modern_dev drivers/virtio/virtio_pci drivers/block/virtio_blk
                drivers/virtio/virtio_balloon net/core/failover drivers/net/net_failover drivers/net/virtio_net)
KMODDIR="$(ls -d "$WORK"/kpkg/lib/modules/* | head -n 1)"
mkdir -p "$ROOT/lib/modules"
for module in "${VIRTIO_MODULES[@]}"; do
    src="$KMODDIR/kernel/$module.ko"
    [[ -f "$src" ]] || die "kernel module $module.ko not found in $(basename -- "$KDEB")"
    cp "$src" "$ROOT/lib/modules/"
done
printf '%s\n' "${VIRTIO_MODULES[@]##*/}" > "$ROOT/lib/modules/load-order"

# A console node lets the kernel hand /init its stdio before devtmpfs is
# mounted (mknod needs root; /init re-opens /dev/console anyway).
mknod -m 600 "$ROOT/dev/console" c 5 1 2>/dev/null || true

echo "vdi-desktop" > "$ROOT/etc/hostname"
cat > "$ROOT/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
EOF
cat > "$ROOT/etc/group" <<'EOF'
root:x:0:
EOF
cat > "$ROOT/etc/profile" <<'EOF'
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
export HOME=/root
export TERM=linux
export PS1='vdi-desktop:\w# '
cd "$HOME"
# Tell the host (serial log) that the guest is up. The first interactive shell
# does it just before its first prompt, so keys the host types after seeing
# this line reach a shell that is already reading the keyboard.
if [ ! -e /run/vdi-ready ]; then
    : > /run/vdi-ready
    echo "VDI-GUEST-READY" > /dev/ttyS0 2>/dev/null
fi
EOF

# udhcpc's hook: configure eth0 from the lease and tell the host (serial log) the address.
mkdir -p "$ROOT/usr/share/udhcpc"
cat > "$ROOT/usr/share/udhcpc/default.script" <<'EOF'
#!/bin/sh
# $1: deconfig | bound | renew | leasefail | nak; the lease is in the environment.
case "$1" in
    deconfig)
        ip -4 addr flush dev "$interface"
        ip link set "$interface" up
        ;;
    bound|renew)
        ip -4 addr flush dev "$interface"
        ip addr add "$ip/${mask:-24}" dev "$interface"
        for gateway in $router; do
            ip route replace default via "$gateway" dev "$interface"
            break
        done
        : > /etc/resolv.conf
        for server in $dns; do echo "nameserver $server" >> /etc/resolv.conf; done
        echo "VDI-GUEST-IP $ip" > /dev/ttyS0 2>/dev/null
        ;;
esac
exit 0
EOF
chmod 755 "$ROOT/usr/share/udhcpc/default.script"

cat > "$ROOT/init" <<'EOF'
#!/bin/sh
# VDI demo guest init (busybox, runs entirely from the initramfs).
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
export HOME=/root TERM=linux

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null || mdev -s
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts 2>/dev/null || true

# Keep kernel messages off the screen.
echo 1 > /proc/sys/kernel/printk 2>/dev/null || dmesg -n 1

# virtio disks: /dev/vda (system), /dev/vdb (user data, on dedicated desktops).
for _pass in 1 2 3; do
    while read -r module; do
        grep -q "^$module " /proc/modules || insmod "/lib/modules/$module.ko" 2>/dev/null || true
    done < /lib/modules/load-order
done

exec </dev/console >/dev/console 2>&1

# The network, when the desktop has a NIC: an address by DHCP before the shell starts (and
# says VDI-GUEST-READY). udhcpc waits for a lease at most ~4 s (-t 4 -T 1), then goes on
# trying in the background (-b); it keeps running to renew the lease.
ip link set lo up
if [ -e /sys/class/net/eth0 ]; then
    ip link set eth0 up
    udhcpc -i eth0 -s /usr/share/udhcpc/default.script -t 4 -T 1 -A 3 -b -x hostname:vdi-desktop \
        >/dev/null 2>&1
fi

hostname vdi-desktop

# Banner on the VGA console (tty1): clear the screen first.
{
    printf '\033[H\033[2J\033[3J'
    echo
    echo "  ==============================================="
    echo "    VDI demo desktop - busybox shell"
    echo "    host: $(hostname)   kernel: $(uname -r)"
    echo "  ==============================================="
    echo
} > /dev/tty1

# Interactive login shell on tty1 (PS/2 keyboard input; its /etc/profile
# writes VDI-GUEST-READY to ttyS0 on first start), with tty1 as its
# controlling terminal so job control and ^C work. Respawn it forever.
while true; do
    setsid -c sh -l </dev/tty1 >/dev/tty1 2>&1
    sleep 1
done
EOF
chmod 755 "$ROOT/init"

INITRD="$WORK/initrd.gz"
(cd "$ROOT" && find . -print0 | LC_ALL=C sort -z \
    | cpio --null --create --format=newc --owner=0:0 --quiet) \
    | gzip -9 > "$INITRD"
log "initramfs: $(du -h "$INITRD" | cut -f1)"

# --------------------------------------------------------------------------
# 4. FAT superfloppy image + syslinux
# --------------------------------------------------------------------------
log "creating ${FAT_SIZE_KB} KiB FAT image"
RAW="$WORK/disk.raw"
mkfs.vfat -C -n VDIGOLDEN "$RAW" "$FAT_SIZE_KB" >/dev/null

cat > "$WORK/syslinux.cfg" <<EOF
DEFAULT vdi
PROMPT 0
TIMEOUT 0
LABEL vdi
  KERNEL /vmlinuz
  INITRD /initrd.gz
  APPEND $KERNEL_CMDLINE
EOF

export MTOOLS_SKIP_CHECK=1
mcopy -i "$RAW" "$VMLINUZ" ::/vmlinuz
mcopy -i "$RAW" "$INITRD" ::/initrd.gz
mcopy -i "$RAW" "$WORK/syslinux.cfg" ::/syslinux.cfg
log "installing syslinux"
syslinux --install "$RAW"

# --------------------------------------------------------------------------
# 5. qcow2 + atomic move into place
# --------------------------------------------------------------------------
log "converting to qcow2"
rm -f -- "$OUTPUT_TMP"
qemu-img convert -f raw -O qcow2 "$RAW" "$OUTPUT_TMP"
mv -f -- "$OUTPUT_TMP" "$OUTPUT"
log "done: $OUTPUT ($(du -h "$OUTPUT" | cut -f1), kernel package $(basename -- "$KDEB"))"
