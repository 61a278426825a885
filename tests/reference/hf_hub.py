#!/usr/bin/env python3
"""
hf_hub.py — writes model folders the way the Hugging Face hub stores them, for alloy's import
tests, and the logits that PyTorch computes from them.

    /usr/bin/python3 tests/reference/hf_hub.py --family gpt2|llama --out DIR --logits OUT.safetensors
        [--dtype f32|f16|bf16] [--shards N] [--seed S]

The model is tests/reference/twin.py's (written from scratch on torch alone, named as
transformers' GPT2LMHeadModel / LlamaForCausalLM) with random weights, rounded to --dtype.
The folder holds config.json and either model.safetensors or N shards
(model-0000i-of-0000N.safetensors) with model.safetensors.index.json, as the hub does for large
models. GPT-2 is written as the hub's GPT2Model files are: names without "transformer.", no
lm_head (tied), and each layer's causal-mask buffer "h.N.attn.bias". Llama is written with
GQA and an untied lm_head. OUT holds "tokens" (int32, (2, T)) and "logits" (f32, (2, T, V))
computed in fp32 from the rounded weights.
"""
import argparse
import json
import os
import struct
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import twin  # noqa: E402

ST_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.int32: "I32"}


def st_bytes(t):
    """Little-endian bytes of a tensor (bf16 through its 16-bit pattern: numpy has no bf16)."""
    t = t.detach().cpu().contiguous()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().astype("<i2").tobytes()
    return t.numpy().astype(t.numpy().dtype.newbyteorder("<")).tobytes()


def write_st(path, tensors):
    header, blobs, off = {}, [], 0
    for name, t in tensors.items():
        b = st_bytes(t)
        header[name] = {"dtype": ST_DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--family", required=True, choices=["gpt2", "llama"])
    ap.add_argument("--out", required=True)
    ap.add_argument("--logits", required=True)
    ap.add_argument("--dtype", default="f32", choices=["f32", "f16", "bf16"])
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    if a.family == "gpt2":
        cfg = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": 301, "n_positions": 64,
               "n_ctx": 64, "n_embd": 48, "n_layer": 2, "n_head": 4, "n_inner": None,
               "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5, "resid_pdrop": 0.1,
               "embd_pdrop": 0.1, "attn_pdrop": 0.1, "bos_token_id": 300, "eos_token_id": 300,
               "torch_dtype": "float32"}
        model = twin.GPT2LMHeadModel(cfg)
    else:
        cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 263,
               "max_position_embeddings": 64, "hidden_size": 64, "intermediate_size": 96,
               "num_hidden_layers": 2, "num_attention_heads": 8, "num_key_value_heads": 2,
               "hidden_act": "silu", "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "rope_scaling": None,
               "attention_bias": False, "tie_word_embeddings": False, "torch_dtype": "bfloat16"}
        model = twin.LlamaForCausalLM(cfg)
    dt = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}[a.dtype]
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.2 + (1.0 if p.dim() == 1 else 0.0) * (p.dim() == 1))
            p.copy_(p.to(dt).to(torch.float32))  # the logits come from the stored (rounded) weights
    if a.family == "gpt2":
        sd = {k: v for k, v in model.transformer.state_dict().items()}
        T = cfg["n_positions"]
        for i in range(cfg["n_layer"]):  # the causal-mask buffer old GPT-2 files carry
            sd["h.%d.attn.bias" % i] = torch.tril(torch.ones(T, T)).view(1, 1, T, T)
    else:
        sd = dict(model.state_dict())
    tensors = {k: (v.to(dt) if v.is_floating_point() else v) for k, v in sd.items()}
    os.makedirs(a.out, exist_ok=True)
    names = list(tensors)
    if a.shards <= 1:
        write_st(os.path.join(a.out, "model.safetensors"), tensors)
    else:
        per = (len(names) + a.shards - 1) // a.shards
        wmap = {}
        for s in range(a.shards):
            fname = "model-%05d-of-%05d.safetensors" % (s + 1, a.shards)
            part = {n: tensors[n] for n in names[s * per:(s + 1) * per]}
            write_st(os.path.join(a.out, fname), part)
            wmap.update({n: fname for n in part})
        with open(os.path.join(a.out, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": 0}, "weight_map": wmap}, f, indent=2)
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    g = torch.Generator().manual_seed(a.seed + 7)
    tokens = torch.randint(0, cfg["vocab_size"], (2, 24), generator=g, dtype=torch.int64)
    with torch.no_grad():
        _, logits = model(tokens)
    write_st(a.logits, {"tokens": tokens.to(torch.int32), "logits": logits.to(torch.float32)})


if __name__ == "__main__":
    main()
