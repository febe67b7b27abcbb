#!/usr/bin/env bash
# Install what the broker needs on Debian/Ubuntu: QEMU/libvirt, build headers, Redis, Node,
# the Python virtualenv and the npm front-end packages. Safe to run again; does only what is
# missing. `--test` adds what the test suite needs (PostgreSQL, Chromium).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

packages=(qemu-system-x86 qemu-utils libvirt-daemon-system libvirt-clients libvirt-dev pkg-config
          dnsmasq-base curl python3-venv python3-dev gcc redis-server nodejs npm
          libldap2-dev libsasl2-dev
          tigervnc-standalone-server tigervnc-tools icewm openbox xterm xauth x11-utils)
if [ "${1:-}" = "--test" ]; then
  # slapd: the identity tests start their own throwaway directory on a loopback port.
  packages+=(chromium chromium-driver postgresql slapd ldap-utils)
  # systemd-analyze: tests/deploy/ verifies the units in deploy/systemd/.
  packages+=(systemd)
fi
# Some machines carry their own Python, Node, Redis or PostgreSQL; do not install Debian's over them.
command -v node >/dev/null && command -v npm >/dev/null && packages=("${packages[@]/nodejs/}") && packages=("${packages[@]/npm/}")
command -v redis-server >/dev/null && packages=("${packages[@]/redis-server/}")
command -v psql >/dev/null && [ -d /etc/postgresql ] && packages=("${packages[@]/postgresql/}")
python3 -m venv --help >/dev/null 2>&1 && packages=("${packages[@]/python3-venv/}")
had_slapd=$(dpkg-query -W -f='${Status}' slapd 2>/dev/null | grep -c "install ok installed" || true)
apt_ensure $(printf '%s\n' "${packages[@]}" | grep -v '^$')
# Installing slapd starts a system directory on port 389 where systemd runs; the tests do not
# use it, so a slapd this script installed is stopped and disabled (one installed before is left alone).
if [ "$had_slapd" = 0 ] && dpkg-query -W -f='${Status}' slapd 2>/dev/null | grep -q "install ok installed" \
   && [ -d /run/systemd/system ]; then
  systemctl disable --now slapd >/dev/null 2>&1 || true
fi

# tests/deploy/test_nginx_site.py runs deploy/nginx/vdi.conf in Debian's nginx: the binary is
# unpacked from its package, not installed (installing nginx starts a web server on port 80).
NGINX_FOR_TESTS=/var/lib/vdi/tools/nginx
if [ "${1:-}" = "--test" ] && ! command -v nginx >/dev/null && [ ! -x "$NGINX_FOR_TESTS" ]; then
  say "unpacking Debian's nginx for the tests into $NGINX_FOR_TESTS"
  unpack="$(mktemp -d)"
  chmod 755 "$unpack"  # apt-get download writes as user _apt
  (cd "$unpack" && apt-get download -q nginx >/dev/null 2>&1 && dpkg -x nginx_*.deb "$unpack/root")
  mkdir -p "$(dirname "$NGINX_FOR_TESTS")"
  install -m 0755 "$unpack/root/usr/sbin/nginx" "$NGINX_FOR_TESTS"
  rm -rf "$unpack"
fi

cd "$ROOT"
if [ ! -x "$PY" ]; then
  say "creating the virtualenv in $VENV"
  python3 -m venv "$VENV"
fi
want=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ "$(cat "$VENV/.requirements.sha256" 2>/dev/null)" != "$want" ]; then
  say "installing Python requirements"
  "$PY" -m pip install -q --upgrade pip
  "$PY" -m pip install -q -r requirements.txt
  echo "$want" > "$VENV/.requirements.sha256"
fi
want=$(sha256sum package.json package-lock.json | sha256sum | cut -d' ' -f1)
if [ "$(cat node_modules/.vdi-stamp 2>/dev/null)" != "$want" ]; then
  say "installing front-end packages from npm (noVNC, spice-html5)"
  npm ci --no-audit --no-fund --loglevel=error
  echo "$want" > node_modules/.vdi-stamp
fi
if [ "${1:-}" = "--test" ]; then
  # The single sign-on tests' OpenID Connect provider (tests/support/oidc_provider): panva's
  # oidc-provider, pinned in its own package.json, run by the tests under Node.
  provider=tests/support/oidc_provider
  want=$(sha256sum "$provider/package.json" "$provider/package-lock.json" | sha256sum | cut -d' ' -f1)
  if [ "$(cat "$provider/node_modules/.vdi-stamp" 2>/dev/null)" != "$want" ]; then
    say "installing the tests' OpenID Connect provider from npm (oidc-provider)"
    (cd "$provider" && npm ci --no-audit --no-fund --loglevel=error)
    echo "$want" > "$provider/node_modules/.vdi-stamp"
  fi
fi
