// The Baileys driver: the package loads, the pure mappings (from ../shared/vectors/bridges.json
// fixtures) and, with BAILEYS_LIVE=1, a real session start against WhatsApp's servers.

import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { DisconnectReason } from 'baileys';
import {
  classifyDisconnect,
  driverFactory,
  mediaContent,
  normaliseBaileysAck,
  normaliseBaileysMessage,
  normaliseLidMapping,
  phoneOfUser,
  timestampSeconds,
  toJid,
} from '../src/driver.js';

// Fixtures from ../shared/vectors/bridges.json › baileys (verbatim).
const EXAMPLE = { key: { remoteJid: 'chat@s.whatsapp.net', fromMe: false, id: 'ABC' }, message: { conversation: 'hello' }, messageTimestamp: 1675888000 };
const REAL = {
  key: { remoteJid: '55119********@s.whatsapp.net', fromMe: false, id: '3A554E20ECABF3D45BB2' },
  pushName: 'Giovanna Darcanovas',
  message: {
    conversation: 'Olá! Vim do Instagram da **** e gostaria de agendar uma Consulta Online.',
    messageContextInfo: { deviceListMetadata: { senderTimestamp: '1717523235', recipientKeyHash: 'Dsydf2LJ9g4knA==', recipientTimestamp: '1716981781' }, deviceListMetadataVersion: 2 },
  },
  messageTimestamp: 1717607420,
};
const EXTENDED = {
  key: { remoteJid: '5511999999999@s.whatsapp.net', fromMe: false, id: '3EB0C767D26B8E1F2A4B' },
  pushName: 'Maria',
  message: {
    extendedTextMessage: {
      text: 'see https://example.com',
      contextInfo: { stanzaId: '3EB0AAAA', participant: '5511888888888@s.whatsapp.net', quotedMessage: { conversation: 'hi' } },
    },
  },
  messageTimestamp: 1717607420,
};

test('the package loads: baileys and the common runBridge', async () => {
  const baileys = await import('baileys');
  assert.equal(typeof baileys.makeWASocket, 'function');
  assert.equal(typeof baileys.useMultiFileAuthState, 'function');
  assert.equal(baileys.DisconnectReason.loggedOut, 401);
  const common = await import('@dashoffice/bridge-common');
  assert.equal(typeof common.runBridge, 'function');
  assert.equal(typeof driverFactory, 'function');
});

test('the Baileys example message (createBaseMessage)', () => {
  assert.deepEqual(normaliseBaileysMessage(EXAMPLE), {
    message_id: 'ABC',
    chat_id: 'chat@s.whatsapp.net',
    sender_id: 'chat@s.whatsapp.net',
    phone: null,
    lid: null,
    from_me: false,
    timestamp_s: 1675888000,
    type: 'conversation',
    text: 'hello',
    has_media: false,
    media: null,
    reply_id: null,
    location: null,
    push_name: null,
    is_group: false,
  });
});

test('a real message with messageContextInfo and a push name', () => {
  const data = normaliseBaileysMessage(REAL);
  assert.equal(data?.message_id, '3A554E20ECABF3D45BB2');
  assert.equal(data?.type, 'conversation');
  assert.equal(data?.text, REAL.message.conversation);
  assert.equal(data?.push_name, 'Giovanna Darcanovas');
  assert.equal(data?.timestamp_s, 1717607420);
});

test('an extended text (reply/link) message', () => {
  const data = normaliseBaileysMessage(EXTENDED);
  assert.equal(data?.type, 'extendedTextMessage');
  assert.equal(data?.text, 'see https://example.com');
  assert.equal(data?.push_name, 'Maria');
  assert.equal(data?.reply_id, null);
});

test('LID chats take the phone from remoteJidAlt, phone chats the LID', () => {
  const fromLid = normaliseBaileysMessage({ key: { remoteJid: '12345678901234@lid', remoteJidAlt: '15551234567@s.whatsapp.net', fromMe: false, id: 'L1' }, message: { conversation: 'x' } });
  assert.equal(fromLid?.phone, '15551234567');
  assert.equal(fromLid?.lid, null);
  const fromPhone = normaliseBaileysMessage({ key: { remoteJid: '15551234567@s.whatsapp.net', remoteJidAlt: '12345678901234:3@lid', fromMe: true, id: 'P1' }, message: { conversation: 'x' } });
  assert.equal(fromPhone?.lid, '12345678901234@lid');
  assert.equal(fromPhone?.phone, null);
  assert.equal(fromPhone?.from_me, true);
});

test('media, captions, buttons, lists, locations, groups, Long timestamps', () => {
  const image = normaliseBaileysMessage({ key: { remoteJid: '15551234567@s.whatsapp.net', id: 'I1' }, message: { imageMessage: { caption: 'see the photo', mimetype: 'image/jpeg' } }, messageTimestamp: { toNumber: () => 1591482682 } });
  assert.equal(image?.type, 'imageMessage');
  assert.equal(image?.text, 'see the photo');
  assert.equal(image?.has_media, true);
  assert.deepEqual(image?.media, { kind: 'image', mime_type: 'image/jpeg', caption: 'see the photo', filename: null });
  assert.equal(image?.timestamp_s, 1591482682);
  const doc = normaliseBaileysMessage({ key: { remoteJid: '15551234567@s.whatsapp.net', id: 'D1' }, message: { documentMessage: { fileName: 'a.pdf', mimetype: 'application/pdf' } } });
  assert.equal(doc?.media?.kind, 'document');
  assert.equal(doc?.media?.filename, 'a.pdf');
  const ptt = normaliseBaileysMessage({ key: { remoteJid: '15551234567@s.whatsapp.net', id: 'A1' }, message: { audioMessage: { ptt: true, mimetype: 'audio/ogg' } } });
  assert.equal(ptt?.media?.kind, 'audio');
  const sticker = normaliseBaileysMessage({ key: { remoteJid: '15551234567@s.whatsapp.net', id: 'S1' }, message: { stickerMessage: { mimetype: 'image/webp' } } });
  assert.equal(sticker?.media?.kind, 'image');
  const button = normaliseBaileysMessage({ key: { remoteJid: '15551234567@s.whatsapp.net', id: 'B1' }, message: { buttonsResponseMessage: { selectedButtonId: 'yes', selectedDisplayText: 'Yes' } } });
  assert.equal(button?.reply_id, 'yes');
  const list = normaliseBaileysMessage({ key: { remoteJid: '15551234567@s.whatsapp.net', id: 'R1' }, message: { listResponseMessage: { title: 'Row', singleSelectReply: { selectedRowId: 'row-2' } } } });
  assert.equal(list?.reply_id, 'row-2');
  const location = normaliseBaileysMessage({ key: { remoteJid: '15551234567@s.whatsapp.net', id: 'G1' }, message: { locationMessage: { degreesLatitude: -25.4, degreesLongitude: -49.3, name: 'Shop' } } });
  assert.deepEqual(location?.location, { latitude: -25.4, longitude: -49.3, name: 'Shop', address: null });
  const group = normaliseBaileysMessage({ key: { remoteJid: '120363025246125888@g.us', participant: '15551234567@s.whatsapp.net', id: 'GR1' }, message: { conversation: 'hi all' } });
  assert.equal(group?.is_group, true);
  assert.equal(group?.sender_id, '15551234567@s.whatsapp.net');
  const ephemeral = normaliseBaileysMessage({ key: { remoteJid: '15551234567@s.whatsapp.net', id: 'E1' }, message: { ephemeralMessage: { message: { conversation: 'secret' } } } });
  assert.equal(ephemeral?.text, 'secret');
  assert.equal(ephemeral?.type, 'conversation');
});

test('messages without content or ids, and protocol messages, are not reported', () => {
  assert.equal(normaliseBaileysMessage({ key: { remoteJid: '15551234567@s.whatsapp.net', id: 'X' } }), null);
  assert.equal(normaliseBaileysMessage({ key: { remoteJid: '15551234567@s.whatsapp.net' }, message: { conversation: 'x' } }), null);
  assert.equal(normaliseBaileysMessage({ key: { remoteJid: '15551234567@s.whatsapp.net', id: 'P' }, message: { protocolMessage: { type: 0 } } }), null);
});

test('acks: the status enum as names', () => {
  assert.deepEqual(normaliseBaileysAck({ key: { remoteJid: '15551234567@s.whatsapp.net', id: 'M1', fromMe: true }, update: { status: 3 } }), { id: 'M1', ack: 'delivered', chat_id: '15551234567@s.whatsapp.net' });
  assert.equal(normaliseBaileysAck({ key: { id: 'M1', fromMe: true }, update: { status: 0 } })?.ack, 'failed');
  assert.equal(normaliseBaileysAck({ key: { id: 'M1', fromMe: true }, update: { status: 2 } })?.ack, 'sent');
  assert.equal(normaliseBaileysAck({ key: { id: 'M1', fromMe: true }, update: { status: 4 } })?.ack, 'read');
  assert.equal(normaliseBaileysAck({ key: { id: 'M1', fromMe: true }, update: { status: 5 } })?.ack, 'played');
  assert.equal(normaliseBaileysAck({ key: { id: 'M1', fromMe: true }, update: { starred: true } }), null);
  assert.equal(normaliseBaileysAck({ key: { id: 'M1', fromMe: false }, update: { status: 4 } }), null);
});

test('JIDs: digits to s.whatsapp.net, LIDs through, the rest refused', () => {
  assert.equal(toJid('15551234567'), '15551234567@s.whatsapp.net');
  assert.equal(toJid('+15551234567'), '15551234567@s.whatsapp.net');
  assert.equal(toJid('12345678901234@lid'), '12345678901234@lid');
  assert.throws(() => toJid('hello'), (err) => /** @type {any} */ (err).code === 'invalid_recipient');
  assert.throws(() => toJid('120363025246125888@g.us'), (err) => /** @type {any} */ (err).code === 'invalid_recipient');
  assert.equal(phoneOfUser('15551234567:12@s.whatsapp.net'), '15551234567');
  assert.deepEqual(normaliseLidMapping({ lid: '12345678901234@lid', pn: '15551234567@s.whatsapp.net' }), { lid: '12345678901234@lid', phone: '15551234567' });
  assert.equal(normaliseLidMapping({ lid: 'x', pn: 'y' }), null);
  assert.equal(timestampSeconds('1717607420'), 1717607420);
});

test('disconnect classification', () => {
  const close = (/** @type {number} */ statusCode) => ({ error: { output: { statusCode } } });
  assert.deepEqual(classifyDisconnect(close(401)), { kind: 'logged_out', statusCode: 401, reason: '401 loggedOut' });
  assert.equal(classifyDisconnect(close(DisconnectReason.restartRequired)).kind, 'disconnected');
  assert.equal(classifyDisconnect({ error: Object.assign(new Error('WebSocket Error (getaddrinfo ENOTFOUND web.whatsapp.com)'), { output: { statusCode: 408 } }) }).reason, '408 timedOut: WebSocket Error (getaddrinfo ENOTFOUND web.whatsapp.com)');
  assert.equal(classifyDisconnect(close(DisconnectReason.connectionReplaced)).reason, '440 connectionReplaced');
  assert.equal(classifyDisconnect(close(408)).kind, 'disconnected');
  for (const code of [403, 411, 500]) assert.equal(classifyDisconnect(close(code)).kind, 'failed');
  assert.equal(classifyDisconnect(undefined).kind, 'disconnected');
  assert.equal(classifyDisconnect({ error: new Error('socket hang up') }).reason, 'socket hang up');
});

test('sendMedia content of an upload is its bytes', () => {
  const data = Buffer.from('%PDF-1.4 test');
  assert.deepEqual(mediaContent({ kind: 'document', url: null, data, caption: null, filename: 'a.pdf', mimeType: 'application/pdf' }), {
    document: data,
    fileName: 'a.pdf',
    mimetype: 'application/pdf',
  });
});

test('sendMedia content by URL', () => {
  assert.deepEqual(mediaContent({ kind: 'image', url: 'https://x/a.png', caption: 'c', filename: null, mimeType: null }), { image: { url: 'https://x/a.png' }, caption: 'c' });
  assert.deepEqual(mediaContent({ kind: 'document', url: 'https://x/a.pdf', caption: null, filename: 'a.pdf', mimeType: 'application/pdf' }), {
    document: { url: 'https://x/a.pdf' },
    fileName: 'a.pdf',
    mimetype: 'application/pdf',
  });
  assert.deepEqual(mediaContent({ kind: 'audio', url: 'https://x/a.ogg', caption: 'ignored', filename: null, mimeType: 'audio/ogg' }), { audio: { url: 'https://x/a.ogg' }, mimetype: 'audio/ogg' });
});

test('send before start answers session_not_ready', async () => {
  const driver = driverFactory({ session: 's', dataDir: tmpdir(), emit: () => {}, library: 'baileys', pairingPhone: null, chromiumPath: '', log: console });
  await assert.rejects(driver.send({ to: '15551234567', text: 'x', replyTo: null }), (err) => /** @type {any} */ (err).code === 'session_not_ready');
});

// A real session against WhatsApp's servers: only with BAILEYS_LIVE=1 (needs the network).
test('live: a real session shows a QR', { skip: process.env.BAILEYS_LIVE !== '1' && 'set BAILEYS_LIVE=1 to connect to WhatsApp', timeout: 60_000 }, async () => {
  const dataDir = await mkdtemp(join(tmpdir(), 'baileys-live-'));
  /** @type {{type: string, data: any, at: number}[]} */
  const events = [];
  const t0 = Date.now();
  const log = {
    debug() {},
    info() {},
    warn: (/** @type {string} */ m, /** @type {any} */ f) => console.error('[warn]', m, JSON.stringify(f ?? {})),
    error: (/** @type {string} */ m, /** @type {any} */ f) => console.error('[error]', m, JSON.stringify(f ?? {})),
  };
  let settle = () => {};
  const done = new Promise((resolve) => (settle = /** @type {() => void} */ (resolve)));
  const driver = driverFactory({
    session: 'live',
    dataDir,
    library: 'baileys',
    pairingPhone: process.env.BAILEYS_PAIRING_PHONE ?? null,
    chromiumPath: '',
    log,
    emit: (/** @type {string} */ type, /** @type {any} */ data) => {
      events.push({ type, data, at: Date.now() - t0 });
      console.error(`[event +${Date.now() - t0}ms] ${type} ${JSON.stringify(data)}`);
      if (['qr', 'pairing_code', 'disconnected', 'failed'].includes(type)) settle();
    },
  });
  try {
    await driver.start();
    await Promise.race([done, new Promise((resolve) => setTimeout(resolve, 45_000))]);
  } finally {
    await driver.stop();
    await rm(dataDir, { recursive: true, force: true });
  }
  const qr = events.find((e) => e.type === 'qr' || e.type === 'pairing_code');
  assert.ok(qr, `no QR within 45 s; events: ${JSON.stringify(events)}`);
});
