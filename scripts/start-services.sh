#!/usr/bin/env bash
# Start the services the broker talks to, each only if it does not answer already:
# libvirtd (always), Redis on 127.0.0.1:6379 (unless --no-tcp-redis: `make run` starts its own,
# scripts/start-private-redis.sh), PostgreSQL (with --postgres).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
postgres="" tcp_redis=1
for arg in "$@"; do
  case "$arg" in
    --postgres) postgres=1 ;;
    --no-tcp-redis) tcp_redis="" ;;
  esac
done

if [ -n "$tcp_redis" ] && ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  say "starting Redis on 127.0.0.1:6379"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  for _ in $(seq 1 50); do redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 && break; sleep 0.1; done
fi

if [ -n "$postgres" ] && ! pg_isready -q -h 127.0.0.1 -p 5432; then
  say "starting PostgreSQL"
  for version in $(ls /etc/postgresql); do
    pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  done
  for _ in $(seq 1 50); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.2; done
  pg_isready -h 127.0.0.1 -p 5432
fi

"$ROOT/scripts/start-libvirt.sh"
mkdir -p "$VDI_IMAGE_PATH" /var/lib/vdi/desktops /var/lib/vdi/logs
chmod 755 /var/lib/vdi "$VDI_IMAGE_PATH" /var/lib/vdi/desktops /var/lib/vdi/logs
