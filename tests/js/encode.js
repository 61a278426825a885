// Prints js-tiktoken's GPT-2 encoding of a file as one JSON array (the oracle of
// tests/test_tiktoken.sh). The file is decoded as UTF-8 the WHATWG way (invalid sequences
// become U+FFFD). Usage: node encode.js FILE [--allow-special]
"use strict";
const fs = require("fs");
const { getEncoding } = require("js-tiktoken");
const args = process.argv.slice(2);
const file = args.find((a) => !a.startsWith("--"));
if (!file) {
  console.error("usage: node encode.js FILE [--allow-special]");
  process.exit(2);
}
const text = fs.readFileSync(file).toString("utf8");
const enc = getEncoding("gpt2");
const ids = args.includes("--allow-special") ? enc.encode(text, "all") : enc.encode(text, [], []);
process.stdout.write(JSON.stringify(ids) + "\n");
