// The backend of t/065-signed-headers.t: a node:http server that checks
// every request with scripts/verify-signature.js (the README's verifier),
// then refuses an X-Tenant-Request-ID it has verified before ('replayed',
// as the README suggests), and answers 200 or 401 application/json
//   { reason (null when verified), method, url (hex), headers, body }.
// A request under /v1/ is checked as the gateway signed it under /mapped/
// (the test's "location /mapped/ { proxy_pass http://.../v1/; }"), unless
// it has X-Test-No-Map.
//
//   ENCRYPTION_KEY=<64 hex> node t/lib/signed-upstream.js PORT
'use strict';

const http = require('node:http');
const path = require('node:path');
const { tenantSigningKey, verifyTenantHeaders } =
  require(path.join(__dirname, '..', '..', 'scripts', 'verify-signature.js'));

const key = tenantSigningKey(process.env.ENCRYPTION_KEY);
const port = Number(process.argv[2]);
const seen = new Map();         // X-Tenant-Request-ID => forget after (ms)

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const options = {};
    if (req.url.startsWith('/v1/') && req.headers['x-test-no-map'] === undefined) {
      options.target = '/mapped/' + req.url.slice(4);
    }
    let reason = verifyTenantHeaders(req, key, options);
    if (reason === null) {
      const id = req.headers['x-tenant-request-id'];
      const now = Date.now();
      for (const [k, until] of seen) {
        if (until < now) {
          seen.delete(k);
        }
      }
      if (seen.has(id)) {
        reason = 'replayed';
      } else {
        seen.set(id, now + 2 * 120 * 1000);
      }
    }
    const body = JSON.stringify({
      reason, method: req.method, url: Buffer.from(req.url, 'latin1').toString('hex'),
      headers: req.headers, body: Buffer.concat(chunks).toString('latin1'),
    });
    res.writeHead(reason === null ? 200 : 401, {
      'Content-Type': 'application/json',
      'Content-Length': Buffer.byteLength(body),
    });
    res.end(body);
  });
});

server.listen(port, '127.0.0.1', () => process.stdout.write('listening\n'));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
