/**
 * The playground page's script, run in the browser (served as /playground/playground.js). It calls
 * the API of the server that served it, as any client does: POST /execute with
 * `Accept: text/event-stream` for the output as it happens, /files for the workspace. What comes
 * back is the sandbox's, so hostile: text goes in as text, images as data: URLs of their base64,
 * HTML only into a sandboxed frame that runs no script. The API key lives in a variable of this
 * page, nowhere else.
 */
export {};

interface Output {
  mime: string;
  data: string;
  source: string;
}

/** The envelope's fields this page shows; `value`, `outputs` and `outputs_truncated` may be absent. */
interface Envelope {
  success: boolean;
  result: string | null;
  error: string | null;
  stdout?: string;
  traceback?: string | null;
  exit_code?: number | null;
  duration_ms?: number;
  value?: string | null;
  outputs?: Output[];
  outputs_truncated?: boolean;
  warnings?: string[];
}

interface FileInfo {
  path: string;
  size: number;
  modified: string;
}

const byId = <T extends HTMLElement = HTMLElement>(id: string) => document.getElementById(id) as T;
const editor = byId<HTMLTextAreaElement>('code');
const gutter = byId('gutter');
const runButton = byId<HTMLButtonElement>('run');
const statusLine = byId('status');
const notice = byId('notice');
const keyBar = byId('key-bar');
const keyInput = byId<HTMLInputElement>('key');
const stream = byId('stream');
const errorBox = byId('error');
const errorLine = byId<HTMLButtonElement>('error-line');
const valueBox = byId('value');
const outputsBox = byId('outputs');
const fileRows = byId('file-list').querySelector('tbody')!;
const filesNote = byId('files-note');

const keysRequired = document.body.dataset.keysRequired === 'true';
/** Another site sent the browser here (the server saw it), so a link's code is not run by itself. */
const fromElsewhere = document.body.dataset.fromElsewhere !== 'false';
/** The API key: in this variable only (no storage, no cookie, no URL). */
let apiKey = '';
let running: AbortController | null = null;

const authorized = (headers: Record<string, string> = {}): Record<string, string> =>
  apiKey ? { ...headers, authorization: `Bearer ${apiKey}` } : headers;

const show = (element: HTMLElement, visible: boolean) => {
  element.hidden = !visible;
};

function setStatus(state: 'idle' | 'running' | 'done' | 'error', text: string): void {
  statusLine.dataset.state = state;
  statusLine.textContent = text;
}

function say(text: string | null): void {
  notice.textContent = text ?? '';
  show(notice, text !== null);
}

// --- the editor: a textarea with line numbers ---

function drawGutter(errorAt: number | null = null): void {
  const lines = editor.value.split('\n').length;
  gutter.replaceChildren(
    ...Array.from({ length: lines }, (_, i) => {
      const line = document.createElement('span');
      line.textContent = String(i + 1);
      if (i + 1 === errorAt) line.className = 'error-line';
      return line;
    }),
  );
  gutter.scrollTop = editor.scrollTop;
}

/** Puts the cursor on line `n` of the code. */
function goToLine(n: number): void {
  const lines = editor.value.split('\n');
  const start = lines.slice(0, n - 1).reduce((sum, line) => sum + line.length + 1, 0);
  editor.focus();
  editor.setSelectionRange(start, start + (lines[n - 1]?.length ?? 0));
}

editor.addEventListener('input', () => drawGutter());
editor.addEventListener('scroll', () => {
  gutter.scrollTop = editor.scrollTop;
});
editor.addEventListener('keydown', (event) => {
  if (event.key === 'Enter' && (event.ctrlKey || event.metaKey)) {
    event.preventDefault();
    void run();
  } else if (event.key === 'Tab' && !event.shiftKey) {
    event.preventDefault();
    editor.setRangeText('    ', editor.selectionStart, editor.selectionEnd, 'end');
    drawGutter();
  }
});

// --- a run, as Server-Sent Events ---

/** The events of an SSE body: `event` and its `data` (comment lines, the keep-alives, are skipped). */
async function* events(body: ReadableStream<Uint8Array>): AsyncGenerator<{ event: string; data: string }> {
  const reader = body.getReader();
  const decoder = new TextDecoder(); // streaming: a character split across reads arrives whole
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, '\n');
    for (let end = buffer.indexOf('\n\n'); end >= 0; end = buffer.indexOf('\n\n')) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = 'message';
      const data: string[] = [];
      for (const line of block.split('\n')) {
        if (line.startsWith('event:')) event = line.slice(6).trim();
        else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
      }
      if (data.length > 0) yield { event, data: data.join('\n') };
    }
  }
}

function clearResult(): void {
  stream.replaceChildren();
  show(errorBox, false);
  show(valueBox, false);
  outputsBox.replaceChildren();
  show(byId('outputs-note'), false);
  drawGutter();
}

function appendOutput(kind: 'stdout' | 'stderr', text: string): void {
  const last = stream.lastElementChild as HTMLElement | null;
  if (last?.dataset.stream === kind) {
    last.append(text);
  } else {
    const piece = document.createElement('span');
    piece.dataset.stream = kind;
    piece.className = kind;
    piece.textContent = text;
    stream.append(piece);
  }
  stream.scrollTop = stream.scrollHeight;
}

/** The line of the user's code an error names: `(line 3)` for code, `(script.py, line 3)` for a file. */
const lineOf = (error: string) => Number(/\((?:[^()]*, )?line (\d+)\)$/.exec(error)?.[1] ?? NaN) || null;

function showError(message: string, traceback?: string | null): void {
  byId('error-message').textContent = message;
  const tb = byId('traceback');
  tb.textContent = traceback ?? '';
  show(tb, Boolean(traceback) && !(stream.textContent ?? '').includes(traceback ?? '')); // once is enough
  const line = lineOf(message);
  errorLine.textContent = line ? `line ${line}` : '';
  errorLine.dataset.line = line ? String(line) : '';
  show(errorLine, line !== null);
  drawGutter(line);
  show(errorBox, true);
}

errorLine.addEventListener('click', () => goToLine(Number(errorLine.dataset.line)));

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

/** One rich output, rendered without ever putting the sandbox's markup into this page. */
function renderOutput({ mime, data, source }: Output): HTMLElement {
  const figure = document.createElement('figure');
  figure.className = 'output';
  figure.dataset.mime = mime;
  const caption = document.createElement('figcaption');
  caption.textContent = `${source} · ${mime}`;
  let body: HTMLElement;
  if ((mime === 'image/png' || mime === 'image/svg+xml') && BASE64.test(data)) {
    // An <img> runs no script, SVG's included; a data: URL needs no request.
    const img = document.createElement('img');
    img.alt = `${source} (${mime})`;
    img.src = `data:${mime};base64,${data}`;
    body = img;
  } else if (mime === 'text/html') {
    // No allow-* at all: no script, no forms, no same origin; it inherits this page's CSP (no request elsewhere).
    const frame = document.createElement('iframe');
    frame.setAttribute('sandbox', '');
    frame.referrerPolicy = 'no-referrer';
    frame.title = `${source} (HTML)`;
    frame.srcdoc = data;
    const rows = (data.match(/<tr[\s>]/gi) ?? []).length;
    frame.style.height = `${Math.min(480, Math.max(80, 28 * rows + 40))}px`;
    body = frame;
  } else {
    const pre = document.createElement('pre');
    let text = data;
    if (mime === 'application/json') {
      try {
        text = JSON.stringify(JSON.parse(data), null, 2);
      } catch {
        // shown as it came
      }
    }
    pre.textContent = text;
    body = pre;
  }
  figure.append(body, caption);
  return figure;
}

/**
 * The outputs worth showing, as a notebook does: a displayed object or a value gives each of its
 * forms and ends with its text/plain, so a text/plain right after a richer form of the same source
 * is that object's fallback, and is left out.
 */
function shown(outputs: Output[]): Output[] {
  return outputs.filter((output, i) => {
    const before = outputs[i - 1];
    return !(output.mime === 'text/plain' && before && before.mime !== 'text/plain' && before.source === output.source && output.source !== 'figure');
  });
}

function showResult(envelope: Envelope): void {
  if (envelope.success) {
    setStatus('done', `done in ${envelope.duration_ms ?? '?'} ms`);
  } else {
    setStatus('error', envelope.exit_code === undefined ? 'refused' : `failed${envelope.exit_code === null ? '' : ` (exit code ${envelope.exit_code})`}`);
    showError(envelope.error ?? 'failed', envelope.traceback);
  }
  if (typeof envelope.value === 'string') {
    byId('value-text').textContent = envelope.value;
    show(valueBox, true);
  }
  if (Array.isArray(envelope.outputs)) outputsBox.replaceChildren(...shown(envelope.outputs).map(renderOutput));
  show(byId('outputs-note'), envelope.outputs_truncated === true);
  for (const warning of envelope.warnings ?? []) appendOutput('stderr', `warning: ${warning}\n`);
}

function setRunning(on: boolean): void {
  runButton.textContent = on ? 'Stop' : 'Run';
  runButton.classList.toggle('stop', on);
}

/** Runs the editor's code, showing its output as it comes; while it runs, the button stops it. */
async function run(): Promise<void> {
  if (running) {
    running.abort();
    return;
  }
  if (keysRequired && !apiKey) {
    say('This server needs an API key: paste it above, then press Run.');
    keyInput.focus();
    return;
  }
  say(null);
  clearResult();
  const controller = (running = new AbortController());
  setRunning(true);
  setStatus('running', 'running…');
  try {
    const res = await fetch('/execute', {
      method: 'POST',
      headers: authorized({ 'content-type': 'application/json', accept: 'text/event-stream' }),
      body: JSON.stringify({ code: editor.value }),
      signal: controller.signal,
    });
    if (!(res.headers.get('content-type') ?? '').startsWith('text/event-stream') || !res.body) {
      // Refused before the run: the usual JSON envelope.
      const refusal = (await res.json().catch(() => ({ error: `HTTP ${res.status}` }))) as { error?: string };
      setStatus('error', `refused (HTTP ${res.status})`);
      showError(refusal.error ?? `HTTP ${res.status}`);
      if (res.status === 401) show(keyBar, true);
      return;
    }
    let answered = false;
    for await (const { event, data } of events(res.body)) {
      const payload = JSON.parse(data) as { text?: string } & Envelope;
      if (event === 'stdout' || event === 'stderr') appendOutput(event, payload.text ?? '');
      else if (event === 'result') {
        answered = true;
        showResult(payload);
      }
    }
    if (!answered) setStatus('error', 'the stream ended without a result');
  } catch (err) {
    if (controller.signal.aborted) setStatus('error', 'stopped');
    else setStatus('error', `failed: ${String(err)}`);
  } finally {
    running = null;
    setRunning(false);
    void refreshFiles();
  }
}

runButton.addEventListener('click', () => void run());

// --- the workspace's files ---

const fileUrl = (path: string) => `/files/${path.split('/').map(encodeURIComponent).join('/')}`;

function sizeOf(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

function filesSay(text: string | null): void {
  filesNote.textContent = text ?? '';
  show(filesNote, text !== null);
}

/** Saves a file of the workspace; with a key, through fetch (a link cannot send the header). */
async function download(path: string): Promise<void> {
  const res = await fetch(fileUrl(path), { headers: authorized() });
  if (!res.ok) {
    filesSay(`Could not download ${path}: HTTP ${res.status}`);
    return;
  }
  const url = URL.createObjectURL(await res.blob());
  const link = document.createElement('a');
  link.href = url;
  link.download = path.split('/').pop() ?? 'download';
  link.click();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

function fileRow(file: FileInfo): HTMLTableRowElement {
  const row = document.createElement('tr');
  const name = document.createElement('td');
  const link = document.createElement('a');
  link.href = fileUrl(file.path);
  link.download = file.path.split('/').pop() ?? '';
  link.textContent = file.path;
  link.addEventListener('click', (event) => {
    if (!apiKey) return; // no keys on this server: the link itself downloads
    event.preventDefault();
    void download(file.path);
  });
  name.append(link);
  const size = document.createElement('td');
  size.className = 'size';
  size.textContent = sizeOf(file.size);
  const time = document.createElement('td');
  time.className = 'time';
  time.textContent = new Date(file.modified).toLocaleString();
  const actions = document.createElement('td');
  const remove = document.createElement('button');
  remove.type = 'button';
  remove.textContent = 'delete';
  remove.title = `delete ${file.path}`;
  remove.addEventListener('click', () => {
    void fetch(fileUrl(file.path), { method: 'DELETE', headers: authorized() }).then(() => refreshFiles());
  });
  actions.append(remove);
  row.append(name, size, time, actions);
  return row;
}

async function refreshFiles(): Promise<void> {
  if (keysRequired && !apiKey) {
    fileRows.replaceChildren();
    filesSay('Paste your API key to see the workspace.');
    return;
  }
  try {
    const res = await fetch('/files', { headers: authorized() });
    const body = (await res.json()) as { files?: FileInfo[]; error?: string };
    if (!res.ok || !body.files) {
      filesSay(body.error ?? `HTTP ${res.status}`);
      if (res.status === 401) show(keyBar, true);
      return;
    }
    fileRows.replaceChildren(...body.files.map(fileRow));
    filesSay(body.files.length === 0 ? 'No files yet: what the code writes in its working directory appears here.' : null);
  } catch (err) {
    filesSay(`Could not list the files: ${String(err)}`);
  }
}

byId<HTMLInputElement>('upload').addEventListener('change', async (event) => {
  const input = event.target as HTMLInputElement;
  for (const file of Array.from(input.files ?? [])) {
    const res = await fetch(fileUrl(file.name), {
      method: 'PUT',
      headers: authorized({ 'content-type': 'application/octet-stream' }),
      body: file,
    });
    if (!res.ok) filesSay(`Could not upload ${file.name}: ${((await res.json().catch(() => ({}))) as { error?: string }).error ?? `HTTP ${res.status}`}`);
  }
  input.value = '';
  await refreshFiles();
});

let keyTyped: number | undefined;
keyInput.addEventListener('input', () => {
  apiKey = keyInput.value.trim();
  // The files once the key is complete (pasted at once, or typed): never a run.
  clearTimeout(keyTyped);
  keyTyped = setTimeout(() => void refreshFiles(), 300);
});

// --- a shared link: ?code=<source> fills the editor, &run=1 runs it where that is safe ---

const params = new URLSearchParams(location.search);
const shared = params.get('code');
if (shared !== null) editor.value = shared;
drawGutter();
if (params.get('run') === '1') {
  if (keysRequired) say('This link carries code to run. Read it, paste your API key above, then press Run: with keys, a link never runs code by itself.');
  else if (fromElsewhere) say('Another site sent you here with code to run. Read it, then press Run: it does not run by itself.');
  else void run();
}
void refreshFiles();
