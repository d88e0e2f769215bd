// Checks a sigstore bundle over an artifact with a plain public key, offline, with the sigstore
// project's own verifier (@sigstore/verify; `cargo xtask tools` installs it from npm).
// The media's bundles are key-signed: no certificate, no transparency log, no timestamp
// authority, so every threshold is zero and the key is the only trust material.
// usage: node verify-sigstore-bundle.js BUNDLE.json ARTIFACT KEY.pem   (prints OK, or fails)
'use strict';
const fs = require('node:fs');
const { createPublicKey } = require('node:crypto');
const { bundleFromJSON } = require('@sigstore/bundle');
const { Verifier, toSignedEntity, toTrustMaterial } = require('@sigstore/verify');

const [bundleFile, artifactFile, keyFile] = process.argv.slice(2);
if (!keyFile) {
  console.error('usage: verify-sigstore-bundle.js BUNDLE.json ARTIFACT KEY.pem');
  process.exit(2);
}
const bundle = bundleFromJSON(JSON.parse(fs.readFileSync(bundleFile, 'utf8')));
const key = createPublicKey(fs.readFileSync(keyFile));
const noAuthorities = { certificateAuthorities: [], timestampAuthorities: [], tlogs: [], ctlogs: [] };
const trust = toTrustMaterial(noAuthorities, () => ({ publicKey: key, validFor: () => true }));
const verifier = new Verifier(trust, { tlogThreshold: 0, ctlogThreshold: 0, tsaThreshold: 0 });
try {
  verifier.verify(toSignedEntity(bundle, fs.readFileSync(artifactFile)));
} catch (e) {
  console.error(`FAILED: ${e.code || ''} ${e.message}`);
  process.exit(1);
}
console.log('OK');
