/**
 * Long-lived worker threads shared by jobs (a NAR being hashed, a zstd stream being decoded), each
 * job talking to its worker over a MessagePort of its own.
 *
 * The two pools (file-hasher.ts, worker-decoder.ts) are the one piece of module state outside the
 * composition root, on purpose: threads are a process resource, like libuv's own pool. Servers in
 * one process (the tests, bench/unnar-child.ts) share them without seeing each other, since a job
 * keeps all its state behind its own port; and a server started after another finds its threads
 * already running. The workers are unref'd, so they never keep a stopped process alive.
 */
import { availableParallelism } from 'node:os'
import { MessageChannel, type MessagePort, Worker, type WorkerOptions } from 'node:worker_threads'

export interface PooledJob {
  /** This job's end of its channel; the worker gets the other end in `{ port, ...start }`. */
  readonly port: MessagePort
  /** The job is over: closes its port (the worker drops its state) and frees the worker's slot. */
  release(): void
}

interface PoolWorker {
  readonly worker: Worker
  jobs: number
}

export class WorkerPool {
  readonly #workers: PoolWorker[] = []
  readonly #source: string
  readonly #options: WorkerOptions

  /** `source`: the worker's CommonJS code, run with `eval`. */
  constructor(source: string, options: Omit<WorkerOptions, 'eval'> = {}) {
    this.#source = source
    this.#options = { ...options, eval: true }
  }

  /** Starts a job on the least busy worker (a new one while fewer than one per core exist and all are busy). */
  start(start: Record<string, unknown> = {}): PooledJob {
    const entry = this.#pick()
    entry.jobs++
    const { port1, port2 } = new MessageChannel()
    entry.worker.postMessage({ ...start, port: port2 }, [port2])
    let released = false
    return {
      port: port1,
      release: () => {
        if (released) return
        released = true
        entry.jobs--
        port1.close()
      },
    }
  }

  /**
   * Starts the first worker now, in the background: a new worker takes ~35 ms of CPU (an isolate,
   * then its modules) that would otherwise delay the first NAR after a start (bench/ "cold last file", zstd).
   */
  warm(): void {
    if (this.#workers.length === 0) this.#spawn()
  }

  #pick(): PoolWorker {
    const workers = this.#workers
    const idle = workers.find((w) => w.jobs === 0)
    if (idle !== undefined || workers.length >= availableParallelism())
      return idle ?? workers.reduce((a, b) => (b.jobs < a.jobs ? b : a))
    return this.#spawn()
  }

  #spawn(): PoolWorker {
    const workers = this.#workers
    const worker = new Worker(this.#source, this.#options)
    worker.unref() // a pooled worker must not keep the process alive
    const entry: PoolWorker = { worker, jobs: 0 }
    // Its ports close with it, which fails the jobs it was running.
    worker.on('error', () => {
      const index = workers.indexOf(entry)
      if (index >= 0) workers.splice(index, 1)
    })
    workers.push(entry)
    return entry
  }
}
