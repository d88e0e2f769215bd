#!/usr/bin/env python3
"""WAL frames SQLite writes per commit for rows shaped like the gateway's audit rows.

Usage: python3 docs/bench/sqlite_wal_frames.py [DIR]   (DIR defaults to /dev/shm)

The table is the gateway's `audit_entries` (migration 2) with ~880-byte rows, time-ordered ids
and one agent, committed in batches of 8, 25 and 100 rows, with and without the two secondary
indexes. `wal_autocheckpoint=0` keeps every frame in the WAL, so its size counts them.
"""
import json
import os
import sqlite3
import sys
import time

DIR = sys.argv[1] if len(sys.argv) > 1 else "/dev/shm"
PAGE = 4096
ROWS = 20_000

TABLE = """CREATE TABLE audit_entries (
    seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, source TEXT NOT NULL,
    timestamp TEXT NOT NULL, agent_id TEXT, action TEXT NOT NULL, decision TEXT NOT NULL,
    body TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL);"""
INDEXES = """CREATE INDEX audit_time ON audit_entries (timestamp);
CREATE INDEX audit_agent ON audit_entries (agent_id, seq);"""

AGENT = "agent_yryttb9dn6ohw9dmhsep"
HASH = "ab" * 32


def row(i):
    ts = "2026-11-24T00:%02d:%02d.%03dZ" % (i // 60000 % 60, i // 1000 % 60, i % 1000)
    ident = "aud_%09d%011d" % (1_700_000_000 + i // 20, i)
    body = json.dumps(
        {
            "action": "read:contacts", "agentId": AGENT, "agentName": "bench",
            "decision": "allow", "event": "decision", "id": ident, "method": "GET",
            "mode": "enforce", "outcome": "allow", "path": "/proxy/check", "policy": "bench",
            "policyName": "bench", "reason": "Allowed by rule: rule-0", "rule": "rule-0",
            "snapshot": 2, "timestamp": ts, "traceId": "trace_evbjlkul8p0rjxytfy3t",
            "trustTier": "verified",
        },
        separators=(",", ":"),
        sort_keys=True,
    )
    return (None, ident, "gw.example/meshguard-audit", ts, AGENT, "read:contacts", "allow",
            body, HASH, HASH)


def measure(label, schema, batch):
    path = os.path.join(DIR, "wal-frames.db")
    for f in (path, path + "-wal", path + "-shm"):
        if os.path.exists(f):
            os.unlink(f)
    c = sqlite3.connect(path, isolation_level=None)
    c.execute("PRAGMA journal_mode=WAL")
    c.execute("PRAGMA synchronous=NORMAL")
    c.execute("PRAGMA wal_autocheckpoint=0")
    c.executescript(schema)
    rows = [row(i) for i in range(ROWS)]
    before = os.path.getsize(path + "-wal")
    started = time.perf_counter()
    for i in range(0, ROWS, batch):
        c.execute("BEGIN")
        c.executemany("INSERT INTO audit_entries VALUES (?,?,?,?,?,?,?,?,?,?)", rows[i:i + batch])
        c.execute("COMMIT")
    elapsed = time.perf_counter() - started
    frames = (os.path.getsize(path + "-wal") - before) / (PAGE + 24)
    commits = ROWS / batch
    print(f"{label:24s} {batch:4d} rows/commit: {frames / commits:5.1f} frames/commit, "
          f"{frames * PAGE / ROWS:6.0f} WAL bytes/row, {elapsed / ROWS * 1e6:5.2f} us/row")
    c.close()
    for f in (path, path + "-wal", path + "-shm"):
        if os.path.exists(f):
            os.unlink(f)


for batch in (8, 25, 100):
    measure("three indexes", TABLE + INDEXES, batch)
    measure("id index only", TABLE, batch)
