#!/usr/bin/env bash
# CPU seconds per gateway thread during one wrk run against GET /proxy/check.
#
#   cargo build --release -p meshguard-gateway
#   docs/bench/gateway_threads.sh DIR [CONNECTIONS] [SECONDS]
#
# DIR holds the run's database and audit log (emptied first): a directory on the disk for
# the durable cost, one under /dev/shm for the cost without fsync. Environment: GATEWAY (the
# binary, default target/release/meshguard-gateway), PORT (default 18555), and any gateway
# setting, e.g. AUDIT_CHECKPOINT_EVERY. Prints wrk's requests/s and p99, then the CPU time
# of each thread name (tokio-rt-worker, which since the group commit also write and sync the
# audit log's groups; audit-writer, audit-index, audit-publish; audit-sync in builds before
# 2026-12-07) over the run, from /proc/<pid>/task/*/stat.
set -euo pipefail
dir=${1:?usage: gateway_threads.sh DIR [CONNECTIONS] [SECONDS]}
conns=${2:-32}
seconds=${3:-10}
root=$(cd "$(dirname "$0")/../.." && pwd)
gateway=${GATEWAY:-$root/target/release/meshguard-gateway}
port=${PORT:-18555}
admin=bench-threads-admin-token-5c0e9a1d
base=http://127.0.0.1:$port
rm -rf "$dir"
mkdir -p "$dir"
HOST=127.0.0.1 PORT=$port ADMIN_TOKEN=$admin \
  JWT_SECRET=bench-threads-jwt-secret-7b3f0c2e9d1a4f68 \
  DB_PATH="$dir/meshguard.db" POLICIES_DIR="$dir/policies" RATE_LIMIT_RPM=0 LOG_LEVEL=error \
  "$gateway" >"$dir/gateway.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  curl -sf "$base/health" >/dev/null && break
  sleep 0.1
done
curl -sf -X POST "$base/admin/policies" -H "X-Admin-Token: $admin" -H 'content-type: application/json' \
  -d '{"name":"bench","content":"name: bench\nrules:\n  - effect: allow\n    actions: [\"read:*\"]\n"}' >/dev/null
token=$(curl -sf -X POST "$base/admin/agents" -H "X-Admin-Token: $admin" -H 'content-type: application/json' \
  -d '{"name":"bench"}' | python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])')
# utime + stime (fields 14 and 15, in clock ticks) summed per thread name.
cpu() {
  for t in /proc/"$pid"/task/*; do
    printf '%s %s\n' "$(tr ' ' '_' <"$t/comm")" "$(awk '{print $14 + $15}' "$t/stat")"
  done | awk '{a[$1] += $2} END {for (k in a) print k, a[k]}' | sort
}
cpu >"$dir/cpu-before"
wrk -t2 -c"$conns" -d"${seconds}s" --latency -H "Authorization: Bearer $token" \
  -H "X-MeshGuard-Action: read:contacts" "$base/proxy/check" | grep -E 'Requests/sec|99%'
cpu >"$dir/cpu-after"
ticks=$(getconf CLK_TCK)
join "$dir/cpu-before" "$dir/cpu-after" |
  awk -v t="$ticks" '$3 > $2 {printf "%-16s %6.2f s CPU\n", $1, ($3 - $2) / t}'
