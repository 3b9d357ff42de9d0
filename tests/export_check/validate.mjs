// Checks Mermaid diagrams with the real Mermaid parser (mermaid.parse), for pipekit's tests.
//
//   node validate.mjs FILE...    parse each file; print "ok FILE" or "error FILE: message";
//                                exit 1 if any failed (use "-" for stdin)
//   node validate.mjs --serve    read one JSON-encoded diagram per line on stdin, answer one
//                                JSON line {"ok": bool, "error": str|null} per diagram; the
//                                process stays up so a property test pays mermaid's ~1 s
//                                start-up once, not per example
//
// mermaid sanitizes labels with DOMPurify, which needs a DOM even just to parse, so jsdom's
// window and document are made global *before* mermaid is imported.
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { JSDOM } from 'jsdom';

const dom = new JSDOM('<!doctype html><html><body></body></html>');
globalThis.window = dom.window;
globalThis.document = dom.window.document;
const { default: mermaid } = await import('mermaid');
mermaid.initialize({ startOnLoad: false, securityLevel: 'strict' });

async function check(text) {
  try {
    // suppressErrors: false makes an invalid diagram reject instead of resolving false.
    const result = await mermaid.parse(text, { suppressErrors: false });
    if (!result || result.diagramType !== 'flowchart-v2') {
      return { ok: false, error: `not a flowchart: ${result && result.diagramType}` };
    }
    return { ok: true, error: null };
  } catch (err) {
    return { ok: false, error: String((err && err.message) || err) };
  }
}

const args = process.argv.slice(2);
if (args[0] === '--serve') {
  const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
  for await (const line of lines) {
    if (!line.trim()) continue;
    let answer;
    try {
      answer = await check(JSON.parse(line));
    } catch (err) {
      answer = { ok: false, error: `bad request: ${err.message}` };
    }
    process.stdout.write(JSON.stringify(answer) + '\n');
  }
} else {
  if (args.length === 0) {
    process.stderr.write('usage: node validate.mjs FILE... | --serve\n');
    process.exit(2);
  }
  let failed = 0;
  for (const name of args) {
    const text = readFileSync(name === '-' ? 0 : name, 'utf8');
    const { ok, error } = await check(text);
    if (ok) {
      process.stdout.write(`ok ${name}\n`);
    } else {
      failed += 1;
      process.stdout.write(`error ${name}: ${error.split('\n').join(' | ')}\n`);
    }
  }
  process.exit(failed ? 1 : 0);
}
