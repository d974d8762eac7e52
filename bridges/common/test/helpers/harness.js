// Test harness: a bridge on port 0 with a fresh data directory, the test driver and
// short timings; an HTTP client for its API; waiting for conditions.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createBridge } from '../../src/server.js';
import { createLogger, silentLogger } from '../../src/log.js';
import { httpRequest } from '../../src/http-client.js';
import { testDriverFactory } from './test-driver.js';
import { startFakeDashd } from './fake-dashd.js';

export const TOKEN = 'test-bridge-token-0123456789';

/** Timings short enough for tests and long enough to observe order. */
export const FAST = Object.freeze({
  eventRetryMinMs: 20,
  eventRetryMaxMs: 200,
  eventRequestTimeoutMs: 2000,
  reconnectMinMs: 20,
  reconnectMaxMs: 160,
  startTimeoutMs: 5000,
  stopTimeoutMs: 1000,
  logoutTimeoutMs: 1000,
  shutdownTimeoutMs: 1000,
  lidFlushDelayMs: 10,
  echoHoldMs: 2000,
});

/** Logs to stderr when BRIDGE_TEST_LOG=debug (or another level) is set. */
export const testLog = process.env.BRIDGE_TEST_LOG ? createLogger({ level: process.env.BRIDGE_TEST_LOG }) : silentLogger;

/** @type {WeakMap<object, (() => unknown)[]>} */
const cleanups = new WeakMap();

/**
 * Runs `job` after the test, in the reverse order of registration (a bridge closes
 * before its data directory is removed).
 * @param {import('node:test').TestContext} t
 * @param {() => unknown} job
 */
export function cleanup(t, job) {
  let jobs = cleanups.get(t);
  if (!jobs) {
    const list = /** @type {(() => unknown)[]} */ ([]);
    cleanups.set(t, list);
    t.after(async () => {
      for (const next of list.reverse()) await next();
    });
    jobs = list;
  }
  jobs.push(job);
}

/**
 * A temporary directory removed after the test.
 * @param {import('node:test').TestContext} t
 */
export async function tempDir(t) {
  const dir = await mkdtemp(join(tmpdir(), 'bridge-common-'));
  cleanup(t, () => rm(dir, { recursive: true, force: true }));
  return dir;
}

/**
 * A fake dashd closed after the test.
 * @param {import('node:test').TestContext} t
 * @param {{port?: number}} [options]
 */
export async function fakeDashd(t, options = {}) {
  const dashd = await startFakeDashd({ token: TOKEN, ...options });
  cleanup(t, () => dashd.close());
  return dashd;
}

/**
 * A listening bridge (closed after the test).
 * @param {import('node:test').TestContext} t
 * @param {{
 *   dataDir?: string,
 *   dashdUrl?: string,
 *   factory?: ReturnType<typeof testDriverFactory>,
 *   timings?: Record<string, number>,
 * } & Partial<import('../../src/server.js').BridgeOptions>} [options]
 */
export async function startBridge(t, options = {}) {
  const { factory = testDriverFactory(), timings = {}, ...rest } = options;
  const bridge = createBridge({
    library: 'wwebjs',
    version: 'test-1.0',
    token: TOKEN,
    dataDir: options.dataDir ?? (await tempDir(t)),
    dashdUrl: options.dashdUrl ?? 'http://127.0.0.1:9', // nothing listens on the discard port
    log: testLog,
    ...rest,
    driverFactory: factory,
    timings: { ...FAST, ...timings },
  });
  cleanup(t, () => bridge.close());
  await bridge.listen();
  return Object.assign(bridge, { factory });
}

/**
 * Calls the bridge's API: the status, the parsed JSON answer and the headers.
 * @param {{url: string}} bridge
 * @param {string} method
 * @param {string} path
 * @param {unknown} [body]
 * @param {{token?: string | null, raw?: string | Buffer, headers?: Record<string, string>}} [options]
 */
export async function api(bridge, method, path, body, options = {}) {
  /** @type {Record<string, string>} */
  const headers = { ...options.headers };
  const token = options.token === undefined ? TOKEN : options.token;
  if (token !== null) headers.authorization = `Bearer ${token}`;
  let payload;
  if (options.raw !== undefined) payload = Buffer.from(options.raw);
  else if (body !== undefined) payload = Buffer.from(JSON.stringify(body));
  if (payload) headers['content-type'] = 'application/json';
  const answer = await httpRequest(`${bridge.url}${path}`, { method, headers, body: payload, maxBytes: 16 * 1024 * 1024 });
  const text = answer.body.toString('utf8');
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = text;
  }
  return { status: answer.status, body: json, headers: answer.headers, raw: answer.body };
}

/**
 * Waits until `check` returns a truthy value (returned), or fails after `timeoutMs`.
 * @template T
 * @param {() => T | Promise<T>} check
 * @param {{timeoutMs?: number, what?: string}} [options]
 * @returns {Promise<T>}
 */
export async function waitFor(check, options = {}) {
  const deadline = Date.now() + (options.timeoutMs ?? 5000);
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${options.what ?? 'a condition'}`);
    await sleep(5);
  }
}

/** @param {number} ms */
export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export { testDriverFactory, startFakeDashd };
