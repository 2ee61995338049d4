import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { ExecutionResponse } from '../../server/contract/contract.js';
import { toToolResult } from '../../server/mcp/mcp-server.js';

const envelope = (over: Partial<ExecutionResponse> = {}): ExecutionResponse => ({
  success: true, result: '', error: null, execution_id: '5f0c3a52-8f3e-4c57-9d0b-1b2c3d4e5f60', stdout: '', stderr: '',
  exit_code: 0, duration_ms: 1, timed_out: false, truncated: false, oom_killed: false, traceback: null, warnings: [],
  value: null, outputs: [], outputs_truncated: false, ...over,
});
const png = 'iVBORw0KGgoAAAANSUhEUg==';

describe('MCP tool results', () => {
  it('figures (every PNG output) as image blocks after the text; the envelope stays the structured content', () => {
    const e = envelope({
      result: 'hi',
      outputs: [
        { mime: 'image/png', data: png, source: 'figure' },
        { mime: 'text/html', data: '<table></table>', source: 'value' },
        { mime: 'image/svg+xml', data: 'PHN2Zy8+', source: 'display' },
      ],
    });
    const result = toToolResult(e);
    assert.deepEqual(result.content, [{ type: 'text', text: 'hi' }, { type: 'image', data: png, mimeType: 'image/png' }]);
    assert.equal(result.structuredContent, e);
    assert.equal(result.isError, false);
  });

  it('the last expression\'s value is in the text, after what was printed', () => {
    assert.deepEqual(toToolResult(envelope({ value: '5' })).content, [{ type: 'text', text: '5' }]);
    assert.deepEqual(toToolResult(envelope({ result: 'hi', stdout: 'hi\n', value: '5' })).content, [{ type: 'text', text: 'hi\n\n5' }]);
    assert.deepEqual(toToolResult(envelope()).content, [{ type: 'text', text: '(no output)' }]);
  });

  it('a failure keeps the figures it drew before the error', () => {
    const result = toToolResult(envelope({ success: false, result: null, error: 'ValueError: x (line 3)', outputs: [{ mime: 'image/png', data: png, source: 'figure' }] }));
    assert.equal(result.isError, true);
    assert.deepEqual(result.content.map((c) => c.type), ['text', 'image']);
  });
});
