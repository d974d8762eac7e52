// The venom driver: the package loads, the pure mappings (fixtures from
// ../shared/vectors/bridges.json › venom_bot, the venom 5.3.0 types otherwise) and, with
// VENOM_LIVE=1, a real session start in Debian's Chromium.

import assert from 'node:assert/strict';
import childProcess from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { createServer } from 'node:http';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import {
  ackOf,
  chromiumArgs,
  chromiumEnv,
  driverFactory,
  isUnknownQuote,
  jidText,
  lidMappingOf,
  mediaPayload,
  normaliseVenomMessage,
  phoneOfHost,
  profileDir,
  quietVenom,
  reasonOf,
  sendErrorOf,
  STATE_OF_STATUS,
  sentMessageId,
  stateOfSocketState,
  stateOfStatus,
  toJid,
  venomOptions,
} from '../src/driver.js';

// ../shared/vectors/bridges.json › venom_bot › message_example_constructed (verbatim).
const EXAMPLE = {
  id: 'false_554199999999@c.us_3EB0B4B1C2D3E4F5A6B7',
  body: 'Hi',
  type: 'chat',
  t: 1591482682,
  notifyName: 'Maria',
  from: '554199999999@c.us',
  to: '554188888888@c.us',
  fromMe: false,
  author: null,
  ack: 1,
  isNewMsg: true,
  broadcast: false,
  isForwarded: false,
  timestamp: 1591482682,
  content: 'Hi',
  isGroupMsg: false,
  isMMS: false,
  isMedia: false,
  chatId: '554199999999@c.us',
  sender: { id: '554199999999@c.us', pushname: 'Maria', isMe: false, isMyContact: false },
};

// ../shared/vectors/bridges.json › venom_bot › statusFind › values (verbatim).
const STATUS_VALUES = [
  'isLogged', 'notLogged', 'browserClose', 'qrReadSuccess', 'qrReadFail', 'autocloseCalled', 'desconnectedMobile',
  'serverClose', 'deleteToken', 'chatsAvailable', 'deviceNotConnected', 'serverWssNotConnected', 'noOpenBrowser',
  'initBrowser', 'openBrowser', 'connectBrowserWs', 'initWhatsapp', 'erroPageWhatsapp', 'successPageWhatsapp',
  'waitForLogin', 'waitChat', 'successChat', 'phoneNotConnected', 'introductionHistory', 'desconnected',
];

/** A message in the shape venom's _serializeMessageObj gives (the Message interface). @param {Record<string, any>} fields */
const message = (fields) => ({ ...EXAMPLE, ...fields });

test('the package loads: venom-bot, puppeteer-core and the common runBridge', async () => {
  const venom = (await import('venom-bot')).default;
  assert.equal(typeof venom.create, 'function');
  assert.equal(venom.AckType.READ, 3);
  assert.equal(venom.AckType.FAILED, -1);
  const puppeteer = (await import('puppeteer-core')).default;
  assert.equal(typeof puppeteer.launch, 'function');
  const common = await import('@dashoffice/bridge-common');
  assert.equal(typeof common.runBridge, 'function');
  assert.equal(typeof driverFactory, 'function');
  const require = createRequire(import.meta.url);
  assert.equal(JSON.parse(readFileSync(require.resolve('venom-bot/package.json'), 'utf8')).version, '5.3.0');
});

test('quietVenom replaces the update check and the spinners at the points venom calls them', async () => {
  const require = createRequire(import.meta.url);
  const updates = require('venom-bot/dist/controllers/check-up-to-date.js');
  const spinners = require('venom-bot/dist/utils/spinnies.js');
  assert.equal(typeof updates.checkUpdates, 'function', 'venom moved its update check: re-check quietVenom');
  assert.equal(typeof spinners.getSpinnies, 'function', 'venom moved its spinners: re-check quietVenom');
  const initializer = readFileSync(require.resolve('venom-bot/dist/controllers/initializer.js'), 'utf8');
  assert.match(initializer, /\(0, check_up_to_date_1\.checkUpdates\)\(\)/);
  quietVenom();
  quietVenom();
  const started = Date.now();
  assert.equal(await updates.checkUpdates(), undefined);
  assert.ok(Date.now() - started < 100, 'the update check must not reach the registry');
  const sink = spinners.getSpinnies({ disableSpins: true });
  sink.add('browser-s1', { text: 'Waiting... checking the browser...' });
  sink.succeed('browser-s1', { text: 'Browser successfully opened' });
  assert.equal(sink.pick('browser-s1').text, 'Browser successfully opened');
  assert.throws(() => sink.pick('unknown'));
});

test('statusFind: every value venom 5.3.0 documents, as docs/bridges.md maps it', () => {
  /** @type {Record<string, string | null>} */
  const expected = {
    initBrowser: 'initializing',
    openBrowser: 'initializing',
    connectBrowserWs: 'initializing',
    initWhatsapp: 'initializing',
    successPageWhatsapp: 'initializing',
    waitForLogin: 'initializing',
    notLogged: 'qr',
    qrReadSuccess: 'authenticated',
    isLogged: 'authenticated',
    waitChat: 'authenticated',
    successChat: 'ready',
    chatsAvailable: 'ready',
    browserClose: 'disconnected',
    desconnectedMobile: 'disconnected',
    serverClose: 'disconnected',
    desconnected: 'disconnected',
    phoneNotConnected: 'disconnected',
    serverWssNotConnected: 'disconnected',
    deleteToken: 'logged_out',
    qrReadFail: 'failed',
    autocloseCalled: 'failed',
    erroPageWhatsapp: 'disconnected',
    noOpenBrowser: 'failed',
    deviceNotConnected: null,
    introductionHistory: null,
  };
  assert.deepEqual(Object.keys(expected).sort(), [...STATUS_VALUES].sort());
  for (const status of STATUS_VALUES) assert.equal(stateOfStatus(status), expected[status], status);
  assert.equal(stateOfStatus('somethingNew'), null);
  assert.equal(stateOfStatus('toString'), null);
  assert.equal(stateOfStatus(undefined), null);
  assert.equal(reasonOf('erroPageWhatsapp', 'net::ERR_NAME_NOT_RESOLVED at https://web.whatsapp.com/'), 'erroPageWhatsapp: net::ERR_NAME_NOT_RESOLVED at https://web.whatsapp.com/');
  assert.equal(reasonOf('browserClose', null), 'browserClose');
});

test('every statusFind value the installed venom sends is mapped', () => {
  const require = createRequire(import.meta.url);
  const dist = join(require.resolve('venom-bot/package.json'), '..', 'dist');
  const sent = new Set();
  for (const file of ['controllers/initializer.js', 'api/layers/host.layer.js', 'api/helpers/closes-browser.js']) {
    for (const line of readFileSync(join(dist, file), 'utf8').split('\n')) {
      if (line.trim().startsWith('//')) continue;
      for (const match of line.matchAll(/(?:statusFind|callStatus)\)?\(?\s*\(?'(\w+)'/g)) sent.add(match[1]);
    }
  }
  assert.ok(sent.size >= 20, `found only ${[...sent]}`);
  for (const status of sent) assert.ok(Object.hasOwn(STATE_OF_STATUS, status), `venom sends ${status}, which the driver does not know`);
  for (const status of sent) assert.ok(STATUS_VALUES.includes(status), `${status} is not among the documented values`);
});

test('WhatsApp Web socket states: UNPAIRED after a login is a logout', () => {
  assert.equal(stateOfSocketState('UNPAIRED', true), 'logged_out');
  assert.equal(stateOfSocketState('UNPAIRED_IDLE', true), 'logged_out');
  assert.equal(stateOfSocketState('UNPAIRED', false), null); // a new session before its first scan
  assert.equal(stateOfSocketState('CONFLICT', true), 'disconnected');
  assert.equal(stateOfSocketState('DEPRECATED_VERSION', true), 'failed');
  assert.equal(stateOfSocketState('TOS_BLOCK', false), 'failed');
  for (const state of ['CONNECTED', 'OPENING', 'PAIRING', 'SYNCING', 'RESUMING', 'TIMEOUT']) assert.equal(stateOfSocketState(state, true), null);
});

test('the venom example message (bridges.json)', () => {
  assert.deepEqual(normaliseVenomMessage(EXAMPLE), {
    message_id: 'false_554199999999@c.us_3EB0B4B1C2D3E4F5A6B7',
    chat_id: '554199999999@c.us',
    sender_id: '554199999999@c.us',
    phone: null,
    lid: null,
    from_me: false,
    timestamp_s: 1591482682,
    type: 'chat',
    text: 'Hi',
    has_media: false,
    media: null,
    reply_id: null,
    location: null,
    push_name: 'Maria',
    is_group: false,
  });
});

test('from-me messages, Wid objects and missing fields', () => {
  const mine = normaliseVenomMessage(
    message({
      id: 'true_554199999999@c.us_3EB0FFFF',
      fromMe: true,
      from: '554188888888@c.us',
      to: '554199999999@c.us',
      chatId: { server: 'c.us', user: '554199999999', _serialized: '554199999999@c.us' },
      sender: { id: { server: 'c.us', user: '554188888888', _serialized: '554188888888@c.us' }, pushname: 'Shop', isMe: true },
      notifyName: undefined,
    }),
  );
  assert.equal(mine?.from_me, true);
  assert.equal(mine?.chat_id, '554199999999@c.us');
  assert.equal(mine?.sender_id, '554188888888@c.us');
  assert.equal(mine?.push_name, 'Shop');
  const noChatId = normaliseVenomMessage(message({ chatId: undefined, sender: null }));
  assert.equal(noChatId?.chat_id, '554199999999@c.us');
  assert.equal(noChatId?.sender_id, '554199999999@c.us');
  const secondsFromTimestamp = normaliseVenomMessage(message({ t: undefined, timestamp: 1700000000 }));
  assert.equal(secondsFromTimestamp?.timestamp_s, 1700000000);
  assert.equal(normaliseVenomMessage(message({ id: undefined })), null);
  assert.equal(normaliseVenomMessage(message({ chatId: undefined, from: undefined })), null);
  assert.equal(normaliseVenomMessage(null), null);
  assert.equal(jidText({ user: '1555', server: 'c.us' }), '1555@c.us');
  assert.equal(jidText(42), null);
});

test('media, captions, locations, buttons, lists, groups, notifications', () => {
  const thumbnail = '/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAYEBQYFBAYGBQYGBwcGBwgKCggJCQgKFA';
  const image = normaliseVenomMessage(message({ type: 'image', body: thumbnail, caption: 'see the photo', isMedia: true, isMMS: true, mimetype: 'image/jpeg' }));
  assert.equal(image?.text, 'see the photo');
  assert.equal(image?.has_media, true);
  assert.deepEqual(image?.media, { kind: 'image', mime_type: 'image/jpeg', caption: 'see the photo', filename: null });
  const uncaptioned = normaliseVenomMessage(message({ type: 'image', body: thumbnail, caption: undefined, isMedia: true, mimetype: 'image/jpeg' }));
  assert.equal(uncaptioned?.text, '');
  const doc = normaliseVenomMessage(message({ type: 'document', body: '', isMedia: false, isMMS: true, mimetype: 'application/pdf', filename: 'menu.pdf' }));
  assert.deepEqual(doc?.media, { kind: 'document', mime_type: 'application/pdf', caption: null, filename: 'menu.pdf' });
  assert.equal(doc?.has_media, true);
  assert.equal(normaliseVenomMessage(message({ type: 'ptt', isMedia: true, mimetype: 'audio/ogg; codecs=opus' }))?.media?.kind, 'audio');
  assert.equal(normaliseVenomMessage(message({ type: 'sticker', isMedia: true, mimetype: 'image/webp' }))?.media?.kind, 'image');
  assert.equal(normaliseVenomMessage(message({ type: 'video', isMedia: true, mimetype: 'video/mp4' }))?.media?.kind, 'video');

  const location = normaliseVenomMessage(message({ type: 'location', body: thumbnail, lat: -25.4284, lng: -49.2733, loc: 'Shop\nRua XV, 100' }));
  assert.equal(location?.text, '');
  assert.deepEqual(location?.location, { latitude: -25.4284, longitude: -49.2733, name: 'Shop', address: 'Rua XV, 100' });
  assert.equal(normaliseVenomMessage(message({ type: 'location', lat: undefined }))?.location, null);

  assert.equal(normaliseVenomMessage(message({ type: 'buttons_response', body: 'Yes', selectedButtonId: 'yes' }))?.reply_id, 'yes');
  const row = normaliseVenomMessage(message({ type: 'list_response', body: 'Row 2', listResponse: { singleSelectReply: { selectedRowId: 'row-2' } } }));
  assert.equal(row?.reply_id, 'row-2');
  assert.equal(row?.text, 'Row 2');

  const group = normaliseVenomMessage(
    message({ chatId: '120363025246125888@g.us', from: '120363025246125888@g.us', author: '554177777777@c.us', isGroupMsg: true }),
  );
  assert.equal(group?.is_group, true);
  assert.equal(group?.sender_id, '554177777777@c.us');
  assert.equal(normaliseVenomMessage(message({ type: 'e2e_notification', isNotification: true })), null);
  assert.equal(normaliseVenomMessage(message({ type: 'gp2', isNotification: true })), null);
  assert.equal(normaliseVenomMessage(message({ type: 'revoked' })), null);
});

test('a LID chat takes the phone WhatsApp Web gives, and teaches the LID mapping', () => {
  const withPhone = normaliseVenomMessage(
    message({
      chatId: '12345678901234@lid',
      from: '12345678901234@lid',
      sender: { id: '12345678901234@lid', pushname: 'Maria', phoneNumber: { server: 'c.us', user: '554199999999', _serialized: '554199999999@c.us' } },
    }),
  );
  assert.equal(withPhone?.chat_id, '12345678901234@lid');
  assert.equal(withPhone?.phone, '554199999999');
  assert.deepEqual(withPhone && lidMappingOf(withPhone), { lid: '12345678901234@lid', phone: '554199999999' });
  const without = normaliseVenomMessage(message({ chatId: '12345678901234@lid', from: '12345678901234@lid', sender: { id: '12345678901234@lid' } }));
  assert.equal(without?.phone, null);
  assert.equal(without && lidMappingOf(without), null);
  assert.equal(lidMappingOf({ chat_id: '554199999999@c.us', phone: '554199999999' }), null);
});

test('acks: whatsapp-web.js numbers, failures named, receipts of received messages dropped', () => {
  const key = { fromMe: true, remote: { server: 'c.us', user: '554199999999', _serialized: '554199999999@c.us' }, id: '3EB0C767D26B8E1F2A4B', _serialized: 'true_554199999999@c.us_3EB0C767D26B8E1F2A4B' };
  // The Ack interface of venom 5.3.0 (src/api/model/ack.ts): a WhatsApp Web message with `id: Id`.
  const payload = { id: key, body: 'Hello!', type: 'chat', t: 1767225600, from: '554188888888@c.us', to: '554199999999@c.us', self: 'out', ack: 2, isNewMsg: true };
  assert.deepEqual(ackOf(payload), { id: 'true_554199999999@c.us_3EB0C767D26B8E1F2A4B', ack: 2, chat_id: '554199999999@c.us' });
  for (const [ack, expected] of [[0, 0], [1, 1], [3, 3], [4, 4]]) assert.equal(ackOf({ ...payload, ack })?.ack, expected);
  assert.deepEqual(ackOf({ ...payload, ack: -1 })?.error, { code: 'failed', message: 'WhatsApp Web reported FAILED (ack -1)' });
  const tooBig = ackOf({ ...payload, ack: -4 });
  assert.equal(tooBig?.ack, -1);
  assert.equal(tooBig?.error?.code, 'content_too_big');
  assert.equal(ackOf({ ...payload, id: { ...key, fromMe: false, _serialized: 'false_554199999999@c.us_X' } }), null);
  assert.equal(ackOf({ ...payload, ack: undefined }), null);
  assert.equal(ackOf({ ...payload, ack: 5 }), null);
  assert.equal(ackOf({ id: 'true_554199999999@c.us_ABC', ack: 3, to: '554199999999@c.us' })?.chat_id, '554199999999@c.us');
  assert.equal(ackOf({}), null);
});

test('JIDs: digits to c.us, LIDs through, the rest refused', () => {
  assert.equal(toJid('15551234567'), '15551234567@c.us');
  assert.equal(toJid('+15551234567'), '15551234567@c.us');
  assert.equal(toJid('12345678901234@lid'), '12345678901234@lid');
  for (const bad of ['hello', '120363025246125888@g.us', '15551234567@c.us', '', 15551234567]) {
    assert.throws(() => toJid(bad), (err) => /** @type {any} */ (err).code === 'invalid_recipient', String(bad));
  }
  assert.equal(phoneOfHost({ id: { server: 'c.us', user: '15551234567', _serialized: '15551234567@c.us' }, pushname: 'Shop' }), '15551234567');
  assert.equal(phoneOfHost('15551234567:3@c.us'), '15551234567');
  assert.equal(phoneOfHost({ id: '12345678901234@lid' }), null);
  assert.equal(phoneOfHost(undefined), null);
});

test('send results and errors', () => {
  // WAPI.scope(newMsgKey, false, 'OK', text) merged with {type, text}: `to` is the new message's key.
  const sent = { me: { id: '15550000000@c.us' }, to: { fromMe: true, remote: '554199999999@c.us', id: '3EB0AA', _serialized: 'true_554199999999@c.us_3EB0AA' }, erro: false, text: 'Hello!', status: 'OK', type: 'sendText' };
  assert.equal(sentMessageId(sent), 'true_554199999999@c.us_3EB0AA');
  assert.equal(sentMessageId({ to: '554199999999@c.us', erro: false }), null);
  assert.equal(sentMessageId(undefined), null);
  const missing = sendErrorOf({ me: {}, to: '554199999999@c.us', erro: true, text: 'The number does not exist', status: 404 });
  assert.equal(missing.code, 'invalid_recipient');
  assert.equal(missing.message, 'The number does not exist');
  assert.equal(sendErrorOf({ erro: true, text: 'The message was not sent', status: null }).code, 'internal');
  assert.equal(sendErrorOf(new Error('sendText did not answer within 60 s')).code, 'internal');
  assert.equal(sendErrorOf('Protocol error: Target closed').code, 'internal');
  const quote = { erro: true, status: 404, text: 'The id false_554199999999@c.us_X does not exist!' };
  assert.equal(isUnknownQuote(quote), true);
  assert.equal(sendErrorOf(quote).code, 'internal');
  assert.equal(isUnknownQuote(missing.cause), false);
});

test('sendMedia payloads: data URLs, captions, kinds', () => {
  const bytes = Buffer.from('png bytes');
  const image = mediaPayload({ kind: 'image', caption: 'menu', filename: null, mimeType: null }, { data: bytes, mimeType: 'image/png', filename: 'menu.png' });
  assert.deepEqual(image, { method: 'image', dataUrl: `data:image/png;base64,${bytes.toString('base64')}`, filename: 'menu.png', caption: 'menu', mimeType: 'image/png' });
  const doc = mediaPayload({ kind: 'document', caption: null, filename: 'a.pdf', mimeType: 'application/pdf' }, { data: bytes, mimeType: 'application/octet-stream', filename: null });
  assert.equal(doc.method, 'file');
  assert.equal(doc.caption, '');
  assert.ok(doc.dataUrl.startsWith('data:application/pdf;base64,'));
  const audio = mediaPayload({ kind: 'audio', caption: 'dropped', filename: null, mimeType: 'audio/ogg; codecs=opus' }, { data: bytes, mimeType: null, filename: null });
  assert.deepEqual([audio.method, audio.caption, audio.filename, audio.mimeType], ['file', '', 'audio', 'audio/ogg']);
  const odd = mediaPayload({ kind: 'video', caption: null, filename: null, mimeType: null }, { data: bytes, mimeType: 'video/x_weird', filename: null });
  assert.equal(odd.mimeType, 'application/octet-stream');
  const notAnImage = mediaPayload({ kind: 'image', caption: null, filename: null, mimeType: null }, { data: bytes, mimeType: 'text/html', filename: null });
  assert.equal(notAnImage.method, 'file');
  assert.throws(() => mediaPayload({ kind: 'sticker', caption: null, filename: null, mimeType: null }, { data: bytes, mimeType: null, filename: null }), (err) => /** @type {any} */ (err).code === 'invalid_request');
});

test('venom options keep the profile in dataDir and never let venom pick a browser', () => {
  const options = venomOptions({ session: 'shop-1', dataDir: '/data/sessions/shop-1', chromiumPath: '/usr/bin/chromium', browserWS: 'ws://127.0.0.1:9/devtools/browser/x' });
  assert.equal(options.mkdirFolderToken, '/data/sessions/shop-1');
  assert.equal(options.folderNameToken, 'tokens');
  assert.equal(options.browserPathExecutable, '/usr/bin/chromium');
  assert.equal(options.browserWS, 'ws://127.0.0.1:9/devtools/browser/x');
  assert.equal(options.autoClose, 0);
  assert.equal(options.headless, 'new');
  assert.equal(options.logQR, false);
  assert.equal(options.disableWelcome, true);
  assert.equal('webVersion' in options, false);
  assert.equal(venomOptions({ session: 's', dataDir: '/d', chromiumPath: '/c', browserWS: 'ws://x', webVersion: '2.3000.1012170943' }).webVersion, '2.3000.1012170943');
  assert.equal(profileDir('/data/sessions/shop-1', 'shop-1'), '/data/sessions/shop-1/tokens/shop-1');
  assert.deepEqual(chromiumArgs({ root: true }).slice(0, 2), ['--no-sandbox', '--disable-setuid-sandbox']);
  assert.equal(chromiumArgs({ root: false }).includes('--no-sandbox'), false);
  const env = chromiumEnv({ HOME: '/root', PATH: '/usr/bin' }, '/data/sessions/shop-1');
  assert.deepEqual(env, { HOME: '/root', PATH: '/usr/bin', XDG_CONFIG_HOME: '/data/sessions/shop-1/chromium-config', GSETTINGS_BACKEND: 'memory' });
});

test('send before start answers session_not_ready', async () => {
  const driver = driverFactory({ session: 's', dataDir: tmpdir(), emit: () => {}, library: 'venom', pairingPhone: null, chromiumPath: '', log: console });
  await assert.rejects(driver.send({ to: '15551234567', text: 'x', replyTo: null }), (err) => /** @type {any} */ (err).code === 'session_not_ready');
  await assert.rejects(
    driver.sendMedia({ to: '15551234567', kind: 'image', url: 'http://127.0.0.1:9/a.png', caption: null, filename: null, mimeType: null }),
    (err) => /** @type {any} */ (err).code === 'session_not_ready',
  );
  await driver.stop();
});

test('a missing Chromium fails the start for the operator (venom is never asked to find one)', async () => {
  const dataDir = await mkdtemp(join(tmpdir(), 'venom-nochrome-'));
  try {
    const driver = driverFactory({ session: 's', dataDir, emit: () => {}, library: 'venom', pairingPhone: null, chromiumPath: join(dataDir, 'no-chromium'), log: console });
    await assert.rejects(driver.start(), (err) => /** @type {any} */ (err).fatal === true && /no Chromium at/.test(/** @type {Error} */ (err).message));
    await driver.stop();
    assert.deepEqual(readdirSync(dataDir), []);
  } finally {
    await rm(dataDir, { recursive: true, force: true });
  }
});

// ---------------------------------------------------------------------------------------
// The driver's wiring, with venom's create() and the browser scripted (no Chromium).

/** A stand-in for puppeteer's Browser and its first page. */
function fakeBrowser() {
  /** @type {Map<string, Function>} */
  const pageHandlers = new Map();
  const mainFrame = {};
  const page = {
    on: (/** @type {string} */ event, /** @type {Function} */ fn) => pageHandlers.set(event, fn),
    mainFrame: () => mainFrame,
  };
  const browser = {
    closed: false,
    /** @type {Record<string, unknown> | null} */
    launchOptions: null,
    page,
    pageHandlers,
    mainFrame,
    on: () => browser,
    pages: async () => [page],
    wsEndpoint: () => 'ws://127.0.0.1:1/devtools/browser/fake',
    process: () => null,
    close: async () => {
      browser.closed = true;
    },
  };
  return browser;
}

/** A stand-in for venom's Whatsapp client: listeners kept, senders scripted. */
function fakeClient() {
  /** @type {Record<string, Function>} */
  const on = {};
  /** @type {{method: string, args: any[]}[]} */
  const calls = [];
  const key = (/** @type {string} */ jid, /** @type {string} */ id) => ({ to: { fromMe: true, remote: jid, id, _serialized: `true_${jid}_${id}` }, erro: false, status: 'OK' });
  return {
    on,
    calls,
    onMessage: (/** @type {Function} */ fn) => (on.message = fn),
    onAnyMessage: (/** @type {Function} */ fn) => (on.any = fn),
    onAck: (/** @type {Function} */ fn) => (on.ack = fn),
    onStateChange: (/** @type {Function} */ fn) => (on.state = fn),
    getHostDevice: async () => ({ id: { server: 'c.us', user: '15550001111', _serialized: '15550001111@c.us' }, pushname: 'Shop' }),
    sendText: async (/** @type {string} */ jid, /** @type {string} */ text) => {
      calls.push({ method: 'sendText', args: [jid, text] });
      if (jid === '15559999999@c.us') throw { to: jid, erro: true, status: 404, text: 'The number does not exist' };
      return key(jid, 'T1');
    },
    reply: async (/** @type {string} */ jid, /** @type {string} */ text, /** @type {string} */ quoted) => {
      calls.push({ method: 'reply', args: [jid, text, quoted] });
      if (quoted === 'unknown') throw { erro: true, status: 404, text: `The id ${quoted} does not exist!` };
      return key(jid, 'R1');
    },
    sendImageFromBase64: async (/** @type {any[]} */ ...args) => {
      calls.push({ method: 'sendImageFromBase64', args });
      return key(args[0], 'I1');
    },
    sendFileFromBase64: async (/** @type {any[]} */ ...args) => {
      calls.push({ method: 'sendFileFromBase64', args });
      return key(args[0], 'F1');
    },
    decryptFile: async () => Buffer.from('jpeg bytes'),
    downloadMedia: async () => 'data:image/jpeg;base64,',
    logout: async () => calls.push({ method: 'logout', args: [] }),
  };
}

/** A driver over the stand-ins; `script(options, interfaceChange)` plays venom's create(). */
async function scriptedDriver(/** @type {(options: any, interfaceChange: Function) => Promise<any>} */ script, overrides = {}) {
  const dataDir = await mkdtemp(join(tmpdir(), 'venom-scripted-'));
  const browser = fakeBrowser();
  /** @type {{type: string, data: any}[]} */
  const events = [];
  const silent = { debug() {}, info() {}, warn() {}, error() {} };
  const driver = driverFactory({
    session: 'shop-1',
    dataDir,
    library: 'venom',
    pairingPhone: null,
    chromiumPath: process.execPath, // any executable: the stand-in browser launches nothing
    log: silent,
    emit: (/** @type {string} */ type, /** @type {any} */ data) => events.push({ type, data }),
    launchBrowser: async (/** @type {Record<string, unknown>} */ options) => {
      browser.launchOptions = options;
      return browser;
    },
    venomCreate: (/** @type {any} */ options, /** @type {any[]} */ ...rest) => script(options, rest[5]),
    ...overrides,
  });
  return { driver, browser, events, dataDir };
}

const tick = () => new Promise((resolve) => setImmediate(resolve));

test('scripted venom: QR, login, ready, messages, acks, sends, logout from the phone', async () => {
  const client = fakeClient();
  /** @type {any} */
  let venomOptionsSeen = null;
  /** @type {(value: any) => void} */
  let resolveCreate = () => {};
  const { driver, browser, events, dataDir } = await scriptedDriver(async (options) => {
    venomOptionsSeen = options;
    return new Promise((resolve) => (resolveCreate = resolve));
  });
  try {
    await assert.rejects(driver.send({ to: '15551234567', text: 'x', replyTo: null }), (err) => /** @type {any} */ (err).code === 'session_not_ready');
    await driver.start();
    assert.equal(browser.launchOptions?.userDataDir, join(dataDir, 'tokens', 'shop-1'));
    assert.equal(browser.launchOptions?.executablePath, process.execPath);
    assert.equal(venomOptionsSeen.browserWS, 'ws://127.0.0.1:1/devtools/browser/fake');
    assert.equal(venomOptionsSeen.browserPathExecutable, process.execPath);
    assert.equal(venomOptionsSeen.mkdirFolderToken, dataDir);

    const o = venomOptionsSeen;
    for (const status of ['initBrowser', 'connectBrowserWs', 'initWhatsapp', 'successPageWhatsapp']) o.statusFind(status, 'shop-1');
    o.browserInstance({}, {}, client);
    o.statusFind('notLogged', 'shop-1');
    o.catchQR('data:image/png;base64,iVBORw0KGgo=', '▄▄▄', 1, '2@y8eK+bjtEjUWy9/FOM');
    o.catchQR('data:image/png;base64,iVBORw0KGgo=', '▄▄▄', 2, '2@rotated');
    o.statusFind('qrReadSuccess', 'shop-1');
    o.statusFind('isLogged', 'shop-1');
    o.statusFind('waitForLogin', 'shop-1');
    o.statusFind('waitChat', 'shop-1');
    o.statusFind('successChat', 'shop-1');
    resolveCreate(client);
    await tick();
    await tick();
    assert.deepEqual(events, [
      { type: 'qr', data: { qr: '2@y8eK+bjtEjUWy9/FOM' } },
      { type: 'qr', data: { qr: '2@rotated' } },
      { type: 'authenticated', data: {} },
      { type: 'ready', data: { phone: '15550001111' } },
    ]);
    events.length = 0;

    client.on.message(EXAMPLE);
    client.on.any(EXAMPLE); // an incoming message arrives through both listeners: posted once
    const mine = message({ id: 'true_554199999999@c.us_3EB0MINE', fromMe: true, from: '15550001111@c.us', to: '554199999999@c.us' });
    client.on.any(mine);
    client.on.message(mine);
    client.on.message(message({ id: 'false_554199999999@c.us_IMG', type: 'image', isMedia: true, mimetype: 'image/jpeg', caption: 'photo', body: '/9j/4AAQ' }));
    client.on.message(message({ id: 'false_1@lid_L1', chatId: '12345678901234@lid', from: '12345678901234@lid', sender: { id: '12345678901234@lid', phoneNumber: '554199999999@c.us' } }));
    await tick();
    await tick();
    assert.deepEqual(
      events.map((e) => [e.type, e.data.message_id ?? e.data.lid]),
      [
        ['message', EXAMPLE.id],
        ['message', 'true_554199999999@c.us_3EB0MINE'],
        ['lid_mapping', '12345678901234@lid'],
        ['message', 'false_1@lid_L1'],
        ['message', 'false_554199999999@c.us_IMG'],
      ],
    );
    assert.deepEqual(events.find((e) => e.data.message_id === 'false_554199999999@c.us_IMG')?.data.media.data, Buffer.from('jpeg bytes'));
    assert.equal(events.find((e) => e.data.message_id === 'false_1@lid_L1')?.data.phone, '554199999999');
    events.length = 0;

    client.on.ack({ id: { fromMe: true, remote: '554199999999@c.us', id: 'T1', _serialized: 'true_554199999999@c.us_T1' }, ack: 3 });
    assert.deepEqual(events, [{ type: 'ack', data: { id: 'true_554199999999@c.us_T1', ack: 3, chat_id: '554199999999@c.us' } }]);
    events.length = 0;

    assert.equal(await driver.send({ to: '554199999999', text: 'Hello!', replyTo: null }), 'true_554199999999@c.us_T1');
    assert.equal(await driver.send({ to: '554199999999', text: 'Yes', replyTo: EXAMPLE.id }), 'true_554199999999@c.us_R1');
    assert.equal(await driver.send({ to: '554199999999', text: 'Quoted', replyTo: 'unknown' }), 'true_554199999999@c.us_T1');
    await assert.rejects(driver.send({ to: '15559999999', text: 'x', replyTo: null }), (err) => /** @type {any} */ (err).code === 'invalid_recipient');
    await assert.rejects(driver.send({ to: 'nobody', text: 'x', replyTo: null }), (err) => /** @type {any} */ (err).code === 'invalid_recipient');
    assert.deepEqual(
      client.calls.map((c) => [c.method, c.args[0], c.args[2] ?? null]),
      [
        ['sendText', '554199999999@c.us', null],
        ['reply', '554199999999@c.us', EXAMPLE.id],
        ['reply', '554199999999@c.us', 'unknown'],
        ['sendText', '554199999999@c.us', null],
        ['sendText', '15559999999@c.us', null],
      ],
    );

    const server = createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'image/png' });
      res.end(Buffer.from('png bytes'));
    });
    await new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(undefined)));
    try {
      const port = /** @type {import('node:net').AddressInfo} */ (server.address()).port;
      const id = await driver.sendMedia({ to: '554199999999', kind: 'image', url: `http://127.0.0.1:${port}/menu.png`, caption: 'Menu', filename: null, mimeType: null });
      assert.equal(id, 'true_554199999999@c.us_I1');
      const call = client.calls.at(-1);
      assert.deepEqual(call?.args, ['554199999999@c.us', `data:image/png;base64,${Buffer.from('png bytes').toString('base64')}`, 'menu.png', 'Menu']);
      const docId = await driver.sendMedia({ to: '554199999999', kind: 'document', url: `http://127.0.0.1:${port}/menu.png`, caption: null, filename: 'menu.pdf', mimeType: 'application/pdf' });
      assert.equal(docId, 'true_554199999999@c.us_F1');
    } finally {
      server.close();
    }

    client.on.state('CONNECTED');
    client.on.state('UNPAIRED');
    o.statusFind('desconnectedMobile', 'shop-1'); // after the end: not reported again
    assert.deepEqual(events, [{ type: 'disconnected', data: { reason: 'UNPAIRED', loggedOut: true } }]);
    await assert.rejects(driver.send({ to: '554199999999', text: 'x', replyTo: null }), (err) => /** @type {any} */ (err).code === 'session_not_ready');
  } finally {
    await driver.stop();
    await rm(dataDir, { recursive: true, force: true });
  }
  assert.equal(browser.closed, true);
});

test('scripted venom: WhatsApp Web unreachable is a lost connection (retried) with the navigation error, once', async () => {
  const { driver, browser, events, dataDir } = await scriptedDriver(async (options) => {
    options.statusFind('initBrowser', 'shop-1');
    options.statusFind('connectBrowserWs', 'shop-1');
    options.statusFind('initWhatsapp', 'shop-1');
    browser.pageHandlers.get('requestfailed')?.({
      isNavigationRequest: () => true,
      frame: () => browser.mainFrame,
      url: () => 'https://web.whatsapp.com/',
      failure: () => ({ errorText: 'net::ERR_NAME_NOT_RESOLVED' }),
    });
    options.statusFind('erroPageWhatsapp', 'shop-1');
    throw 'Error when trying to access the page: "https://web.whatsapp.com"';
  });
  try {
    await driver.start();
    await tick();
    assert.deepEqual(events, [{ type: 'disconnected', data: { reason: 'erroPageWhatsapp: net::ERR_NAME_NOT_RESOLVED at https://web.whatsapp.com/', loggedOut: false } }]);
  } finally {
    await driver.stop();
    await rm(dataDir, { recursive: true, force: true });
  }
  assert.equal(browser.closed, true);
});

test('scripted venom: a rejected create() without a status is a lost connection; a pairing phone still gets QRs', async () => {
  const { driver, events, dataDir } = await scriptedDriver(
    async (options) => {
      options.catchQR('data:image/png;base64,x', '', 1, '2@only-qr');
      throw 'Not Logged';
    },
    { pairingPhone: '15551234567' },
  );
  try {
    await driver.start();
    await tick();
    assert.deepEqual(events, [
      { type: 'qr', data: { qr: '2@only-qr' } },
      { type: 'disconnected', data: { reason: 'venom: Not Logged', loggedOut: false } },
    ]);
  } finally {
    await driver.stop();
    await rm(dataDir, { recursive: true, force: true });
  }
});

// ---------------------------------------------------------------------------------------
// A real session in Debian's Chromium: only with VENOM_LIVE=1 (needs WhatsApp Web).

/** Pids of a process and all its descendants (Linux /proc). @param {number} root */
function processTree(root) {
  /** @type {Map<number, number[]>} */
  const children = new Map();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const fields = readFileSync(`/proc/${entry}/stat`, 'utf8').split(') ')[1].split(' ');
      const ppid = Number(fields[1]);
      children.set(ppid, [...(children.get(ppid) ?? []), Number(entry)]);
    } catch {
      // the process ended meanwhile
    }
  }
  const pids = [root];
  for (let i = 0; i < pids.length; i += 1) pids.push(...(children.get(pids[i]) ?? []));
  return pids;
}

/** Pids of the live processes whose command line names `text` (Linux /proc). @param {string} text */
function processesNaming(text) {
  const pids = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      if (readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes(text)) pids.push(Number(entry));
    } catch {
      // the process ended meanwhile
    }
  }
  return pids;
}

/** RSS and PSS of a process in KiB (Linux /proc). @param {number} pid */
function memoryKiB(pid) {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const rss = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
    const rollup = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
    const pss = Number(/^Pss:\s+(\d+)/m.exec(rollup)?.[1] ?? 0);
    return { rss, pss };
  } catch {
    return { rss: 0, pss: 0 };
  }
}

/** @param {number} browserPid */
function measure(browserPid) {
  const pids = processTree(browserPid);
  const chromium = pids.map(memoryKiB).reduce((sum, m) => ({ rss: sum.rss + m.rss, pss: sum.pss + m.pss }), { rss: 0, pss: 0 });
  const node = memoryKiB(process.pid);
  return { chromium_processes: pids.length, chromium_rss_mib: mib(chromium.rss), chromium_pss_mib: mib(chromium.pss), node_rss_mib: mib(node.rss), total_rss_mib: mib(chromium.rss + node.rss), total_pss_mib: mib(chromium.pss + node.pss) };
}

/** @param {number} kib */
const mib = (kib) => Math.round((kib / 1024) * 10) / 10;

test('live: a real session shows a QR', { skip: process.env.VENOM_LIVE !== '1' && 'set VENOM_LIVE=1 to open WhatsApp Web in Chromium', timeout: 150_000 }, async () => {
  const dataDir = await mkdtemp(join(tmpdir(), 'venom-live-'));
  const t0 = Date.now();
  const stamp = () => `+${Date.now() - t0}ms`;
  /** @type {{type: string, data: any, at: number}[]} */
  const events = [];
  /** @type {string[]} */
  const statuses = [];
  /** @type {string[]} */
  const commands = [];
  const exec = childProcess.exec;
  // Record what venom runs in a shell (it must never be curl, dpkg or apt-get).
  childProcess.exec = /** @type {any} */ (
    (/** @type {string} */ command, /** @type {any[]} */ ...rest) => {
      commands.push(command);
      console.error(`[exec ${stamp()}] ${command}`);
      return /** @type {any} */ (exec)(command, ...rest);
    }
  );
  const log = {
    debug: (/** @type {string} */ m, /** @type {any} */ f) => {
      if (m === 'venom status') statuses.push(f.status);
      if (process.env.VENOM_LIVE_DEBUG === '1' || m === 'venom status') console.error(`[debug ${stamp()}] ${m} ${JSON.stringify(f ?? {})}`);
    },
    info: (/** @type {string} */ m, /** @type {any} */ f) => console.error(`[info ${stamp()}] ${m} ${JSON.stringify(f ?? {})}`),
    warn: (/** @type {string} */ m, /** @type {any} */ f) => console.error(`[warn ${stamp()}] ${m} ${JSON.stringify(f ?? {})}`),
    error: (/** @type {string} */ m, /** @type {any} */ f) => console.error(`[error ${stamp()}] ${m} ${JSON.stringify(f ?? {})}`),
  };
  let settle = () => {};
  const done = new Promise((resolve) => (settle = /** @type {() => void} */ (resolve)));
  const driver = /** @type {import('../src/driver.js').VenomDriver} */ (
    driverFactory({
      session: 'live',
      dataDir,
      library: 'venom',
      pairingPhone: null,
      chromiumPath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
      log,
      emit: (/** @type {string} */ type, /** @type {any} */ data) => {
        events.push({ type, data, at: Date.now() - t0 });
        console.error(`[event ${stamp()}] ${type} ${JSON.stringify(type === 'qr' ? { qr: `${String(data.qr).slice(0, 12)}...` } : data)}`);
        if (['qr', 'disconnected', 'failed'].includes(type)) settle();
      },
    })
  );
  /** @type {number | undefined} */
  let browserPid;
  /** @type {string[]} */
  let leftovers = [];
  try {
    await driver.start();
    browserPid = driver.browser?.process()?.pid;
    /** @type {NodeJS.Timeout | undefined} */
    let timer;
    await Promise.race([done, new Promise((resolve) => (timer = setTimeout(resolve, 120_000)))]);
    clearTimeout(timer);
    if (browserPid) {
      // What one session holds while it waits (here: Chromium showing WhatsApp Web's error page).
      await new Promise((resolve) => setTimeout(resolve, Number(process.env.VENOM_LIVE_SETTLE_MS ?? 3000)));
      console.error(`[memory ${stamp()}] ${JSON.stringify({ browser_pid: browserPid, node_pid: process.pid, ...measure(browserPid) })}`);
    }
    const mode = (await stat(profileDir(dataDir, 'live'))).mode & 0o777;
    console.error(`[profile] ${profileDir(dataDir, 'live')} mode ${mode.toString(8)}`);
  } finally {
    await driver.stop();
    childProcess.exec = exec;
    leftovers = processesNaming(profileDir(dataDir, 'live')).map(String);
    await rm(dataDir, { recursive: true, force: true });
  }
  console.error(`[statusFind] ${statuses.join(' → ')}`);
  assert.deepEqual(
    commands.filter((c) => /curl|dpkg|apt-get|sudo/.test(c)),
    [],
    'venom must not download or install a browser',
  );
  assert.deepEqual(leftovers, [], 'stop() must end every Chromium process of the session');
  const qr = events.find((e) => e.type === 'qr');
  assert.ok(qr, `no QR within 120 s; statusFind: ${statuses.join(' → ')}; events: ${JSON.stringify(events)}`);
});
