import assert from 'node:assert/strict';
import { rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { after, before, describe, it } from 'node:test';
import { containersOf, startServer, type TestServer } from '../helpers/server.js';
import { until } from '../helpers/until.js';

interface Event {
  event: string;
  data: Record<string, unknown>;
  /** performance.now() when it arrived. */
  at: number;
}

/**
 * POSTs with `Accept: text/event-stream` and reads the events as they arrive, each with its
 * arrival time; `stopAfter` leaves (aborts) once it returns true for an event.
 */
async function stream(url: string, route: string, body: unknown, { accept = 'text/event-stream', stopAfter }: { accept?: string; stopAfter?: (e: Event) => boolean } = {}) {
  const client = new AbortController();
  const res = await fetch(url + route, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept },
    body: JSON.stringify(body),
    signal: client.signal,
  });
  const type = res.headers.get('content-type') ?? '';
  if (!type.startsWith('text/event-stream')) return { status: res.status, type, events: [] as Event[], json: (await res.json()) as Record<string, unknown> };
  const events: Event[] = [];
  const decoder = new TextDecoder();
  let buffer = '';
  try {
    for await (const chunk of res.body!) {
      buffer += decoder.decode(chunk, { stream: true });
      for (let end = buffer.indexOf('\n\n'); end >= 0; end = buffer.indexOf('\n\n')) {
        const lines = buffer.slice(0, end).split('\n');
        buffer = buffer.slice(end + 2);
        const event = lines.find((l) => l.startsWith('event: '))?.slice(7);
        const data = lines.find((l) => l.startsWith('data: '))?.slice(6);
        if (event === undefined || data === undefined) continue; // a keep-alive comment
        const e = { event, data: JSON.parse(data) as Record<string, unknown>, at: performance.now() };
        events.push(e);
        if (stopAfter?.(e)) {
          client.abort();
          return { status: res.status, type, events, json: null };
        }
      }
    }
  } catch (err) {
    if (!client.signal.aborted) throw err;
  }
  return { status: res.status, type, events, json: null };
}

const texts = (events: Event[], kind: string) => events.filter((e) => e.event === kind).map((e) => e.data.text as string);

describe('output as it happens (Server-Sent Events)', () => {
  let server: TestServer;
  before(async () => {
    server = await startServer();
  });
  after(async () => {
    await server.close();
    assert.deepEqual(await server.settle(), []);
  });

  it('a line printed and flushed arrives while the code sleeps: at least 1 s before the result', async () => {
    const code = 'import time\nprint("first", flush=True)\ntime.sleep(2)\nprint("second")';
    const { status, type, events } = await stream(server.url, '/execute', { code });
    assert.equal(status, 200);
    assert.equal(type, 'text/event-stream; charset=utf-8');
    assert.deepEqual(events.map((e) => e.event), ['stdout', 'stdout', 'result']);
    assert.deepEqual(texts(events, 'stdout'), ['first\n', 'second\n']);
    const result = events.at(-1)!;
    assert.equal(result.data.success, true);
    assert.equal(result.data.result, 'first\nsecond');
    assert.equal(result.data.stdout, 'first\nsecond\n');
    assert.equal(typeof result.data.execution_id, 'string');
    // The one timing check: the first line came while the code still slept.
    assert.ok(result.at - events[0]!.at >= 1000, `first line ${Math.round(result.at - events[0]!.at)} ms before the result`);
  });

  it('every run endpoint streams, stderr included; the texts add up to the envelope exactly', async () => {
    const saved = await stream(server.url, '/save-and-execute', {
      file_name: 'lib/talk.py',
      code: 'import sys\nprint("out €", flush=True)\nprint("err", file=sys.stderr, flush=True)\nanswer = 6 * 7',
      variable_to_return: 'answer',
    });
    assert.deepEqual(saved.events.map((e) => e.event), ['stdout', 'stderr', 'result']);
    assert.deepEqual(texts(saved.events, 'stdout'), ['out €\n']);
    assert.deepEqual(texts(saved.events, 'stderr'), ['err\n']);
    assert.equal(saved.events.at(-1)!.data.result, '42');
    assert.equal(saved.events.at(-1)!.data.stderr, 'err\n');

    const ran = await stream(server.url, '/run-python-file', { file_name: 'lib/talk.py', variable_to_return: 'answer' });
    assert.deepEqual(ran.events.map((e) => e.event), ['stdout', 'stderr', 'result']);
    assert.equal(ran.events.at(-1)!.data.result, '42');

    // No output at all: the stream is the result alone.
    const quiet = await stream(server.url, '/execute', { code: 'x = 1' });
    assert.deepEqual(quiet.events.map((e) => e.event), ['result']);
    assert.equal(quiet.events[0]!.data.success, true);

    // The code's failure is data, in the result like any other.
    const failed = await stream(server.url, '/execute', { code: 'print("before", flush=True)\n1/0' });
    assert.deepEqual(failed.events.map((e) => e.event), ['stdout', 'stderr', 'result']);
    assert.equal(failed.events.at(-1)!.data.error, 'ZeroDivisionError: division by zero (line 2)');
    assert.equal(texts(failed.events, 'stderr').join(''), failed.events.at(-1)!.data.stderr);
  });

  it('refusals before the run are the usual JSON with their status; a client that prefers JSON gets JSON', async () => {
    const invalid = await stream(server.url, '/execute', { code: '' });
    assert.equal(invalid.status, 400);
    assert.match(invalid.type, /^application\/json/);
    assert.equal(invalid.json?.error, 'Invalid request: body.code: must NOT have fewer than 1 characters');
    const missing = await stream(server.url, '/run-python-file', { file_name: 'nope.py' });
    assert.equal(missing.status, 404);
    assert.equal(missing.json?.error, 'File not found: nope.py');
    const exists = await stream(server.url, '/save-and-execute', { file_name: 'lib/talk.py', code: 'x = 2', overwrite: false });
    assert.equal(exists.status, 409);
    assert.equal(exists.json?.error, 'File lib/talk.py already exists and overwrite is false');
    const both = await stream(server.url, '/execute', { code: 'print(5)' }, { accept: 'application/json, text/event-stream' });
    assert.equal(both.status, 200);
    assert.equal(both.json?.result, '5');
  });

  it('a client that disconnects mid-stream stops the run, and no container is left', async () => {
    const code = 'import time\nprint("started", flush=True)\ntime.sleep(60)\nprint("never")';
    const left = await stream(server.url, '/execute', { code }, { stopAfter: (e) => e.event === 'stdout' });
    assert.deepEqual(texts(left.events, 'stdout'), ['started\n']);
    await until(async () => (await containersOf(server.config.instanceId)).length === 0, 'the container to be removed', 15_000);
    assert.equal(server.services.admission.inFlight, 0);
  });
});

describe('a streamed flood of output', () => {
  let server: TestServer;
  before(async () => {
    server = await startServer({ SANDBOX_OUTPUT_BYTES: '65536' });
  });
  after(async () => {
    await server.close();
    assert.deepEqual(await server.settle(), []);
  });

  it('stays within the output cap: what streams is exactly the capped stdout', async () => {
    const { events } = await stream(server.url, '/execute', { code: 'while True:\n    print("x" * 1000)' });
    const streamed = texts(events, 'stdout').join('');
    const result = events.at(-1)!;
    assert.equal(result.event, 'result');
    assert.equal(Buffer.byteLength(streamed), 65536);
    assert.equal(streamed, result.data.stdout);
    assert.equal(result.data.truncated, true);
    assert.equal(result.data.success, false);
    assert.match(String(result.data.error), /^Output limit exceeded: Output went past 65536 bytes/);
  });
});

describe('a fault after the stream opened', () => {
  let server: TestServer;
  before(async () => {
    server = await startServer({ LOG_LEVEL: 'error' });
    server.services.logger.silent = true; // the fault below is logged on purpose
  });
  after(async () => {
    await server.close();
    assert.deepEqual(await server.settle(), []);
  });

  it('ends the stream with a result event carrying the error envelope', async () => {
    const root = path.join(server.config.baseDir, 'workspaces', 'default');
    const code = 'import time\nprint("started", flush=True)\ntime.sleep(1.5)\nopen("kept.txt", "w").write("x")';
    const run = stream(server.url, '/execute', { code });
    // Once the output flows, the workspace becomes something its merge cannot read.
    await until(async () => (await containersOf(server.config.instanceId)).some((c) => c.State === 'running'), 'the run to start');
    await new Promise((resolve) => setTimeout(resolve, 500));
    rmSync(root, { recursive: true, force: true });
    writeFileSync(root, 'not a directory');
    const { status, events } = await run;
    assert.equal(status, 200);
    assert.deepEqual(events.map((e) => e.event), ['stdout', 'result']);
    const result = events[1]!.data;
    assert.deepEqual(Object.keys(result).sort(), ['error', 'execution_id', 'result', 'success']);
    assert.equal(result.success, false);
    assert.equal(result.result, null);
    assert.equal(result.error, 'Internal error: see the server log for this execution_id');
  });
});
