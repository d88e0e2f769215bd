#!/bin/bash
# evidence_gateway.sh DIR N BIN: a release gateway (BIN/meshguard-gateway) on $PORT (18735) with its
# database under DIR, and N decisions made as `cargo xtask bench-evidence` makes them (batches of
# 1,000, every other one denied). Leaves it running (its pid in DIR/gw.pid).
set -e
D=$1; N=$2; BIN=$3; PORT=${PORT:-18735}
ADMIN=bench-evidence-admin-token-5d1c9a7e3b
mkdir -p $D/gw
HOST=127.0.0.1 PORT=$PORT ADMIN_TOKEN=$ADMIN JWT_SECRET=bench-evidence-jwt-secret-0f1e2d3c4b5a69788 \
  DB_PATH=$D/gw/meshguard.db POLICIES_DIR=$D/gw/policies RATE_LIMIT_RPM=0 LOG_LEVEL=error \
  setsid $BIN/meshguard-gateway > $D/gw.log 2>&1 &
echo $! > $D/gw.pid
B=http://127.0.0.1:$PORT
for i in $(seq 50); do curl -sf $B/health >/dev/null 2>&1 && break; sleep 0.2; done
curl -sf -X POST -H "X-Admin-Token: $ADMIN" -H 'content-type: application/json' $B/admin/policies \
  -d '{"name":"reads","content":"name: reads\nrules:\n  - effect: allow\n    actions: [\"read:*\"]\n"}' >/dev/null
TOKEN=$(curl -sf -X POST -H "X-Admin-Token: $ADMIN" -H 'content-type: application/json' $B/admin/agents -d '{"name":"bench"}' | python3 -c 'import json,sys;print(json.load(sys.stdin)["token"])')
python3 -c '
import json
print(json.dumps({"actions":[{"action": ("read:r%d"%i) if i%2==0 else ("write:r%d"%i)} for i in range(1000)]}))' > $D/batch.json
for i in $(seq $((N/1000))); do
  curl -sf -X POST -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' --data-binary @$D/batch.json $B/api/v1/governance/batch >/dev/null
done
echo made $N
