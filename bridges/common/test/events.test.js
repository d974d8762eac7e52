// Event delivery (docs/bridges.md, "Delivery"): on disk before the first attempt,
// retried until acknowledged, in order per session, permanent refusals (400, 413, 404
// unknown_session) kept as dead letters, nothing lost across a bridge restart while
// dashd is down; and what drivers report, made into contract events.

import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { EventQueue, refusalOf } from '../src/events.js';
import { createLogger } from '../src/log.js';
import { api, cleanup, fakeDashd, startBridge, tempDir, testDriverFactory, testLog, TOKEN, waitFor, sleep } from './helpers/harness.js';

/** @param {string} dataDir @param {string} session */
async function filesOnDisk(dataDir, session) {
  try {
    return (await readdir(join(dataDir, 'events', session))).filter((name) => name.endsWith('.json')).sort();
  } catch {
    return [];
  }
}

/** @param {string} dataDir @param {string} session */
async function deadOnDisk(dataDir, session) {
  try {
    return (await readdir(join(dataDir, 'events', session, 'dead'))).filter((name) => name.endsWith('.json')).sort();
  } catch {
    return [];
  }
}

/** A logger that keeps its records (level, msg and fields). */
function recordingLog() {
  /** @type {any[]} */
  const records = [];
  const log = createLogger({ level: 'debug', stream: { write: (line) => records.push(JSON.parse(line)) } });
  return Object.assign(log, { records });
}

/**
 * @param {import('node:test').TestContext} t
 * @param {{dataDir?: string, dashdUrl: string, timings?: object, log?: import('../src/log.js').Logger, now?: () => number}} options
 */
async function openQueue(t, options) {
  const queue = new EventQueue({
    dataDir: options.dataDir ?? (await tempDir(t)),
    dashdUrl: options.dashdUrl,
    library: 'venom',
    token: TOKEN,
    log: options.log ?? testLog,
    now: options.now,
    timings: { retryMinMs: 10, retryMaxMs: 80, requestTimeoutMs: 1000, ...options.timings },
  });
  cleanup(t, () => queue.close());
  await queue.open();
  return queue;
}

test('an event is on disk before its first attempt and removed only once acknowledged', async (t) => {
  const dataDir = await tempDir(t);
  /** @type {string[][]} */
  const onDiskAtArrival = [];
  const dashd = await fakeDashd(t, {
    onRequest: () => {
      try {
        onDiskAtArrival.push(readdirSync(join(dataDir, 'events', 'shop-1')).filter((name) => name.endsWith('.json')));
      } catch {
        onDiskAtArrival.push([]);
      }
    },
  });
  const queue = await openQueue(t, { dataDir, dashdUrl: dashd.url });
  // Every event is on disk when dashd first sees it (here dashd is up from the start).
  queue.start();
  for (let i = 1; i <= 5; i += 1) void queue.enqueue('shop-1', 'message', { message_id: `E${i}` });
  await waitFor(() => dashd.received.length === 5);
  assert.deepEqual(onDiskAtArrival.map((files) => files.length > 0), [true, true, true, true, true]);
  await waitFor(() => queue.pending() === 0);
  dashd.setDown(true);
  await queue.enqueue('shop-1', 'message', { message_id: 'M1' });
  // The write finished before any attempt could read it back: it is there now.
  const files = await filesOnDisk(dataDir, 'shop-1');
  assert.equal(files.length, 1);
  const stored = JSON.parse(await readFile(join(dataDir, 'events', 'shop-1', files[0]), 'utf8'));
  assert.deepEqual(stored, { event: 'message', session: 'shop-1', data: { message_id: 'M1' } });
  await waitFor(() => dashd.attempts.length >= 3, { what: 'attempts while dashd is down' });
  assert.equal((await filesOnDisk(dataDir, 'shop-1')).length, 1, 'kept while unacknowledged');
  dashd.setDown(false);
  await waitFor(() => dashd.received.length === 6);
  await waitFor(async () => (await filesOnDisk(dataDir, 'shop-1')).length === 0, { what: 'the file removed' });
  assert.equal(queue.pending(), 0);
});

test('retried with growing delays on 500 and 503 until a 2xx', async (t) => {
  const dashd = await fakeDashd(t);
  const queue = await openQueue(t, { dashdUrl: dashd.url, timings: { retryMinMs: 20, retryMaxMs: 1000 } });
  dashd.answerNext(500, 503, 500, 503);
  queue.start();
  const began = Date.now();
  await queue.enqueue('shop-1', 'ack', { message_id: 'X', ack: 'read' });
  await waitFor(() => dashd.received.length === 1);
  const elapsed = Date.now() - began;
  assert.deepEqual(dashd.attempts.map((a) => a.status), [500, 503, 500, 503, 200]);
  // 20 + 40 + 80 + 160 ms of backoff at least.
  assert.ok(elapsed >= 300, `retried after ${elapsed} ms, too fast for an exponential backoff`);
  assert.equal(dashd.received[0].data.ack, 'read');
});

test('the backoff is capped', async (t) => {
  const dashd = await fakeDashd(t);
  const queue = await openQueue(t, { dashdUrl: dashd.url, timings: { retryMinMs: 10, retryMaxMs: 40 } });
  dashd.setDown(true);
  queue.start();
  await queue.enqueue('shop-1', 'qr', { qr: '2@x' });
  await waitFor(() => dashd.attempts.length >= 8, { what: 'eight attempts', timeoutMs: 3000 });
  // 10, 20, 40, 40, 40, 40, 40 ms apart, where an uncapped backoff would wait 640 ms for the eighth.
  const gaps = dashd.attempts.slice(1, 8).map((a, i) => a.at - dashd.attempts[i].at);
  assert.ok(gaps[6] >= 35 && gaps[6] < 300, `gaps ${gaps}`);
  assert.ok(gaps[5] >= 35 && gaps[5] < 300, `gaps ${gaps}`);
  dashd.setDown(false);
  await waitFor(() => dashd.received.length === 1);
});

test('400, 413 and 404 unknown_session are refusals for good: dead letters, logged at warn; the queue goes on', async (t) => {
  const dashd = await fakeDashd(t);
  const dataDir = await tempDir(t);
  const log = recordingLog();
  const queue = await openQueue(t, { dataDir, dashdUrl: dashd.url, log });
  dashd.answerNext(
    { status: 400, body: { error: { code: 'bad_request', message: 'data.message_id is missing' } } },
    { status: 413, body: { error: { code: 'payload_too_large', message: 'the body exceeds 262144 bytes' } } },
    { status: 404, body: { error: { code: 'unknown_session', message: 'no bot owns session shop-1' } } },
  );
  queue.start();
  await queue.enqueue('shop-1', 'message', { malformed: true });
  await queue.enqueue('shop-1', 'message', { huge: 'x' });
  await queue.enqueue('shop-1', 'state', { state: 'ready' });
  await queue.enqueue('shop-1', 'message', { message_id: 'M4' });
  await waitFor(() => dashd.received.length === 1);
  assert.deepEqual(dashd.attempts.map((a) => a.status), [400, 413, 404, 200], 'each refusal tried once, then the next event');
  assert.equal(dashd.received[0].data.message_id, 'M4');
  await waitFor(async () => (await filesOnDisk(dataDir, 'shop-1')).length === 0 && queue.pending() === 0);

  // Kept, not deleted: the exact bodies, under dead/<seq>.json.
  const dead = await waitFor(async () => {
    const files = await deadOnDisk(dataDir, 'shop-1');
    return files.length === 3 && files;
  }, { what: 'three dead letters' });
  const bodies = await Promise.all(dead.map(async (name) => JSON.parse(await readFile(join(dataDir, 'events', 'shop-1', 'dead', name), 'utf8'))));
  assert.deepEqual(bodies.map((b) => b.data), [{ malformed: true }, { huge: 'x' }, { state: 'ready' }]);
  assert.deepEqual(dead, ['0000000000000001.json', '0000000000000002.json', '0000000000000003.json']);
  assert.equal(queue.dead(), 3);

  const warnings = log.records.filter((r) => r.level === 'warn' && /dead letter/.test(r.msg));
  assert.deepEqual(warnings.map((w) => w.status), [400, 413, 404]);
  assert.deepEqual(warnings.map((w) => w.answer), ['data.message_id is missing', 'the body exceeds 262144 bytes', 'no bot owns session shop-1']);
  assert.deepEqual(warnings.map((w) => w.code), ['bad_request', 'payload_too_large', 'unknown_session']);
});

test('401, another 404, 408, 429, 5xx and transport errors are retried, never dead letters', async (t) => {
  const dashd = await fakeDashd(t);
  const dataDir = await tempDir(t);
  const queue = await openQueue(t, { dataDir, dashdUrl: dashd.url });
  dashd.answerNext(401, { status: 404, body: { error: { code: 'not_found', message: 'no route' } } }, 404, 408, 429, 500, 502, 503, 403);
  queue.start();
  await queue.enqueue('shop-1', 'ack', { message_id: 'A', ack: 'read' });
  await waitFor(() => dashd.received.length === 1, { what: 'the event after ten attempts' });
  assert.deepEqual(dashd.attempts.map((a) => a.status), [401, 404, 404, 408, 429, 500, 502, 503, 403, 200]);
  assert.equal(dashd.received[0].data.message_id, 'A');
  dashd.setDown(true);
  await queue.enqueue('shop-1', 'ack', { message_id: 'B', ack: 'read' });
  await waitFor(() => dashd.attempts.length >= 13, { what: 'attempts while dashd is down' });
  dashd.setDown(false);
  await waitFor(() => dashd.received.length === 2);
  assert.equal(queue.dead(), 0);
  assert.deepEqual(await deadOnDisk(dataDir, 'shop-1'), []);
});

test('refusalOf: only 400, 413 and a 404 naming unknown_session are permanent', () => {
  const json = (/** @type {unknown} */ value) => Buffer.from(JSON.stringify(value));
  const unknown = json({ error: { code: 'unknown_session', message: 'no bot owns session x' } });
  assert.equal(refusalOf(400, Buffer.from('')).permanent, true);
  assert.equal(refusalOf(413, Buffer.from('<html>too large</html>')).permanent, true);
  assert.equal(refusalOf(404, unknown).permanent, true);
  assert.deepEqual([refusalOf(404, unknown).code, refusalOf(404, unknown).message], ['unknown_session', 'no bot owns session x']);
  for (const [status, body] of [
    [404, json({ error: { code: 'not_found', message: 'no route' } })],
    [404, Buffer.from('unknown_session')], // not JSON: not dashd's refusal
    [404, json({ code: 'unknown_session' })], // not under error
    [401, json({ error: { code: 'unauthorized' } })],
    [408, Buffer.from('')],
    [429, Buffer.from('')],
    [500, unknown],
    [503, Buffer.from('')],
  ]) {
    assert.equal(refusalOf(/** @type {number} */ (status), /** @type {Buffer} */ (body)).permanent, false, `${status} ${body}`);
  }
  assert.equal(refusalOf(502, Buffer.from('Bad Gateway')).message, 'Bad Gateway');
});

test('dead letters are counted across a restart and swept after their retention time', async (t) => {
  const dashd = await fakeDashd(t);
  const dataDir = await tempDir(t);
  let clock = Date.now();
  const now = () => clock;
  const first = await openQueue(t, { dataDir, dashdUrl: dashd.url, now, timings: { deadTtlMs: 60000 } });
  dashd.answerNext(400, 400);
  first.start();
  await first.enqueue('shop-1', 'message', { n: 1 });
  await first.enqueue('shop-2', 'message', { n: 2 });
  await waitFor(() => first.dead() === 2, { what: 'two dead letters' });
  await first.close();

  clock += 30000;
  const second = await openQueue(t, { dataDir, dashdUrl: dashd.url, now, timings: { deadTtlMs: 60000 } });
  assert.equal(second.dead(), 2, 'counted from disk');
  dashd.setDown(true);
  second.start();
  await second.enqueue('shop-1', 'message', { n: 3 });
  // Its sequence number follows the dead letters': a later refusal overwrites none.
  assert.deepEqual(await filesOnDisk(dataDir, 'shop-1'), ['0000000000000003.json']);
  dashd.setDown(false);
  await waitFor(() => dashd.received.length === 1);
  await second.sweepDead();
  assert.equal(second.dead(), 2, 'not yet expired');
  clock += 31000;
  await second.sweepDead();
  assert.equal(second.dead(), 0);
  assert.deepEqual([await deadOnDisk(dataDir, 'shop-1'), await deadOnDisk(dataDir, 'shop-2')], [[], []]);
});

test('a dead letter is kept its whole retention time, however long it waited in the queue', async (t) => {
  const dashd = await fakeDashd(t);
  const dataDir = await tempDir(t);
  let clock = Date.now();
  const queue = await openQueue(t, { dataDir, dashdUrl: dashd.url, now: () => clock, timings: { deadTtlMs: 60000 } });
  dashd.setDown(true);
  queue.start();
  await queue.enqueue('shop-1', 'message', { n: 1 });
  await waitFor(() => dashd.attempts.length >= 2);
  clock += 50000; // dashd is down for most of the retention time
  dashd.answerNext(413);
  dashd.setDown(false);
  await waitFor(() => queue.dead() === 1);
  const [name] = await deadOnDisk(dataDir, 'shop-1');
  const { mtimeMs } = await stat(join(dataDir, 'events', 'shop-1', 'dead', name));
  assert.ok(Math.abs(mtimeMs - clock) < 2000, 'dated when refused');
  clock += 30000;
  await queue.sweepDead();
  assert.equal(queue.dead(), 1, 'kept 60 s from its refusal, not from its creation');
});

test('events of a session arrive in order; a stuck session holds no other back', async (t) => {
  const dashd = await fakeDashd(t);
  const queue = await openQueue(t, { dashdUrl: dashd.url });
  queue.start();
  dashd.answerNext(503, 503, 503); // the first event (shop-1's) fails three times
  for (let i = 1; i <= 5; i += 1) void queue.enqueue('shop-1', 'message', { message_id: `A${i}` });
  await waitFor(() => dashd.attempts.length >= 1);
  for (let i = 1; i <= 3; i += 1) void queue.enqueue('shop-2', 'message', { message_id: `B${i}` });
  await waitFor(() => dashd.received.length === 8);
  const order = (session) => dashd.events('message', session).map((e) => e.data.message_id);
  assert.deepEqual(order('shop-1'), ['A1', 'A2', 'A3', 'A4', 'A5']);
  assert.deepEqual(order('shop-2'), ['B1', 'B2', 'B3']);
  const firstB = dashd.received.findIndex((e) => e.session === 'shop-2');
  assert.ok(firstB < 3, 'shop-2 was delivered while shop-1 was retrying');
});

test('the queue on disk survives a bridge restart while dashd is down: no event lost, order kept', async (t) => {
  const dataDir = await tempDir(t);
  const dashd = await fakeDashd(t);
  dashd.setDown(true);

  const first = await startBridge(t, { dataDir, dashdUrl: dashd.url });
  await api(first, 'POST', '/sessions/shop-1/start', {});
  const driver = await waitFor(() => first.factory.latest('shop-1')?.qrCount === 1 && first.factory.latest('shop-1'));
  await driver.pair('15551234567');
  for (let i = 1; i <= 5; i += 1) driver.receive({ message_id: `M${i}`, text: `message ${i}` });
  await waitFor(async () => first.events.pending() === 10 && (await filesOnDisk(dataDir, 'shop-1')).length === 10, { what: 'ten events on disk' });
  await first.close();
  assert.equal(dashd.received.length, 0);

  // The bridge comes back (dashd still down), then dashd comes back.
  const second = await startBridge(t, { dataDir, dashdUrl: dashd.url });
  assert.ok(second.events.pending() >= 10);
  await sleep(50);
  dashd.setDown(false);
  await waitFor(() => dashd.events('message').length === 5, { what: 'the five messages' });
  const kinds = dashd.received.map((e) => (e.event === 'state' ? `state:${e.data.state}` : e.event === 'message' ? e.data.message_id : e.event));
  // The first run's events come first, in the order they happened.
  const firstRun = kinds.slice(0, 10);
  assert.deepEqual(firstRun, ['state:initializing', 'state:qr', 'qr', 'state:authenticated', 'state:ready', 'M1', 'M2', 'M3', 'M4', 'M5']);
  await waitFor(() => second.events.pending() === 0);
});

test('message events: normalised, groups and broadcasts not posted, media stored and served', async (t) => {
  const dashd = await fakeDashd(t);
  const bridge = await startBridge(t, { dashdUrl: dashd.url });
  await api(bridge, 'POST', '/sessions/shop-1/start', {});
  const driver = await waitFor(() => bridge.factory.latest('shop-1')?.qrCount === 1 && bridge.factory.latest('shop-1'));
  await driver.pair();
  driver.receive({ message_id: 'G1', chat_id: '120363000000000000@g.us' });
  driver.receive({ message_id: 'B1', chat_id: 'status@broadcast' });
  driver.receive({ message_id: 'N1', chat_id: '120363000000000001@newsletter' });
  driver.receive({ message_id: 'G2', chat_id: '15557654321@c.us', is_group: true });
  driver.emit('message', { text: 'no ids' });
  driver.receive({
    message_id: 'false_554199999999@c.us_3EB0B4B1C2D3E4F5A6B7',
    chat_id: '554199999999@c.us',
    type: 'image',
    text: 'see the photo',
    timestamp_s: '1591482682',
    media: { mime_type: 'image/jpeg', caption: 'see the photo', data: Buffer.from('JPEGDATA').toString('base64') },
    location: { latitude: '-25.4', longitude: -49.2, name: 'Shop' },
    push_name: 'Maria',
  });
  const event = await waitFor(() => dashd.events('message')[0]);
  assert.equal(dashd.events('message').length, 1, 'only the one-to-one message');
  const data = event.data;
  assert.deepEqual(Object.keys(data).sort(), ['chat_id', 'from_me', 'has_media', 'is_group', 'lid', 'location', 'media', 'message_id', 'phone', 'push_name', 'reply_id', 'sender_id', 'text', 'timestamp_s', 'type']);
  assert.equal(data.sender_id, '554199999999@c.us');
  assert.equal(data.timestamp_s, 1591482682);
  assert.equal(data.has_media, true);
  assert.equal(data.is_group, false);
  assert.equal(data.from_me, false);
  assert.deepEqual(data.location, { latitude: -25.4, longitude: -49.2, name: 'Shop', address: null });
  assert.equal(data.media.kind, 'image');
  assert.equal(data.media.mime_type, 'image/jpeg');
  assert.equal(data.media.data, undefined, 'bytes are never posted');
  assert.ok(data.media.url.startsWith(`${bridge.url}/media/shop-1/`));
  const fetched = await api(bridge, 'GET', data.media.url.slice(bridge.url.length));
  assert.equal(fetched.status, 200);
  assert.equal(fetched.headers['content-type'], 'image/jpeg');
  assert.equal(fetched.raw.toString(), 'JPEGDATA');
  assert.equal((await api(bridge, 'GET', data.media.url.slice(bridge.url.length), undefined, { token: 'nope' })).status, 401);
  assert.equal((await api(bridge, 'GET', '/media/shop-1/0123456789abcdef0123456789abcdef')).status, 404);
});

test('acks are posted with contract names; pending and unknown ones are not', async (t) => {
  const dashd = await fakeDashd(t);
  const bridge = await startBridge(t, { dashdUrl: dashd.url });
  await api(bridge, 'POST', '/sessions/shop-1/start', {});
  const driver = await waitFor(() => bridge.factory.latest('shop-1')?.qrCount === 1 && bridge.factory.latest('shop-1'));
  await driver.pair();
  driver.emit('ack', { id: 'A', ack: 0 });
  driver.emit('ack', { id: 'A', ack: 1, chat_id: '15557654321@c.us', timestamp_s: 1767225600 });
  driver.emit('ack', { id: 'A', ack: 'delivered' });
  driver.emit('ack', { id: 'A', ack: 3 });
  driver.emit('ack', { id: 'A', ack: 42 });
  driver.emit('ack', { message_id: 'B', ack: -1, error: { code: 131026, message: 'not on WhatsApp' } });
  await waitFor(() => dashd.events('ack').length === 4);
  const acks = dashd.events('ack').map((e) => e.data);
  assert.deepEqual(acks.map((a) => a.ack), ['sent', 'delivered', 'read', 'failed']);
  assert.deepEqual(acks[0], { message_id: 'A', chat_id: '15557654321@c.us', ack: 'sent', timestamp_s: 1767225600 });
  assert.deepEqual(acks[3].error, { code: '131026', message: 'not on WhatsApp' });
});

test('the bridge does not post back what it sent itself, even when the echo comes before the id', async (t) => {
  const dashd = await fakeDashd(t);
  const factory = testDriverFactory({ echo: true, sendDelayMs: 30 });
  const bridge = await startBridge(t, { dashdUrl: dashd.url, factory });
  await api(bridge, 'POST', '/sessions/shop-1/start', {});
  const driver = await waitFor(() => factory.latest('shop-1')?.qrCount === 1 && factory.latest('shop-1'));
  await driver.pair();
  const sends = [1, 2, 3].map((i) => api(bridge, 'POST', '/send', { session: 'shop-1', to: '15557654321', text: `out ${i}` }));
  // Meanwhile the phone's owner writes from the phone: that one is posted.
  await sleep(10);
  driver.receive({ message_id: 'PHONE-1', from_me: true, text: 'typed on the phone' });
  const answers = await Promise.all(sends);
  driver.receive({ message_id: 'IN-after', text: 'a reply' });
  await waitFor(() => dashd.events('message').length === 2);
  await sleep(50);
  const posted = dashd.events('message').map((e) => e.data.message_id).sort();
  assert.deepEqual(posted, ['IN-after', 'PHONE-1']);
  for (const answer of answers) assert.ok(!posted.includes(answer.body.id));
  assert.equal(dashd.events('message').find((e) => e.data.message_id === 'PHONE-1').data.from_me, true);
});
