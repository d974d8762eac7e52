// The HTTP contract of docs/bridges.md: auth first, every route, the error bodies.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { api, fakeDashd, startBridge, TOKEN, waitFor } from './helpers/harness.js';

/** A bridge whose session `shop-1` is ready (paired with +15551234567). */
async function readyBridge(t, options = {}) {
  const bridge = await startBridge(t, options);
  const started = await api(bridge, 'POST', '/sessions/shop-1/start', {});
  assert.equal(started.status, 200);
  await waitFor(() => bridge.factory.latest('shop-1')?.qrCount === 1, { what: 'the first QR' });
  await bridge.factory.latest('shop-1').pair('15551234567');
  return bridge;
}

test('a missing or wrong token is refused with 401 before anything else', async (t) => {
  const bridge = await startBridge(t, { maxBodyBytes: 64 });
  const cases = [
    ['GET', '/health', undefined, null],
    ['GET', '/health', undefined, 'wrong-token'],
    ['GET', '/health', undefined, `${TOKEN}x`],
    ['GET', '/health', undefined, ''],
    ['GET', '/no-such-route', undefined, 'wrong-token'], // not 404
    ['PUT', '/health', undefined, 'wrong-token'], // not 405
    ['POST', '/sessions/bad name!/start', {}, null], // not 400
    ['GET', '/status/unknown', undefined, 'wrong'], // not 404 session_not_found
    ['POST', '/send', { text: 'x'.repeat(1000) }, 'wrong'], // not 413
  ];
  for (const [method, path, body, token] of cases) {
    const answer = await api(bridge, method, path, body, { token });
    assert.equal(answer.status, 401, `${method} ${path} with token ${token}`);
    assert.equal(answer.body.error.code, 'unauthorized');
    assert.equal(typeof answer.body.error.message, 'string');
  }
  const basic = await api(bridge, 'GET', '/health', undefined, { token: null, headers: { authorization: `Basic ${TOKEN}` } });
  assert.equal(basic.status, 401);
  const lowercase = await api(bridge, 'GET', '/health', undefined, { token: null, headers: { authorization: `bearer ${TOKEN}` } });
  assert.equal(lowercase.status, 200, 'the scheme is case-insensitive');
  // Nothing was started by the refused calls.
  assert.equal(bridge.factory.drivers.length, 0);
});

test('/health answers ok, library, version, uptime, memory and sessions by state', async (t) => {
  const bridge = await readyBridge(t, { maxSessions: 3 });
  await api(bridge, 'POST', '/sessions/shop-2/start', {});
  await waitFor(() => bridge.factory.latest('shop-2')?.qrCount === 1);
  const answer = await api(bridge, 'GET', '/health');
  assert.equal(answer.status, 200);
  assert.equal(answer.headers['content-type'], 'application/json; charset=utf-8');
  const health = answer.body;
  assert.equal(health.ok, true);
  assert.equal(health.library, 'wwebjs');
  assert.equal(health.version, 'test-1.0');
  assert.equal(health.contract, 1);
  assert.equal(typeof health.uptime_s, 'number');
  assert.ok(health.memory.rss_bytes > 1024 * 1024);
  assert.ok(health.memory.heap_used_bytes > 0);
  assert.equal(health.sessions.total, 2);
  assert.equal(health.sessions.max, 3);
  assert.deepEqual(health.sessions.by_state, { initializing: 0, qr: 1, authenticated: 0, ready: 1, disconnected: 0, logged_out: 0, failed: 0 });
  assert.equal(typeof health.events.pending, 'number');
  assert.equal(health.events.dead, 0);
});

test('/health counts dead letters: events dashd refused for good', async (t) => {
  const dashd = await fakeDashd(t);
  dashd.answerNext({ status: 404, body: { error: { code: 'unknown_session', message: 'no bot owns session shop-1' } } }, 413);
  const bridge = await startBridge(t, { dashdUrl: dashd.url });
  await api(bridge, 'POST', '/sessions/shop-1/start', {});
  await waitFor(() => dashd.events('qr').length === 1, { what: 'the first QR past the two refused states' });
  const health = (await api(bridge, 'GET', '/health')).body;
  assert.equal(health.events.dead, 2);
  assert.equal(health.events.pending, 0);
  assert.deepEqual(dashd.attempts.slice(0, 2).map((a) => [a.status, a.body.event]), [[404, 'state'], [413, 'state']]);
});

test('session lifecycle over HTTP: start, QR, status, list, delete', async (t) => {
  const bridge = await startBridge(t);
  const started = await api(bridge, 'POST', '/sessions/shop-1/start', {});
  assert.equal(started.status, 200);
  assert.equal(started.body.session, 'shop-1');
  assert.ok(['initializing', 'qr'].includes(started.body.state));
  assert.match(started.body.since, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);

  await waitFor(() => bridge.factory.latest('shop-1')?.qrCount === 1);
  const qr = await api(bridge, 'GET', '/qr/shop-1');
  assert.equal(qr.status, 200);
  assert.equal(qr.body.qr, '2@TEST-shop-1-1');
  assert.ok(Date.parse(qr.body.expires_at) > Date.now());

  // Starting a running session does nothing.
  const again = await api(bridge, 'POST', '/sessions/shop-1/start');
  assert.equal(again.status, 200);
  assert.equal(again.body.state, 'qr');
  assert.equal(bridge.factory.all('shop-1').length, 1);

  await bridge.factory.latest('shop-1').pair('15551234567');
  const status = await api(bridge, 'GET', '/status/shop-1');
  assert.deepEqual(Object.keys(status.body).sort(), ['phone', 'reason', 'session', 'since', 'state']);
  assert.equal(status.body.state, 'ready');
  assert.equal(status.body.phone, '+15551234567');
  assert.equal(status.body.reason, null);

  const noQr = await api(bridge, 'GET', '/qr/shop-1');
  assert.equal(noQr.status, 404);
  assert.equal(noQr.body.error.code, 'qr_not_available');

  const list = await api(bridge, 'GET', '/sessions');
  assert.deepEqual(list.body.sessions.map((s) => [s.session, s.state]), [['shop-1', 'ready']]);

  const driver = bridge.factory.latest('shop-1');
  const deleted = await api(bridge, 'DELETE', '/session/shop-1');
  assert.equal(deleted.status, 200);
  assert.deepEqual(deleted.body, {});
  assert.deepEqual(driver.calls.slice(-2), ['logout', 'stop']);
  assert.equal(await driver.readCreds(), null, 'credentials deleted');

  for (const [method, path] of [['GET', '/status/shop-1'], ['GET', '/qr/shop-1'], ['DELETE', '/session/shop-1']]) {
    const gone = await api(bridge, method, path);
    assert.equal(gone.status, 404, `${method} ${path}`);
    assert.equal(gone.body.error.code, 'session_not_found');
  }
  assert.deepEqual((await api(bridge, 'GET', '/sessions')).body, { sessions: [] });
});

test('send and send-media reach the driver and answer the message id', async (t) => {
  const bridge = await readyBridge(t);
  const driver = bridge.factory.latest('shop-1');
  const text = await api(bridge, 'POST', '/send', {
    session: 'shop-1',
    to: '15557654321',
    text: 'Hello!\n1. Opening hours',
    reply_to: '3EB0C767D26B8E1F2A4B',
    idempotency_key: 'k-1',
  });
  assert.equal(text.status, 200);
  assert.match(text.body.id, /^OUT-/);
  assert.deepEqual(driver.sent[0], { to: '15557654321', text: 'Hello!\n1. Opening hours', replyTo: '3EB0C767D26B8E1F2A4B', kind: 'text' });

  const lid = await api(bridge, 'POST', '/send', { session: 'shop-1', to: '12345678901234@lid', text: 'hi' });
  assert.equal(lid.status, 200);
  assert.equal(driver.sent[1].to, '12345678901234@lid', 'a LID passes through, never read as a phone');
  assert.equal(driver.sent[1].replyTo, null);

  const media = await api(bridge, 'POST', '/send-media', {
    session: 'shop-1',
    to: '15557654321',
    kind: 'image',
    url: 'https://example.com/menu.png',
    caption: "Today's menu",
    filename: 'menu.png',
    mime_type: 'image/png',
  });
  assert.equal(media.status, 200);
  assert.match(media.body.id, /^OUT-/);
  assert.deepEqual(driver.sent[2], {
    to: '15557654321',
    kind: 'image',
    url: 'https://example.com/menu.png',
    data: null,
    caption: "Today's menu",
    filename: 'menu.png',
    mimeType: 'image/png',
    media: true,
  });
  assert.deepEqual(driver.uploads, [], 'a URL send is no upload');
  const bare = await api(bridge, 'POST', '/send-media', { session: 'shop-1', to: '15557654321', kind: 'document', url: 'http://example.com/a.pdf' });
  assert.equal(bare.status, 200);
  assert.deepEqual([driver.sent[3].caption, driver.sent[3].filename, driver.sent[3].mimeType], [null, null, null]);
});

test('errors answer the contract codes', async (t) => {
  const bridge = await readyBridge(t, { maxBodyBytes: 2048 });
  await api(bridge, 'POST', '/sessions/waiting/start', {});
  /** @type {[string, string, unknown, number, string, (string | Buffer)?][]} */
  const cases = [
    ['POST', '/send', { session: 'shop-1', to: 'abc', text: 'x' }, 400, 'invalid_recipient'],
    ['POST', '/send', { session: 'shop-1', to: '15551234567@c.us', text: 'x' }, 400, 'invalid_recipient'],
    ['POST', '/send', { session: 'shop-1', to: '123', text: 'x' }, 400, 'invalid_recipient'],
    ['POST', '/send', { session: 'shop-1', text: 'x' }, 400, 'invalid_recipient'],
    ['POST', '/send', { session: 'shop-1', to: '15557654321', text: '   ' }, 400, 'invalid_request'],
    ['POST', '/send', { session: 'shop-1', to: '15557654321' }, 400, 'invalid_request'],
    ['POST', '/send', { session: 'shop-1', to: '15557654321', text: 'x', reply_to: 5 }, 400, 'invalid_request'],
    ['POST', '/send', { to: '15557654321', text: 'x' }, 400, 'invalid_request'],
    ['POST', '/send', { session: '../etc', to: '15557654321', text: 'x' }, 400, 'invalid_request'],
    ['POST', '/send', { session: 'shop-1', to: '15557654321', text: 'menu', buttons: [{ id: '1', label: 'A' }] }, 400, 'unsupported'],
    ['POST', '/send', { session: 'shop-1', to: '15557654321', text: 'menu', list: { button: 'Open', rows: [] } }, 400, 'unsupported'],
    ['POST', '/send-media', { session: 'shop-1', to: '15557654321', kind: 'sticker', url: 'https://e.com/a' }, 400, 'invalid_request'],
    ['POST', '/send-media', { session: 'shop-1', to: '15557654321', kind: 'image', url: 'file:///etc/passwd' }, 400, 'invalid_request'],
    ['POST', '/send-media', { session: 'shop-1', to: '15557654321', kind: 'image' }, 400, 'invalid_request'],
    ['POST', '/send-media', { session: 'shop-1', to: '15557654321', kind: 'image', url: null, data: null }, 400, 'invalid_request'],
    ['POST', '/send-media', { session: 'shop-1', to: '15557654321', kind: 'image', url: 'https://e.com/a.png', data: 'QUJD', mime_type: 'image/png' }, 400, 'invalid_request'],
    ['POST', '/send-media', { session: 'shop-1', to: '15557654321', kind: 'image', data: 'QUJD' }, 400, 'invalid_request'],
    ['POST', '/send-media', { session: 'shop-1', to: '15557654321', kind: 'image', data: 'QUJD', mime_type: 'png' }, 400, 'invalid_request'],
    ['POST', '/send-media', { session: 'shop-1', to: '15557654321', kind: 'image', data: 'not base64!', mime_type: 'image/png' }, 400, 'invalid_request'],
    ['POST', '/send-media', { session: 'shop-1', to: '15557654321', kind: 'image', data: 'QUJD=', mime_type: 'image/png' }, 400, 'invalid_request'],
    ['POST', '/send-media', { session: 'shop-1', to: '15557654321', kind: 'image', data: 'QUJDR', mime_type: 'image/png' }, 400, 'invalid_request'],
    ['POST', '/send-media', { session: 'shop-1', to: '15557654321', kind: 'image', data: 'QQ=', mime_type: 'image/png' }, 400, 'invalid_request'],
    ['POST', '/send-media', { session: 'shop-1', to: '15557654321', kind: 'image', data: '+/-_', mime_type: 'image/png' }, 400, 'invalid_request'],
    ['POST', '/send-media', { session: 'shop-1', to: '15557654321', kind: 'image', data: '', mime_type: 'image/png' }, 400, 'invalid_request'],
    ['POST', '/send-media', { session: 'shop-1', to: '15557654321', kind: 'image', data: 42, mime_type: 'image/png' }, 400, 'invalid_request'],
    ['POST', '/send-media', { session: 'waiting', to: '15557654321', kind: 'image', data: 'QUJD', mime_type: 'image/png' }, 409, 'session_not_ready'],
    ['GET', '/media/shop-1/0123456789abcdef0123456789abcdef', undefined, 404, 'media_not_found'],
    ['GET', '/media/shop-1/..%2Fsessions.json', undefined, 404, 'media_not_found'],
    ['POST', '/send', { session: 'nobody', to: '15557654321', text: 'x' }, 404, 'session_not_found'],
    ['POST', '/send', { session: 'waiting', to: '15557654321', text: 'x' }, 409, 'session_not_ready'],
    ['POST', '/send-media', { session: 'waiting', to: '15557654321', kind: 'image', url: 'https://e.com/a.png' }, 409, 'session_not_ready'],
    ['GET', '/status/nobody', undefined, 404, 'session_not_found'],
    ['GET', '/qr/nobody', undefined, 404, 'session_not_found'],
    ['DELETE', '/session/nobody', undefined, 404, 'session_not_found'],
    ['POST', '/sessions/bad.name/start', {}, 400, 'invalid_request'],
    ['POST', `/sessions/${'a'.repeat(65)}/start`, {}, 400, 'invalid_request'],
    ['GET', '/status/%E0%A4%A', undefined, 400, 'invalid_request'],
    ['POST', '/sessions/x/start', { pairing_phone: 'abc' }, 400, 'invalid_request'],
    ['POST', '/send', undefined, 400, 'invalid_request', '{not json'],
    ['POST', '/send', undefined, 400, 'invalid_request', '[1,2]'],
    ['POST', '/send', undefined, 413, 'payload_too_large', JSON.stringify({ session: 'shop-1', to: '15557654321', text: 'x'.repeat(4096) })],
    ['GET', '/nothing-here', undefined, 404, 'not_found'],
    ['GET', '/sessions/shop-1', undefined, 404, 'not_found'],
    ['GET', '/send', undefined, 405, 'method_not_allowed'],
    ['POST', '/status/shop-1', {}, 405, 'method_not_allowed'],
  ];
  for (const [method, path, body, status, code, raw] of cases) {
    const answer = await api(bridge, method, path, body, raw === undefined ? {} : { raw });
    assert.equal(answer.status, status, `${method} ${path} ${String(JSON.stringify(body ?? raw)).slice(0, 80)}: ${JSON.stringify(answer.body)}`);
    assert.equal(answer.body.error.code, code, `${method} ${path}`);
    assert.ok(answer.body.error.message.length > 0);
  }
  assert.equal(bridge.factory.latest('shop-1').sent.length, 0, 'no refused message reached the driver');
  assert.equal(bridge.factory.latest('shop-1').uploads.length, 0);
  assert.equal((await api(bridge, 'POST', '/status/shop-1', {})).headers.allow, 'GET');
});

test('errors thrown by the driver answer their contract code, others 500 internal', async (t) => {
  const bridge = await readyBridge(t);
  const driver = bridge.factory.latest('shop-1');
  const { BridgeError } = await import('../src/errors.js');
  const send = () => api(bridge, 'POST', '/send', { session: 'shop-1', to: '15557654321', text: 'x' });

  driver.nextSendError = new BridgeError('invalid_recipient', '15557654321 is not on WhatsApp');
  let answer = await send();
  assert.deepEqual([answer.status, answer.body.error.code, answer.body.error.message], [400, 'invalid_recipient', '15557654321 is not on WhatsApp']);

  driver.nextSendError = Object.assign(new Error('slow down'), { code: 'rate_limited' });
  answer = await send();
  assert.deepEqual([answer.status, answer.body.error.code], [429, 'rate_limited']);

  driver.nextSendError = new TypeError('Cannot read properties of undefined');
  answer = await send();
  assert.deepEqual([answer.status, answer.body.error.code], [500, 'internal']);

  answer = await send();
  assert.equal(answer.status, 200, 'the session still works');
});

test('the session limit refuses new sessions with 409 session_limit', async (t) => {
  const bridge = await startBridge(t, { maxSessions: 2 });
  assert.equal((await api(bridge, 'POST', '/sessions/a/start', {})).status, 200);
  assert.equal((await api(bridge, 'POST', '/sessions/b/start', {})).status, 200);
  const third = await api(bridge, 'POST', '/sessions/c/start', {});
  assert.equal(third.status, 409);
  assert.equal(third.body.error.code, 'session_limit');
  assert.match(third.body.error.message, /2/);
  assert.equal((await api(bridge, 'GET', '/status/c')).status, 404, 'nothing was created');
  // A running session can still be "started" (a no-op); a logged-out one frees its place.
  assert.equal((await api(bridge, 'POST', '/sessions/a/start', {})).status, 200);
  await waitFor(() => bridge.factory.latest('b')?.qrCount === 1);
  bridge.factory.latest('b').logoutFromPhone();
  await waitFor(async () => (await api(bridge, 'GET', '/status/b')).body.state === 'logged_out');
  assert.equal((await api(bridge, 'POST', '/sessions/c/start', {})).status, 200);
  const restartB = await api(bridge, 'POST', '/sessions/b/start', {});
  assert.equal(restartB.status, 409, 'b would be a third running session');
});

test('a pairing phone reaches the driver; the pairing code shows in status and QR answers', async (t) => {
  const dashd = await fakeDashd(t);
  const bridge = await startBridge(t, { dashdUrl: dashd.url });
  await api(bridge, 'POST', '/sessions/shop-1/start', { pairing_phone: '+15551234567' });
  const driver = bridge.factory.latest('shop-1');
  assert.equal(driver.context.pairingPhone, '15551234567');
  // The test driver answers a pairing phone with a code, not a QR.
  await waitFor(async () => (await api(bridge, 'GET', '/status/shop-1')).body.pairing_code === 'TEST-4567');
  assert.equal(driver.qrCount, 0);
  driver.showQr();
  driver.emit('pairing_code', { code: 'ABCD-EFGH' });
  const status = await api(bridge, 'GET', '/status/shop-1');
  assert.equal(status.body.state, 'qr');
  assert.equal(status.body.pairing_code, 'ABCD-EFGH');
  assert.equal((await api(bridge, 'GET', '/qr/shop-1')).body.pairing_code, 'ABCD-EFGH');
  await waitFor(() => dashd.events('pairing_code').length === 2);
  assert.deepEqual(dashd.events('pairing_code').map((e) => e.data.code), ['TEST-4567', 'ABCD-EFGH']);
  await driver.pair('15551234567');
  assert.equal((await api(bridge, 'GET', '/status/shop-1')).body.pairing_code, undefined);
});

test('a pairing phone given to a session already waiting for a QR switches it to a pairing code', async (t) => {
  const dashd = await fakeDashd(t);
  const bridge = await startBridge(t, { dashdUrl: dashd.url });
  await api(bridge, 'POST', '/sessions/shop-1/start', {});
  const first = bridge.factory.latest('shop-1');
  await waitFor(() => first.qrCount === 1);
  const answer = await api(bridge, 'POST', '/sessions/shop-1/start', { pairing_phone: '15551234567' });
  assert.equal(answer.status, 200);
  const second = bridge.factory.latest('shop-1');
  assert.notEqual(second, first, 'a new connection for the pairing code');
  assert.equal(second.context.pairingPhone, '15551234567');
  assert.ok(first.calls.includes('stop') && !first.calls.includes('logout'), first.calls.join());
  await waitFor(async () => (await api(bridge, 'GET', '/status/shop-1')).body.pairing_code === 'TEST-4567');
  // The same phone again changes nothing; a paired session is left alone.
  await api(bridge, 'POST', '/sessions/shop-1/start', { pairing_phone: '15551234567' });
  assert.equal(bridge.factory.latest('shop-1'), second);
  await second.pair('15551234567');
  await api(bridge, 'POST', '/sessions/shop-1/start', { pairing_phone: '15559999999' });
  assert.equal(bridge.factory.latest('shop-1'), second);
});

test('a chunked body past the limit is refused with 413 while it streams', async (t) => {
  const http = await import('node:http');
  const bridge = await readyBridge(t, { maxBodyBytes: 1024 });
  const answer = await new Promise((resolve, reject) => {
    const request = http.request(`${bridge.url}/send`, {
      method: 'POST',
      agent: false,
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json', 'transfer-encoding': 'chunked' },
    });
    request.on('response', (response) => {
      let text = '';
      response.on('data', (chunk) => (text += chunk));
      response.on('end', () => resolve({ status: response.statusCode, body: JSON.parse(text) }));
    });
    request.on('error', reject);
    request.write('{"session":"shop-1","to":"15557654321","text":"');
    for (let i = 0; i < 8; i += 1) request.write('x'.repeat(256));
    request.end('"}');
  });
  assert.equal(answer.status, 413);
  assert.equal(answer.body.error.code, 'payload_too_large');
  assert.equal(bridge.factory.latest('shop-1').sent.length, 0);
});

test('send-media uploads: data in base64 (standard or URL-safe) reaches the driver as bytes', async (t) => {
  const bridge = await readyBridge(t);
  const driver = bridge.factory.latest('shop-1');
  // Bytes whose base64 uses the alphabets' differing characters (+/ against -_).
  const file = Buffer.from([0xfb, 0xff, 0xbf, 0x00, 0x25, 0x50, 0x44, 0x46, 0xfe, 0xfa]);
  const standard = await api(bridge, 'POST', '/send-media', {
    session: 'shop-1',
    to: '15557654321',
    kind: 'document',
    data: file.toString('base64'),
    mime_type: 'application/pdf',
    filename: 'menu.pdf',
    caption: 'The menu',
    idempotency_key: 'upload-1',
  });
  assert.equal(standard.status, 200);
  assert.match(standard.body.id, /^OUT-/);
  assert.deepEqual(driver.sent[0], {
    to: '15557654321',
    kind: 'document',
    url: null,
    data: file,
    caption: 'The menu',
    filename: 'menu.pdf',
    mimeType: 'application/pdf',
    media: true,
  });
  assert.ok(Buffer.isBuffer(driver.sent[0].data));

  const urlSafe = file.toString('base64url');
  assert.match(urlSafe, /[-_]/);
  const unpadded = await api(bridge, 'POST', '/send-media', { session: 'shop-1', to: '12345678901234@lid', kind: 'image', data: urlSafe, mime_type: 'image/jpeg' });
  assert.equal(unpadded.status, 200);
  const wrapped = file.toString('base64').replace(/(.{4})/g, '$1\r\n'); // MIME line breaks
  assert.equal((await api(bridge, 'POST', '/send-media', { session: 'shop-1', to: '15557654321', kind: 'audio', data: wrapped, mime_type: 'audio/ogg; codecs=opus' })).status, 200);

  assert.deepEqual(
    driver.uploads.map((u) => [u.to, u.kind, u.data.toString('hex'), u.mimeType, u.filename, u.caption]),
    [
      ['15557654321', 'document', file.toString('hex'), 'application/pdf', 'menu.pdf', 'The menu'],
      ['12345678901234@lid', 'image', file.toString('hex'), 'image/jpeg', null, null],
      ['15557654321', 'audio', file.toString('hex'), 'audio/ogg; codecs=opus', null, null],
    ],
  );
  // The idempotency key works for uploads too.
  const repeated = await api(bridge, 'POST', '/send-media', { session: 'shop-1', to: '15557654321', kind: 'document', data: file.toString('base64'), mime_type: 'application/pdf', idempotency_key: 'upload-1' });
  assert.deepEqual([repeated.status, repeated.body.id], [200, standard.body.id]);
  assert.equal(driver.uploads.length, 3);
});

test('send-media has its own body limit (BRIDGE_MAX_UPLOAD_BYTES); other routes keep theirs', async (t) => {
  const bridge = await readyBridge(t, { maxBodyBytes: 2048, maxUploadBytes: 8192 });
  const driver = bridge.factory.latest('shop-1');
  const upload = (/** @type {number} */ bytes) => ({ session: 'shop-1', to: '15557654321', kind: 'image', data: Buffer.alloc(bytes, 7).toString('base64'), mime_type: 'image/png' });
  const fits = await api(bridge, 'POST', '/send-media', upload(4096)); // a body of about 5.5 KiB
  assert.equal(fits.status, 200);
  assert.equal(driver.uploads[0].data.length, 4096);
  const over = await api(bridge, 'POST', '/send-media', upload(7000)); // about 9.4 KiB
  assert.deepEqual([over.status, over.body.error.code], [413, 'payload_too_large']);
  assert.match(over.body.error.message, /8192/);
  const text = await api(bridge, 'POST', '/send', { session: 'shop-1', to: '15557654321', text: 'x'.repeat(4096) });
  assert.deepEqual([text.status, text.body.error.code], [413, 'payload_too_large']);
  const start = await api(bridge, 'POST', '/sessions/other/start', { pairing_phone: '15551234567', padding: 'x'.repeat(4096) });
  assert.equal(start.status, 413);
  assert.equal(driver.uploads.length, 1);
});

test('by default send-media takes uploads past 1 MiB, /send does not', async (t) => {
  const bridge = await readyBridge(t);
  const driver = bridge.factory.latest('shop-1');
  const file = Buffer.alloc(3 * 1024 * 1024, 0xab);
  const answer = await api(bridge, 'POST', '/send-media', { session: 'shop-1', to: '15557654321', kind: 'video', data: file.toString('base64'), mime_type: 'video/mp4' });
  assert.equal(answer.status, 200);
  assert.ok(driver.uploads[0].data.equals(file));
  const text = await api(bridge, 'POST', '/send', { session: 'shop-1', to: '15557654321', text: 'x'.repeat(1024 * 1024 + 1) });
  assert.deepEqual([text.status, text.body.error.code], [413, 'payload_too_large']);
});
