// Idempotency keys: a repeated key answers the first id and sends nothing; keys survive
// a restart and expire after their lifetime.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { IdempotencyStore } from '../src/idempotency.js';
import { api, startBridge, tempDir, testDriverFactory, waitFor } from './helpers/harness.js';

/** @param {import('node:test').TestContext} t @param {object} [options] */
async function readyBridge(t, options = {}) {
  const bridge = await startBridge(t, options);
  await api(bridge, 'POST', '/sessions/shop-1/start', {});
  await waitFor(() => bridge.factory.latest('shop-1')?.qrCount >= 1);
  await bridge.factory.latest('shop-1').pair();
  return bridge;
}

const message = (key) => ({ session: 'shop-1', to: '15557654321', text: 'Hello', idempotency_key: key });

test('a repeated idempotency key answers the first id without sending again', async (t) => {
  const bridge = await readyBridge(t);
  const driver = bridge.factory.latest('shop-1');
  const first = await api(bridge, 'POST', '/send', message('0b7f3b6e-4a0e-4c55-9d0c-3c2a8f1e5d21'));
  const second = await api(bridge, 'POST', '/send', message('0b7f3b6e-4a0e-4c55-9d0c-3c2a8f1e5d21'));
  assert.equal(first.status, 200);
  assert.equal(second.status, 200);
  assert.equal(second.body.id, first.body.id);
  assert.equal(driver.sent.length, 1);

  const other = await api(bridge, 'POST', '/send', message('another-key'));
  assert.notEqual(other.body.id, first.body.id);
  const media = await api(bridge, 'POST', '/send-media', { session: 'shop-1', to: '15557654321', kind: 'image', url: 'https://e.com/a.png', idempotency_key: 'another-key' });
  assert.equal(media.body.id, other.body.id, 'one key, one message, whichever endpoint repeats it');
  const noKey1 = await api(bridge, 'POST', '/send', { session: 'shop-1', to: '15557654321', text: 'a' });
  const noKey2 = await api(bridge, 'POST', '/send', { session: 'shop-1', to: '15557654321', text: 'a' });
  assert.notEqual(noKey1.body.id, noKey2.body.id, 'without a key every call sends');
  assert.equal(driver.sent.length, 4);
});

test('concurrent repeats of a key wait for the first send', async (t) => {
  const bridge = await readyBridge(t, { factory: testDriverFactory({ sendDelayMs: 100 }) });
  const driver = bridge.factory.latest('shop-1');
  const answers = await Promise.all([1, 2, 3].map(() => api(bridge, 'POST', '/send', message('same'))));
  assert.deepEqual(answers.map((a) => a.status), [200, 200, 200]);
  assert.equal(new Set(answers.map((a) => a.body.id)).size, 1);
  assert.equal(driver.sent.length, 1);
});

test('a failed send is not remembered: the retry sends', async (t) => {
  const bridge = await readyBridge(t);
  const driver = bridge.factory.latest('shop-1');
  driver.nextSendError = new Error('socket hang up');
  assert.equal((await api(bridge, 'POST', '/send', message('retry-me'))).status, 500);
  const retry = await api(bridge, 'POST', '/send', message('retry-me'));
  assert.equal(retry.status, 200);
  assert.equal(driver.sent.length, 2);
});

test('keys are per session', async (t) => {
  const bridge = await readyBridge(t);
  await api(bridge, 'POST', '/sessions/shop-2/start', {});
  await waitFor(() => bridge.factory.latest('shop-2')?.qrCount >= 1);
  await bridge.factory.latest('shop-2').pair('15550000000');
  const a = await api(bridge, 'POST', '/send', message('k'));
  const b = await api(bridge, 'POST', '/send', { ...message('k'), session: 'shop-2' });
  assert.notEqual(a.body.id, b.body.id);
});

test('keys survive a bridge restart', async (t) => {
  const dataDir = await tempDir(t);
  const first = await readyBridge(t, { dataDir });
  const sent = await api(first, 'POST', '/send', message('durable'));
  await first.close();

  const second = await startBridge(t, { dataDir });
  await waitFor(async () => (await api(second, 'GET', '/status/shop-1')).body.state === 'ready', { what: 'the restored session' });
  const repeat = await api(second, 'POST', '/send', message('durable'));
  assert.equal(repeat.body.id, sent.body.id);
  assert.equal(second.factory.latest('shop-1').sent.length, 0);
});

test('keys expire after their lifetime (24 h by default)', async (t) => {
  const dataDir = await tempDir(t);
  let clock = 1_000_000;
  const store = new IdempotencyStore({ dataDir, now: () => clock });
  await store.load();
  let sends = 0;
  const send = async () => `id-${++sends}`;
  assert.deepEqual(await store.run('s', 'k', send), { id: 'id-1', repeated: false });
  clock += 24 * 60 * 60 * 1000 - 1;
  assert.deepEqual(await store.run('s', 'k', send), { id: 'id-1', repeated: true });
  clock += 1;
  assert.deepEqual(await store.run('s', 'k', send), { id: 'id-2', repeated: false });
  await store.flush();

  // Reloaded, the live key is kept and the expired entry gone.
  const reloaded = new IdempotencyStore({ dataDir, now: () => clock });
  await reloaded.load();
  assert.equal(reloaded.size, 1);
  assert.deepEqual(await reloaded.run('s', 'k', send), { id: 'id-2', repeated: true });
});
