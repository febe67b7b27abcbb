# Shared helpers for the project's scripts. Source it; do not run it.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VDI_VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"
export VDI_IMAGE_PATH="${VDI_IMAGE_PATH:-/var/lib/vdi/images}"
DEMO_IMAGE="${VDI_DEMO_IMAGE:-$VDI_IMAGE_PATH/demo-linux-v4.qcow2}"

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

apt_ensure() {
  # Install the Debian packages that are not installed yet (one apt run, no recommends).
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing Debian packages: ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  local stamp=/var/lib/apt/periodic/vdi-update-stamp
  if [ ! -f "$stamp" ] || [ -n "$(find "$stamp" -mmin +720 2>/dev/null)" ]; then
    $sudo apt-get update -q -o DPkg::Lock::Timeout=600
    $sudo mkdir -p "$(dirname "$stamp")" && $sudo touch "$stamp"
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends \
    -o DPkg::Lock::Timeout=600 "${missing[@]}"
}

use_private_var() {
  # var/ holds the database, the secret key, logs, pids and the demo's passwords: from here on
  # this script and what it starts create files no other local user can read, and what an
  # older run left readable is tightened (SQLite's -wal/-shm files take the database's mode).
  local var="${VDI_VAR_DIR:-$ROOT/var}"
  umask 077
  mkdir -p "$var"
  chmod 700 "$var"
  find "$var" -maxdepth 1 \( -name '*.sqlite3*' -o -name secret_key -o -name demo-credentials \) \
    -exec chmod 600 {} +
  for dir in run log; do [ -d "$var/$dir" ] && chmod 700 "$var/$dir"; done
  return 0
}
