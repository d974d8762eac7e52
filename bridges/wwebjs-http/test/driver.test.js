// The whatsapp-web.js driver: the package loads, the pure mappings (on the documented
// whatsapp-web.js shapes of ../shared/vectors/bridges.json), the driver's event wiring on a
// scripted client and, with WWEBJS_LIVE=1, a real session in the system's Chromium.

import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import wwebjs from 'whatsapp-web.js';
import {
  CHROMIUM_ARGS,
  DEFAULT_CHROMIUM_PATH,
  ackOf,
  classifyDisconnect,
  clientOptions,
  driverFactory,
  lidPairOf,
  mediaSendOptions,
  normaliseWwebjsMessage,
  pairingCodeOf,
  phoneOfInfo,
  sendErrorOf,
  timestampSeconds,
  toJid,
  withDownloadedMedia,
} from '../src/driver.js';

const { Message, MessageAck, WAState, LocalAuth, MessageMedia } = wwebjs;

// ../shared/vectors/bridges.json › whatsapp_web_js.message_example (index.d.ts @example of
// Message, 1.34.6), verbatim.
const EXAMPLE = {
  mediaKey: null,
  id: { fromMe: false, remote: '554199999999@c.us', id: '1234567890ABCDEFGHIJ', _serialized: 'false_554199999999@c.us_1234567890ABCDEFGHIJ' },
  ack: -1,
  hasMedia: false,
  body: 'Hello!',
  type: 'chat',
  timestamp: 1591482682,
  from: '554199999999@c.us',
  to: '554188888888@c.us',
  author: null,
  isForwarded: false,
  broadcast: false,
  fromMe: false,
  hasQuotedMsg: false,
  hasReaction: false,
  location: null,
  mentionedIds: [],
};

/**
 * A message as the page serialises it (the `_data` whatsapp-web.js's Message is built from),
 * made into a Message by the library itself. Constructed from Message._patch, not captured.
 * @param {Record<string, any>} fields
 */
function pageMessage(fields) {
  const fromMe = fields.fromMe ?? false;
  const remote = fields.remote ?? '554199999999@c.us';
  const key = fields.key ?? '3EB0B4B1C2D3E4F5A6B7';
  const me = '554188888888@c.us';
  const { fromMe: _f, remote: _r, key: _k, ...rest } = fields;
  return new Message(null, {
    id: { fromMe, remote, id: key, _serialized: `${fromMe}_${remote}_${key}` },
    ack: fromMe ? 1 : -1,
    type: 'chat',
    t: 1591482682,
    from: fromMe ? me : remote,
    to: fromMe ? remote : me,
    body: '',
    ...rest,
  });
}

const silentLog = { debug() {}, info() {}, warn() {}, error() {} };

test('the package loads: whatsapp-web.js 1.34.7 and the common runBridge', async () => {
  assert.equal(wwebjs.version, '1.34.7');
  assert.equal(typeof wwebjs.Client, 'function');
  assert.equal(typeof LocalAuth, 'function');
  assert.equal(typeof MessageMedia, 'function');
  assert.equal(typeof wwebjs.Client.prototype.requestPairingCode, 'function');
  assert.equal(typeof wwebjs.Client.prototype.getContactLidAndPhone, 'function');
  const common = await import('@dashoffice/bridge-common');
  assert.equal(typeof common.runBridge, 'function');
  assert.equal(typeof driverFactory, 'function');
});

test('the documented example message (index.d.ts)', () => {
  assert.deepEqual(normaliseWwebjsMessage(EXAMPLE), {
    message_id: 'false_554199999999@c.us_1234567890ABCDEFGHIJ',
    chat_id: '554199999999@c.us',
    sender_id: '554199999999@c.us',
    phone: null,
    lid: null,
    from_me: false,
    timestamp_s: 1591482682,
    type: 'chat',
    text: 'Hello!',
    has_media: false,
    media: null,
    reply_id: null,
    location: null,
    push_name: null,
    is_group: false,
  });
});

test('page messages through the library Message: media, captions, push names', () => {
  const image = normaliseWwebjsMessage(
    pageMessage({ type: 'image', directPath: '/v/t62.7118-24/1.enc', mimetype: 'image/jpeg', caption: 'see the photo', body: '/9j/4AAQSkZJRg...', notifyName: 'Maria' }),
  );
  assert.equal(image?.message_id, 'false_554199999999@c.us_3EB0B4B1C2D3E4F5A6B7');
  assert.equal(image?.text, 'see the photo'); // the caption, not the thumbnail in body
  assert.equal(image?.has_media, true);
  assert.deepEqual(image?.media, { kind: 'image', mime_type: 'image/jpeg', caption: 'see the photo', filename: null });
  assert.equal(image?.push_name, 'Maria');

  const voice = normaliseWwebjsMessage(pageMessage({ type: 'ptt', directPath: '/v/x', mimetype: 'audio/ogg; codecs=opus' }));
  assert.equal(voice?.media?.kind, 'audio');
  assert.equal(voice?.text, '');
  const sticker = normaliseWwebjsMessage(pageMessage({ type: 'sticker', directPath: '/v/x', mimetype: 'image/webp' }));
  assert.equal(sticker?.media?.kind, 'image');
  const doc = normaliseWwebjsMessage(pageMessage({ type: 'document', directPath: '/v/x', mimetype: 'application/pdf', filename: 'menu.pdf', caption: 'the menu' }));
  assert.deepEqual(doc?.media, { kind: 'document', mime_type: 'application/pdf', caption: 'the menu', filename: 'menu.pdf' });
  // Expired media (no directPath): still a media message, nothing to download.
  const expired = normaliseWwebjsMessage(pageMessage({ type: 'video', mimetype: 'video/mp4' }));
  assert.equal(expired?.has_media, true);
  assert.equal(expired?.media?.kind, 'video');
});

test('locations, buttons, lists, groups, own messages, LID chats', () => {
  const location = normaliseWwebjsMessage(pageMessage({ type: 'location', lat: -25.4284, lng: -49.2733, loc: 'Shop\nRua XV, 100', body: '/9j/thumbnail' }));
  assert.deepEqual(location?.location, { latitude: -25.4284, longitude: -49.2733, name: 'Shop', address: 'Rua XV, 100' });
  assert.equal(location?.text, 'Shop\nRua XV, 100');
  assert.equal(location?.has_media, false);
  const bare = normaliseWwebjsMessage(pageMessage({ type: 'location', lat: 1.5, lng: 2.5 }));
  assert.deepEqual(bare?.location, { latitude: 1.5, longitude: 2.5, name: null, address: null });

  const button = normaliseWwebjsMessage(pageMessage({ type: 'buttons_response', body: 'Yes', selectedButtonId: 'yes' }));
  assert.equal(button?.reply_id, 'yes');
  assert.equal(button?.text, 'Yes');
  const row = normaliseWwebjsMessage(pageMessage({ type: 'list_response', body: 'Row 2', listResponse: { singleSelectReply: { selectedRowId: 'row-2' } } }));
  assert.equal(row?.reply_id, 'row-2');

  const group = normaliseWwebjsMessage(pageMessage({ remote: '120363025246125888@g.us', from: '120363025246125888@g.us', author: '5511988887777@c.us', body: 'hi all' }));
  assert.equal(group?.is_group, true);
  assert.equal(group?.chat_id, '120363025246125888@g.us');
  assert.equal(group?.sender_id, '5511988887777@c.us');

  const own = normaliseWwebjsMessage(pageMessage({ fromMe: true, body: 'sent from the phone', notifyName: 'Shop' }));
  assert.equal(own?.from_me, true);
  assert.equal(own?.chat_id, '554199999999@c.us'); // msg.to
  assert.equal(own?.sender_id, '554188888888@c.us');
  assert.equal(own?.push_name, null);
  assert.equal(own?.message_id, 'true_554199999999@c.us_3EB0B4B1C2D3E4F5A6B7');

  const lid = normaliseWwebjsMessage(pageMessage({ remote: '12345678901234@lid', body: 'hello' }));
  assert.equal(lid?.chat_id, '12345678901234@lid');
  assert.equal(lid?.phone, null);
  // from/to as wid objects (older pages) and millisecond timestamps
  const wid = normaliseWwebjsMessage({ ...EXAMPLE, from: { _serialized: '554199999999@c.us' }, timestamp: 1591482682000 });
  assert.equal(wid?.chat_id, '554199999999@c.us');
  assert.equal(wid?.timestamp_s, 1591482682);
});

test('notifications, protocol and undecrypted messages, and messages without ids, are not reported', () => {
  for (const type of ['e2e_notification', 'notification_template', 'gp2', 'protocol', 'ciphertext', 'revoked', 'call_log']) {
    assert.equal(normaliseWwebjsMessage({ ...EXAMPLE, type }), null, type);
  }
  assert.equal(normaliseWwebjsMessage({ ...EXAMPLE, id: {} }), null);
  assert.equal(normaliseWwebjsMessage({ ...EXAMPLE, from: null, id: { ...EXAMPLE.id, remote: undefined } }), null);
  assert.equal(normaliseWwebjsMessage(null), null);
});

test('downloaded media (MessageMedia, base64) goes to the server as media.data', () => {
  const data = normaliseWwebjsMessage(pageMessage({ type: 'document', directPath: '/v/x', caption: '' }));
  const merged = withDownloadedMedia(data, new MessageMedia('application/pdf', 'JVBERi0xLjQ=', 'a.pdf', 8));
  assert.deepEqual(merged?.media, { kind: 'document', mime_type: 'application/pdf', caption: null, filename: 'a.pdf', data: 'JVBERi0xLjQ=' });
  assert.equal(withDownloadedMedia(data, undefined), data);
  assert.equal(withDownloadedMedia(data, null), data);
  assert.equal(withDownloadedMedia(normaliseWwebjsMessage(EXAMPLE), { data: 'x' })?.media, null);
});

test('acks: the whatsapp-web.js numbers, for own messages only', () => {
  const own = pageMessage({ fromMe: true, body: 'x' });
  assert.deepEqual(ackOf(own, MessageAck.ACK_DEVICE), { id: 'true_554199999999@c.us_3EB0B4B1C2D3E4F5A6B7', ack: 2, chat_id: '554199999999@c.us' });
  assert.equal(ackOf(own, MessageAck.ACK_ERROR)?.ack, -1);
  assert.equal(ackOf(own, MessageAck.ACK_SERVER)?.ack, 1);
  assert.equal(ackOf(own, MessageAck.ACK_READ)?.ack, 3);
  assert.equal(ackOf(own, MessageAck.ACK_PLAYED)?.ack, 4);
  assert.equal(ackOf(own, MessageAck.ACK_PENDING)?.ack, 0); // the server drops pending
  assert.equal(ackOf(own, 7), null);
  assert.equal(ackOf(own, undefined)?.ack, 1); // msg.ack when the event gives none
  assert.equal(ackOf(EXAMPLE, 3), null); // someone else's message
  assert.equal(ackOf({ id: {}, fromMe: true }, 3), null);
});

test('JIDs: digits to c.us, LIDs through, the rest refused; the paired phone; LID pairs', () => {
  assert.equal(toJid('15551234567'), '15551234567@c.us');
  assert.equal(toJid('+15551234567'), '15551234567@c.us');
  assert.equal(toJid('12345678901234@lid'), '12345678901234@lid');
  for (const bad of ['hello', '120363025246125888@g.us', '15551234567@c.us', '', null]) {
    assert.throws(() => toJid(bad), (err) => /** @type {any} */ (err).code === 'invalid_recipient', String(bad));
  }
  assert.equal(phoneOfInfo({ wid: { server: 'c.us', user: '15551234567', _serialized: '15551234567@c.us' } }), '15551234567');
  assert.equal(phoneOfInfo({ wid: { server: 'c.us', user: '15551234567' } }), '15551234567');
  assert.equal(phoneOfInfo({ wid: '15551234567@c.us' }), '15551234567');
  assert.equal(phoneOfInfo({ wid: { server: 'lid', user: '12345678901234', _serialized: '12345678901234@lid' } }), null);
  assert.equal(phoneOfInfo(undefined), null);
  assert.deepEqual(lidPairOf([{ lid: '12345678901234@lid', pn: '15551234567@c.us' }]), { lid: '12345678901234@lid', phone: '15551234567' });
  assert.deepEqual(lidPairOf({ lid: { _serialized: '12345678901234@lid' }, pn: { _serialized: '15551234567@c.us' } }), { lid: '12345678901234@lid', phone: '15551234567' });
  assert.equal(lidPairOf([{ lid: undefined, pn: '15551234567@c.us' }]), null);
  assert.equal(lidPairOf([{}]), null);
  assert.equal(timestampSeconds('1591482682'), 1591482682);
  assert.equal(pairingCodeOf('abcd1234'), 'ABCD-1234');
  assert.equal(pairingCodeOf('ABCD-1234'), 'ABCD-1234');
  assert.equal(timestampSeconds(0), null);
});

test('disconnect classification', () => {
  assert.deepEqual(classifyDisconnect('LOGOUT'), { kind: 'logged_out', reason: 'LOGOUT' });
  assert.equal(classifyDisconnect(WAState.UNPAIRED).kind, 'logged_out');
  assert.equal(classifyDisconnect(WAState.UNPAIRED_IDLE).kind, 'logged_out');
  for (const state of [WAState.TOS_BLOCK, WAState.SMB_TOS_BLOCK, WAState.PROXYBLOCK, WAState.DEPRECATED_VERSION]) {
    assert.equal(classifyDisconnect(state).kind, 'failed', state);
  }
  assert.deepEqual(classifyDisconnect(WAState.CONFLICT), { kind: 'disconnected', reason: 'CONFLICT' });
  assert.equal(classifyDisconnect('Max qrcode retries reached').kind, 'disconnected');
  assert.equal(classifyDisconnect(undefined).reason, 'disconnected');
  assert.equal(classifyDisconnect(new Error('Target closed')).reason, 'Target closed');
});

test('client options: LocalAuth in the session directory, system Chromium, web version pinning, pairing', () => {
  const context = { session: 'shop-1', dataDir: '/data/sessions/shop-1', chromiumPath: '/opt/chromium/chrome', pairingPhone: null };
  const options = clientOptions(context, {});
  assert.ok(options.authStrategy instanceof LocalAuth);
  assert.equal(options.authStrategy.clientId, 'shop-1');
  assert.equal(options.authStrategy.dataPath, '/data/sessions/shop-1');
  assert.deepEqual(options.puppeteer, {
    executablePath: '/opt/chromium/chrome',
    headless: true,
    args: [...CHROMIUM_ARGS],
    handleSIGINT: false,
    handleSIGTERM: false,
    handleSIGHUP: false,
  });
  assert.ok(options.puppeteer.args.includes('--no-sandbox'));
  assert.ok(options.puppeteer.args.includes('--disable-dev-shm-usage'));
  assert.deepEqual(options.webVersionCache, { type: 'local', path: '/data/sessions/shop-1/web-cache', strict: false });
  assert.equal(options.webVersion, undefined); // the library's own default
  assert.equal(options.pairWithPhoneNumber, undefined);

  assert.equal(clientOptions({ ...context, chromiumPath: '' }, {}).puppeteer.executablePath, DEFAULT_CHROMIUM_PATH);
  const pinned = clientOptions(context, { WWEBJS_WEB_VERSION: ' 2.3000.1031980585 ' });
  assert.equal(pinned.webVersion, '2.3000.1031980585');
  assert.equal(pinned.webVersionCache.type, 'local');
  const remote = clientOptions(context, { WWEBJS_WEB_VERSION: '2.3000.1031980585', WWEBJS_WEB_VERSION_CACHE_URL: 'https://cache.example/wa/{version}.html' });
  assert.deepEqual(remote.webVersionCache, { type: 'remote', remotePath: 'https://cache.example/wa/{version}.html', strict: true });
  const pairing = clientOptions({ ...context, pairingPhone: '+1 555 123 4567' }, {});
  assert.deepEqual(pairing.pairWithPhoneNumber, { phoneNumber: '15551234567', showNotification: true, intervalMs: 180000 });
  // The library refuses session names LocalAuth cannot use; the contract's never are.
  assert.throws(() => clientOptions({ ...context, session: 'a/b' }, {}), /Invalid clientId/);
});

test('send errors and media options', () => {
  assert.equal(sendErrorOf(new Error('Evaluation failed: Error: wid error: invalid wid')).code, 'invalid_recipient');
  assert.equal(sendErrorOf(new Error('Protocol error (Runtime.callFunctionOn): Session closed. Most likely the page has been closed.')).code, 'session_not_ready');
  assert.equal(sendErrorOf(new Error('Execution context was destroyed, most likely because of a navigation.')).code, 'session_not_ready');
  assert.equal(sendErrorOf(new Error('rate-overlimit')).code, 'rate_limited');
  const other = new Error('something else');
  assert.equal(sendErrorOf(other), other);
  assert.equal(sendErrorOf('a string').message, 'a string');
  assert.deepEqual(mediaSendOptions({ kind: 'image', caption: 'menu' }), { sendSeen: false, caption: 'menu' });
  assert.deepEqual(mediaSendOptions({ kind: 'document', caption: null }), { sendSeen: false, sendMediaAsDocument: true });
  assert.deepEqual(mediaSendOptions({ kind: 'audio', caption: 'ignored' }), { sendSeen: false });
  assert.throws(() => mediaSendOptions({ kind: 'sticker' }), (err) => /** @type {any} */ (err).code === 'invalid_request');
});

test('send before start answers session_not_ready', async () => {
  const driver = driverFactory({ session: 's', dataDir: tmpdir(), emit: () => {}, library: 'wwebjs', pairingPhone: null, chromiumPath: '', log: silentLog });
  await assert.rejects(driver.send({ to: '15551234567', text: 'x', replyTo: null }), (err) => /** @type {any} */ (err).code === 'session_not_ready');
  await assert.rejects(driver.sendMedia({ to: '15551234567', kind: 'image', url: 'http://127.0.0.1:9/a.png', caption: null, filename: null, mimeType: null }), (err) => /** @type {any} */ (err).code === 'session_not_ready');
  await driver.stop();
  await driver.logout();
});

test('a missing browser rejects start() with a fatal launch error', async () => {
  const dataDir = await mkdtemp(join(tmpdir(), 'wwebjs-nobrowser-'));
  const driver = driverFactory({ session: 's', dataDir, emit: () => {}, library: 'wwebjs', pairingPhone: null, chromiumPath: join(dataDir, 'no-such-chromium'), log: silentLog });
  try {
    await assert.rejects(driver.start(), (err) => {
      assert.match(/** @type {Error} */ (err).message, /Browser was not found at the configured executablePath/);
      assert.equal(/** @type {any} */ (err).fatal, true, 'a missing browser fails the session instead of retrying');
      return true;
    });
    assert.ok(existsSync(join(dataDir, 'session-s')), 'LocalAuth made the profile directory');
  } finally {
    await driver.stop();
    await rm(dataDir, { recursive: true, force: true });
  }
});

/** A scripted stand-in for whatsapp-web.js's Client. */
class FakeClient extends EventEmitter {
  /** @param {any} options */
  constructor(options) {
    super();
    this.options = options;
    this.info = null;
    this.pupBrowser = { closed: false };
    this.pupPage = { isClosed: () => false };
    /** @type {any[]} */
    this.sent = [];
    this.destroyed = 0;
    this.loggedOut = 0;
    /** @type {Record<string, any>} */
    this.numbers = { '15551234567': { server: 'c.us', user: '15551234567', _serialized: '15551234567@c.us' }, '5511912345678': { _serialized: '551112345678@c.us' } };
    /** @type {Record<string, any>} */
    this.lids = { '12345678901234@lid': [{ lid: '12345678901234@lid', pn: '15551234567@c.us' }], '554199999999@c.us': [{ lid: '99887766554433@lid', pn: '554199999999@c.us' }] };
    this.lookups = 0;
    /** @type {unknown} */
    this.sendFailure = null;
  }

  async initialize() {}

  /** @param {string} number */
  async getNumberId(number) {
    return this.numbers[number] ?? null;
  }

  /** @param {string[]} ids */
  async getContactLidAndPhone(ids) {
    this.lookups += 1;
    return this.lids[ids[0]] ?? [{}];
  }

  /** @param {string} chatId @param {any} content @param {any} options */
  async sendMessage(chatId, content, options) {
    if (this.sendFailure) throw this.sendFailure;
    this.sent.push({ chatId, content, options });
    const key = `3EB0${String(this.sent.length).padStart(16, '0')}`;
    const msg = pageMessage({ fromMe: true, remote: chatId, key, body: typeof content === 'string' ? content : '' });
    this.emit('message_create', msg); // the library reports its own sends too
    return msg;
  }

  async destroy() {
    this.destroyed += 1;
  }

  async logout() {
    this.loggedOut += 1;
  }
}

/** A driver on a FakeClient, with the events it emits. @param {Record<string, any>} [extra] */
function scripted(extra = {}) {
  /** @type {{type: string, data: any}[]} */
  const events = [];
  /** @type {FakeClient | null} */
  let client = null;
  const driver = driverFactory({
    session: 'shop-1',
    dataDir: '/nonexistent/shop-1',
    library: 'wwebjs',
    pairingPhone: null,
    chromiumPath: '/usr/bin/chromium',
    log: silentLog,
    emit: (/** @type {string} */ type, /** @type {any} */ data) => events.push({ type, data }),
    createClient: (/** @type {any} */ options) => (client = new FakeClient(options)),
    ...extra,
  });
  return { driver, events, client: () => /** @type {FakeClient} */ (client) };
}

const settle = () => new Promise((resolve) => setTimeout(resolve, 20));

test('driver events: QR, pairing code, authenticated, ready with the phone, disconnections', async () => {
  const { driver, events, client } = scripted();
  await driver.start();
  const c = client();
  assert.equal(c.options.authStrategy.clientId, 'shop-1');
  c.emit('qr', '2@y8eK+bjtEjUWy9/FOM,abc,def,ghi');
  c.emit('code', 'ABCD1234');
  c.emit('loading_screen', 50, 'WhatsApp');
  c.emit('authenticated', {});
  c.info = { wid: { server: 'c.us', user: '15551234567', _serialized: '15551234567@c.us' } };
  c.emit('ready');
  c.emit('disconnected', 'CONFLICT');
  c.emit('disconnected', 'LOGOUT');
  c.emit('disconnected', 'TOS_BLOCK');
  c.emit('auth_failure', 'restore failed');
  assert.deepEqual(events, [
    { type: 'qr', data: { qr: '2@y8eK+bjtEjUWy9/FOM,abc,def,ghi' } },
    { type: 'pairing_code', data: { code: 'ABCD-1234' } },
    { type: 'authenticated', data: {} },
    { type: 'ready', data: { phone: '15551234567' } },
    { type: 'disconnected', data: { reason: 'CONFLICT', loggedOut: false } },
    { type: 'disconnected', data: { reason: 'LOGOUT', loggedOut: true } },
    { type: 'failed', data: { reason: 'TOS_BLOCK' } },
    { type: 'failed', data: { reason: 'auth_failure: restore failed' } },
  ]);
  await driver.stop();
  assert.equal(c.destroyed, 1);
  c.emit('qr', 'late');
  assert.equal(events.length, 8, 'nothing is emitted after stop()');
});

test('driver: a pairing phone goes to the library as pairWithPhoneNumber', async () => {
  const { driver, client } = scripted({ pairingPhone: '15551234567' });
  await driver.start();
  assert.equal(client().options.pairWithPhoneNumber.phoneNumber, '15551234567');
  await driver.stop();
});

test('driver: messages in and from the phone, LID pairs, media, acks, in order', async () => {
  const { driver, events, client } = scripted();
  await driver.start();
  const c = client();
  c.info = { wid: { _serialized: '554188888888@c.us' } };
  c.emit('ready');
  events.length = 0;

  const incoming = pageMessage({ body: 'hello', notifyName: 'Maria' });
  c.emit('message_create', incoming); // the library reports incoming ones twice
  c.emit('message', incoming);
  const fromLid = pageMessage({ remote: '12345678901234@lid', key: 'L1', body: 'from a LID' });
  c.emit('message', fromLid);
  const photo = Object.assign(pageMessage({ key: 'P1', type: 'image', directPath: '/v/x', mimetype: 'image/jpeg', caption: 'photo' }), {
    downloadMedia: async () => new MessageMedia('image/jpeg', '/9j/4AAQ', undefined, 6),
  });
  c.emit('message', photo);
  const fromPhone = pageMessage({ fromMe: true, key: 'M1', body: 'typed on the phone' });
  c.emit('message_create', fromPhone);
  c.emit('message_ack', fromPhone, MessageAck.ACK_READ);
  c.emit('message_ack', incoming, MessageAck.ACK_READ); // not ours: no ack
  await settle();

  assert.deepEqual(
    events.map((e) => [e.type, e.data.message_id ?? e.data.id ?? e.data.lid]),
    [
      ['lid_mapping', '99887766554433@lid'],
      ['message', 'false_554199999999@c.us_3EB0B4B1C2D3E4F5A6B7'],
      ['lid_mapping', '12345678901234@lid'],
      ['message', 'false_12345678901234@lid_L1'],
      ['message', 'false_554199999999@c.us_P1'],
      ['message', 'true_554199999999@c.us_M1'],
      ['ack', 'true_554199999999@c.us_M1'],
    ],
  );
  const [first, lidMessage, photoMessage, own] = events.filter((e) => e.type === 'message').map((e) => e.data);
  assert.equal(first.lid, '99887766554433@lid');
  assert.equal(first.push_name, 'Maria');
  assert.equal(lidMessage.phone, '15551234567');
  assert.deepEqual(events[2].data, { lid: '12345678901234@lid', phone: '15551234567' });
  assert.equal(photoMessage.media.data, '/9j/4AAQ');
  assert.equal(photoMessage.media.mime_type, 'image/jpeg');
  assert.equal(own.from_me, true);
  assert.deepEqual(events.at(-1)?.data, { id: 'true_554199999999@c.us_M1', ack: 3, chat_id: '554199999999@c.us' });
  assert.equal(c.lookups, 2, 'one LID lookup per chat');
  await driver.stop();
});

test('driver: send resolves the number, quotes, returns the id its echo and acks carry', async () => {
  const { driver, events, client } = scripted();
  await driver.start();
  const c = client();
  c.info = { wid: { _serialized: '554188888888@c.us' } };
  c.emit('ready');
  events.length = 0;

  const id = await driver.send({ to: '15551234567', text: 'Hello!', replyTo: 'false_15551234567@c.us_3EB0AAAA' });
  assert.equal(id, 'true_15551234567@c.us_3EB00000000000000001');
  assert.deepEqual(c.sent[0], { chatId: '15551234567@c.us', content: 'Hello!', options: { sendSeen: false, quotedMessageId: 'false_15551234567@c.us_3EB0AAAA' } });
  await settle();
  assert.equal(events.find((e) => e.type === 'message')?.data.message_id, id, 'the echo carries the id send returned (the server drops it)');

  // WhatsApp's own JID for the number (here without the Brazilian ninth digit).
  await driver.send({ to: '5511912345678', text: 'oi', replyTo: null });
  assert.equal(c.sent[1].chatId, '551112345678@c.us');
  await driver.send({ to: '12345678901234@lid', text: 'to a LID', replyTo: null });
  assert.equal(c.sent[2].chatId, '12345678901234@lid');
  await assert.rejects(driver.send({ to: '15550000000', text: 'x', replyTo: null }), (err) => /** @type {any} */ (err).code === 'invalid_recipient');
  await assert.rejects(driver.send({ to: 'not-a-number', text: 'x', replyTo: null }), (err) => /** @type {any} */ (err).code === 'invalid_recipient');
  c.sendFailure = new Error('Protocol error (Runtime.callFunctionOn): Target closed');
  await assert.rejects(driver.send({ to: '15551234567', text: 'x', replyTo: null }), (err) => /** @type {any} */ (err).code === 'session_not_ready');
  c.sendFailure = null;

  c.emit('disconnected', 'CONFLICT');
  await assert.rejects(driver.send({ to: '15551234567', text: 'x', replyTo: null }), (err) => /** @type {any} */ (err).code === 'session_not_ready');
  await driver.logout();
  assert.equal(c.loggedOut, 1);
});

test('driver: sendMedia by URL (downloaded) or upload, as a MessageMedia', async () => {
  const png = Buffer.from('89504e470d0a1a0a0000000d49484452', 'hex');
  const server = createServer((req, res) => {
    if (req.url === '/menu.png') {
      res.writeHead(200, { 'Content-Type': 'image/png', 'Content-Length': png.length });
      res.end(png);
    } else {
      res.writeHead(404).end('no');
    }
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(undefined)));
  const port = /** @type {import('node:net').AddressInfo} */ (server.address()).port;
  const { driver, client } = scripted();
  try {
    await driver.start();
    const c = client();
    c.emit('ready');
    const id = await driver.sendMedia({ to: '15551234567', kind: 'image', url: `http://127.0.0.1:${port}/menu.png`, caption: "Today's menu", filename: null, mimeType: null });
    assert.match(id, /^true_15551234567@c\.us_/);
    const { content, options } = c.sent[0];
    assert.ok(content instanceof MessageMedia);
    assert.equal(content.mimetype, 'image/png');
    assert.equal(content.filename, 'menu.png');
    assert.equal(content.data, png.toString('base64'));
    assert.deepEqual(options, { sendSeen: false, caption: "Today's menu" });
    await driver.sendMedia({ to: '15551234567', kind: 'document', url: `http://127.0.0.1:${port}/menu.png`, caption: null, filename: 'menu-today.png', mimeType: 'image/png' });
    assert.equal(c.sent[1].content.filename, 'menu-today.png');
    assert.equal(c.sent[1].options.sendMediaAsDocument, true);
    // An upload: the file in the body (contract `data`), with its MIME type.
    await driver.sendMedia({ to: '15551234567', kind: 'document', url: null, data: Buffer.from('%PDF-1.4'), caption: 'the menu', filename: null, mimeType: 'application/pdf' });
    assert.deepEqual(
      { mimetype: c.sent[2].content.mimetype, data: c.sent[2].content.data, filename: c.sent[2].content.filename, options: c.sent[2].options },
      { mimetype: 'application/pdf', data: Buffer.from('%PDF-1.4').toString('base64'), filename: 'file', options: { sendSeen: false, caption: 'the menu', sendMediaAsDocument: true } },
    );
    await assert.rejects(
      driver.sendMedia({ to: '15551234567', kind: 'image', url: `http://127.0.0.1:${port}/missing.png`, caption: null, filename: null, mimeType: null }),
      (err) => /** @type {any} */ (err).code === 'invalid_request',
    );
  } finally {
    await driver.stop();
    server.close();
  }
});

/**
 * Memory of a process tree from /proc: the sum of VmRSS (shared pages counted in every
 * process) and of Pss (shared pages split between their users), in kB.
 * @param {number[]} roots
 */
async function treeMemory(roots) {
  /** @type {Map<number, number[]>} */
  const children = new Map();
  for (const name of await readdir('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const stat = await readFile(`/proc/${name}/stat`, 'utf8').catch(() => '');
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    if (!children.has(ppid)) children.set(ppid, []);
    children.get(ppid)?.push(Number(name));
  }
  const pids = new Set();
  const stack = [...roots];
  while (stack.length) {
    const pid = /** @type {number} */ (stack.pop());
    if (pids.has(pid)) continue;
    pids.add(pid);
    stack.push(...(children.get(pid) ?? []));
  }
  let rss = 0;
  let pss = 0;
  for (const pid of pids) {
    const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
    rss += Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
    const rollup = await readFile(`/proc/${pid}/smaps_rollup`, 'utf8').catch(() => '');
    pss += Number(/^Pss:\s+(\d+)/m.exec(rollup)?.[1] ?? 0);
  }
  return { processes: pids.size, rss_kb: rss, pss_kb: pss };
}

// A real session in the system's Chromium against WhatsApp Web: only with WWEBJS_LIVE=1.
test('live: a real session shows a QR', { skip: process.env.WWEBJS_LIVE !== '1' && 'set WWEBJS_LIVE=1 to open WhatsApp Web in Chromium', timeout: 120_000 }, async () => {
  const dataDir = await mkdtemp(join(tmpdir(), 'wwebjs-live-'));
  /** @type {{type: string, data: any, at: number}[]} */
  const events = [];
  const t0 = Date.now();
  const log = {
    debug: (/** @type {string} */ m, /** @type {any} */ f) => console.error('[debug]', m, JSON.stringify(f ?? {})),
    info() {},
    warn: (/** @type {string} */ m, /** @type {any} */ f) => console.error('[warn]', m, JSON.stringify(f ?? {})),
    error: (/** @type {string} */ m, /** @type {any} */ f) => console.error('[error]', m, JSON.stringify(f ?? {})),
  };
  let done = () => {};
  const shown = new Promise((resolve) => (done = /** @type {() => void} */ (resolve)));
  const driver = driverFactory({
    session: 'live',
    dataDir,
    library: 'wwebjs',
    pairingPhone: process.env.WWEBJS_PAIRING_PHONE ?? null,
    chromiumPath: process.env.CHROMIUM_PATH ?? DEFAULT_CHROMIUM_PATH,
    log,
    emit: (/** @type {string} */ type, /** @type {any} */ data) => {
      events.push({ type, data, at: Date.now() - t0 });
      console.error(`[event +${Date.now() - t0}ms] ${type} ${JSON.stringify(data)}`);
      if (['qr', 'pairing_code', 'disconnected', 'failed'].includes(type)) done();
    },
  });
  // Memory: Chromium's process tree alone, and with this node process (Chromium is its child).
  /** @type {{browser_pid: number, browser: Awaited<ReturnType<typeof treeMemory>>, with_node: Awaited<ReturnType<typeof treeMemory>>, at_ms: number} | null} */
  let peak = null;
  const sampler = setInterval(async () => {
    const browserPid = /** @type {any} */ (driver).client?.pupBrowser?.process?.()?.pid;
    if (!browserPid) return;
    const sample = { browser_pid: browserPid, browser: await treeMemory([browserPid]), with_node: await treeMemory([process.pid]), at_ms: Date.now() - t0 };
    if (!peak || sample.with_node.pss_kb > peak.with_node.pss_kb) peak = sample;
  }, 250);
  /** @type {string | null} */
  let startError = null;
  try {
    const started = driver.start().then(
      () => console.error(`[start resolved +${Date.now() - t0}ms]`),
      (/** @type {Error} */ err) => {
        startError = err.message;
        console.error(`[start rejected +${Date.now() - t0}ms] ${err.message}`);
        done();
      },
    );
    /** @type {NodeJS.Timeout | undefined} */
    let waiting;
    await Promise.race([shown, new Promise((resolve) => (waiting = setTimeout(resolve, 90_000)))]);
    clearTimeout(waiting);
    // The browser stays up a little (WWEBJS_LIVE_HOLD_MS, 3 s) for the memory samples.
    await new Promise((resolve) => setTimeout(resolve, Number(process.env.WWEBJS_LIVE_HOLD_MS ?? 3000)));
    clearInterval(sampler);
    console.error(`[memory] peak (kB): ${JSON.stringify(peak)}`);
    await driver.stop();
    await started;
  } finally {
    clearInterval(sampler);
    await driver.stop();
    await rm(dataDir, { recursive: true, force: true });
  }
  const qr = events.find((e) => e.type === 'qr' || e.type === 'pairing_code');
  assert.ok(qr, `no QR: ${startError ? `start() rejected: ${startError}` : 'start() did not fail'}; events: ${JSON.stringify(events)}`);
});
