// Pure parts: addresses, message and ack normalisation, the echo filter, media download.

import assert from 'node:assert/strict';
import http from 'node:http';
import { test } from 'node:test';
import { e164, isGroupLike, lidJid, parseRecipient, phoneDigits, recipientJid } from '../src/address.js';
import { downloadMedia } from '../src/media.js';
import { EchoFilter, normaliseAck, normaliseMessage } from '../src/messages.js';

test('recipients: phone digits or a LID JID, nothing else', () => {
  assert.deepEqual(parseRecipient('15551234567'), { kind: 'phone', digits: '15551234567' });
  assert.deepEqual(parseRecipient('+15551234567'), { kind: 'phone', digits: '15551234567' });
  assert.deepEqual(parseRecipient('12345678901234@lid'), { kind: 'lid', jid: '12345678901234@lid' });
  for (const bad of ['', '123', '1555123456789012', '15551234567@c.us', 'abc', '12@g.us', null, 15551234567]) {
    assert.equal(parseRecipient(bad), null, String(bad));
  }
  assert.equal(recipientJid('15551234567', 'c.us'), '15551234567@c.us');
  assert.equal(recipientJid('15551234567', 's.whatsapp.net'), '15551234567@s.whatsapp.net');
  assert.equal(recipientJid('12345678901234@lid', 's.whatsapp.net'), '12345678901234@lid');
  assert.throws(() => recipientJid('x', 'c.us'));
});

test('JIDs: phones in both spellings with device suffixes; LIDs never phones', () => {
  assert.equal(phoneDigits('15551234567@c.us'), '15551234567');
  assert.equal(phoneDigits('15551234567:12@s.whatsapp.net'), '15551234567');
  assert.equal(phoneDigits('+15551234567'), '15551234567');
  assert.equal(phoneDigits('12345678901234@lid'), null);
  assert.equal(phoneDigits('120363000000000000@g.us'), null);
  assert.equal(e164('15551234567@c.us'), '+15551234567');
  assert.equal(lidJid('12345678901234:5@lid'), '12345678901234@lid');
  assert.equal(lidJid('15551234567@c.us'), null);
  assert.ok(isGroupLike('1203@g.us') && isGroupLike('status@broadcast') && isGroupLike('1@newsletter'));
  assert.ok(!isGroupLike('15551234567@c.us') && !isGroupLike('1@lid'));
});

test('messages: defaults filled, media kinds from library types, unusable ones skipped', () => {
  const now = 1767225600_000;
  const { data } = /** @type {any} */ (normaliseMessage({ message_id: 'ABC', chat_id: 'chat@s.whatsapp.net', text: 'hello' }, now));
  assert.deepEqual(data, {
    message_id: 'ABC',
    chat_id: 'chat@s.whatsapp.net',
    sender_id: 'chat@s.whatsapp.net',
    phone: null,
    lid: null,
    from_me: false,
    timestamp_s: 1767225600,
    type: 'unknown',
    text: 'hello',
    has_media: false,
    media: null,
    reply_id: null,
    location: null,
    push_name: null,
    is_group: false,
  });
  const kinds = ['ptt', 'sticker', 'audioMessage', 'documentWithCaptionMessage', 'video', 'chat'].map(
    (type) => /** @type {any} */ (normaliseMessage({ message_id: 'x', chat_id: '1@lid', type, media: {} }, now)).data.media.kind,
  );
  assert.deepEqual(kinds, ['audio', 'image', 'audio', 'document', 'video', null]);
  const declared = /** @type {any} */ (normaliseMessage({ message_id: 'x', chat_id: '1@lid', type: 'ptt', media: { kind: 'document' } }, now));
  assert.equal(declared.data.media.kind, 'document');
  assert.ok('skip' in normaliseMessage({ chat_id: '1@lid' }, now));
  assert.ok('skip' in normaliseMessage({ message_id: 'x', chat_id: '120363@g.us' }, now));
  assert.ok('skip' in normaliseMessage({ message_id: 'x', chat_id: '1@c.us', is_group: true }, now));
  const location = /** @type {any} */ (normaliseMessage({ message_id: 'x', chat_id: '1@lid', location: { latitude: null, longitude: 2 } }, now));
  assert.equal(location.data.location, null);
});

test('acks: numbers and aliases become names', () => {
  const ack = (value) => normaliseAck({ id: 'X', ack: value }, 0);
  assert.deepEqual([-1, 1, 2, 3, 4].map((n) => /** @type {any} */ (ack(n)).data.ack), ['failed', 'sent', 'delivered', 'read', 'played']);
  assert.deepEqual(['SERVER_ACK', 'delivery_ack', 'error', 'Read'].map((n) => /** @type {any} */ (ack(n)).data.ack), ['sent', 'delivered', 'failed', 'read']);
  assert.ok('skip' in ack(0) && 'skip' in ack('pending') && 'skip' in ack(5) && 'skip' in ack('seen'));
  assert.ok('skip' in normaliseAck({ ack: 1 }, 0));
});

test('echo filter: own sends dropped, phone messages held only while sends are under way', async () => {
  const filter = new EchoFilter({ holdMs: 50 });
  /** @type {string[]} */
  const posted = [];
  const post = (/** @type {any} */ data) => posted.push(data.message_id);
  const message = (id) => /** @type {any} */ ({ message_id: id });

  assert.equal(filter.offer('s', message('P0'), post), 'posted');
  filter.begin('s');
  assert.equal(filter.offer('s', message('OWN-1'), post), 'held');
  assert.equal(filter.offer('s', message('P1'), post), 'held');
  assert.deepEqual(posted, ['P0']);
  filter.end('s', 'OWN-1');
  assert.deepEqual(posted, ['P0', 'P1'], 'the echo dropped, the phone message released');
  assert.equal(filter.offer('s', message('OWN-1'), post), 'echo', 'a late echo too');
  assert.equal(filter.offer('other', message('OWN-1'), post), 'posted', 'per session');

  // A message held while sends never end is released after holdMs.
  filter.begin('s');
  filter.offer('s', message('P2'), post);
  await new Promise((resolve) => setTimeout(resolve, 80));
  assert.deepEqual(posted, ['P0', 'P1', 'OWN-1', 'P2']);
  filter.end('s', null);
});

test('downloadMedia follows redirects and reports type and file name', async (t) => {
  const server = http.createServer((req, res) => {
    if (req.url === '/old') {
      res.writeHead(302, { location: '/files/menu.png' });
      res.end();
    } else if (req.url === '/files/menu.png') {
      res.writeHead(200, { 'content-type': 'image/png; charset=binary' });
      res.end('PNGDATA');
    } else if (req.url === '/named') {
      res.writeHead(200, { 'content-type': 'application/pdf', 'content-disposition': 'attachment; filename="price list.pdf"' });
      res.end('PDF');
    } else {
      res.writeHead(404);
      res.end();
    }
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(undefined)));
  t.after(() => new Promise((resolve) => server.close(resolve)));
  const base = `http://127.0.0.1:${/** @type {any} */ (server.address()).port}`;
  const png = await downloadMedia(`${base}/old`);
  assert.deepEqual([png.data.toString(), png.mimeType, png.filename], ['PNGDATA', 'image/png', 'menu.png']);
  const pdf = await downloadMedia(`${base}/named`);
  assert.deepEqual([pdf.mimeType, pdf.filename], ['application/pdf', 'price list.pdf']);
  await assert.rejects(downloadMedia(`${base}/missing`), /HTTP 404/);
  await assert.rejects(downloadMedia(`${base}/files/menu.png`, { maxBytes: 3 }), /exceeds 3 bytes/);
});
