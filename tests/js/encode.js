// Prints js-tiktoken's GPT-2 encoding of a file as one JSON array (the oracle of
// tests/test_tiktoken.sh). The file is decoded as UTF-8 the WHATWG way (invalid sequences
// become U+FFFD, by maximal subparts; a leading byte order mark is kept as U+FEFF).
//
//   node encode.js FILE [--allow-special]        the ids of FILE on standard output
//   node encode.js --batch LIST [--allow-special]
//                                                LIST holds lines "INPUT<TAB>OUTPUT": each
//                                                INPUT's ids are written to OUTPUT (one node
//                                                start for many files)
//
// Without --allow-special the text is encoded as tiktoken's encode_ordinary does:
// <|endoftext|> is plain text (encode(text, [], [])). With it, encode(text, "all").
//
// A piece that becomes more than ~120,000 tokens (a run of 200,000 spaces) overflows V8's
// stack in js-tiktoken's ret.push(...tokens): run node with --stack-size=4000 for those.
"use strict";
const fs = require("fs");
const { getEncoding } = require("js-tiktoken");

const args = process.argv.slice(2);
const allowSpecial = args.includes("--allow-special");
const bi = args.indexOf("--batch");
const enc = getEncoding("gpt2");

function encodeFile(file) {
  const text = fs.readFileSync(file).toString("utf8");
  const ids = allowSpecial ? enc.encode(text, "all") : enc.encode(text, [], []);
  return JSON.stringify(ids) + "\n";
}

if (bi >= 0) {
  if (!args[bi + 1]) {
    console.error("usage: node encode.js --batch LIST [--allow-special]");
    process.exit(2);
  }
  const lines = fs.readFileSync(args[bi + 1], "utf8").split("\n").filter(Boolean);
  for (const line of lines) {
    const [input, output] = line.split("\t");
    try {
      fs.writeFileSync(output, encodeFile(input));
    } catch (e) {
      // the caller sees a missing OUTPUT and this line
      console.error(`encode.js: ${input}: ${e.message}`);
      try { fs.unlinkSync(output); } catch (_) {}
    }
  }
} else {
  const file = args.find((a) => !a.startsWith("--"));
  if (!file) {
    console.error("usage: node encode.js FILE [--allow-special] | --batch LIST [--allow-special]");
    process.exit(2);
  }
  process.stdout.write(encodeFile(file));
}
