import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { FrameDecoder, PROTOCOL_VERSION, ProtocolViolation, type RunnerOutput } from '../../server/sandbox/protocol.js';

const frame = (kind: string, payload: Buffer | string) => {
  const body = Buffer.from(payload);
  const header = Buffer.alloc(5);
  header.write(kind, 0, 'latin1');
  header.writeUInt32BE(body.length, 1);
  return Buffer.concat([header, body]);
};

const goodReport = {
  protocol: PROTOCOL_VERSION, exit_code: 0, timed_out: false, truncated: false, oom_killed: false, status: 'ok',
  error: null, traceback: null, result: '42', result_truncated: false, value: null, outputs: [] as RunnerOutput[], outputs_truncated: false,
  deleted: [], warnings: [], run_ms: 3,
};

function decoder(outputBytes = 100, outputs = { maxOutputs: 3, outputsBytes: 200 }) {
  const events = { files: [] as Buffer[], overCap: 0, done: 0 };
  const d = new FrameDecoder(
    { outputBytes, filesBytes: 1000, reportBytes: 2000, ...outputs },
    { files: (c) => events.files.push(c), overCap: () => (events.overCap += 1), done: () => (events.done += 1) },
  );
  return { d, events };
}

describe('FrameDecoder', () => {
  it('reassembles frames split at any byte', () => {
    const { d, events } = decoder();
    const stream = Buffer.concat([
      frame('o', 'hello '), frame('e', 'warn'), frame('o', 'world'), frame('f', 'TAR'),
      frame('r', JSON.stringify(goodReport)), frame('z', ''),
    ]);
    for (const byte of stream) d.push(Buffer.from([byte]));
    assert.equal(events.done, 1);
    assert.equal(d.stdout(), 'hello world');
    assert.equal(d.stderr(), 'warn');
    assert.equal(Buffer.concat(events.files).toString(), 'TAR');
    assert.deepEqual(d.finish(), goodReport);
  });

  it('a report split over several frames is joined', () => {
    const { d } = decoder();
    const json = JSON.stringify(goodReport);
    d.push(Buffer.concat([frame('r', json.slice(0, 10)), frame('r', json.slice(10))]));
    assert.deepEqual(d.finish(), goodReport);
  });

  it('cuts each stream at the cap and asks for a stop', () => {
    const { d, events } = decoder(10);
    d.push(frame('o', 'x'.repeat(8)));
    d.push(frame('o', 'y'.repeat(8)));
    d.push(frame('e', 'z'.repeat(4)));
    assert.equal(d.stdout(), 'xxxxxxxxyy');
    assert.equal(d.stderr(), 'zzzz');
    assert.equal(d.truncated, true);
    assert.equal(events.overCap, 1);
  });

  it('hands each o and e frame, as kept within the cap, to the output sink as it arrives', () => {
    const seen: [string, string][] = [];
    const d = new FrameDecoder(
      { outputBytes: 10, filesBytes: 1000, reportBytes: 2000, maxOutputs: 16, outputsBytes: 1000 },
      { files: () => undefined, overCap: () => undefined, done: () => undefined, output: (stream, chunk) => seen.push([stream, chunk.toString()]) },
    );
    d.push(frame('o', 'x'.repeat(8)));
    assert.deepEqual(seen, [['stdout', 'xxxxxxxx']]); // before any other frame: as it arrives
    d.push(Buffer.concat([frame('e', 'warn'), frame('o', 'y'.repeat(8)), frame('o', 'z'), frame('f', 'TAR')]));
    assert.deepEqual(seen, [['stdout', 'xxxxxxxx'], ['stderr', 'warn'], ['stdout', 'yy']]);
    assert.equal(seen.filter(([s]) => s === 'stdout').map(([, t]) => t).join(''), d.stdout());
  });

  it('no report is null, not an error', () => {
    const { d } = decoder();
    d.push(frame('o', 'partial'));
    assert.equal(d.finish(), null);
  });

  const violations: [string, () => void, RegExp][] = [
    ['an unknown frame kind', () => decoder().d.push(frame('x', 'a')), /unknown frame kind/],
    ['a frame over 64 KiB', () => decoder().d.push(Buffer.from([0x6f, 0xff, 0xff, 0xff, 0xff])), /over the 65536 limit/],
    ['files over the cap', () => decoder().d.push(frame('f', Buffer.alloc(1001))), /over the workspace cap/],
    ['a report over its cap', () => decoder().d.push(frame('r', Buffer.alloc(2001))), /report is over its size cap/],
    ['a done frame without a report', () => decoder().d.push(frame('z', '')), /done frame without a report/],
    ['anything after the done frame', () => {
      const { d } = decoder();
      d.push(Buffer.concat([frame('r', '{}'), frame('z', ''), frame('r', '{}')]));
    }, /output after the done frame/],
    ['output after the report', () => {
      const { d } = decoder();
      d.push(frame('r', '{'));
      d.push(frame('o', 'late'));
    }, /output after the report/],
  ];
  for (const [name, act, message] of violations) {
    it(`refuses ${name}`, () => assert.throws(act, (err: Error) => err instanceof ProtocolViolation && message.test(err.message)));
  }

  const badReports: [string, string][] = [
    ['not JSON', 'nope'],
    ['a wrong protocol', JSON.stringify({ ...goodReport, protocol: 1 })],
    ['an extra field', JSON.stringify({ ...goodReport, success: true })],
    ['a wrong type', JSON.stringify({ ...goodReport, exit_code: '0' })],
    ['an exit code out of range', JSON.stringify({ ...goodReport, exit_code: 999 })],
    ['an unknown status', JSON.stringify({ ...goodReport, status: 'great' })],
    // A resolution comes from a container where builds ran: its names become pins on a pip command line.
    ...[
      ['a pin smuggled in a name', { name: 'a==1 --index-url=http://x' }],
      ['an unnormalized name', { name: 'Evil_Pkg' }],
      ['an option as a version', { version: '--pre' }],
      ['a version with a space', { version: '1.0 b' }],
      ['a wildcard version', { version: '1.*' }],
      ['an option as a requirement', { requires: ['--no-deps'] }],
      ['a missing field', { sdist: undefined }],
    ].map(([what, over]): [string, string] => [
      `a resolved package with ${String(what)}`,
      JSON.stringify({ ...goodReport, resolved: [{ name: 'good', version: '1.0', requested: true, requires: [], sdist: false, direct: false, ...(over as object) }] }),
    ]),
  ];

  it('accepts a resolution and the volume usage of a resolve job', () => {
    const { d } = decoder();
    const resolved = [
      { name: 'goodpkg', version: '1.0', requested: true, requires: ['evilpkg'], sdist: false, direct: false },
      { name: 'evilpkg', version: '2.0.post1+local.7', requested: false, requires: [], sdist: true, direct: false },
    ];
    d.push(frame('r', JSON.stringify({ ...goodReport, resolved, usage: { bytes: 4096, files: 3 } })));
    assert.deepEqual(d.finish()?.resolved, resolved);
  });
  for (const [name, json] of badReports) {
    it(`refuses a report with ${name}`, () => {
      const { d } = decoder();
      d.push(frame('r', json));
      assert.throws(() => d.finish(), ProtocolViolation);
    });
  }

  it('refuses a stream that ends inside a frame', () => {
    const { d } = decoder();
    d.push(frame('o', 'abc').subarray(0, 6));
    assert.throws(() => d.finish(), /ended inside a frame/);
  });
});

describe('FrameDecoder: the outputs of a report, hostile like the rest', () => {
  const png = Buffer.concat([Buffer.from('\x89PNG\r\n\x1a\n', 'latin1'), Buffer.from('IHDR')]).toString('base64');
  const finish = (outputs: unknown[], caps?: { maxOutputs: number; outputsBytes: number }) => {
    const { d } = decoder(100, caps);
    d.push(frame('r', JSON.stringify({ ...goodReport, outputs })));
    return d.finish()!;
  };
  const out = (mime: string, data: string, source = 'display') => ({ mime, data, source }) as RunnerOutput;

  it('keeps them, in order, as they came', () => {
    const outputs = [out('image/png', png, 'figure'), out('text/html', '<table></table>', 'value'), out('text/plain', 'df', 'value')];
    assert.deepEqual(finish(outputs).outputs, outputs);
    assert.equal(finish(outputs).outputs_truncated, false);
  });

  it('past max_outputs: the first ones, and outputs_truncated', () => {
    const report = finish(['a', 'b', 'c', 'd'].map((t) => out('text/plain', t)));
    assert.deepEqual(report.outputs.map((o) => o.data), ['a', 'b', 'c']);
    assert.equal(report.outputs_truncated, true);
  });

  it('past the bytes cap: those before the one that does not fit, and outputs_truncated', () => {
    const report = finish([out('text/plain', 'x'.repeat(150)), out('text/plain', 'y'.repeat(60)), out('text/plain', 'z')]);
    assert.deepEqual(report.outputs.map((o) => o.data.length), [150]);
    assert.equal(report.outputs_truncated, true);
    assert.equal(finish([out('text/plain', 'é'.repeat(101))]).outputs.length, 0, 'bytes, not characters');
  });

  const refusals: [string, unknown[], RegExp][] = [
    ['a forged mime', [out('text/javascript', 'alert(1)')], /\/outputs\/0\/mime must be equal to one of the allowed values \(text\/plain, text\/html/],
    ['a forged source', [{ mime: 'text/plain', data: 'x', source: 'server' }], /\/outputs\/0\/source must be equal to one of the allowed values/],
    ['a field of its own', [{ ...out('text/plain', 'x'), url: 'http://x' }], /\/outputs\/0 must NOT have additional properties/],
    ['data that is not a string', [{ mime: 'text/plain', data: 7, source: 'display' }], /\/outputs\/0\/data must be string/],
    ['bad base64', [out('image/png', png + '!')], /output 0 \(image\/png\) is not base64/],
    ['base64 with whitespace', [out('image/svg+xml', 'PHN2Zz4=\nPC9zdmc+')], /output 0 \(image\/svg\+xml\) is not base64/],
    ['an image/png that is no PNG', [out('text/plain', 'ok'), out('image/png', Buffer.from('<svg onload=alert(1)>').toString('base64'))], /output 1 says image\/png but is not a PNG/],
  ];
  for (const [name, outputs, message] of refusals) {
    it(`refuses ${name}`, () => assert.throws(() => finish(outputs), (err: Error) => err instanceof ProtocolViolation && message.test(err.message)));
  }

  it('refuses an oversize output: the report is over its size cap before it is even parsed', () => {
    const { d } = decoder();
    assert.throws(() => d.push(frame('r', JSON.stringify({ ...goodReport, outputs: [out('text/plain', 'x'.repeat(3000))] }))), /report is over its size cap/);
  });
});
