// =============================================================================
// HARNESS STAND-IN — NOT CLOUDFLARE CODE.
//
// Minimal re-implementations of the pieces that workerd provides to a Python
// Worker at runtime and that do not exist outside workerd:
//
//   * the JS module registered as `_pyodide_entrypoint_helper`
//     (workerd: src/pyodide/python-entrypoint-helper.ts -> setDoAnImport())
//   * the JS module registered as `_cloudflare_compat_flags`
//     (workerd: MetadataReader.getCompatibilityFlags(), keyed by enable-flag name)
//   * `ExecutionContext` (ctx), `ScheduledController`, `QueueController`,
//     `QueueMessage` — only the surface a Python worker can observe.
//
// Class names matter: the Python SDK dispatches on `obj.constructor.name`
// (e.g. "Request", "D1Database", "WorkerQueue") and workerd's patchWaitUntil
// dispatches on Object.prototype.toString(ctx) === "[object ExecutionContext]".
// =============================================================================

// Compat flags as workerd exposes them to Python (`_cloudflare_compat_flags`): a plain object
// keyed by the *enable* flag name; a missing key reads as False in the SDK. These are the flags
// of examples/worker/wrangler.toml: compatibility_date 2026-09-08 with "python_workers" (which
// selects Pyodide 314.0.6, `python_workers_314`) and the flags that date implies.
export const DEFAULT_COMPAT_FLAGS = Object.freeze({
  python_workers: true,
  python_workers_314: true, // Pyodide 314.0.6 / Python 3.14 (the npm pyodide this harness runs)
  python_no_global_handlers: true, // only `class Default(WorkerEntrypoint)`
  enable_python_external_sdk: true, // the SDK is the vendored workers-runtime-sdk wheel
  python_process_pth_files: true, // its .pth loader runs: the SDK's import patches apply
  python_request_headers_preserve_commas: true,
  python_workflows_implicit_dependencies: true,
  queues_json_messages: true, // Queue.send() defaults to contentType "json"
});

export const DISALLOWED_GLOBAL_SCOPE_MESSAGE =
  "Disallowed operation called within global scope. Asynchronous I/O " +
  "(ex: fetch() or connect()), setting a timeout, and generating random " +
  "values are not allowed within global scope. To fix this error, perform this " +
  "operation within a handler. " +
  "https://developers.cloudflare.com/workers/runtime-apis/handlers/";

// ---------------------------------------------------------------------------
// ExecutionContext (what Python sees as self.ctx)
// ---------------------------------------------------------------------------
const ctxState = new WeakMap(); // harness-private bookkeeping, invisible to Python

export class ExecutionContext {
  constructor({ props = {}, exports = {} } = {}) {
    ctxState.set(this, { pending: [], passThrough: false });
    this.props = props;
    this.exports = exports;
  }
  get [Symbol.toStringTag]() {
    return "ExecutionContext";
  }
  waitUntil(promise) {
    const st = ctxState.get(this);
    st.pending.push(Promise.resolve(promise));
  }
  passThroughOnException() {
    ctxState.get(this).passThrough = true;
  }
}

/** Harness-only: wait for every promise handed to ctx.waitUntil (like workerd keeps the event alive). */
export async function drainWaitUntil(ctx, timeoutMs = 30_000) {
  const st = ctxState.get(ctx);
  const results = [];
  // waitUntil() may be called while draining, so loop until stable.
  let seen = 0;
  const deadline = Date.now() + timeoutMs;
  while (seen < st.pending.length) {
    const batch = st.pending.slice(seen);
    seen = st.pending.length;
    const remaining = Math.max(0, deadline - Date.now());
    let timer;
    const timeout = new Promise((resolve) => {
      timer = setTimeout(() => resolve("timeout"), remaining);
    });
    const settled = await Promise.race([Promise.allSettled(batch), timeout]);
    clearTimeout(timer);
    if (settled === "timeout") {
      results.push({ status: "timeout" });
      break;
    }
    results.push(...settled);
  }
  return results;
}

/**
 * Same behaviour as workerd's patchWaitUntil(): Python may pass a coroutine /
 * Task / Future (a PyProxy) to ctx.waitUntil(). PyProxy arguments are
 * "borrowed" and destroyed when the call returns, so the patched version
 * copies the proxy, awaits it (PyProxy awaitables are thenables) and
 * destroys the copy.
 */
const waitUntilPatched = new WeakSet();
export function patchWaitUntil(ctx) {
  let tag;
  try {
    tag = Object.prototype.toString.call(ctx);
  } catch {}
  if (tag !== "[object ExecutionContext]" || waitUntilPatched.has(ctx)) return;
  const orig = ctx.waitUntil.bind(ctx);
  ctx.waitUntil = function waitUntil(p) {
    orig(
      (async () => {
        const isObj = p !== null && (typeof p === "object" || typeof p === "function");
        if (isObj && "copy" in p) p = p.copy();
        await p;
        if (isObj && "destroy" in p) p.destroy();
      })()
    );
  };
  waitUntilPatched.add(ctx);
}

// ---------------------------------------------------------------------------
// Scheduled (Cron Trigger) event
// ---------------------------------------------------------------------------
export class ScheduledController {
  #noRetry = false;
  constructor({ scheduledTime = Date.now(), cron = "" } = {}) {
    // workerd: READONLY properties scheduledTime (double, ms since epoch) and cron (string).
    Object.defineProperty(this, "scheduledTime", { value: scheduledTime, enumerable: true });
    Object.defineProperty(this, "cron", { value: cron, enumerable: true });
  }
  noRetry() {
    this.#noRetry = true;
  }
  get _harnessNoRetry() {
    return this.#noRetry;
  }
}

// ---------------------------------------------------------------------------
// Queue consumer event objects (shape of workerd's QueueController/QueueMessage)
// ---------------------------------------------------------------------------
export class QueueMessage {
  #outcome; // {kind:"ack"} | {kind:"retry", delaySeconds}
  constructor({ id, timestamp, body, attempts }, outcomeSink) {
    Object.defineProperty(this, "id", { value: id, enumerable: true });
    Object.defineProperty(this, "timestamp", { value: timestamp, enumerable: true }); // JS Date
    Object.defineProperty(this, "body", { value: body, enumerable: true });
    Object.defineProperty(this, "attempts", { value: attempts, enumerable: true }); // 1 on first delivery
    this.#outcome = outcomeSink;
  }
  ack() {
    if (!this.#outcome.has(this.id)) this.#outcome.set(this.id, { kind: "ack" }); // first call wins
  }
  retry(options) {
    if (!this.#outcome.has(this.id))
      this.#outcome.set(this.id, { kind: "retry", delaySeconds: options?.delaySeconds });
  }
}

export class QueueController {
  #batchOutcome = null;
  constructor({ queue, messages, metadata }) {
    Object.defineProperty(this, "queue", { value: queue, enumerable: true });
    Object.defineProperty(this, "messages", { value: Object.freeze(messages), enumerable: true });
    Object.defineProperty(this, "metadata", {
      value: metadata ?? { metrics: { backlogCount: 0, backlogBytes: 0 } },
      enumerable: true,
    });
  }
  ackAll() {
    if (!this.#batchOutcome) this.#batchOutcome = { kind: "ack" };
  }
  retryAll(options) {
    if (!this.#batchOutcome) this.#batchOutcome = { kind: "retry", delaySeconds: options?.delaySeconds };
  }
  get _harnessBatchOutcome() {
    return this.#batchOutcome;
  }
}

// ---------------------------------------------------------------------------
// `_pyodide_entrypoint_helper` stand-in
// ---------------------------------------------------------------------------
/** Stand-in for `import { WorkerEntrypoint } from "cloudflare:workers"` (only its identity matters). */
export class WorkerEntrypoint {
  constructor(ctx, env) {
    this.ctx = ctx;
    this.env = env;
  }
}

/**
 * Build the object registered as `_pyodide_entrypoint_helper`.
 * `state` is a mutable {env, ctx} holder the harness updates per event so that
 * `from workers import env` / `workers.wait_until` see the current ones.
 */
export function makeEntrypointHelper({ state, jsModules = {} }) {
  const cloudflareWorkersModule = {
    get env() {
      return state.env;
    },
    waitUntil(p) {
      if (!state.ctx) throw new Error("waitUntil() called outside of a request (harness)");
      state.ctx.waitUntil(p);
    },
    WorkerEntrypoint,
  };
  const cloudflareSocketsModule = {
    connect() {
      throw new Error("cloudflare:sockets connect() is not emulated by the harness");
    },
  };
  async function doAnImport(name) {
    if (name === "cloudflare:workers") return cloudflareWorkersModule;
    if (name === "cloudflare:sockets") return cloudflareSocketsModule;
    if (name in jsModules) return jsModules[name];
    // e.g. "python_modules/workers/workflows.js" (Workflows only)
    throw new Error(`harness: JS module '${name}' is not available (register it via jsModules)`);
  }
  return {
    doAnImport,
    cloudflareWorkersModule,
    cloudflareSocketsModule,
    workerEntrypoint: WorkerEntrypoint,
    patchWaitUntil,
    // workers.patch_env() calls this; workerd HEAD does not implement it either.
    patch_env_helper() {
      throw new Error("patch_env is not supported by the harness");
    },
  };
}
