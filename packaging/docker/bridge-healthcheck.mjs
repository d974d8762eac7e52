// Container health check of a DashOffice bridge: GET /health on the bridge's own port,
// with its bearer token (every call needs it). Healthy (exit 0) when it answers 200 with
// {"ok": true}; otherwise exit 1, Docker's "unhealthy". The token is never printed.

import { readFileSync } from 'node:fs';
import http from 'node:http';

/** Each bridge's port when BRIDGE_PORT is not set (its src/main.js). */
const DEFAULT_PORTS = { 'baileys-http': 3012, 'venom-http': 3013, 'wwebjs-http': 3014 };
const TIMEOUT_MS = 4000;

/** @param {string} message */
function unhealthy(message) {
  process.stdout.write(`unhealthy: ${message}\n`);
  process.exit(1);
}

function port() {
  const configured = process.env.BRIDGE_PORT?.trim();
  if (configured) return Number(configured);
  // Without BRIDGE_PORT the bridge listens on its library's default: find which bridge
  // the container runs (PID 1 is tini, its arguments name the bridge).
  let cmdline = '';
  try {
    cmdline = readFileSync('/proc/1/cmdline', 'utf8');
  } catch {
    // not on Linux, or /proc hidden: BRIDGE_PORT is then needed
  }
  const bridge = Object.keys(DEFAULT_PORTS).find((name) => cmdline.includes(`${name}/`));
  return bridge === undefined ? undefined : DEFAULT_PORTS[bridge];
}

/** The token as the bridge reads it: BRIDGE_TOKEN, or the first line of BRIDGE_TOKEN_FILE. */
function token() {
  const inline = process.env.BRIDGE_TOKEN?.trim();
  if (inline) return inline;
  const file = process.env.BRIDGE_TOKEN_FILE?.trim();
  if (!file) return undefined;
  try {
    return readFileSync(file, 'utf8').split(/\r?\n/)[0].trim() || undefined;
  } catch (err) {
    return unhealthy(`cannot read BRIDGE_TOKEN_FILE ${file}: ${/** @type {Error} */ (err).message}`);
  }
}

const bridgePort = port();
if (bridgePort === undefined || !Number.isInteger(bridgePort)) unhealthy('set BRIDGE_PORT: the bridge\'s port is unknown');
const bearer = token();
if (bearer === undefined) unhealthy('no BRIDGE_TOKEN_FILE or BRIDGE_TOKEN');

const request = http.get(
  { host: '127.0.0.1', port: bridgePort, path: '/health', headers: { authorization: `Bearer ${bearer}` }, timeout: TIMEOUT_MS },
  (response) => {
    let body = '';
    response.setEncoding('utf8');
    response.on('data', (chunk) => {
      body += chunk;
    });
    response.on('end', () => {
      let health = null;
      try {
        health = JSON.parse(body);
      } catch {
        // reported below
      }
      if (response.statusCode !== 200 || health?.ok !== true) {
        unhealthy(`GET /health answered ${response.statusCode}${health?.error?.code ? ` ${health.error.code}` : ''}`);
      }
      const sessions = health.sessions?.total ?? 0;
      process.stdout.write(`healthy: ${health.library} ${health.version}, ${sessions} session(s), ${health.events?.pending ?? 0} event(s) pending\n`);
      process.exit(0);
    });
  },
);
request.on('timeout', () => request.destroy(new Error(`no answer within ${TIMEOUT_MS} ms`)));
request.on('error', (err) => unhealthy(`GET http://127.0.0.1:${bridgePort}/health: ${err.message}`));
