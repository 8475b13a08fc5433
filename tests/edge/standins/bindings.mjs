// =============================================================================
// TEST DOUBLES — NOT CLOUDFLARE CODE.
// D1 and Queue bindings with the JS surface a Worker sees. The D1 double's database is
// tests/edge/d1_engine.py (SQLite, run inside the same Pyodide, in a private namespace),
// shared with the CPython double of tests/backends/d1.py.
//
// The class names are load-bearing: workers-runtime-sdk's _EnvWrapper wraps a
// binding in _BindingWrapper only if `binding.constructor.name` is one of
// "D1Database", "WorkerQueue", "KvNamespace", ... . With the wrapper, Python
// arguments go through python_to_rpc() (dict -> JS object, None -> null,
// kwargs -> trailing options object) and results through python_from_rpc()
// (JS object -> dict-like JsDict, array -> list, null -> None, Date -> datetime).
// =============================================================================
import v8 from "node:v8";
import { randomUUID } from "node:crypto";

// ---------------------------------------------------------------------------
// D1
// ---------------------------------------------------------------------------
function d1Param(v) {
  // same acceptance rules and error text as workerd's src/cloudflare/internal/d1-api.ts bind()
  const t = typeof v;
  if (t === "number" || t === "string") return v;
  if (t === "boolean") return v ? 1 : 0;
  if (t === "object") {
    if (v == null) return v;
    if (Array.isArray(v) && v.every((b) => typeof b === "number" && b >= 0 && b < 256)) return { $blob: v };
    if (v instanceof ArrayBuffer) return { $blob: Array.from(new Uint8Array(v)) };
    if (ArrayBuffer.isView(v)) return { $blob: Array.from(new Uint8Array(v.buffer, v.byteOffset, v.byteLength)) };
  }
  throw new Error(`D1_TYPE_ERROR: Type '${t}' not supported for value '${String(v)}'`);
}

function rethrow(e) {
  // Python exceptions arrive as PythonError whose message is a traceback; surface the last line.
  if (e && e.constructor?.name === "PythonError") {
    const last = String(e.message).trim().split("\n").pop();
    throw new Error(last.replace(/^[\w.]*D1Error: /, ""));
  }
  throw e;
}

const tick = () => new Promise((r) => setImmediate(r)); // results always arrive asynchronously

export class D1Database {
  #backend;
  constructor(backend) {
    this.#backend = backend; // PyProxy of tests/edge/d1_engine.py:Engine
  }
  prepare(query) {
    return new D1PreparedStatement(this, this.#backend, String(query), []);
  }
  async batch(statements) {
    const list = Array.from(statements);
    for (const s of list)
      if (!(s instanceof D1PreparedStatement)) throw new TypeError("D1_ERROR: batch() expects D1PreparedStatement objects");
    await tick();
    let out;
    try {
      out = JSON.parse(this.#backend.batch_json(JSON.stringify(list.map((s) => s._payload()))));
    } catch (e) {
      rethrow(e);
    }
    return out.map((r) => D1PreparedStatement._toResult(r));
  }
  async exec(query) {
    await tick();
    let count = 0;
    for (const line of String(query).split("\n")) {
      if (!line.trim()) continue;
      try {
        this.#backend.run_json(line, "[]");
      } catch (e) {
        rethrow(e);
      }
      count += 1;
    }
    return { count, duration: 0 };
  }
  withSession() {
    return this; // sessions / read replication are not emulated
  }
  getBookmark() {
    return null;
  }
}

export class D1PreparedStatement {
  #db;
  #backend;
  #sql;
  #params;
  constructor(db, backend, sql, params) {
    this.#db = db;
    this.#backend = backend;
    this.#sql = sql;
    this.#params = params;
  }
  bind(...values) {
    return new D1PreparedStatement(this.#db, this.#backend, this.#sql, values.map(d1Param));
  }
  _payload() {
    return { sql: this.#sql, params: this.#params };
  }
  async #exec() {
    await tick();
    try {
      return JSON.parse(this.#backend.run_json(this.#sql, JSON.stringify(this.#params)));
    } catch (e) {
      rethrow(e);
    }
  }
  static _rowsAsObjects(r) {
    return r.rows.map((row) => Object.fromEntries(r.columns.map((c, i) => [c, row[i]])));
  }
  static _toResult(r) {
    return { success: true, meta: r.meta, results: D1PreparedStatement._rowsAsObjects(r) };
  }
  async all() {
    return D1PreparedStatement._toResult(await this.#exec());
  }
  async run() {
    return D1PreparedStatement._toResult(await this.#exec());
  }
  async first(colName) {
    const r = await this.#exec();
    if (r.rows.length === 0) return null;
    const obj = D1PreparedStatement._rowsAsObjects(r)[0];
    if (colName === undefined || colName === null) return obj;
    if (!(colName in obj)) throw new Error(`D1_COLUMN_NOTFOUND: Column not found (${colName})`);
    return obj[colName];
  }
  async raw(options) {
    const r = await this.#exec();
    return options?.columnNames ? [r.columns, ...r.rows] : r.rows;
  }
}

// ---------------------------------------------------------------------------
// Queues: an in-memory broker with virtual time, plus the producer binding.
// ---------------------------------------------------------------------------
// "delaySeconds (when sending or retrying): 24 hours" (developers.cloudflare.com/queues/platform/limits/)
export const MAX_DELAY_SECONDS = 86_400;
const MAX_MESSAGE_BYTES = 128 * 1024;
const MAX_BATCH_MESSAGES = 100;
const MAX_BATCH_BYTES = 256 * 1024;

function checkDelay(d) {
  if (d === undefined || d === null) return 0;
  if (!Number.isInteger(d) || d < 0 || d > MAX_DELAY_SECONDS)
    throw new RangeError(`delaySeconds must be an integer in [0, ${MAX_DELAY_SECONDS}] (harness check), got ${d}`);
  return d;
}

function serializeBody(body, contentType) {
  if (body === undefined) throw new TypeError("Message body cannot be undefined");
  switch (contentType) {
    case "text":
      if (typeof body !== "string")
        throw new TypeError(`Content Type "text" requires a value of type string, but received: ${typeof body}`);
      return { contentType, data: Buffer.from(body, "utf8") };
    case "bytes":
      if (!ArrayBuffer.isView(body))
        throw new TypeError(`Content Type "bytes" requires a value of type ArrayBufferView, but received: ${typeof body}`);
      return { contentType, data: Buffer.from(body.buffer.slice(body.byteOffset, body.byteOffset + body.byteLength)) };
    case "json": {
      const s = JSON.stringify(body);
      if (s === undefined) throw new TypeError("Message body is not JSON-serializable");
      return { contentType, data: Buffer.from(s, "utf8") };
    }
    case "v8":
      return { contentType, data: v8.serialize(body) }; // structured clone, like workerd's v8 format
    default:
      throw new TypeError(`Unsupported queue message content type: ${contentType}`);
  }
}

function deserializeBody({ contentType, data }) {
  switch (contentType) {
    case "text":
      return data.toString("utf8");
    case "bytes":
      return new Uint8Array(data);
    case "json":
      return JSON.parse(data.toString("utf8"));
    case "v8":
      return v8.deserialize(data);
  }
}

export class QueueBroker {
  constructor({ clock = () => Date.now(), defaultContentType = "json" } = {}) {
    this.clock = clock;
    this.defaultContentType = defaultContentType;
    this.queues = new Map(); // name -> [{id, payload, timestamp, attempts, visibleAt}]
    this.deadLetters = new Map(); // name -> [...]
    this.log = []; // every accepted send, for assertions
  }
  _q(name) {
    if (!this.queues.has(name)) this.queues.set(name, []);
    return this.queues.get(name);
  }
  enqueue(name, body, { contentType, delaySeconds } = {}) {
    const payload = serializeBody(body, contentType ?? this.defaultContentType);
    if (payload.data.length > MAX_MESSAGE_BYTES) throw new Error("Queue message too large (> 128 KB)");
    const now = this.clock();
    const msg = {
      id: randomUUID().replaceAll("-", ""),
      payload,
      timestamp: new Date(now),
      attempts: 0,
      visibleAt: now + checkDelay(delaySeconds) * 1000,
    };
    this._q(name).push(msg);
    this.log.push({ queue: name, id: msg.id, delaySeconds: delaySeconds ?? 0, contentType: payload.contentType });
    return msg;
  }
  /** Messages whose delay has elapsed, oldest first, without removing them. */
  due(name, limit = Infinity) {
    const now = this.clock();
    return this._q(name).filter((m) => m.visibleAt <= now).slice(0, limit);
  }
  pending(name) {
    return this._q(name).length;
  }
  nextVisibleAt(name) {
    const q = this._q(name);
    return q.length ? Math.min(...q.map((m) => m.visibleAt)) : null;
  }
  remove(name, id) {
    const q = this._q(name);
    const i = q.findIndex((m) => m.id === id);
    if (i >= 0) q.splice(i, 1);
  }
  deadLetter(name, msg, dlqName) {
    this.remove(name, msg.id);
    if (dlqName) {
      msg.attempts = 0;
      msg.visibleAt = this.clock();
      this._q(dlqName).push(msg);
    } else {
      if (!this.deadLetters.has(name)) this.deadLetters.set(name, []);
      this.deadLetters.get(name).push(msg);
    }
  }
  toQueueMessage(msg, outcomeSink, QueueMessageClass) {
    return new QueueMessageClass(
      { id: msg.id, timestamp: msg.timestamp, body: deserializeBody(msg.payload), attempts: msg.attempts },
      outcomeSink
    );
  }
}

/** Producer binding (`env.MY_QUEUE`). Constructor name must be "WorkerQueue". */
export class WorkerQueue {
  #broker;
  #name;
  constructor(broker, queueName) {
    this.#broker = broker;
    this.#name = queueName;
  }
  async send(body, options) {
    this.#broker.enqueue(this.#name, body, { contentType: options?.contentType, delaySeconds: options?.delaySeconds });
    await tick();
    return { metadata: { metrics: { backlogCount: this.#broker.pending(this.#name), backlogBytes: 0 } } };
  }
  async sendBatch(messages, options) {
    const list = Array.from(messages);
    if (list.length > MAX_BATCH_MESSAGES) throw new Error("sendBatch: at most 100 messages");
    const batchDelay = options?.delaySeconds;
    const payloads = list.map((m) => ({
      body: m.body,
      contentType: m.contentType,
      delaySeconds: m.delaySeconds ?? batchDelay,
    }));
    const total = payloads.reduce((n, p) => n + serializeBody(p.body, p.contentType ?? this.#broker.defaultContentType).data.length, 0);
    if (total > MAX_BATCH_BYTES) throw new Error("sendBatch: batch too large (> 256 KB)");
    for (const p of payloads) this.#broker.enqueue(this.#name, p.body, p);
    await tick();
    return { metadata: { metrics: { backlogCount: this.#broker.pending(this.#name), backlogBytes: 0 } } };
  }
  async metrics() {
    return { backlogCount: this.#broker.pending(this.#name), backlogBytes: 0 };
  }
}
