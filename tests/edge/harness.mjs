// =================================================================================================
// The Workers harness: a Cloudflare Python Worker (`class Default(WorkerEntrypoint)`) on Pyodide in
// Node, its `fetch`, `scheduled` and `queue` handlers called the way workerd calls them.
//
// What is real: Pyodide 314.0.6 (npm `pyodide`, the build Cloudflare runs for compatibility_date
// >= 2026-09-08 with `python_workers`), Cloudflare's Python SDK (the `workers-runtime-sdk` wheel,
// with its ASGI adapter and its import patches), the Python wheels the worker vendors (FastAPI,
// pydantic-core for wasm32, ...), Heron's own wheel, and Node's `fetch` (what `js.fetch` reaches:
// a real sqld on 127.0.0.1 for the Turso runs). What is stood in for, in standins/ and labelled
// there: the two runtime-only JavaScript modules the SDK imports (`_pyodide_entrypoint_helper`,
// `_cloudflare_compat_flags`), workerd's private `_cloudflare` package (the SDK's import patch
// hooks), the import-time ("snapshot") guards, the execution context, the cron controller, the
// queue batch and its broker, and the D1 binding (SQLite: a DOUBLE).
//
// Nothing here downloads anything: Pyodide comes from the directory given (tests/servers/
// node_modules/pyodide), the Python packages from local wheel files.
// =================================================================================================
import nodeCrypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

import {
  DEFAULT_COMPAT_FLAGS,
  DISALLOWED_GLOBAL_SCOPE_MESSAGE,
  ExecutionContext,
  QueueController,
  QueueMessage,
  ScheduledController,
  drainWaitUntil,
  makeEntrypointHelper,
} from "./standins/runtime.mjs";
import { D1Database, QueueBroker, WorkerQueue } from "./standins/bindings.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const SESSION = "/session/metadata"; // where workerd puts the worker's modules
const PY_MODULES = `${SESSION}/python_modules`; // where pywrangler vendors packages (the SDK too)
const HARNESS_LIB = "/harness/lib"; // the `_cloudflare` stand-in

// Shared by the guards of every harness in this process: > 0 while a main module is imported.
const STATE = (globalThis.__heronHarness ??= { importing: 0, entropyAllowance: 0 });

function u8(buffer) {
  // pyodide.unpackArchive and FS.writeFile want a plain Uint8Array, not a Node Buffer
  return new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
}

function copyTree(FS, hostDir, target) {
  FS.mkdirTree(target);
  for (const entry of fs.readdirSync(hostDir, { withFileTypes: true })) {
    if (["__pycache__", "node_modules", "python_modules", ".venv"].includes(entry.name)) continue;
    const host = path.join(hostDir, entry.name);
    const inside = `${target}/${entry.name}`;
    if (entry.isDirectory()) copyTree(FS, host, inside);
    else if (entry.isFile()) FS.writeFile(inside, u8(fs.readFileSync(host)));
  }
}

let pyodideModule; // the pyodide.mjs module, imported once per process
async function loadPyodideFrom(dir, options) {
  pyodideModule ??= await import(pathToFileURL(path.join(dir, "pyodide.mjs")).href);
  return pyodideModule.loadPyodide({ indexURL: dir + path.sep, ...options });
}

function installJsGuards() {
  // workerd throws for I/O, timers and randomness at global scope. The JS globals are wrapped
  // once per process; the rules apply only while some harness imports its main module.
  if (globalThis.__heronHarnessGuards) return;
  globalThis.__heronHarnessGuards = true;
  const fetch = globalThis.fetch;
  globalThis.fetch = function guardedFetch(...args) {
    if (STATE.importing > 0) throw new Error(DISALLOWED_GLOBAL_SCOPE_MESSAGE);
    return fetch.apply(this, args);
  };
  const setTimeout = globalThis.setTimeout;
  globalThis.setTimeout = function guardedSetTimeout(callback, ms, ...args) {
    if (STATE.importing > 0 && ms > 0) throw new Error(DISALLOWED_GLOBAL_SCOPE_MESSAGE);
    return setTimeout(callback, ms, ...args);
  };
  // Python's entropy (os.urandom, every package's random seed) comes from emscripten's
  // randomFill: node:crypto.randomFillSync under Node, crypto.getRandomValues elsewhere (workerd)
  const allow = () => {
    if (STATE.importing > 0) {
      if (STATE.entropyAllowance <= 0) throw new Error(DISALLOWED_GLOBAL_SCOPE_MESSAGE);
      STATE.entropyAllowance -= 1;
    }
  };
  const getRandomValues = globalThis.crypto.getRandomValues.bind(globalThis.crypto);
  globalThis.crypto.getRandomValues = (array) => {
    allow();
    return getRandomValues(array);
  };
  const randomFillSync = nodeCrypto.randomFillSync;
  nodeCrypto.randomFillSync = function guardedRandomFillSync(...args) {
    allow();
    return randomFillSync.apply(this, args);
  };
}

export class PythonWorkerHarness {
  /**
   * @param {object} o
   * @param {string} o.pyodideDir   the npm pyodide package's directory
   * @param {string} o.workerDir    the worker's source directory (wrangler's `main` lives there)
   * @param {string} o.main         the main module's file name ("worker.py")
   * @param {string[]} o.wheels     wheel files unpacked into python_modules (SDK, deps, Heron)
   * @param {Record<string,string>} [o.vars]   vars and secrets
   * @param {string[]} [o.d1]       D1 binding names (each a SQLite DOUBLE in memory)
   * @param {Record<string,string>} [o.queueProducers] binding name -> queue name
   * @param {Record<string,object>} [o.queueConsumers] queue name -> {maxBatchSize, maxRetries, ...}
   */
  constructor(o) {
    this.o = { vars: {}, d1: [], queueProducers: {}, queueConsumers: {}, ...o };
    this.clockOffsetMs = 0;
    this.clock = () => Date.now() + this.clockOffsetMs;
    this.broker = new QueueBroker({ clock: this.clock });
    this.state = { env: null, ctx: null }; // read by the `cloudflare:workers` stand-in
    this.log = [];
  }

  static async create(o) {
    const harness = new PythonWorkerHarness(o);
    await harness.load();
    return harness;
  }

  /** Virtual time for queue delays (Python's clock is the real one). */
  advanceTime(seconds) {
    this.clockOffsetMs += seconds * 1000;
  }

  async load() {
    const t0 = Date.now();
    installJsGuards(); // before Pyodide starts: emscripten keeps the crypto function it finds
    const write = (text) => process.stderr.write(text + "\n"); // stdout is the driver's protocol
    const py = (this.py = await loadPyodideFrom(this.o.pyodideDir, { stdout: write, stderr: write }));
    this.timings = { pyodideMs: Date.now() - t0 };

    // 1. the runtime-only JS modules the SDK imports (stand-ins)
    py.registerJsModule("_pyodide_entrypoint_helper", makeEntrypointHelper({ state: this.state }));
    py.registerJsModule("_cloudflare_compat_flags", { ...DEFAULT_COMPAT_FLAGS });

    // 2. files, laid out as workerd lays them out: the worker's modules, the vendored packages
    const t1 = Date.now();
    copyTree(py.FS, this.o.workerDir, SESSION);
    py.FS.mkdirTree(PY_MODULES);
    for (const wheel of this.o.wheels) {
      py.unpackArchive(u8(fs.readFileSync(wheel)), "wheel", { extractDir: PY_MODULES });
    }
    copyTree(py.FS, path.join(HERE, "standins", "_cloudflare"), `${HARNESS_LIB}/_cloudflare`);
    py.runPython(`
import sys, site
sys.path.append("${HARNESS_LIB}")          # workerd's private _cloudflare package (stand-in)
for p in ("${SESSION}", "${PY_MODULES}"):
    while p in sys.path: sys.path.remove(p)
sys.path.insert(0, "${SESSION}")
site.addsitedir("${PY_MODULES}")           # runs the SDK's .pth loader (python_process_pth_files)
sys.path.remove("${PY_MODULES}")
sys.path.insert(1, "${PY_MODULES}")
`);
    this.timings.filesMs = Date.now() - t1;

    // 3. harness-private Python (not importable by the worker)
    const privateNs = (file) => {
      const globals = py.globals.get("dict")();
      py.runPython(fs.readFileSync(file, "utf8"), { globals, filename: `<harness>/${path.basename(file)}` });
      return globals;
    };
    this.entry = privateNs(path.join(HERE, "standins", "harness_entry.py"));

    // 4. env: vars, secrets, bindings
    const env = {};
    for (const [name, value] of Object.entries(this.o.vars)) env[name] = value;
    this.d1 = {};
    if (this.o.d1.length) {
      const engineNs = privateNs(path.join(HERE, "d1_engine.py"));
      for (const name of this.o.d1) {
        const engine = engineNs.get("Engine")(":memory:");
        this.d1[name] = engine;
        env[name] = new D1Database(engine);
      }
    }
    for (const [binding, queue] of Object.entries(this.o.queueProducers)) {
      env[binding] = new WorkerQueue(this.broker, queue);
    }
    this.env = this.state.env = env;

    // 5. import the main module as workerd does at deploy time: the SDK's import patches
    //    installed, the global-scope guards on; then the patches removed and the
    //    before-first-request handlers run
    const patches = py.pyimport("_cloudflare.import_patch_manager");
    const entropy = py.pyimport("_cloudflare.allow_entropy");
    const guard = this.entry.get("TopLevelGuard")();
    const t2 = Date.now();
    patches.install();
    STATE.importing += 1;
    guard.enter();
    try {
      this.mainModule = py.pyimport(this.o.main.replace(/\.py$/, ""));
    } finally {
      STATE.importing -= 1;
      guard.exit(); // reseeds `random`, as workerd does before the first request
      patches.remove();
    }
    patches.after_snapshot_and_before_first_request();
    this.timings.importMs = Date.now() - t2;
    this.snapshotNotes = entropy.LEFTOVERS.toJs().map((n) => `an entropy allowance of ${n} call(s) was left unused`);

    const found = this.entry.get("collect_entrypoints")(this.mainModule).toJs({ dict_converter: Object.fromEntries });
    const main = found.workerEntrypoints.find((e) => e.name === "Default");
    if (!main) throw new Error(`${this.o.main} defines no 'Default' WorkerEntrypoint`);
    this.entrypoint = main;
    this.Default = this.mainModule.Default;
    this.callMethod = this.entry.get("call_method");
    return this;
  }

  async #invoke(prop, args, { relaxed }) {
    const ctx = new ExecutionContext();
    this.state.ctx = ctx;
    // one instance per event, Default(ctx, env); the SDK wraps env and patches ctx.waitUntil
    const instance = this.Default(ctx, this.env);
    let result, error;
    try {
      result = await this.callMethod(relaxed, instance, prop, ...args);
    } catch (e) {
      error = e;
    }
    const waitUntil = await drainWaitUntil(ctx);
    instance.destroy?.();
    for (const w of waitUntil) if (w.status === "rejected") this.log.push(`waitUntil rejected: ${w.reason}`);
    return { result, error, waitUntil };
  }

  /** An HTTP request. Returns {status, headers, text, error?}. */
  async fetch(url, init = {}) {
    const request = new Request(new URL(url, "https://worker.example"), init);
    // workerd's Request has `cf`; Node's has none, and a missing attribute raises in Python
    if (!("cf" in request)) Object.defineProperty(request, "cf", { value: undefined, enumerable: true });
    const { result, error, waitUntil } = await this.#invoke("fetch", [request, undefined, undefined], { relaxed: true });
    let response = result;
    if (error) {
      this.log.push(`fetch threw: ${error.message ?? error}`);
      response = new Response("Internal Server Error (uncaught exception in worker)", { status: 500 });
    } else if (!(response instanceof Response)) {
      response = new Response("the handler did not return a Response", { status: 500 });
    }
    const text = await response.text();
    return {
      status: response.status,
      headers: Object.fromEntries(response.headers.entries()),
      text,
      error: error ? String(error.message ?? error) : undefined,
      waitUntil: waitUntil.map((w) => w.status),
    };
  }

  /** A Cron Trigger. Returns {outcome: "ok"|"exception", error?}. */
  async scheduled({ cron = "* * * * *", scheduledTime = this.clock() } = {}) {
    const controller = new ScheduledController({ cron, scheduledTime });
    const { error } = await this.#invoke("scheduled", [controller, undefined, undefined], { relaxed: false });
    return { outcome: error ? "exception" : "ok", error: error ? String(error.message ?? error) : undefined };
  }

  /** One batch of the messages of `queueName` that are due, with Queues' ack/retry rules. */
  async queue(queueName, overrides = {}) {
    const cfg = { maxBatchSize: 10, maxRetries: 3, retryDelay: 0, ...(this.o.queueConsumers[queueName] ?? {}), ...overrides };
    const due = this.broker.due(queueName, cfg.maxBatchSize);
    if (due.length === 0) return null;
    for (const m of due) m.attempts += 1;
    const outcomes = new Map();
    const messages = due.map((m) => this.broker.toQueueMessage(m, outcomes, QueueMessage));
    const batch = new QueueController({ queue: queueName, messages });
    const { error } = await this.#invoke("queue", [batch, undefined, undefined], { relaxed: false });
    const batchOutcome = batch._harnessBatchOutcome ?? (error ? { kind: "retry" } : { kind: "ack" });
    const summary = { queue: queueName, delivered: due.length, acked: [], retried: [], deadLettered: [], error: error ? String(error.message ?? error) : undefined };
    for (const m of due) {
      const o = outcomes.get(m.id) ?? batchOutcome; // a message's own call wins over the batch's
      if (o.kind === "ack") {
        this.broker.remove(queueName, m.id);
        summary.acked.push(m.id);
      } else if (m.attempts > cfg.maxRetries) {
        this.broker.deadLetter(queueName, m, cfg.deadLetterQueue);
        summary.deadLettered.push(m.id);
      } else {
        m.visibleAt = this.clock() + (o.delaySeconds ?? cfg.retryDelay) * 1000;
        summary.retried.push(m.id);
      }
    }
    return summary;
  }

  /** Deliver batches until nothing is due right now. */
  async drainQueue(queueName, overrides) {
    const out = [];
    for (let s; (s = await this.queue(queueName, overrides)); ) out.push(s);
    return out;
  }

  /** Run Python in the worker's interpreter (its globals: `env` is the raw JS env). */
  async python(code) {
    const globals = this.py.globals.get("dict")();
    globals.set("env", this.env);
    const result = await this.py.runPythonAsync(code, { globals });
    return result?.toJs ? result.toJs({ dict_converter: Object.fromEntries }) : result;
  }
}
