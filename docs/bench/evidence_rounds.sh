#!/bin/bash
# evidence_rounds.sh DIR ROUNDS BEFORE AFTER: interleaved `evidence export` and `verify --json` of the
# same log (the gateway of evidence_gateway.sh) by BEFORE/meshguard-bundle and AFTER/...,
# the order alternating each round; one line a run: round version step seconds peak-RSS-MiB.
# Bundles are left in DIR/out-VERSION-ROUND (compare with evidence_same.py).
set -e
D=$1; R=$2; BEFORE=$3; AFTER=$4; PORT=${PORT:-18735}
export MESHGUARD_BUNDLE_PASSPHRASE=bench-evidence-passphrase-not-secret MESHGUARD_ADMIN_TOKEN=bench-evidence-admin-token-5d1c9a7e3b
K=$D/evidence.key
[ -f $K ] || $BEFORE/meshguard-bundle keys generate --secret $K --public $D/evidence.pub >/dev/null
t() { /usr/bin/time -f "%e %M" -o $D/time.out "$@" >/dev/null 2>$D/err.out || { cat $D/err.out; exit 1; }; read s k < <(tail -1 $D/time.out); echo "$s $((k/1024))"; }
for r in $(seq $R); do
  for v in before after; do
    [ $((r % 2)) = 0 ] && v=$([ $v = before ] && echo after || echo before)
    out=$D/out-$v-$r; rm -rf $out
    e=$(t $([ $v = before ] && echo $BEFORE || echo $AFTER)/meshguard-bundle evidence export --gateway http://127.0.0.1:$PORT --profile fedramp-moderate --from 2000-01-01 --to 2100-01-01 --out $out --key $K)
    echo "$r $v export $e"
    w=$(t $([ $v = before ] && echo $BEFORE || echo $AFTER)/meshguard-bundle evidence verify $out --pubkey $D/evidence.pub --accept-unwitnessed --json)
    echo "$r $v verify $w"
  done
done
