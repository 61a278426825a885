// js-tiktoken's GPT-2 encode throughput: the reference of bench/tokenizer_bench.sh.
//
//   node bench/js/tiktoken_bench.js FILE [--reps N] [--ids OUT]
//
// Reads FILE and decodes it as UTF-8 (not timed), encodes it once to warm up, then N times
// (default 3), timing encode() alone in-process, and prints one line
//   js-tiktoken VERSION: B bytes, N ids, best S s of N, M MB/s        (MB = 10^6 bytes)
// With --ids, the ids of the last run go to OUT as a JSON array (to check them against
// alloy's). The text is encoded as tiktoken's encode_ordinary: <|endoftext|> is plain text.
// js-tiktoken comes from tests/js/node_modules (npm install in tests/js).
"use strict";
const fs = require("fs");
const path = require("path");

const args = process.argv.slice(2);
const opt = (name, def) => {
  const i = args.indexOf(name);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : def;
};
const file = args.find((a, i) => !a.startsWith("--") && !(i > 0 && args[i - 1].startsWith("--")));
const reps = Number.parseInt(opt("--reps", "3"), 10);
const idsOut = opt("--ids", null);
if (!file || !(reps >= 1)) {
  console.error("usage: node bench/js/tiktoken_bench.js FILE [--reps N] [--ids OUT]");
  process.exit(2);
}
const jsDir = path.join(__dirname, "..", "..", "tests", "js");
let tiktoken, version;
try {
  tiktoken = require(require.resolve("js-tiktoken", { paths: [jsDir] }));
  version = JSON.parse(fs.readFileSync(path.join(jsDir, "node_modules", "js-tiktoken", "package.json"), "utf8")).version;
} catch (e) {
  console.error(`tiktoken_bench.js: js-tiktoken is not installed in ${jsDir}/node_modules (npm install there)`);
  process.exit(1);
}
const buf = fs.readFileSync(file);
const text = buf.toString("utf8");
const enc = tiktoken.getEncoding("gpt2");

let ids = enc.encode(text, [], []); // warm-up: V8 compiles the hot paths
let best = Infinity;
for (let r = 0; r < reps; r++) {
  const t0 = process.hrtime.bigint();
  ids = enc.encode(text, [], []);
  const dt = Number(process.hrtime.bigint() - t0) / 1e9;
  if (dt < best) best = dt;
}
if (idsOut) fs.writeFileSync(idsOut, JSON.stringify(ids) + "\n");
console.log(
  `js-tiktoken ${version}: ${buf.length} bytes, ${ids.length} ids, best ${best.toFixed(4)} s of ${reps}, ` +
    `${(buf.length / best / 1e6).toFixed(3)} MB/s`
);
