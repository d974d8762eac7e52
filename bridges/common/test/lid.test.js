// The LID ↔ phone map: fed by lid_mapping events and by messages that carry both
// identifiers, kept on disk, and applied to message events.

import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { LidMap } from '../src/lid.js';
import { api, fakeDashd, startBridge, tempDir, waitFor } from './helpers/harness.js';

test('the map normalises both sides and follows a number change', async (t) => {
  const map = new LidMap({ dataDir: await tempDir(t) });
  await map.load();
  assert.equal(map.learn('12345678901234:7@lid', '15551234567@s.whatsapp.net'), true);
  assert.equal(map.learn('12345678901234@lid', '+15551234567'), false, 'the same pair');
  assert.equal(map.phoneOf('12345678901234@lid'), '+15551234567');
  assert.equal(map.phoneOf('12345678901234:3@lid'), '+15551234567');
  assert.equal(map.lidOf('15551234567@c.us'), '12345678901234@lid');
  assert.equal(map.lidOf('15551234567'), '12345678901234@lid');
  // Unusable input changes nothing: a LID is never taken as a phone.
  assert.equal(map.learn('15551234567@c.us', '15550000000'), false);
  assert.equal(map.learn('12345678901234@lid', '12345678901234@lid'), false);
  assert.equal(map.learn(undefined, '15551234567'), false);
  // The LID's user changes number.
  assert.equal(map.learn('12345678901234@lid', '15559999999'), true);
  assert.equal(map.phoneOf('12345678901234@lid'), '+15559999999');
  assert.equal(map.lidOf('15551234567'), null);
  assert.equal(map.size, 1);
});

test('mappings are persisted and applied to messages, across a restart', async (t) => {
  const dataDir = await tempDir(t);
  const dashd = await fakeDashd(t);
  const first = await startBridge(t, { dataDir, dashdUrl: dashd.url });
  await api(first, 'POST', '/sessions/shop-1/start', {});
  const driver = await waitFor(() => first.factory.latest('shop-1')?.qrCount === 1 && first.factory.latest('shop-1'));
  await driver.pair();
  driver.emit('lid_mapping', { lid: '11111111111111@lid', phone: '15551111111' });
  // A message carrying both identifiers teaches the map too (Baileys' remoteJidAlt).
  driver.receive({ message_id: 'M0', chat_id: '22222222222222@lid', phone: '15552222222@s.whatsapp.net' });
  await waitFor(() => dashd.events('message').length === 1);
  await first.close();

  const stored = JSON.parse(await readFile(join(dataDir, 'lid-map.json'), 'utf8'));
  assert.deepEqual(stored.lid_to_phone, { '11111111111111@lid': '15551111111', '22222222222222@lid': '15552222222' });

  const second = await startBridge(t, { dataDir, dashdUrl: dashd.url });
  const resumed = await waitFor(() => second.factory.latest('shop-1'));
  await waitFor(async () => (await api(second, 'GET', '/status/shop-1')).body.state === 'ready');
  resumed.receive({ message_id: 'M1', chat_id: '11111111111111@lid' }); // a LID chat: phone added
  resumed.receive({ message_id: 'M2', chat_id: '15552222222@c.us' }); // a phone chat: LID added
  resumed.receive({ message_id: 'M3', chat_id: '33333333333333@lid' }); // unknown: nothing added
  resumed.receive({ message_id: 'M4', chat_id: '15551111111@s.whatsapp.net', lid: '44444444444444@lid' }); // the library's own LID wins
  await waitFor(() => dashd.events('message').length === 5);
  const byId = Object.fromEntries(dashd.events('message').map((e) => [e.data.message_id, e.data]));
  assert.deepEqual([byId.M0.phone, byId.M0.lid], ['+15552222222', null]);
  assert.deepEqual([byId.M1.phone, byId.M1.lid], ['+15551111111', null]);
  assert.deepEqual([byId.M2.phone, byId.M2.lid], [null, '22222222222222@lid']);
  assert.deepEqual([byId.M3.phone, byId.M3.lid], [null, null]);
  assert.deepEqual([byId.M4.phone, byId.M4.lid], [null, '44444444444444@lid']);
  assert.equal(second.lids.phoneOf('44444444444444@lid'), '+15551111111', 'and it learns from it');
});

test('a corrupt map file stops the bridge instead of silently forgetting', async (t) => {
  const dataDir = await tempDir(t);
  const { writeFile } = await import('node:fs/promises');
  await writeFile(join(dataDir, 'lid-map.json'), '{"version":1,"lid_to_phone":');
  const map = new LidMap({ dataDir });
  await assert.rejects(map.load(), /lid-map\.json is not valid JSON/);
});

test('a new or changed pair is posted as a lid_mapping event; a known one is not', async (t) => {
  const dashd = await fakeDashd(t);
  const bridge = await startBridge(t, { dashdUrl: dashd.url });
  await api(bridge, 'POST', '/sessions/shop-1/start', {});
  const driver = await waitFor(() => bridge.factory.latest('shop-1')?.qrCount === 1 && bridge.factory.latest('shop-1'));
  await driver.pair();
  const pairs = () => dashd.events('lid_mapping', 'shop-1').map((e) => e.data);

  driver.emit('lid_mapping', { lid: '12345678901234:7@lid', phone: '15551234567@s.whatsapp.net' });
  await waitFor(() => pairs().length === 1, { what: 'the first lid_mapping' });
  assert.deepEqual(pairs()[0], { lid: '12345678901234@lid', phone: '+15551234567' });
  driver.emit('lid_mapping', { lid: '12345678901234@lid', phone: '+15551234567' }); // known
  driver.emit('lid_mapping', { lid: '15551234567@c.us', phone: '15551234567' }); // unusable
  driver.emit('lid_mapping', { lid: '12345678901234@lid', phone: '15559999999' }); // the number changed
  await waitFor(() => pairs().length === 2, { what: 'the changed pair' });
  assert.deepEqual(pairs()[1], { lid: '12345678901234@lid', phone: '+15559999999' });

  // A message carrying both identifiers: the pair is posted before the message, once.
  driver.receive({ message_id: 'M1', chat_id: '22222222222222@lid', phone: '15552222222@s.whatsapp.net' });
  driver.receive({ message_id: 'M2', chat_id: '22222222222222@lid', phone: '15552222222@s.whatsapp.net' });
  driver.receive({ message_id: 'M3', chat_id: '15553333333@c.us', lid: '33333333333333@lid' });
  await waitFor(() => dashd.events('message').length === 3);
  await waitFor(() => pairs().length === 4);
  const order = dashd.received
    .filter((e) => e.event === 'lid_mapping' || e.event === 'message')
    .map((e) => (e.event === 'message' ? e.data.message_id : `${e.data.lid}=${e.data.phone}`));
  assert.deepEqual(order.slice(2), ['22222222222222@lid=+15552222222', 'M1', 'M2', '33333333333333@lid=+15553333333', 'M3']);
  // Signed and delivered like every other event (the fake dashd acknowledges only verified ones).
  assert.ok(dashd.attempts.filter((a) => a.body?.event === 'lid_mapping').every((a) => a.verified));
  await new Promise((resolve) => setTimeout(resolve, 50));
  assert.equal(pairs().length, 4, 'nothing posted twice');
});
