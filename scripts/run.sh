#!/usr/bin/env bash
# `make run`: install, start services, migrate, build the demo golden image, create the demo,
# then run the Celery worker and the portal (uvicorn). Ctrl+C stops both. Safe to run again.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

PORT="${VDI_PORT:-8000}"
# Logs for a person at this box (key=value text in var/log/); production's units write JSON
# lines (docs/logs.md). VDI_LOG_FORMAT=json make run gives the same here.
export VDI_LOG_FORMAT="${VDI_LOG_FORMAT:-text}"
BIND="${VDI_BIND:-127.0.0.1}"
RUN_DIR="$ROOT/var/run"
LOG_DIR="$ROOT/var/log"
mkdir -p "$RUN_DIR" "$LOG_DIR"

"$ROOT/scripts/install-deps.sh"
services=()
[[ "${DATABASE_URL:-}" == postgres* ]] && services+=(--postgres)
# The demo's Redis is its own, on a unix socket with a password (below), unless one is given.
[ -z "${REDIS_URL:-}${CELERY_BROKER_URL:-}" ] && services+=(--no-tcp-redis)
"$ROOT/scripts/start-services.sh" "${services[@]}"
"$ROOT/scripts/build-golden-image.sh" "$DEMO_IMAGE"

use_private_var  # the database, logs and passwords below are for root's eyes only (lib.sh)
if [ -z "${REDIS_URL:-}${CELERY_BROKER_URL:-}" ]; then
  say "starting the demo's Redis (unix socket and password in var/run/redis/)"
  REDIS_URL="$("$ROOT/scripts/start-private-redis.sh")"
  export REDIS_URL
fi
say "migrating the database"
"$PY" manage.py migrate --noinput -v 0
# A second hypervisor on this machine (its own libvirt daemon): the demo has two hosts.
VDI_DEMO_SECOND_HOST_URI="$("$ROOT/scripts/start-second-libvirtd.sh" demo-host-b)" || VDI_DEMO_SECOND_HOST_URI=""
export VDI_DEMO_SECOND_HOST_URI
say "creating the demo (hosts, golden image, pools, users)"
(umask 077; "$PY" manage.py setup_demo > "$RUN_DIR/demo-logins.txt")
cat "$RUN_DIR/demo-logins.txt"

# A previous `make run` may still be running: stop it, so this one starts clean.
for name in worker agent portal; do
  if [ -f "$RUN_DIR/$name.pid" ] && kill -0 "$(cat "$RUN_DIR/$name.pid")" 2>/dev/null; then
    say "stopping the previous $name"
    kill "$(cat "$RUN_DIR/$name.pid")" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$(cat "$RUN_DIR/$name.pid")" 2>/dev/null || break; sleep 0.2; done
  fi
done

cleanup() {
  trap - EXIT INT TERM
  [ -n "${worker_pid:-}" ] && kill "$worker_pid" 2>/dev/null || true
  [ -n "${agent_pid:-}" ] && kill "$agent_pid" 2>/dev/null || true
  [ -n "${portal_pid:-}" ] && kill "$portal_pid" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

say "starting the Celery worker (log: var/log/worker.log)"
"$VENV/bin/celery" -A config worker --beat --schedule "$RUN_DIR/celerybeat-schedule" \
  --loglevel=INFO --concurrency="${VDI_WORKERS:-4}" \
  >>"$LOG_DIR/worker.log" 2>&1 &
worker_pid=$!
echo "$worker_pid" > "$RUN_DIR/worker.pid"

# This machine is also the demo farm's session host: its agent is a Celery worker on the
# host's own queue, running as root (it creates the employees' accounts and their sessions).
SESSION_HOST="${VDI_DEMO_SESSION_HOST:-local-sessions}"
say "starting the session agent of $SESSION_HOST (log: var/log/agent.log)"
"$VENV/bin/celery" -A config worker -Q "agent.$SESSION_HOST" --pool threads --concurrency 8 \
  -n "agent.$SESSION_HOST@%h" --loglevel=INFO >>"$LOG_DIR/agent.log" 2>&1 &
agent_pid=$!
echo "$agent_pid" > "$RUN_DIR/agent.pid"

say "starting the portal on http://$BIND:$PORT (log: var/log/portal.log)"
# uvicorn with the console gateway's options (config/serve.py).
"$VENV/bin/python" -m config.serve config.asgi:application --host "$BIND" --port "$PORT" \
  >>"$LOG_DIR/portal.log" 2>&1 &
portal_pid=$!
echo "$portal_pid" > "$RUN_DIR/portal.pid"

for _ in $(seq 1 100); do
  curl -fsS -o /dev/null "http://127.0.0.1:$PORT/login/" 2>/dev/null && break
  kill -0 "$portal_pid" 2>/dev/null || { tail -20 "$LOG_DIR/portal.log"; exit 1; }
  sleep 0.2
done

cat <<TXT

  VDI portal:  http://$BIND:$PORT/
  Admin:       http://$BIND:$PORT/admin/
$(sed 's/^/  /' "$RUN_DIR/demo-logins.txt" | grep login)

  The admin's first login asks for a second factor: scan the QR code with an authenticator app.
  Log in as the employee, press Launch on "Demo desktop" (a VM) or "Shared desktop" (a session
  on this machine), and the console opens in the page.
  Logs: var/log/worker.log, var/log/agent.log, var/log/portal.log. Stop with Ctrl+C.

TXT
wait -n "$worker_pid" "$agent_pid" "$portal_pid"
echo "a process stopped; see var/log/worker.log, var/log/agent.log and var/log/portal.log" >&2
exit 1
