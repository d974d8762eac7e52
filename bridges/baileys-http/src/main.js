// The Baileys bridge process (docs/bridges.md): the common bridge server with the Baileys
// driver, configured from the environment (BRIDGE_PORT defaults to 3012).

import { installedVersion, runBridge } from '@dashoffice/bridge-common';
import { driverFactory } from './driver.js';

await runBridge({ library: 'baileys', version: installedVersion(import.meta.url, 'baileys'), driverFactory, defaults: { port: 3012 } });
