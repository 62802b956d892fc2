#!/usr/bin/env node
// A tiny stand-in for the native `solc` binary, backed by solc-js from node_modules.
// It answers the two calls py-solc-x makes: `--version` and `--standard-json` (input on stdin).
// Imports are not read from disk: the caller puts every source in the standard JSON input.
"use strict";
const path = require("path");
const solc = require(path.join(__dirname, "..", "node_modules", "solc"));

const args = process.argv.slice(2);
if (args.includes("--version")) {
  process.stdout.write(`solc, the solidity compiler commandline interface\nVersion: ${solc.version()}\n`);
  process.exit(0);
}
if (!args.includes("--standard-json")) {
  process.stderr.write("solcjs-shim: only --version and --standard-json are supported\n");
  process.exit(2);
}
const chunks = [];
process.stdin.on("data", (chunk) => chunks.push(chunk));
process.stdin.on("end", () => {
  const missing = (p) => ({ error: `solcjs-shim: source not in the standard JSON input: ${p}` });
  process.stdout.write(solc.compile(Buffer.concat(chunks).toString("utf8"), { import: missing }));
});
