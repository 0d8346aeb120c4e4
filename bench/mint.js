#!/usr/bin/env node
// Mints Clerk-like RS256 session tokens in bulk for bench/run.sh, one per
// line: "<token> <org id>".  Node's crypto signs with OpenSSL (about 0.3 ms
// per RS256 signature on this machine, where scripts/mint-token.pl's
// Crypt::JWT takes several times that); the claims are the ones
// scripts/mint-token.pl writes (v1: org_id, org_role, org_slug), with the
// issuer and the authorized party the bench's gateways enforce.
//
//   bench/mint.js KEY.pem COUNT FIRST ORGS PREFIX ISS AZP [TTL]
//
// Token i (FIRST <= i < FIRST + COUNT) is for organization
// PREFIX<i mod ORGS>, with its own sid, so every token is distinct.
'use strict';
const crypto = require('crypto');
const fs = require('fs');

const [keyFile, count, first, orgs, prefix, iss, azp, ttl] = process.argv.slice(2);
if (!azp) {
    process.stderr.write('usage: mint.js KEY.pem COUNT FIRST ORGS PREFIX ISS AZP [TTL]\n');
    process.exit(2);
}
const key = crypto.createPrivateKey(fs.readFileSync(keyFile));
const b64 = (s) => Buffer.from(s).toString('base64url');
const header = b64(JSON.stringify({ alg: 'RS256', typ: 'JWT' }));
const now = Math.floor(Date.now() / 1000);
const n = Number(count), f = Number(first), m = Number(orgs);
const out = [];
for (let i = f; i < f + n; i++) {
    const org = prefix + (i % m);
    const payload = b64(JSON.stringify({
        sub: 'user_bench_' + i, sid: 'sess_bench_' + i, iss: iss,
        iat: now, nbf: now - 10, exp: now + Number(ttl || 3600), azp: azp,
        org_id: org, org_role: 'org:admin', org_slug: 'slug-' + (i % m),
    }));
    const input = header + '.' + payload;
    const sig = crypto.sign('sha256', Buffer.from(input), key).toString('base64url');
    out.push(input + '.' + sig + ' ' + org);
    if (out.length === 1000) { fs.writeSync(1, out.join('\n') + '\n'); out.length = 0; }
}
if (out.length) fs.writeSync(1, out.join('\n') + '\n');
