// Configuration from the environment.

import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { test } from 'node:test';
import { ConfigError, loadConfig } from '../src/config.js';
import { tempDir } from './helpers/harness.js';

const TOKEN = 'a-long-enough-bridge-token';

test('defaults', () => {
  const config = loadConfig({ BRIDGE_TOKEN: TOKEN }, { port: 3014 });
  assert.equal(config.port, 3014);
  assert.equal(config.host, '127.0.0.1');
  assert.equal(config.token, TOKEN);
  assert.equal(config.dashdUrl, 'http://127.0.0.1:3009');
  assert.equal(config.maxSessions, 10);
  assert.equal(config.maxUploadBytes, 16 * 1024 * 1024);
  assert.equal(config.chromiumPath, '/usr/bin/chromium');
  assert.equal(config.dataDir, resolve('bridge-data'));
  assert.equal(config.reconnectMaxAttempts, 0);
  assert.equal(config.logLevel, 'info');
  assert.deepEqual(config.warnings, []);
});

test('every variable', () => {
  const config = loadConfig({
    BRIDGE_PORT: '4000',
    BRIDGE_HOST: '0.0.0.0',
    BRIDGE_TOKEN: TOKEN,
    BRIDGE_DATA_DIR: '/var/lib/dash/bridge',
    DASHD_URL: 'https://dashd.internal:8443/',
    BRIDGE_MAX_SESSIONS: '3',
    BRIDGE_MAX_UPLOAD_BYTES: '67108864',
    BRIDGE_PUBLIC_URL: 'http://10.0.0.5:4000/',
    BRIDGE_LOG_LEVEL: 'debug',
    BRIDGE_RECONNECT_MAX_ATTEMPTS: '20',
    CHROMIUM_PATH: '/opt/chromium/chrome',
  });
  assert.deepEqual(
    { ...config, warnings: undefined },
    {
      port: 4000,
      host: '0.0.0.0',
      token: TOKEN,
      dataDir: '/var/lib/dash/bridge',
      dashdUrl: 'https://dashd.internal:8443',
      maxSessions: 3,
      maxUploadBytes: 67108864,
      publicUrl: 'http://10.0.0.5:4000',
      logLevel: 'debug',
      reconnectMaxAttempts: 20,
      chromiumPath: '/opt/chromium/chrome',
      warnings: undefined,
    },
  );
});

test('the token: required, from a file, not both, warned when short', async (t) => {
  assert.throws(() => loadConfig({}), (err) => err instanceof ConfigError && /no token/.test(err.message));
  assert.throws(() => loadConfig({ BRIDGE_TOKEN: '   ' }), /no token/);
  const dir = await tempDir(t);
  const file = join(dir, 'token');
  await writeFile(file, `${TOKEN}\n`);
  assert.equal(loadConfig({ BRIDGE_TOKEN_FILE: file }).token, TOKEN);
  assert.throws(() => loadConfig({ BRIDGE_TOKEN_FILE: file, BRIDGE_TOKEN: TOKEN }), /not both/);
  assert.throws(() => loadConfig({ BRIDGE_TOKEN_FILE: join(dir, 'missing') }), /cannot be read/);
  await writeFile(join(dir, 'empty'), '\n');
  assert.throws(() => loadConfig({ BRIDGE_TOKEN_FILE: join(dir, 'empty') }), /holds no token/);
  assert.match(loadConfig({ BRIDGE_TOKEN: 'short' }).warnings.join(), /shorter than 16/);
});

test('malformed values are refused, naming the variable; unknown BRIDGE_* variables are reported', () => {
  const base = { BRIDGE_TOKEN: TOKEN };
  for (const [name, value] of [
    ['BRIDGE_PORT', '70000'],
    ['BRIDGE_PORT', 'http'],
    ['BRIDGE_MAX_SESSIONS', '0'],
    ['BRIDGE_MAX_SESSIONS', '-1'],
    ['DASHD_URL', 'localhost:3009'],
    ['DASHD_URL', 'ftp://x'],
    ['BRIDGE_PUBLIC_URL', 'nope'],
    ['BRIDGE_LOG_LEVEL', 'loud'],
    ['BRIDGE_RECONNECT_MAX_ATTEMPTS', 'x'],
    ['BRIDGE_MAX_UPLOAD_BYTES', '16M'],
    ['BRIDGE_MAX_UPLOAD_BYTES', '100'],
  ]) {
    assert.throws(() => loadConfig({ ...base, [name]: value }), (err) => err instanceof ConfigError && err.message.includes(name), `${name}=${value}`);
  }
  assert.deepEqual(loadConfig({ ...base, BRIDGE_PROT: '1' }).warnings, ['unknown environment variable BRIDGE_PROT is ignored']);
});
