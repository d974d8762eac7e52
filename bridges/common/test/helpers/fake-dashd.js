// A local HTTP server standing in for dashd's `/webhook/bridge/{provider}`: it checks
// each event's signature and timestamp the way dashd does (401 when they do not hold),
// records every attempt, answers scripted statuses (and bodies), and can be down.

import { createHmac, timingSafeEqual } from 'node:crypto';
import http from 'node:http';

/**
 * @typedef {object} Attempt
 * @property {string} path
 * @property {number} status what the fake answered (0 when it was down)
 * @property {boolean} verified
 * @property {string} timestamp
 * @property {string} signature
 * @property {string} raw
 * @property {any} body
 * @property {number} at when it arrived (ms)
 */

/**
 * @param {{token: string, port?: number, onRequest?: (body: any) => void}} options
 *   onRequest runs as each verified event arrives, before it is answered
 */
export async function startFakeDashd(options) {
  /** @type {Attempt[]} */
  const attempts = [];
  /** @type {any[]} events acknowledged with a 2xx, in arrival order */
  const received = [];
  /** @type {{status: number, body?: unknown}[]} */
  const script = [];
  let down = false;

  const server = http.createServer((req, res) => {
    if (down) {
      attempts.push({ path: req.url ?? '', status: 0, verified: false, timestamp: '', signature: '', raw: '', body: null, at: Date.now() });
      req.socket.destroy();
      return;
    }
    /** @type {Buffer[]} */
    const chunks = [];
    req.on('data', (chunk) => chunks.push(chunk));
    req.on('end', () => {
      const raw = Buffer.concat(chunks);
      const timestamp = String(req.headers['x-dashd-timestamp'] ?? '');
      const signature = String(req.headers['x-dashd-signature'] ?? '');
      const verified = verify(options.token, timestamp, raw, signature);
      let body = null;
      try {
        body = JSON.parse(raw.toString('utf8'));
      } catch {
        // recorded as null
      }
      if (verified) options.onRequest?.(body);
      const answer = verified ? (script.shift() ?? { status: 200 }) : { status: 401 };
      const status = answer.status;
      attempts.push({ path: req.url ?? '', status, verified, timestamp, signature, raw: raw.toString('utf8'), body, at: Date.now() });
      if (status >= 200 && status < 300) received.push(body);
      res.writeHead(status, { 'content-type': 'application/json' });
      const scripted = { error: { code: 'scripted', message: `scripted ${status}` } };
      res.end(JSON.stringify(answer.body ?? (status < 300 ? { ok: true } : scripted)));
    });
  });

  /** @param {number} port */
  const listen = (port) =>
    new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => {
        server.off('error', reject);
        resolve(undefined);
      });
    });
  await listen(options.port ?? 0);
  const port = /** @type {import('node:net').AddressInfo} */ (server.address()).port;

  return {
    url: `http://127.0.0.1:${port}`,
    port,
    attempts,
    received,
    /**
     * The next answers, in order (then 200 again): a status, or a status and the JSON
     * body to answer with (`{status: 404, body: {error: {code: 'unknown_session'}}}`).
     * @param {...(number | {status: number, body?: unknown})} answers
     */
    answerNext(...answers) {
      script.push(...answers.map((answer) => (typeof answer === 'number' ? { status: answer } : answer)));
    },
    /** Refuse (reset) every connection while down. @param {boolean} value */
    setDown(value) {
      down = value;
    },
    /**
     * Acknowledged events, optionally of one type and one session.
     * @param {string} [event]
     * @param {string} [session]
     */
    events(event, session) {
      return received.filter((e) => (!event || e.event === event) && (!session || e.session === session));
    },
    async close() {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(() => resolve(undefined)));
    },
  };
}

/**
 * dashd's check: the HMAC over "<timestamp>.<raw body>" in constant time, then the
 * timestamp within ±300 s.
 * @param {string} token
 * @param {string} timestamp
 * @param {Buffer} raw
 * @param {string} signature
 */
export function verify(token, timestamp, raw, signature) {
  if (!signature.startsWith('sha256=') || !/^\d+$/.test(timestamp)) return false;
  const expected = createHmac('sha256', token).update(`${timestamp}.`).update(raw).digest();
  const given = Buffer.from(signature.slice('sha256='.length), 'hex');
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) return false;
  return Math.abs(Date.now() / 1000 - Number(timestamp)) <= 300;
}
