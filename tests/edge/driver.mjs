// The pytest side's handle on the harness: one Node process, one JSON request per line on stdin,
// one JSON answer per line on stdout ({id, ok, result} or {id, ok: false, error}). Harnesses are
// made by name and kept, so a test module loads Pyodide once per configuration.
//
//   node tests/edge/driver.mjs          (tests/edge/conftest.py starts it)
import readline from "node:readline";

import { PythonWorkerHarness } from "./harness.mjs";

const harnesses = new Map();

function get(name) {
  const harness = harnesses.get(name);
  if (!harness) throw new Error(`no harness named ${JSON.stringify(name)}`);
  return harness;
}

const ops = {
  async create({ name, options }) {
    const started = Date.now();
    const harness = await PythonWorkerHarness.create(options);
    harnesses.set(name, harness);
    return {
      ms: Date.now() - started,
      timings: harness.timings,
      pyodide: harness.py.version,
      python: harness.py.runPython("import sys; sys.version.split()[0]"),
      entrypoint: harness.entrypoint,
      snapshotNotes: harness.snapshotNotes,
    };
  },
  async fetch({ name, url, method = "GET", headers = {}, body }) {
    const init = { method, headers };
    if (body !== undefined && body !== null) init.body = typeof body === "string" ? body : JSON.stringify(body);
    return get(name).fetch(url, init);
  },
  async scheduled({ name, cron }) {
    return get(name).scheduled(cron ? { cron } : {});
  },
  async queue({ name, queue }) {
    return get(name).drainQueue(queue);
  },
  async advance({ name, seconds }) {
    get(name).advanceTime(seconds);
    return null;
  },
  async broker({ name, queue }) {
    const harness = get(name);
    return {
      pending: harness.broker.pending(queue),
      sent: harness.broker.log.filter((m) => m.queue === queue),
      deadLetters: (harness.broker.deadLetters.get(queue) ?? []).length,
    };
  },
  async python({ name, code }) {
    return get(name).python(code);
  },
  async log({ name }) {
    const harness = get(name);
    const lines = harness.log.splice(0);
    return lines;
  },
  async close({ name }) {
    harnesses.delete(name);
    return null;
  },
};

const input = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
let queue = Promise.resolve(); // one request at a time, in order
input.on("line", (line) => {
  queue = queue.then(async () => {
    let request;
    try {
      request = JSON.parse(line);
      const op = ops[request.op];
      if (!op) throw new Error(`unknown op ${JSON.stringify(request.op)}`);
      const result = await op(request);
      process.stdout.write(JSON.stringify({ id: request.id, ok: true, result: result ?? null }) + "\n");
    } catch (e) {
      const error = String(e?.stack ?? e?.message ?? e);
      process.stdout.write(JSON.stringify({ id: request?.id ?? null, ok: false, error }) + "\n");
    }
  });
});
input.on("close", () => {
  queue.then(() => process.exit(0));
});
