// The main of a bridge process: configuration from the environment, the server, and a
// clean shutdown on SIGTERM or SIGINT. A driver package's entry point is one call:
//
//   import { runBridge } from '@dashoffice/bridge-common';
//   await runBridge({ library: 'wwebjs', version, driverFactory, defaults: { port: 3014 } });

import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { ConfigError, loadConfig } from './config.js';
import { createLogger } from './log.js';
import { createBridge } from './server.js';

/**
 * Starts a bridge from the environment. Exits the process with 2 on a configuration
 * error, 1 when the bridge cannot start, and 0 after a clean shutdown on a signal.
 * @param {{
 *   library: string,
 *   version: string,
 *   driverFactory: import('./sessions.js').DriverFactory,
 *   defaults?: {port?: number, maxSessions?: number, dataDir?: string},
 *   env?: Record<string, string | undefined>,
 *   timings?: import('./server.js').BridgeTimings,
 * }} options
 */
export async function runBridge(options) {
  let config;
  try {
    config = loadConfig(options.env ?? process.env, options.defaults);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    process.stderr.write(`${options.library} bridge: ${err.message}\n`);
    process.exit(2);
  }
  const log = createLogger({ level: config.logLevel, base: { library: options.library } });
  for (const warning of config.warnings) log.warn(warning);

  process.on('unhandledRejection', (reason) => log.error('unhandled promise rejection (library bug?)', { error: reason }));
  process.on('uncaughtException', (err) => {
    log.error('uncaught exception; exiting', { error: err, stack: err.stack });
    process.exit(1);
  });

  const bridge = createBridge({
    library: options.library,
    version: options.version,
    driverFactory: options.driverFactory,
    port: config.port,
    host: config.host,
    token: config.token,
    dataDir: config.dataDir,
    dashdUrl: config.dashdUrl,
    maxSessions: config.maxSessions,
    maxUploadBytes: config.maxUploadBytes,
    publicUrl: config.publicUrl,
    chromiumPath: config.chromiumPath,
    reconnectMaxAttempts: config.reconnectMaxAttempts,
    timings: options.timings,
    log,
  });
  try {
    await bridge.listen();
  } catch (err) {
    log.error('the bridge cannot start', { error: err });
    await bridge.close().catch(() => {});
    process.exit(1);
  }

  let stopping = false;
  /** @param {NodeJS.Signals} signal */
  const stop = (signal) => {
    if (stopping) {
      log.warn('second signal: exiting without finishing the shutdown', { signal });
      process.exit(1);
    }
    stopping = true;
    log.info('signal received', { signal });
    bridge.close().then(
      () => process.exit(0),
      (err) => {
        log.error('shutdown failed', { error: err });
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  return bridge;
}

/**
 * The version of a package as installed for the module at `fromUrl` (a bridge's
 * `import.meta.url`): what `GET /health` reports of the library. `unknown` when it
 * cannot be read.
 * @param {string} fromUrl
 * @param {string} packageName
 */
export function installedVersion(fromUrl, packageName) {
  try {
    const path = createRequire(fromUrl).resolve(`${packageName}/package.json`);
    return JSON.parse(readFileSync(path, 'utf8')).version ?? 'unknown';
  } catch {
    return 'unknown';
  }
}
