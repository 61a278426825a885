// Prints what @huggingface/gguf — Hugging Face's GGUF parser, a reader written outside alloy —
// finds in GGUF files: the oracle of tests/test_gguf.c.
//
//   node gguf_check.mjs FILE...
//
// One JSON object per file, one per line:
//   {"file": F, "ok": true, "version": 3, "tensor_count": N, "kv_count": N,
//    "tensor_data_offset": N, "parameter_count": N,
//    "metadata": {KEY: {"type": "UINT32", "value": V}, KEY: {"type": "ARRAY",
//                 "sub_type": "STRING", "value": [...]}, ...},
//    "tensors": [{"name": S, "shape": [ne0, ne1, ...], "dtype": "Q8_0", "dtype_id": 8,
//                 "offset": N}, ...]}
// or {"file": F, "ok": false, "error": MESSAGE} when the parser refuses it. 64-bit integers
// are printed as numbers when they are exact in a double, as strings otherwise.
import { gguf, GGUFValueType, GGMLQuantizationType } from "@huggingface/gguf";

function plain(v) {
  if (typeof v === "bigint") return v <= BigInt(Number.MAX_SAFE_INTEGER) && v >= -BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v.toString();
  if (Array.isArray(v)) return v.map(plain);
  return v;
}

async function check(file) {
  try {
    const out = await gguf(file, { allowLocalFile: true, typedMetadata: true, computeParametersCount: true });
    const meta = {};
    for (const [key, entry] of Object.entries(out.typedMetadata)) {
      if (key === "version" || key === "tensor_count" || key === "kv_count") continue;
      const m = { type: GGUFValueType[entry.type], value: plain(entry.value) };
      if (entry.subType !== undefined) m.sub_type = GGUFValueType[entry.subType];
      meta[key] = m;
    }
    return {
      file,
      ok: true,
      version: plain(out.metadata.version),
      tensor_count: plain(out.metadata.tensor_count),
      kv_count: plain(out.metadata.kv_count),
      tensor_data_offset: plain(out.tensorDataOffset),
      parameter_count: plain(out.parameterCount),
      metadata: meta,
      tensors: out.tensorInfos.map((t) => ({
        name: t.name,
        shape: t.shape.map(plain),
        dtype: GGMLQuantizationType[t.dtype] ?? null,
        dtype_id: t.dtype,
        offset: plain(t.offset),
      })),
    };
  } catch (e) {
    return { file, ok: false, error: String(e && e.message ? e.message : e) };
  }
}

const files = process.argv.slice(2);
if (!files.length) {
  console.error("usage: node gguf_check.mjs FILE...");
  process.exit(2);
}
for (const f of files) process.stdout.write(JSON.stringify(await check(f)) + "\n");
