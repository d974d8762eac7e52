// Event signing (docs/bridges.md, "Signing"): the documented vector, and each delivery
// attempt signed afresh with its own timestamp.

import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { EventQueue, signEvent } from '../src/events.js';
import { verify } from './helpers/fake-dashd.js';
import { cleanup, fakeDashd, tempDir, testLog, TOKEN, waitFor } from './helpers/harness.js';

const DOC_BODY = '{"event":"qr","session":"shop-1","data":{"qr":"2@y8eK+bjtEjUWy9/FOM","expires_at":"2026-01-01T00:01:00Z"}}';

test('the test vector of docs/bridges.md signs to its documented signature', () => {
  assert.equal(signEvent('bridge-secret-token', '1767225600', DOC_BODY), 'sha256=5cfc6fe7185ea6d7369dccc07e902ee14740370f6a4f9dd87be51415f5d0cfac');
  assert.equal(signEvent('bridge-secret-token', '1767225600', Buffer.from(DOC_BODY)), 'sha256=5cfc6fe7185ea6d7369dccc07e902ee14740370f6a4f9dd87be51415f5d0cfac');
  // Any change to the key, the timestamp or one byte of the body changes it.
  assert.notEqual(signEvent('bridge-secret-tokeN', '1767225600', DOC_BODY), signEvent('bridge-secret-token', '1767225600', DOC_BODY));
  assert.notEqual(signEvent('bridge-secret-token', '1767225601', DOC_BODY), signEvent('bridge-secret-token', '1767225600', DOC_BODY));
  assert.notEqual(signEvent('bridge-secret-token', '1767225600', `${DOC_BODY} `), signEvent('bridge-secret-token', '1767225600', DOC_BODY));
});

test('the queued body is the exact bytes signed and posted, with both headers', async (t) => {
  const dashd = await fakeDashd(t);
  const queue = new EventQueue({ dataDir: await tempDir(t), dashdUrl: dashd.url, library: 'baileys', token: TOKEN, log: testLog });
  cleanup(t, () => queue.close());
  await queue.open();
  queue.start();
  await queue.enqueue('shop-1', 'qr', { qr: '2@y8eK+bjtEjUWy9/FOM', expires_at: '2026-01-01T00:01:00Z' });
  const attempt = await waitFor(() => dashd.attempts[0]);
  assert.equal(attempt.path, '/webhook/bridge/baileys');
  assert.equal(attempt.raw, DOC_BODY, 'the body is the envelope {event, session, data} as documented');
  assert.match(attempt.timestamp, /^\d{10}$/);
  assert.ok(Math.abs(Number(attempt.timestamp) - Date.now() / 1000) < 5);
  assert.equal(attempt.signature, signEvent(TOKEN, attempt.timestamp, DOC_BODY));
  assert.ok(attempt.verified);
  assert.ok(verify(TOKEN, attempt.timestamp, Buffer.from(attempt.raw), attempt.signature));
  assert.ok(!verify('another-token', attempt.timestamp, Buffer.from(attempt.raw), attempt.signature), 'the fake dashd can refuse');
});

test('each attempt is signed afresh with a new timestamp', async (t) => {
  const dashd = await fakeDashd(t);
  // A clock that moves 7 s per reading: every attempt has its own timestamp.
  let clock = Date.now() - 60_000;
  const queue = new EventQueue({
    dataDir: await tempDir(t),
    dashdUrl: dashd.url,
    library: 'wwebjs',
    token: TOKEN,
    log: testLog,
    now: () => (clock += 7000),
    timings: { retryMinMs: 5, retryMaxMs: 20 },
  });
  cleanup(t, () => queue.close());
  await queue.open();
  dashd.answerNext(503, 500, 502);
  queue.start();
  await queue.enqueue('shop-1', 'state', { state: 'ready', phone: '+15551234567', reason: null, since: '2026-01-01T00:00:00Z' });
  await waitFor(() => dashd.received.length === 1);
  assert.deepEqual(dashd.attempts.map((a) => a.status), [503, 500, 502, 200]);
  const timestamps = dashd.attempts.map((a) => a.timestamp);
  assert.equal(new Set(timestamps).size, 4, `timestamps ${timestamps}`);
  for (const attempt of dashd.attempts) assert.ok(attempt.verified, 'every attempt carries a valid signature for its timestamp');
  assert.equal(new Set(dashd.attempts.map((a) => a.raw)).size, 1, 'the body itself never changes');
});

test('a bridge with the wrong token is refused (401) and keeps retrying, never drops', async (t) => {
  const dashd = await fakeDashd(t);
  const dataDir = await tempDir(t);
  const queue = new EventQueue({ dataDir, dashdUrl: dashd.url, library: 'wwebjs', token: 'not-the-token', log: testLog, timings: { retryMinMs: 5, retryMaxMs: 10 } });
  cleanup(t, () => queue.close());
  await queue.open();
  queue.start();
  await queue.enqueue('shop-1', 'qr', { qr: '2@x', expires_at: '2026-01-01T00:01:00Z' });
  await waitFor(() => dashd.attempts.length >= 4);
  assert.ok(dashd.attempts.every((a) => a.status === 401));
  assert.equal(dashd.received.length, 0);
  assert.equal(queue.pending(), 1);
  assert.equal((await readdir(join(dataDir, 'events', 'shop-1'))).length, 1, 'still on disk');
});
