#!/usr/bin/python3
"""quant_ref.py — an independent numpy reference of the GGML block formats, for tests/test_quant.c.

Written from the format description (alloy/quant.h, GGML's ggml-common.h / ggml-quants.c), not
from alloy's C code. Every step is done in float32 with one rounding per operation, as C does.

    /usr/bin/python3 tests/reference/quant_ref.py DIR

reads DIR/manifest.txt, one job per line:

    quant   TYPE IN.f32 OUT.bin    quantise float32 values (q8_0, q4_0, f16) to GGML blocks
    dequant TYPE IN.bin N OUT.f32  dequantise N elements of blocks (f16, q8_0, q4_0, q4_k)

Formats (little-endian; d, dmin are IEEE halves):
    q8_0  {half d; int8 qs[32]}                      x = qs[j]*d
    q4_0  {half d; uint8 qs[16]}                     x[j] = ((qs[j] & 15) - 8)*d, x[j+16] = ((qs[j] >> 4) - 8)*d
    q4_k  {half d, dmin; uint8 scales[12]; uint8 qs[128]}
          sub-block s of 32: x = (d*sc[s])*q - (dmin*m[s]); 6-bit sc, m packed as get_scale_min_k4;
          qs[32c + l]: low nibble element 64c + l, high nibble element 64c + 32 + l.
Quantisers (GGML's reference ones), with the policies GGML leaves open:
    q8_0  d = amax/127, id = 1/d (0 if d == 0), qs = roundf(x*id) (half away from zero)
    q4_0  max = the first element of largest |x| (+0.0 if all are zero), d = max/-8, id = 1/d,
          q = min(15, trunc(x*id + 8.5)) with x*id + 8.5 rounded once (fmaf: GGML's C as compilers
          contract it on FMA machines, and gguf-py's emulation)
    a block with a NaN or an infinity: d = NaN (0x7E00), quants zero (q4_0: q = 8)
    1/d overflows (d below 2^-128): id = 0, so q8_0 quants are 0 and q4_0 quants 8
    a scale beyond the fp16 range: d = ±65504, id = 1/d, quants clamped (q8_0 to ±127 before
          rounding, q4_0 x*id + 8.5 to [0, 15] before truncation)
"""
import os
import sys
from fractions import Fraction

import numpy as np

F32 = np.float32
NAN16 = 0x7E00
MAX16 = 0x7BFF


def half_bits(a):
    """float32 array -> uint16 bits of the IEEE half (round to nearest even)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return np.asarray(a, dtype=np.float32).astype(np.float16).view(np.uint16)


def half_value(bits):
    return np.asarray(bits, dtype=np.uint16).view(np.float16).astype(np.float32)


def round_half_away(v):
    """C's roundf on float32 values, exactly (float64 holds |v| + 0.5 exactly here)."""
    a = np.floor(np.abs(v.astype(np.float64)) + 0.5)
    return np.where(v < 0, -a, a)


def quant_q8_0(x):
    xb = x.reshape(-1, 32)
    finite = np.isfinite(xb).all(axis=1)
    xs = np.where(finite[:, None], xb, F32(0))
    amax = np.abs(xs).max(axis=1)
    d = amax / F32(127)
    with np.errstate(divide="ignore", over="ignore"):
        inv = np.where(d != 0, F32(1) / d, F32(0)).astype(F32)
    inv = np.where(np.isfinite(inv), inv, F32(0)).astype(F32)  # d below 2^-128
    dbits = half_bits(d)
    sat = dbits == 0x7C00
    dbits = np.where(sat, MAX16, dbits).astype(np.uint16)
    inv = np.where(sat, F32(1) / F32(65504), inv).astype(F32)
    v = (xs * inv[:, None]).astype(F32)
    v = np.where(sat[:, None], np.clip(v, F32(-127), F32(127)), v)
    q = round_half_away(v).astype(np.int8)
    dbits = np.where(finite, dbits, NAN16).astype(np.uint16)
    q = np.where(finite[:, None], q, 0).astype(np.int8)
    out = np.zeros((xb.shape[0], 34), dtype=np.uint8)
    out[:, 0:2] = dbits.astype("<u2").view(np.uint8).reshape(-1, 2)
    out[:, 2:] = q.view(np.uint8)
    return out.tobytes()


def round_f32(fr):
    """The float32 nearest to the Fraction fr (ties to the even significand)."""
    c = np.float32(float(fr))
    best = None
    for cand in (np.nextafter(c, np.float32(-np.inf)), c, np.nextafter(c, np.float32(np.inf))):
        key = (abs(Fraction(float(cand)) - fr), int(np.float32(cand).view(np.uint32)) & 1)
        if best is None or key < best[0]:
            best = (key, cand)
    return best[1]


def fma_plus_8_5(xs, inv):
    """float32 x*inv + 8.5 with a single rounding (fmaf), computed exactly with fractions."""
    out = np.empty(xs.shape, dtype=F32)
    for i in range(xs.shape[0]):
        fi = Fraction(float(inv[i]))
        for j in range(xs.shape[1]):
            out[i, j] = round_f32(Fraction(float(xs[i, j])) * fi + Fraction(17, 2))
    return out


def quant_q4_0(x):
    xb = x.reshape(-1, 32)
    finite = np.isfinite(xb).all(axis=1)
    xs = np.where(finite[:, None], xb, F32(0))
    ax = np.abs(xs)
    idx = np.argmax(ax, axis=1)  # the first of the largest
    rows = np.arange(xb.shape[0])
    amax = ax[rows, idx]
    mx = np.where(amax > 0, xs[rows, idx], F32(0)).astype(F32)
    d = (mx / F32(-8)).astype(F32)
    with np.errstate(divide="ignore", over="ignore"):
        inv = np.where(d != 0, F32(1) / d, F32(0)).astype(F32)
    inv = np.where(np.isfinite(inv), inv, F32(0)).astype(F32)  # d below 2^-128
    dbits = half_bits(d)
    sat = (dbits & 0x7FFF) == 0x7C00
    dbits = np.where(sat, (dbits & 0x8000) | MAX16, dbits).astype(np.uint16)
    inv = np.where(sat, F32(1) / half_value(dbits), inv).astype(F32)
    v = fma_plus_8_5(xs, inv)
    v = np.where(sat[:, None], np.clip(v, F32(0), F32(15)), v)
    q = np.minimum(np.trunc(v).astype(np.int64), 15)
    q = np.where(finite[:, None], q, 8)
    dbits = np.where(finite, dbits, NAN16).astype(np.uint16)
    out = np.zeros((xb.shape[0], 18), dtype=np.uint8)
    out[:, 0:2] = dbits.astype("<u2").view(np.uint8).reshape(-1, 2)
    out[:, 2:] = (q[:, :16] | (q[:, 16:] << 4)).astype(np.uint8)
    return out.tobytes()


def quant_f16(x):
    return half_bits(x).astype("<u2").tobytes()


def dequant_f16(raw, n):
    return half_value(np.frombuffer(raw, dtype="<u2", count=n))


def dequant_q8_0(raw, n):
    b = np.frombuffer(raw, dtype=np.uint8, count=n // 32 * 34).reshape(-1, 34)
    d = half_value(b[:, 0:2].copy().view("<u2").reshape(-1))
    q = b[:, 2:].view(np.int8).astype(F32)
    return (q * d[:, None]).astype(F32).reshape(-1)


def dequant_q4_0(raw, n):
    b = np.frombuffer(raw, dtype=np.uint8, count=n // 32 * 18).reshape(-1, 18)
    d = half_value(b[:, 0:2].copy().view("<u2").reshape(-1))
    qs = b[:, 2:].astype(np.int32)
    q = np.concatenate([(qs & 15) - 8, (qs >> 4) - 8], axis=1).astype(F32)
    return (q * d[:, None]).astype(F32).reshape(-1)


def q4_k_scales(sc12):
    """(nb, 12) packed bytes -> sc (nb, 8), m (nb, 8), as get_scale_min_k4."""
    p = sc12.astype(np.int32)
    sc = np.zeros((p.shape[0], 8), dtype=np.int32)
    m = np.zeros((p.shape[0], 8), dtype=np.int32)
    for j in range(8):
        if j < 4:
            sc[:, j] = p[:, j] & 63
            m[:, j] = p[:, j + 4] & 63
        else:
            sc[:, j] = (p[:, j + 4] & 0xF) | ((p[:, j - 4] >> 6) << 4)
            m[:, j] = (p[:, j + 4] >> 4) | ((p[:, j] >> 6) << 4)
    return sc, m


def dequant_q4_k(raw, n):
    b = np.frombuffer(raw, dtype=np.uint8, count=n // 256 * 144).reshape(-1, 144)
    d = half_value(b[:, 0:2].copy().view("<u2").reshape(-1))
    dmin = half_value(b[:, 2:4].copy().view("<u2").reshape(-1))
    sc, m = q4_k_scales(b[:, 4:16])
    qs = b[:, 16:].astype(np.int32).reshape(-1, 4, 32)
    # element 64c + l: low nibble of qs[32c + l]; element 64c + 32 + l: its high nibble
    q = np.stack([qs & 15, qs >> 4], axis=2).reshape(-1, 8, 32).astype(F32)  # (nb, sub-block, 32)
    d1 = (d[:, None] * sc.astype(F32)).astype(F32)
    m1 = (dmin[:, None] * m.astype(F32)).astype(F32)
    y = ((d1[:, :, None] * q).astype(F32) - m1[:, :, None]).astype(F32)
    return y.reshape(-1)


QUANT = {"q8_0": quant_q8_0, "q4_0": quant_q4_0, "f16": quant_f16}
DEQUANT = {"f16": dequant_f16, "q8_0": dequant_q8_0, "q4_0": dequant_q4_0, "q4_k": dequant_q4_k}


def main():
    np.seterr(all="ignore")  # NaN and inf scales are part of the tests
    folder = sys.argv[1]
    with open(os.path.join(folder, "manifest.txt")) as f:
        jobs = [line.split() for line in f if line.strip()]
    for job in jobs:
        if job[0] == "quant":
            x = np.fromfile(os.path.join(folder, job[2]), dtype="<f4")
            with open(os.path.join(folder, job[3]), "wb") as out:
                out.write(QUANT[job[1]](x))
        elif job[0] == "dequant":
            with open(os.path.join(folder, job[2]), "rb") as f:
                raw = f.read()
            y = DEQUANT[job[1]](raw, int(job[3]))
            y.astype("<f4").tofile(os.path.join(folder, job[4]))
        else:
            sys.exit("quant_ref.py: unknown job " + job[0])


if __name__ == "__main__":
    main()
