// The Baileys bridge process (docs/bridges.md): the common bridge server with the Baileys
// driver, configured from the environment (BRIDGE_PORT defaults to 3012).

import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { runBridge } from '@dashoffice/bridge-common';
import { driverFactory } from './driver.js';

/** The installed Baileys version (what `GET /health` reports). */
export function baileysVersion() {
  try {
    const require = createRequire(import.meta.url);
    const path = require.resolve('baileys/package.json');
    return JSON.parse(readFileSync(path, 'utf8')).version;
  } catch {
    return 'unknown';
  }
}

await runBridge({ library: 'baileys', version: baileysVersion(), driverFactory, defaults: { port: 3012 } });
