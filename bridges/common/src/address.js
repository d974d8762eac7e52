// WhatsApp addresses (docs/bridges.md, "Addresses"): `to` is a phone number's digits
// with the country code (`15551234567`) or a LID JID (`12345678901234@lid`). A phone is
// `<digits>@c.us` (venom, whatsapp-web.js) or `<digits>@s.whatsapp.net` (Baileys), the
// same user in either spelling; `user:device@server` names one device of that user. A
// LID is a privacy id and never a phone number.

const PHONE_SERVERS = new Set(['c.us', 's.whatsapp.net']);

/**
 * A recipient as the contract gives it: `{kind: 'phone', digits}` or `{kind: 'lid', jid}`,
 * or null when it is neither. A leading `+` is tolerated.
 * @param {unknown} to
 * @returns {{kind: 'phone', digits: string} | {kind: 'lid', jid: string} | null}
 */
export function parseRecipient(to) {
  if (typeof to !== 'string') return null;
  const value = to.trim();
  const phone = /^\+?(\d{6,15})$/.exec(value);
  if (phone) return { kind: 'phone', digits: phone[1] };
  const lid = /^(\d{1,24})@lid$/.exec(value);
  if (lid) return { kind: 'lid', jid: `${lid[1]}@lid` };
  return null;
}

/**
 * The library JID of a contract recipient: digits become `<digits>@<phoneServer>`, a LID
 * JID passes through. Throws on anything else.
 * @param {string} to a recipient accepted by {@link parseRecipient}
 * @param {'c.us' | 's.whatsapp.net'} phoneServer
 */
export function recipientJid(to, phoneServer) {
  const recipient = parseRecipient(to);
  if (!recipient) throw new Error(`${JSON.stringify(to)} is not a phone number or a LID`);
  return recipient.kind === 'phone' ? `${recipient.digits}@${phoneServer}` : recipient.jid;
}

/**
 * Splits a JID into user (device suffix dropped) and server; null when it has no `@`.
 * @param {unknown} jid
 */
export function splitJid(jid) {
  if (typeof jid !== 'string') return null;
  const at = jid.trim().lastIndexOf('@');
  if (at <= 0) return null;
  const user = jid.trim().slice(0, at).split(':')[0];
  const server = jid.trim().slice(at + 1).toLowerCase();
  if (!user || !server) return null;
  return { user, server };
}

/**
 * The phone digits of a phone JID (`15551234567@c.us`, `15551234567:3@s.whatsapp.net`),
 * of `+15551234567` or of bare digits; null otherwise (a LID in particular).
 * @param {unknown} value
 */
export function phoneDigits(value) {
  if (typeof value !== 'string') return null;
  const text = value.trim();
  const bare = /^\+?(\d{6,15})$/.exec(text);
  if (bare) return bare[1];
  const jid = splitJid(text);
  if (jid && PHONE_SERVERS.has(jid.server) && /^\d{6,15}$/.test(jid.user)) return jid.user;
  return null;
}

/**
 * `+<digits>` (E.164) of anything {@link phoneDigits} accepts, else null.
 * @param {unknown} value
 */
export function e164(value) {
  const digits = phoneDigits(value);
  return digits ? `+${digits}` : null;
}

/**
 * The canonical LID JID (`<digits>@lid`, device suffix dropped) of a LID JID, else null.
 * @param {unknown} value
 */
export function lidJid(value) {
  const jid = splitJid(value);
  if (!jid || jid.server !== 'lid' || !/^\d{1,24}$/.test(jid.user)) return null;
  return `${jid.user}@lid`;
}

/**
 * Whether a chat id names a group, a broadcast list, status or a newsletter rather than
 * one person.
 * @param {unknown} chatId
 */
export function isGroupLike(chatId) {
  const jid = splitJid(chatId);
  if (!jid) return false;
  return jid.server === 'g.us' || jid.server === 'broadcast' || jid.server === 'newsletter';
}
