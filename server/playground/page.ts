/**
 * The playground's markup and style. Everything it loads comes from this server (its script is
 * client.ts, compiled beside this file); the page holds no inline script, so its
 * Content-Security-Policy can refuse every script but its own.
 */

/**
 * The page. `keysRequired` tells the script to wait for a key before anything runs; `fromElsewhere`,
 * that another site sent the browser here, so a link's code waits for its reader's Run.
 */
export function playgroundPage(keysRequired: boolean, fromElsewhere: boolean): string {
  return `<!DOCTYPE html>
<html lang="en">
  <head>
    <meta charset="utf-8">
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <title>run-python-code playground</title>
    <link rel="stylesheet" href="/playground/playground.css">
    <script type="module" src="/playground/playground.js"></script>
  </head>
  <body data-keys-required="${keysRequired}" data-from-elsewhere="${fromElsewhere}">
    <header>
      <h1>run-python-code <span>playground</span></h1>
      <nav><a href="/docs/">API docs</a></nav>
    </header>
    <section id="key-bar"${keysRequired ? '' : ' hidden'}>
      <label>API key <input id="key" type="password" autocomplete="off" spellcheck="false" placeholder="paste your key"></label>
      <span class="hint">It stays in this page's memory only: never stored, never sent anywhere but this server.</span>
    </section>
    <main>
      <section id="editor-pane">
        <div class="editor">
          <pre id="gutter" aria-hidden="true"></pre>
          <textarea id="code" spellcheck="false" autocapitalize="off" autocomplete="off" wrap="off"
            aria-label="Python code" placeholder="print(&quot;hello&quot;)   # Ctrl+Enter runs"></textarea>
        </div>
        <div class="actions">
          <button id="run" type="button">Run</button>
          <span id="status" data-state="idle"></span>
        </div>
        <p id="notice" hidden></p>
      </section>
      <section id="result-pane">
        <pre id="stream" aria-label="output"></pre>
        <div id="error" hidden>
          <p><strong id="error-message"></strong> <button id="error-line" type="button" hidden></button></p>
          <pre id="traceback" hidden></pre>
        </div>
        <div id="value" hidden><span class="label">value</span><pre id="value-text"></pre></div>
        <div id="outputs"></div>
        <p id="outputs-note" hidden>More outputs were made than the caps allow; the rest were dropped.</p>
        <section id="files">
          <h2>Workspace files <label class="upload">upload <input id="upload" type="file" multiple></label></h2>
          <p id="files-note" hidden></p>
          <table id="file-list"><tbody></tbody></table>
        </section>
      </section>
    </main>
  </body>
</html>
`;
}

export const PLAYGROUND_CSS = `
:root { --fg: #1d2330; --muted: #667085; --line: #d8dce3; --bg: #f7f8fa; --accent: #2d5bd7; --bad: #b42318; }
* { box-sizing: border-box; }
[hidden] { display: none !important; }
body { margin: 0; font: 15px/1.45 system-ui, sans-serif; color: var(--fg); background: var(--bg); }
header { display: flex; align-items: baseline; justify-content: space-between; padding: 0.6rem 1rem; border-bottom: 1px solid var(--line); background: #fff; }
h1 { margin: 0; font-size: 1.1rem; } h1 span { color: var(--muted); font-weight: normal; }
h2 { font-size: 1rem; margin: 1.2rem 0 0.4rem; display: flex; gap: 1rem; align-items: baseline; }
a { color: var(--accent); }
#key-bar { padding: 0.5rem 1rem; background: #fff8e6; border-bottom: 1px solid var(--line); display: flex; gap: 1rem; align-items: center; flex-wrap: wrap; }
#key-bar input { font: inherit; width: 22rem; max-width: 60vw; }
.hint { color: var(--muted); font-size: 0.85rem; }
main { display: grid; grid-template-columns: minmax(0, 1fr) minmax(0, 1fr); gap: 1rem; padding: 1rem; }
@media (max-width: 900px) { main { grid-template-columns: minmax(0, 1fr); } }
.editor { display: flex; border: 1px solid var(--line); background: #fff; height: 60vh; min-height: 14rem; }
#gutter { margin: 0; padding: 0.5rem 0.4rem; min-width: 2.6rem; text-align: right; color: var(--muted); background: #f0f2f5; overflow: hidden; user-select: none; }
#gutter span { display: block; } #gutter .error-line { background: #fde2df; color: var(--bad); font-weight: bold; }
#code { flex: 1; border: 0; margin: 0; padding: 0.5rem; resize: none; outline: none; white-space: pre; overflow: auto; tab-size: 4; }
#gutter, #code, pre { font: 13px/1.5 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
.actions { display: flex; gap: 1rem; align-items: center; margin-top: 0.5rem; }
button { font: inherit; padding: 0.3rem 1rem; cursor: pointer; }
#run { background: var(--accent); color: #fff; border: 0; border-radius: 4px; }
#run.stop { background: var(--bad); }
#status { color: var(--muted); } #status[data-state="error"] { color: var(--bad); }
#notice { background: #fff8e6; border: 1px solid #f1d48b; padding: 0.5rem; }
#stream { margin: 0; min-height: 3rem; max-height: 40vh; overflow: auto; padding: 0.5rem; background: #fff; border: 1px solid var(--line); white-space: pre-wrap; word-break: break-word; }
#stream .stderr { color: var(--bad); }
#error { border-left: 3px solid var(--bad); padding: 0 0.6rem; margin-top: 0.6rem; }
#error strong { color: var(--bad); }
#traceback { white-space: pre-wrap; background: #fff; border: 1px solid var(--line); padding: 0.5rem; }
#value { margin-top: 0.6rem; } .label { color: var(--muted); font-size: 0.8rem; }
#value pre { margin: 0; padding: 0.4rem 0.5rem; background: #fff; border: 1px solid var(--line); white-space: pre-wrap; }
.output { margin: 0.6rem 0 0; } .output figcaption { color: var(--muted); font-size: 0.8rem; }
.output img { max-width: 100%; background: #fff; border: 1px solid var(--line); }
.output iframe { width: 100%; border: 1px solid var(--line); background: #fff; resize: vertical; }
.output pre { margin: 0; padding: 0.4rem 0.5rem; background: #fff; border: 1px solid var(--line); white-space: pre-wrap; overflow: auto; max-height: 30rem; }
#file-list { border-collapse: collapse; width: 100%; background: #fff; }
#file-list td { border-top: 1px solid var(--line); padding: 0.2rem 0.5rem; }
#file-list td.size, #file-list td.time { color: var(--muted); white-space: nowrap; text-align: right; }
.upload { font-weight: normal; font-size: 0.85rem; color: var(--accent); cursor: pointer; }
.upload input { font-size: 0.8rem; }
`;
