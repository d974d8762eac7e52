// The shared part of every DashOffice bridge: the contract server and what drivers use.

export { createBridge, CONTRACT_VERSION } from './server.js';
export { runBridge, installedVersion } from './run.js';
export { loadConfig, ConfigError, ENV_VARIABLES } from './config.js';
export { SessionManager, SESSION_STATES, SESSION_NAME } from './sessions.js';
export { EventQueue, signEvent } from './events.js';
export { LidMap } from './lid.js';
export { IdempotencyStore } from './idempotency.js';
export { MediaStore, downloadMedia } from './media.js';
export { BridgeError, ERROR_STATUS } from './errors.js';
export { parseRecipient, recipientJid, phoneDigits, e164, lidJid, isGroupLike, splitJid } from './address.js';
export { normaliseMessage, normaliseAck, mediaKindOfType, EchoFilter } from './messages.js';
export { createLogger, silentLogger } from './log.js';
