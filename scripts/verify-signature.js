// Verifies X-Tenant-Signature v2 of ngx_tenant_module in a Node.js backend
// (README, "X-Tenant-Signature"; the README quotes this file verbatim and
// t/065-signed-headers.t runs it against the gateway).  Node.js 18 or later,
// node:crypto only.
'use strict';

const crypto = require('node:crypto');

// The signed headers after the timestamp, the method, the target and
// X-Tenant-Request-ID.
const SIGNED = ['x-tenant-id', 'x-tenant-slug', 'x-tenant-schema',
  'x-tenant-tier', 'x-organization-id', 'x-user-id', 'x-org-role'];

// The HMAC key: HKDF-SHA256 of the 32 bytes of ENCRYPTION_KEY.
function tenantSigningKey(encryptionKeyHex) {
  if (!/^[0-9a-fA-F]{64}$/.test(encryptionKeyHex)) {
    throw new Error('ENCRYPTION_KEY must be 64 hex digits');
  }
  return Buffer.from(crypto.hkdfSync('sha256',
    Buffer.from(encryptionKeyHex, 'hex'), Buffer.alloc(0),
    Buffer.from('capliquify tenant headers v1'), 32));
}

// null when the tenant headers of req (node:http or Express) were signed
// by the gateway for this very request, else the reason they were not.
// options.target: the request target the gateway signed, when it is not
// req.url (a proxy_pass with a URI part replaced the location's prefix).
// To refuse a replay of the same request too, remember the verified
// X-Tenant-Request-ID values for twice maxAgeSeconds and refuse repeats.
function verifyTenantHeaders(req, key, options = {}) {
  const maxAgeSeconds = options.maxAgeSeconds ?? 120;
  const target = options.target ?? req.url;
  const h = (name) => req.headers[name] ?? '';

  const sig = /^v2=([0-9a-f]{64})$/.exec(h('x-tenant-signature'));
  if (sig === null) {
    return 'no v2 signature';
  }
  const ts = h('x-tenant-timestamp');
  if (!/^[0-9]{1,12}$/.test(ts)
      || Math.abs(Date.now() / 1000 - Number(ts)) > maxAgeSeconds) {
    return 'stale or missing timestamp';
  }
  const fields = ['v2', ts, req.method, target, h('x-tenant-request-id'),
    ...SIGNED.map(h)];
  if (fields.some((f) => /[\x00-\x1f\x7f]/.test(f))) {
    return 'control character';
  }
  // Node reads header values and req.url as latin1: back to the bytes
  const want = crypto.createHmac('sha256', key)
    .update(Buffer.from(fields.join('\n'), 'latin1')).digest();
  if (!crypto.timingSafeEqual(Buffer.from(sig[1], 'hex'), want)) {
    return 'bad signature';
  }
  return null;
}

module.exports = { tenantSigningKey, verifyTenantHeaders };
