#!/usr/bin/env python3
# evidence_same.py A B: compares two bundles byte for byte, except the export time (createdAt, the OSCAL
# timestamps) and the v5 UUIDs derived from it, which are renamed by order of first appearance.
import os, re, sys, json
U = re.compile(r'[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}')
def norm(dir, path):
    b = open(os.path.join(dir, path), 'rb').read()
    if path.startswith('oscal/'):
        t = b.decode(); created = json.load(open(os.path.join(dir, 'MANIFEST.json')))['createdAt']
        seen = {}
        t = U.sub(lambda m: seen.setdefault(m.group(0), 'U%d' % len(seen)), t)
        return t.replace(created, 'T').encode()
    return b
def files(d):
    return sorted(os.path.relpath(os.path.join(r, f), d) for r, _, fs in os.walk(d) for f in fs)
a, b = sys.argv[1:3]
assert files(a) == files(b), 'file lists differ'
skip = {'MANIFEST.json', 'MANIFEST.json.minisig', 'SHA256SUMS', 'SHA256SUMS.minisig'}
same, differ = [], []
for p in files(a):
    if p in skip: continue
    (same if norm(a, p) == norm(b, p) else differ).append(p)
ma, mb = (json.load(open(os.path.join(d, 'MANIFEST.json'))) for d in (a, b))
for m in (ma, mb):
    m['createdAt'] = 'T'
    m['files'] = [f for f in m['files'] if not f['path'].startswith('oscal/')]
print('identical bytes:', [p for p in same if not p.startswith('oscal/')])
print('identical but for the export time and its uuids:', [p for p in same if p.startswith('oscal/')])
print('differ:', differ)
print('manifest identical but createdAt and oscal digests:', ma == mb)
