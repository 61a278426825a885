/*
 * quant_ref.c — the scalar kernels of the quantised products: x quantised to 8 bits, and the
 * partial sums of a row against it. They are the reference the AVX-512 and AVX2 kernels equal
 * bitwise (the order of every floating-point step is listed at the top of quant_matvec.c), and
 * the kernels used where the CPU has neither.
 */
#include "quant_internal.h"

void quant_x32_scalar(xq32_group *g, const float *x, int nblk) {
    memset(g, 0, sizeof *g);
    for (int b = 0; b < nblk; b++) {
        const float *xb = x + QK * b;
        int8_t *q0 = g->q + 128 * (b >> 2) + 16 * (b & 3), *q1 = q0 + 64;
        const int L = lane_of_block(b);
        if (!all_finite(xb, QK)) {
            g->d[L] = NAN;
            continue;
        }
        float amax = 0.0f, id;
        for (int j = 0; j < QK; j++) amax = fabsf(xb[j]) > amax ? fabsf(xb[j]) : amax;
        g->d[L] = x_scale(amax, &id);
        int s = 0;
        for (int j = 0; j < QK; j++) {
            int v = (int)lrintf(xb[j] * id);
            (j < 16 ? q0 : q1)[j & 15] = (int8_t)v;
            s += v;
        }
        g->s[L] = s;
    }
}

void quant_xk_scalar(xqk_block *k, const float *x) {
    memset(k, 0, sizeof *k);
    if (!all_finite(x, QKK)) {
        k->d = NAN;
        return;
    }
    float amax = 0.0f, id;
    for (int j = 0; j < QKK; j++) amax = fabsf(x[j]) > amax ? fabsf(x[j]) : amax;
    k->d = x_scale(amax, &id);
    for (int s = 0; s < 8; s++) {
        int sum = 0;
        for (int l = 0; l < 32; l++) {
            int v = (int)lrintf(x[32 * s + l] * id);
            k->q[32 * q4k_pos(s) + l] = (int8_t)v;
            sum += v;
        }
        k->bs[s] = (int16_t)sum;
    }
}

/* ---- scalar kernels: the reference the SIMD ones equal bitwise ------------------------------- */

/* The fixed tree that sums the 16 lanes. */
static inline float tree16(const float a[16]) {
    float h[8], u[4];
    for (int i = 0; i < 8; i++) h[i] = a[i] + a[i + 8];
    for (int i = 0; i < 4; i++) u[i] = h[i] + h[i + 4];
    float v0 = u[0] + u[2], v1 = u[1] + u[3];
    return v0 + v1;
}

/* part (nt) = the chunk's partial sums of one row of Q8_0 / Q4_0 weights (nb blocks at w)
 * against x (nt tokens, xc[t]). */
void q32_row_scalar(float *part, const uint8_t *w, const xchunk *xc, int nt, int nb, bool q8) {
    const int bsz = q8 ? 34 : 18;
    for (int t = 0; t < nt; t++) {
        float acc[16] = {0};
        for (int g = 0; g * 16 < nb; g++) {
            const xq32_group *xg = &xc[t].g[g];
            for (int L = 0; L < 16; L++) {
                const int bg = lane_of_block(L), b = 16 * g + bg;
                int32_t isum = 0;
                float dw = 0.0f, dx = 0.0f;
                if (b < nb) {
                    const uint8_t *blk = w + (size_t)bsz * b;
                    const int8_t *x0 = xg->q + 128 * (bg >> 2) + 16 * (bg & 3), *x1 = x0 + 64;
                    for (int j = 0; j < 16; j++) {
                        int w0, w1;
                        if (q8) {
                            w0 = (int8_t)blk[2 + j];
                            w1 = (int8_t)blk[2 + 16 + j];
                        } else {
                            w0 = (blk[2 + j] & 15) - 8;
                            w1 = (blk[2 + j] >> 4) - 8;
                        }
                        isum += w0 * x0[j] + w1 * x1[j];
                    }
                    dw = load_f16(blk);
                    dx = xg->d[L];
                }
                acc[L] = fmaf((float)isum, dw * dx, acc[L]);
            }
        }
        part[t] = tree16(acc);
    }
}

/* The same for Q4_K weights (nsb super-blocks at w). The 256 products of a super-block are
 * taken as the AVX-512 kernel holds them: four 64-byte vectors v = 0..3 of nibbles, v = 0 the
 * low nibbles of qs[0..63] (sub-blocks 0 | 2), 1 their high nibbles (1 | 3), 2 and 3 the same of
 * qs[64..127] (4 | 6, 5 | 7), against x in the same order (xqk_block.q); lane L of 16 sums
 * bytes 4L..4L+3 of each v weighted by the scale of its sub-block (vpdpbusd then vpdpwssd):
 * an exact integer below 2^21, so exact in fp32. */
void q4k_row_scalar(float *part, const uint8_t *w, const xchunk *xc, int nt, int nsb) {
    for (int t = 0; t < nt; t++) {
        float acc[16] = {0}, accm[4] = {0};
        for (int b = 0; b < nsb; b++) {
            const uint8_t *blk = w + (size_t)144 * b;
            const xqk_block *xk = &xc[t].k[b];
            uint8_t sc[8], m[8];
            q4k_unpack_scales(sc, m, blk + 4);
            const float dd = load_f16(blk) * xk->d, dm = load_f16(blk + 2) * xk->d;
            for (int L = 0; L < 16; L++) {
                int32_t lane = 0;
                for (int v = 0; v < 4; v++) {
                    static const int sub[4][2] = {{0, 2}, {1, 3}, {4, 6}, {5, 7}};
                    const uint8_t *qv = blk + 16 + 64 * (v >> 1);
                    int32_t dot = 0;
                    for (int j = 4 * L; j < 4 * L + 4; j++)
                        dot += ((v & 1) ? qv[j] >> 4 : qv[j] & 15) * xk->q[64 * v + j];
                    lane += sc[sub[v][L >> 3]] * dot;
                }
                acc[L] = fmaf((float)lane, dd, acc[L]);
            }
            for (int i = 0; i < 4; i++) {
                const int32_t mn = m[2 * i] * xk->bs[2 * i] + m[2 * i + 1] * xk->bs[2 * i + 1];
                accm[i] = fmaf((float)mn, dm, accm[i]);
            }
        }
        part[t] = tree16(acc) - ((accm[0] + accm[2]) + (accm[1] + accm[3]));
    }
}

/* part (nt) = row w (cols, f32 or f16) · x_t for nt tokens (rows of x, cols apart). */
void dense_row_scalar(float *part, const uint8_t *w, const float *x, int nt, int cols, bool f16) {
    for (int t = 0; t < nt; t++) {
        const float *xt = x + (size_t)t * cols;
        float acc[16] = {0};
        for (int c = 0; c < cols; c += 16) {
            for (int L = 0; L < 16; L++) {
                float wv = 0.0f, xv = 0.0f;
                if (c + L < cols) {
                    const uint8_t *wp = w + (f16 ? 2 : 4) * (size_t)(c + L);
                    wv = f16 ? load_f16(wp) : bits_f32((uint32_t)wp[0] | (uint32_t)wp[1] << 8 |
                                                       (uint32_t)wp[2] << 16 | (uint32_t)wp[3] << 24);
                    xv = xt[c + L];
                }
                acc[L] = fmaf(wv, xv, acc[L]);
            }
        }
        part[t] = tree16(acc);
    }
}
