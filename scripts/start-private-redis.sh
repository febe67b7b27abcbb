#!/usr/bin/env bash
# The demo's own Redis (`make run`): no TCP port, a unix socket in a 0700 directory, and a
# password generated once into a 0600 file (in the config file, never on a command line).
# Starts it unless it answers already, and prints the REDIS_URL that reaches it.
#   scripts/start-private-redis.sh [DIR]     (default: var/run/redis)
set -euo pipefail
source "$(dirname "$0")/lib.sh"

DIR="${1:-${VDI_VAR_DIR:-$ROOT/var}/run/redis}"
umask 077
mkdir -p "$DIR"
chmod 700 "$DIR"
DIR="$(cd "$DIR" && pwd)"
SOCKET="$DIR/redis.sock"
if [ ! -s "$DIR/password" ]; then
  head -c 48 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 40 > "$DIR/password"
fi
chmod 600 "$DIR/password"
PASSWORD="$(cat "$DIR/password")"

answers() { REDISCLI_AUTH="$PASSWORD" redis-cli -s "$SOCKET" ping 2>/dev/null | grep -q PONG; }

if ! answers; then
  cat > "$DIR/redis.conf" <<CONF
port 0
unixsocket $SOCKET
unixsocketperm 700
requirepass $PASSWORD
daemonize yes
pidfile $DIR/redis.pid
dir $DIR
logfile $DIR/redis.log
save ""
appendonly no
CONF
  redis-server "$DIR/redis.conf" >&2
  for _ in $(seq 1 50); do answers && break; sleep 0.1; done
  answers || { echo "the private Redis did not start; see $DIR/redis.log" >&2; exit 1; }
fi
echo "unix://:$PASSWORD@$SOCKET?db=0"
