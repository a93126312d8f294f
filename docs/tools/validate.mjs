// Validates AsyncAPI documents with the official parser (@asyncapi/parser, v3 API) and its default ruleset.
//
// Usage: node docs/tools/validate.mjs FILE [FILE...]   ("-" reads one document from stdin)
// Prints one JSON object: the ruleset used and, per document, every diagnostic (code, severity, message, path).
// Exits 1 when any document has an error-severity diagnostic (or cannot be read), 2 on bad usage, 0 otherwise.
// Warnings do not change the exit code: callers (tests/unit/test_asyncapi_parser.py) judge them themselves.

import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { Parser } from '@asyncapi/parser';

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);
const parserVersion = require(path.join(here, 'node_modules', '@asyncapi', 'parser', 'package.json')).version;

// @stoplight/types DiagnosticSeverity: 0 error, 1 warning, 2 information, 3 hint.
const SEVERITIES = ['error', 'warning', 'information', 'hint'];

// The parser's default ruleset: `new Parser()` with no `ruleset` option extends Spectral's AsyncAPI rulesets
// core + recommended, the v2 core/schemas/recommended rules (inactive on 3.0 documents) and the v3 core rules.
const RULESET = 'asyncapi (default of @asyncapi/parser: core, recommended, v2 core/schemas/recommended, v3 core)';

async function readInput(file) {
  if (file !== '-') return readFile(file, 'utf8');
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return Buffer.concat(chunks).toString('utf8');
}

function describe(diagnostic) {
  const start = diagnostic.range?.start;
  return {
    code: String(diagnostic.code),
    severity: SEVERITIES[diagnostic.severity] ?? String(diagnostic.severity),
    message: diagnostic.message,
    path: (diagnostic.path ?? []).map(String),
    line: start ? start.line + 1 : null,
  };
}

async function main(files) {
  if (files.length === 0) {
    process.stderr.write('usage: node docs/tools/validate.mjs FILE [FILE...]  ("-" for stdin)\n');
    return 2;
  }
  const parser = new Parser();
  const report = { parser: `@asyncapi/parser ${parserVersion}`, ruleset: RULESET, documents: [] };
  let failed = false;
  for (const file of files) {
    let diagnostics;
    try {
      const text = await readInput(file);
      const { diagnostics: found } = await parser.parse(text, { source: file === '-' ? undefined : path.resolve(file) });
      diagnostics = found.map(describe);
    } catch (error) {
      diagnostics = [{ code: 'unreadable', severity: 'error', message: String(error?.message ?? error), path: [], line: null }];
    }
    const count = (severity) => diagnostics.filter((d) => d.severity === severity).length;
    const entry = { file, errors: count('error'), warnings: count('warning'), diagnostics };
    failed ||= entry.errors > 0;
    report.documents.push(entry);
  }
  process.stdout.write(JSON.stringify(report, null, 2) + '\n');
  return failed ? 1 : 0;
}

process.exitCode = await main(process.argv.slice(2));
