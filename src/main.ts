#!/usr/bin/env node
/** The `unnar` command: reads flags and environment, starts the server, stops on SIGTERM/SIGINT. */
import { setFlagsFromString } from 'node:v8'
import { applyFlags, type Config, ConfigError, describeConfigError, loadConfig } from './config.js'
import { createLogger } from './log.js'
import { type RunningServer, startServer, VERSION } from './server.js'
import { helpText } from './settings.js'
import { heapGrowingFlag } from './v8-heap.js'

async function main(argv: readonly string[]): Promise<void> {
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(helpText(VERSION))
    return
  }
  if (argv.includes('--version')) {
    process.stdout.write(`${VERSION}\n`)
    return
  }
  let config: Config
  try {
    config = loadConfig(applyFlags(process.env, argv))
  } catch (err) {
    if (!(err instanceof ConfigError || err instanceof TypeError)) throw err
    process.stderr.write(`unnar: ${err instanceof ConfigError ? describeConfigError(err, argv) : err.message}\n`)
    process.exit(2)
  }
  const log = createLogger(config.logLevel)
  // Read by V8 at every full collection, so setting it now (not on node's command line) takes effect.
  const heapFlag = heapGrowingFlag(process.execArgv, process.env.NODE_OPTIONS)
  if (heapFlag !== undefined) setFlagsFromString(heapFlag)
  let server: RunningServer
  try {
    server = await startServer(config, log)
  } catch (err) {
    process.stderr.write(`unnar: cannot start: ${(err as Error).message}\n`)
    process.exit(1)
  }
  let stopping = false
  const stop = (signal: string) => {
    // A second signal means "now": skip the wait for in-flight responses.
    if (stopping) {
      log.warn('stopping now', { signal })
      void server.close().then(() => process.exit(0))
      return
    }
    stopping = true
    log.info('stopping: finishing in-flight responses', { signal, timeoutSeconds: config.shutdownTimeoutMs / 1000 })
    void server.shutdown().then(() => {
      log.info('stopped')
      process.exit(0)
    })
  }
  process.on('SIGTERM', () => stop('SIGTERM'))
  process.on('SIGINT', () => stop('SIGINT'))
}

await main(process.argv.slice(2))
