// The session state machine: initializing → qr → authenticated → ready, disconnected
// with reconnection (exponential backoff, capped), logged_out, failed; QR rotation; the
// session list restored after a restart.

import assert from 'node:assert/strict';
import { access, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { api, fakeDashd, sleep, startBridge, tempDir, testDriverFactory, waitFor } from './helpers/harness.js';

/** @param {any} bridge @param {string} name */
const status = async (bridge, name) => (await api(bridge, 'GET', `/status/${name}`)).body;

/** @param {any} bridge @param {string} name @param {string} state */
const reaches = (bridge, name, state) => waitFor(async () => (await status(bridge, name)).state === state, { what: `${name} ${state}` });

/** @param {string} path */
const exists = (path) => access(path).then(() => true, () => false);

test('a new session goes initializing → qr → authenticated → ready, posting each state', async (t) => {
  const dashd = await fakeDashd(t);
  const bridge = await startBridge(t, { dashdUrl: dashd.url });
  const started = await api(bridge, 'POST', '/sessions/shop-1/start', {});
  assert.equal(started.body.phone, null);
  const driver = await waitFor(() => bridge.factory.latest('shop-1')?.qrCount === 1 && bridge.factory.latest('shop-1'));
  assert.equal((await status(bridge, 'shop-1')).state, 'qr');
  driver.emit('authenticated');
  assert.equal((await status(bridge, 'shop-1')).state, 'authenticated');
  driver.emit('ready', { phone: '15551234567:12@s.whatsapp.net' });
  const ready = await status(bridge, 'shop-1');
  assert.equal(ready.state, 'ready');
  assert.equal(ready.phone, '+15551234567');
  await waitFor(() => dashd.events('state').length === 4);
  const states = dashd.events('state').map((e) => e.data);
  assert.deepEqual(states.map((s) => s.state), ['initializing', 'qr', 'authenticated', 'ready']);
  assert.deepEqual(Object.keys(states[3]).sort(), ['phone', 'reason', 'since', 'state']);
  assert.equal(states[3].phone, '+15551234567');
  assert.match(states[3].since, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
  // A repeated "ready" changes nothing and posts nothing.
  driver.emit('ready', { phone: '15551234567' });
  await sleep(30);
  assert.equal(dashd.events('state').length, 4);
});

test('QR codes rotate: the latest is served and posted; an expired one is not served', async (t) => {
  const dashd = await fakeDashd(t);
  const bridge = await startBridge(t, { dashdUrl: dashd.url, timings: { qrTtlMs: 150 } });
  await api(bridge, 'POST', '/sessions/shop-1/start', {});
  const driver = await waitFor(() => bridge.factory.latest('shop-1')?.qrCount === 1 && bridge.factory.latest('shop-1'));
  assert.equal((await api(bridge, 'GET', '/qr/shop-1')).body.qr, '2@TEST-shop-1-1');
  const expiresAt = new Date(Date.now() + 20000).toISOString().replace(/\.\d{3}Z$/, 'Z');
  driver.showQr({ expires_at: expiresAt });
  const second = await api(bridge, 'GET', '/qr/shop-1');
  assert.equal(second.body.qr, '2@TEST-shop-1-2');
  assert.equal(second.body.expires_at, expiresAt, "the driver's expiry is kept");
  driver.showQr(); // default lifetime: 150 ms here
  assert.equal((await api(bridge, 'GET', '/qr/shop-1')).body.qr, '2@TEST-shop-1-3');
  await sleep(200);
  const expired = await api(bridge, 'GET', '/qr/shop-1');
  assert.equal(expired.status, 404);
  assert.equal(expired.body.error.code, 'qr_not_available');
  assert.equal((await status(bridge, 'shop-1')).state, 'qr');

  await waitFor(() => dashd.events('qr').length === 3);
  const qrs = dashd.events('qr').map((e) => e.data);
  assert.deepEqual(qrs.map((q) => q.qr), ['2@TEST-shop-1-1', '2@TEST-shop-1-2', '2@TEST-shop-1-3']);
  assert.equal(qrs[1].expires_at, expiresAt);
  assert.deepEqual(Object.keys(qrs[0]).sort(), ['expires_at', 'qr']);
  assert.equal(dashd.events('state').filter((e) => e.data.state === 'qr').length, 1, 'rotation is not a state change');

  driver.emit('qr', { qr: 'data:image/png;base64,AAAA' });
  assert.equal((await api(bridge, 'GET', '/qr/shop-1')).status, 404, 'a PNG data URL is never served as the QR');
});

test('a lost connection reconnects with exponential backoff, capped, then resumes', async (t) => {
  const dashd = await fakeDashd(t);
  /** @type {number[]} */
  const created = [];
  let failuresLeft = 5;
  const factory = testDriverFactory({
    onStart: async (driver) => {
      created.push(Date.now());
      if (failuresLeft > 0) {
        failuresLeft -= 1;
        driver.disconnect(`connection lost ${5 - failuresLeft}`);
        return;
      }
      driver.emit('authenticated');
      driver.emit('ready', { phone: '15551234567' });
    },
  });
  const bridge = await startBridge(t, { dashdUrl: dashd.url, factory, timings: { reconnectMinMs: 40, reconnectMaxMs: 160 } });
  await api(bridge, 'POST', '/sessions/shop-1/start', {});
  await reaches(bridge, 'shop-1', 'ready');
  assert.equal(created.length, 6);
  const gaps = created.slice(1).map((at, i) => at - created[i]);
  const expected = [40, 80, 160, 160, 160];
  gaps.forEach((gap, i) => {
    assert.ok(gap >= expected[i] - 5, `gap ${i} is ${gap} ms, expected about ${expected[i]} ms (${gaps})`);
    assert.ok(gap < expected[i] + 250, `gap ${i} is ${gap} ms, expected about ${expected[i]} ms (${gaps})`);
  });
  // Each lost driver was stopped before its successor started.
  for (const driver of factory.all('shop-1').slice(0, 5)) assert.deepEqual(driver.calls, ['start', 'stop']);
  await waitFor(() => dashd.events('state').at(-1)?.data.state === 'ready');
  const states = dashd.events('state').map((e) => `${e.data.state}${e.data.reason ? `(${e.data.reason})` : ''}`);
  assert.deepEqual(states.slice(0, 3), ['initializing', 'disconnected(connection lost 1)', 'disconnected(connection lost 2)']);
  assert.equal(states.at(-1), 'ready');

  // After `ready` the backoff starts again from the minimum.
  created.length = 0;
  failuresLeft = 1;
  const before = Date.now();
  factory.latest('shop-1').disconnect('stream errored');
  assert.equal((await status(bridge, 'shop-1')).state, 'disconnected');
  assert.equal((await status(bridge, 'shop-1')).reason, 'stream errored');
  await reaches(bridge, 'shop-1', 'ready');
  assert.ok(created[0] - before < 150, `first reconnection after ${created[0] - before} ms`);
});

test('events of a replaced driver are ignored', async (t) => {
  const dashd = await fakeDashd(t);
  const bridge = await startBridge(t, { dashdUrl: dashd.url });
  await api(bridge, 'POST', '/sessions/shop-1/start', {});
  const old = await waitFor(() => bridge.factory.latest('shop-1')?.qrCount === 1 && bridge.factory.latest('shop-1'));
  old.disconnect('gone');
  await waitFor(() => bridge.factory.all('shop-1').length === 2);
  old.emit('ready', { phone: '19999999999' });
  old.receive({ message_id: 'GHOST' });
  await sleep(30);
  const now = await status(bridge, 'shop-1');
  assert.notEqual(now.phone, '+19999999999');
  assert.ok(!dashd.events('message').some((e) => e.data.message_id === 'GHOST'));
});

test('logged out from the phone: credentials deleted, no reconnection, a new start shows a QR', async (t) => {
  const dashd = await fakeDashd(t);
  const bridge = await startBridge(t, { dashdUrl: dashd.url });
  await api(bridge, 'POST', '/sessions/shop-1/start', {});
  const driver = await waitFor(() => bridge.factory.latest('shop-1')?.qrCount === 1 && bridge.factory.latest('shop-1'));
  await driver.pair('15551234567');
  assert.ok(await exists(join(driver.dataDir, 'creds.json')));
  driver.logoutFromPhone('LOGOUT');
  const loggedOut = await status(bridge, 'shop-1');
  assert.deepEqual([loggedOut.state, loggedOut.reason, loggedOut.phone], ['logged_out', 'LOGOUT', '+15551234567']);
  await waitFor(async () => !(await exists(driver.dataDir)), { what: 'credentials deleted' });
  assert.deepEqual(driver.calls, ['start', 'stop']);
  await sleep(100);
  assert.equal(bridge.factory.all('shop-1').length, 1, 'no reconnection');
  const send = await api(bridge, 'POST', '/send', { session: 'shop-1', to: '15557654321', text: 'x' });
  assert.deepEqual([send.status, send.body.error.code], [409, 'session_not_ready']);
  assert.match(send.body.error.message, /logged_out \(LOGOUT\)/);
  await waitFor(() => dashd.events('state').some((e) => e.data.state === 'logged_out'));
  assert.equal(dashd.events('state').find((e) => e.data.state === 'logged_out').data.reason, 'LOGOUT');

  const again = await api(bridge, 'POST', '/sessions/shop-1/start', {});
  assert.equal(again.body.state, 'initializing');
  assert.equal(again.body.phone, null);
  await waitFor(() => bridge.factory.latest('shop-1').qrCount === 1, { what: 'a fresh QR' });
  assert.equal(bridge.factory.all('shop-1').length, 2);
});

test('failed: no reconnection until started again, credentials kept', async (t) => {
  const bridge = await startBridge(t);
  await api(bridge, 'POST', '/sessions/shop-1/start', {});
  const driver = await waitFor(() => bridge.factory.latest('shop-1')?.qrCount === 1 && bridge.factory.latest('shop-1'));
  await driver.pair();
  driver.fail('auth_failure: restore session failed');
  const failed = await status(bridge, 'shop-1');
  assert.deepEqual([failed.state, failed.reason], ['failed', 'auth_failure: restore session failed']);
  await sleep(100);
  assert.equal(bridge.factory.all('shop-1').length, 1);
  assert.ok(await exists(join(driver.dataDir, 'creds.json')));
  await api(bridge, 'POST', '/sessions/shop-1/start', {});
  await reaches(bridge, 'shop-1', 'ready'); // resumed from the kept credentials
});

test('a start that throws is retried; a fatal one fails the session', async (t) => {
  let throwsLeft = 2;
  const factory = testDriverFactory({
    onStart: (driver) => {
      if (driver.session === 'fatal') throw Object.assign(new Error('Chromium not found at /usr/bin/chromium'), { fatal: true });
      if (throwsLeft-- > 0) throw new Error('Protocol error: Target closed');
      driver.showQr();
    },
  });
  const bridge = await startBridge(t, { factory });
  await api(bridge, 'POST', '/sessions/shop-1/start', {});
  await reaches(bridge, 'shop-1', 'qr');
  assert.equal(factory.all('shop-1').length, 3);
  await api(bridge, 'POST', '/sessions/fatal/start', {});
  await reaches(bridge, 'fatal', 'failed');
  assert.match((await status(bridge, 'fatal')).reason, /Chromium not found/);
  assert.equal(factory.all('fatal').length, 1);
});

test('a factory that throws counts as a lost connection', async (t) => {
  let throwsLeft = 1;
  const inner = testDriverFactory();
  const factory = Object.assign((/** @type {any} */ context) => {
    if (throwsLeft-- > 0) throw new Error('cannot load the library');
    return inner(context);
  }, inner);
  const bridge = await startBridge(t, { factory });
  await api(bridge, 'POST', '/sessions/shop-1/start', {});
  await reaches(bridge, 'shop-1', 'qr');
});

test('with a reconnection limit, a session that keeps failing ends failed', async (t) => {
  const factory = testDriverFactory({ onStart: (driver) => driver.disconnect('network unreachable') });
  const bridge = await startBridge(t, { factory, reconnectMaxAttempts: 3 });
  await api(bridge, 'POST', '/sessions/shop-1/start', {});
  await reaches(bridge, 'shop-1', 'failed');
  assert.equal(factory.all('shop-1').length, 4, 'the first start and three reconnections');
  assert.match((await status(bridge, 'shop-1')).reason, /gave up reconnecting after 3 attempts: network unreachable/);
});

test('a driver that shows no sign of life is restarted', async (t) => {
  const factory = testDriverFactory({ onStart: (driver) => (driver.session === 'shop-1' && factory.all('shop-1').length === 1 ? undefined : driver.showQr()) });
  const bridge = await startBridge(t, { factory, timings: { startTimeoutMs: 80 } });
  await api(bridge, 'POST', '/sessions/shop-1/start', {});
  await reaches(bridge, 'shop-1', 'qr');
  assert.equal(factory.all('shop-1').length, 2);
  assert.deepEqual(factory.all('shop-1')[0].calls, ['start', 'stop']);
});

test('sessions are restored after a restart: running ones resume, logged-out ones stay, deleted ones are gone', async (t) => {
  const dataDir = await tempDir(t);
  const first = await startBridge(t, { dataDir });
  for (const name of ['paired', 'waiting', 'unpaired', 'deleted']) await api(first, 'POST', `/sessions/${name}/start`, {});
  await waitFor(() => ['paired', 'waiting', 'unpaired', 'deleted'].every((n) => first.factory.latest(n)?.qrCount === 1));
  await first.factory.latest('paired').pair('15551234567');
  await first.factory.latest('unpaired').pair('15550000000');
  first.factory.latest('unpaired').logoutFromPhone('UNPAIRED');
  await api(first, 'DELETE', '/session/deleted');
  await first.close();
  for (const name of ['paired', 'waiting']) assert.equal(first.factory.latest(name).calls.at(-1), 'stop', 'stopped at close');
  assert.ok(!first.factory.latest('paired').calls.includes('logout'), 'a clean shutdown does not log out');

  const stored = JSON.parse(await readFile(join(dataDir, 'sessions.json'), 'utf8'));
  assert.deepEqual(stored.sessions.map((s) => [s.name, s.state]).sort(), [['paired', null], ['unpaired', 'logged_out'], ['waiting', null]]);

  const second = await startBridge(t, { dataDir });
  const list = (await api(second, 'GET', '/sessions')).body.sessions;
  assert.deepEqual(list.map((s) => s.session), ['paired', 'unpaired', 'waiting']);
  await reaches(second, 'paired', 'ready');
  assert.equal((await status(second, 'paired')).phone, '+15551234567');
  await reaches(second, 'waiting', 'qr');
  const unpaired = await status(second, 'unpaired');
  assert.deepEqual([unpaired.state, unpaired.reason], ['logged_out', 'UNPAIRED']);
  assert.equal(second.factory.all('unpaired').length, 0, 'no driver for a logged-out session');
  assert.equal((await api(second, 'GET', '/status/deleted')).status, 404);
});

test('a restart with a lower session limit starts only that many', async (t) => {
  const dataDir = await tempDir(t);
  const first = await startBridge(t, { dataDir, maxSessions: 3 });
  for (const name of ['a', 'b', 'c']) await api(first, 'POST', `/sessions/${name}/start`, {});
  await first.close();
  const second = await startBridge(t, { dataDir, maxSessions: 2 });
  const states = (await api(second, 'GET', '/sessions')).body.sessions.map((s) => s.state);
  assert.equal(states.filter((s) => s === 'failed').length, 1);
  assert.match((await api(second, 'GET', '/sessions')).body.sessions.find((s) => s.state === 'failed').reason, /BRIDGE_MAX_SESSIONS=2/);
});

test('delete logs out even when WhatsApp does not answer, and still deletes', async (t) => {
  const factory = testDriverFactory();
  const bridge = await startBridge(t, { factory, timings: { logoutTimeoutMs: 50 } });
  await api(bridge, 'POST', '/sessions/shop-1/start', {});
  const driver = await waitFor(() => factory.latest('shop-1')?.qrCount === 1 && factory.latest('shop-1'));
  await driver.pair();
  driver.logout = () => new Promise(() => {}); // hangs for ever
  const deleted = await api(bridge, 'DELETE', '/session/shop-1');
  assert.equal(deleted.status, 200);
  assert.ok(!(await exists(driver.dataDir)));
  assert.equal(driver.calls.at(-1), 'stop');
});

test('restart: the driver is stopped without logging out and a new one starts at once, credentials kept', async (t) => {
  const dashd = await fakeDashd(t);
  // A reconnection would wait 5 s: a restart does not.
  const bridge = await startBridge(t, { dashdUrl: dashd.url, timings: { reconnectMinMs: 5000, reconnectMaxMs: 5000 } });
  await api(bridge, 'POST', '/sessions/shop-1/start', {});
  const old = await waitFor(() => bridge.factory.latest('shop-1')?.qrCount === 1 && bridge.factory.latest('shop-1'));
  await old.pair('15551234567');
  await waitFor(() => dashd.events('state').at(-1)?.data.state === 'ready');

  const began = Date.now();
  const restarted = await api(bridge, 'POST', '/sessions/shop-1/restart', {});
  assert.equal(restarted.status, 200);
  assert.deepEqual(Object.keys(restarted.body).sort(), ['phone', 'reason', 'session', 'since', 'state']);
  assert.equal(restarted.body.session, 'shop-1');
  assert.equal(restarted.body.phone, '+15551234567', 'the paired phone is kept');
  assert.deepEqual(old.calls, ['start', 'stop'], 'stopped, not logged out');
  assert.equal(bridge.factory.all('shop-1').length, 2);
  assert.ok(await exists(join(old.dataDir, 'creds.json')), 'credentials kept');
  await reaches(bridge, 'shop-1', 'ready'); // the new driver resumed from them
  assert.ok(Date.now() - began < 2000, 'no backoff before the new driver');
  assert.equal(bridge.factory.latest('shop-1').qrCount, 0, 'no new QR');
  await waitFor(() => dashd.events('state').length === 7, { what: 'the states of the restart' });
  const states = dashd.events('state').map((e) => e.data.state);
  assert.deepEqual(states.slice(3), ['ready', 'initializing', 'authenticated', 'ready']);

  // Events of the stopped driver are ignored.
  old.receive({ message_id: 'GHOST' });
  old.disconnect('late');
  await sleep(30);
  assert.equal((await status(bridge, 'shop-1')).state, 'ready');
  assert.ok(!dashd.events('message').some((e) => e.data.message_id === 'GHOST'));
});

test('restart resets the count of reconnection attempts', async (t) => {
  let disconnectsLeft = 2;
  const factory = testDriverFactory({
    onStart: (driver) => {
      if (disconnectsLeft-- > 0) driver.disconnect('network unreachable');
      // then: connecting, silently
    },
  });
  const bridge = await startBridge(t, { factory, reconnectMaxAttempts: 2 });
  await api(bridge, 'POST', '/sessions/shop-1/start', {});
  await waitFor(() => factory.all('shop-1').length === 3, { what: 'two reconnections' });
  assert.equal((await status(bridge, 'shop-1')).state, 'disconnected');
  // One more loss would end in failed (3 > 2); a restart gives it its attempts back.
  assert.equal((await api(bridge, 'POST', '/sessions/shop-1/restart', {})).status, 200);
  await waitFor(() => factory.all('shop-1').length === 4);
  factory.latest('shop-1').disconnect('again');
  await waitFor(() => factory.all('shop-1').length === 5, { what: 'a reconnection, not failed' });
  factory.latest('shop-1').disconnect('and again');
  await waitFor(() => factory.all('shop-1').length === 6, { what: 'a second reconnection' });
  assert.equal((await status(bridge, 'shop-1')).state, 'disconnected');
  factory.latest('shop-1').disconnect('once too often');
  await reaches(bridge, 'shop-1', 'failed');
  assert.match((await status(bridge, 'shop-1')).reason, /gave up reconnecting after 2 attempts/);
});

test('restart starts a logged-out or failed session again, like start; an unknown one is 404', async (t) => {
  const bridge = await startBridge(t);
  for (const name of ['unpaired', 'broken']) await api(bridge, 'POST', `/sessions/${name}/start`, {});
  await waitFor(() => ['unpaired', 'broken'].every((n) => bridge.factory.latest(n)?.qrCount === 1));
  await bridge.factory.latest('unpaired').pair('15550000000');
  bridge.factory.latest('unpaired').logoutFromPhone('LOGOUT');
  await bridge.factory.latest('broken').pair('15551111111');
  bridge.factory.latest('broken').fail('auth_failure');
  await reaches(bridge, 'broken', 'failed');

  const unpaired = await api(bridge, 'POST', '/sessions/unpaired/restart', {});
  assert.deepEqual([unpaired.status, unpaired.body.state, unpaired.body.phone], [200, 'initializing', null]);
  await waitFor(() => bridge.factory.all('unpaired').length === 2 && bridge.factory.latest('unpaired').qrCount === 1, { what: 'a fresh QR' });
  const broken = await api(bridge, 'POST', '/sessions/broken/restart', {});
  assert.equal(broken.status, 200);
  await reaches(bridge, 'broken', 'ready'); // from the kept credentials
  assert.equal(bridge.factory.all('broken').length, 2);

  const unknown = await api(bridge, 'POST', '/sessions/nobody/restart', {});
  assert.deepEqual([unknown.status, unknown.body.error.code], [404, 'session_not_found']);
  assert.equal((await api(bridge, 'GET', '/status/nobody')).status, 404, 'nothing was created');
  const wrongMethod = await api(bridge, 'GET', '/sessions/broken/restart');
  assert.deepEqual([wrongMethod.status, wrongMethod.headers.allow], [405, 'POST']);
});

test('restart with a pairing phone hands it to the new driver', async (t) => {
  const bridge = await startBridge(t);
  await api(bridge, 'POST', '/sessions/shop-1/start', {});
  await waitFor(() => bridge.factory.latest('shop-1')?.qrCount === 1);
  assert.equal(bridge.factory.latest('shop-1').context.pairingPhone, null);
  const bad = await api(bridge, 'POST', '/sessions/shop-1/restart', { pairing_phone: '12@lid' });
  assert.deepEqual([bad.status, bad.body.error.code], [400, 'invalid_request']);
  assert.equal(bridge.factory.all('shop-1').length, 1, 'a refused restart restarts nothing');
  const answer = await api(bridge, 'POST', '/sessions/shop-1/restart', { pairing_phone: '+15551234567' });
  assert.equal(answer.status, 200);
  const driver = await waitFor(() => bridge.factory.all('shop-1').length === 2 && bridge.factory.latest('shop-1'));
  assert.equal(driver.context.pairingPhone, '15551234567');
  driver.emit('pairing_code', { code: 'ABCD-EFGH' });
  assert.equal((await status(bridge, 'shop-1')).pairing_code, 'ABCD-EFGH');
  // A later restart without one goes back to QR codes.
  await api(bridge, 'POST', '/sessions/shop-1/restart', {});
  const next = await waitFor(() => bridge.factory.all('shop-1').length === 3 && bridge.factory.latest('shop-1'));
  assert.equal(next.context.pairingPhone, null);
  assert.equal((await status(bridge, 'shop-1')).pairing_code, undefined, 'the old code is gone');
});
