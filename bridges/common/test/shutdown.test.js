// Clean shutdown: SIGTERM to a real bridge process, and close() in process.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { api, cleanup, fakeDashd, startBridge, tempDir, testDriverFactory, TOKEN, waitFor } from './helpers/harness.js';

const FIXTURE = fileURLToPath(new URL('./fixtures/test-bridge.js', import.meta.url));

/**
 * Starts the fixture bridge process; resolves once it listens.
 * @param {import('node:test').TestContext} t
 * @param {Record<string, string>} env
 */
async function spawnBridge(t, env) {
  const { NODE_TEST_CONTEXT: _, ...inherited } = process.env;
  const child = spawn(process.execPath, [FIXTURE], {
    env: { ...inherited, BRIDGE_TOKEN: TOKEN, BRIDGE_PORT: '0', BRIDGE_LOG_LEVEL: process.env.BRIDGE_TEST_LOG ?? 'silent', ...env },
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  cleanup(t, async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGKILL');
    await once(child, 'exit');
  });
  /** @type {any[]} */
  const output = [];
  createInterface({ input: /** @type {any} */ (child.stdout) }).on('line', (line) => output.push(JSON.parse(line)));
  const listening = await waitFor(() => output.find((o) => o.listening), { what: 'the bridge process to listen' });
  /** @param {object} command */
  const tell = (command) => child.stdin?.write(`${JSON.stringify(command)}\n`);
  return { child, output, url: listening.listening, tell };
}

test('SIGTERM: the bridge process stops its drivers, keeps its sessions and events, exits 0', async (t) => {
  const dataDir = await tempDir(t);
  const dashd = await fakeDashd(t);
  dashd.setDown(true);
  const bridge = await spawnBridge(t, { BRIDGE_DATA_DIR: dataDir, DASHD_URL: dashd.url });

  assert.equal((await api(bridge, 'POST', '/sessions/shop-1/start', {})).status, 200);
  await waitFor(async () => (await api(bridge, 'GET', '/qr/shop-1')).status === 200, { what: 'a QR' });
  bridge.tell({ session: 'shop-1', do: 'pair', phone: '15551234567' });
  await waitFor(async () => (await api(bridge, 'GET', '/status/shop-1')).body.state === 'ready', { what: 'ready' });
  bridge.tell({ session: 'shop-1', do: 'message', message: { message_id: 'BEFORE-SIGTERM', text: 'last words' } });
  await waitFor(async () => (await api(bridge, 'GET', '/health')).body.events.pending >= 6, { what: 'the six events queued' });

  bridge.child.kill('SIGTERM');
  const [code, signal] = await once(bridge.child, 'exit');
  assert.deepEqual([code, signal], [0, null]);
  const exited = await waitFor(() => bridge.output.find((o) => o.exited));
  assert.deepEqual(exited.exited['shop-1'], ['start', 'stop'], 'stopped, not logged out');
  assert.equal(dashd.received.length, 0);

  // The next run resumes the session and delivers everything of the first.
  dashd.setDown(false);
  const next = await startBridge(t, { dataDir, dashdUrl: dashd.url });
  await waitFor(async () => (await api(next, 'GET', '/status/shop-1')).body.state === 'ready', { what: 'the session resumed' });
  const message = await waitFor(() => dashd.events('message')[0], { what: 'the message of the first run' });
  assert.equal(message.data.message_id, 'BEFORE-SIGTERM');
  const states = dashd.events('state').map((e) => e.data.state);
  assert.deepEqual(states.slice(0, 4), ['initializing', 'qr', 'authenticated', 'ready']);
});

test('the bridge process: a LID mapping told on stdin is posted; uploads and restarts show at exit', async (t) => {
  const { createHash } = await import('node:crypto');
  const dataDir = await tempDir(t);
  const dashd = await fakeDashd(t);
  const bridge = await spawnBridge(t, { BRIDGE_DATA_DIR: dataDir, DASHD_URL: dashd.url });
  await api(bridge, 'POST', '/sessions/shop-1/start', {});
  await waitFor(async () => (await api(bridge, 'GET', '/qr/shop-1')).status === 200, { what: 'a QR' });
  bridge.tell({ session: 'shop-1', do: 'pair', phone: '15551234567' });
  await waitFor(async () => (await api(bridge, 'GET', '/status/shop-1')).body.state === 'ready', { what: 'ready' });
  bridge.tell({ session: 'shop-1', do: 'lid_mapping', lid: '12345678901234@lid', phone: '15557654321' });
  const mapping = await waitFor(() => dashd.events('lid_mapping')[0], { what: 'the lid_mapping event' });
  assert.deepEqual(mapping, { event: 'lid_mapping', session: 'shop-1', data: { lid: '12345678901234@lid', phone: '+15557654321' } });

  const restarted = await api(bridge, 'POST', '/sessions/shop-1/restart', {});
  assert.equal(restarted.status, 200);
  await waitFor(async () => (await api(bridge, 'GET', '/status/shop-1')).body.state === 'ready', { what: 'ready again' });
  const file = Buffer.from('%PDF-1.4 menu');
  const sent = await api(bridge, 'POST', '/send-media', { session: 'shop-1', to: '15557654321', kind: 'document', data: file.toString('base64'), mime_type: 'application/pdf', filename: 'menu.pdf' });
  assert.equal(sent.status, 200);

  bridge.child.kill('SIGTERM');
  const [code] = await once(bridge.child, 'exit');
  assert.equal(code, 0);
  const exited = await waitFor(() => bridge.output.find((o) => o.exited));
  assert.deepEqual(exited.exited['shop-1'], ['start', 'stop', 'start', 'sendMedia', 'stop'], 'the restart stopped without logging out');
  assert.deepEqual(exited.uploads, {
    'shop-1': [
      {
        to: '15557654321',
        kind: 'document',
        mime_type: 'application/pdf',
        filename: 'menu.pdf',
        caption: null,
        bytes: file.length,
        sha256: createHash('sha256').update(file).digest('hex'),
      },
    ],
  });
});

test('the bridge process refuses to start without a token', async () => {
  const { NODE_TEST_CONTEXT: _, ...inherited } = process.env;
  const child = spawn(process.execPath, [FIXTURE], { env: { ...inherited, BRIDGE_TOKEN: '', BRIDGE_TOKEN_FILE: '' }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (chunk) => (stderr += chunk));
  const [code] = await once(child, 'exit');
  assert.equal(code, 2);
  assert.match(stderr, /no token/);
});

test('close() lets a request under way finish, then stops drivers; nothing is served afterwards', async (t) => {
  const factory = testDriverFactory({ sendDelayMs: 150 });
  const bridge = await startBridge(t, { factory });
  await api(bridge, 'POST', '/sessions/shop-1/start', {});
  const driver = await waitFor(() => factory.latest('shop-1')?.qrCount === 1 && factory.latest('shop-1'));
  await driver.pair();
  const sending = api(bridge, 'POST', '/send', { session: 'shop-1', to: '15557654321', text: 'in flight' });
  await waitFor(() => driver.sent.length === 1);
  const closing = bridge.close();
  const answer = await sending;
  assert.equal(answer.status, 200);
  assert.match(answer.body.id, /^OUT-/);
  await closing;
  assert.deepEqual(driver.calls, ['start', 'send', 'stop']);
  await assert.rejects(api(bridge, 'GET', '/health'), /ECONNREFUSED/);
  await bridge.close(); // idempotent
});
