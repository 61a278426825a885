/*
 * attention.c — causal multi-head / grouped-query attention and rotary position embeddings.
 *
 * Attention is computed in blocks of 64 queries × 64 keys, as in FlashAttention-2: the forward
 * keeps a running maximum and sum per query row and stores only the row's log-sum-exp; the
 * backward recomputes each block's probabilities from it. Memory is O(T) per head, never
 * O(T²). The block products are small matrix products vectorised over 16 columns (v16f) with
 * 4 rows at a time. Work is split over (batch, head) in the forward and over (batch, KV head)
 * groups in the backward: a group owns its q, k and v gradients, so no two threads ever add
 * into the same place and the result does not depend on the thread count.
 */
#include "alloy/kernels.h"

#include <math.h>
#include <stdbool.h>
#include <string.h>

#include "simd.h"

#define BLK 64
void rope_init_tables(float *cos_table, float *sin_table, int maxT, int hd, float theta) {
    int half = hd / 2;
    for (int i = 0; i < half; i++) {
        // as Hugging Face: inv_freq = 1 / theta^(2i/hd) in fp32, angle = t·inv_freq in fp32
        float inv_freq = (float)(1.0 / pow((double)theta, (double)(2 * i) / hd));
        for (int t = 0; t < maxT; t++) {
            float angle = (float)t * inv_freq;
            cos_table[(int64_t)t * half + i] = cosf(angle);
            sin_table[(int64_t)t * half + i] = sinf(angle);
        }
    }
}

/* Rotates every q and k head of each token by its position; sign -1 applies the inverse. */
static void rope_apply(float *qkv, const float *cos_table, const float *sin_table, int B, int T, int H, int KV,
                       int hd, float sign) {
    int half = hd / 2;
    int width = (H + 2 * KV) * hd;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < (int64_t)B * T; i++) {
        int t = (int)(i % T);
        const float *c = cos_table + (int64_t)t * half, *s = sin_table + (int64_t)t * half;
        float *row = qkv + i * width;
        for (int h = 0; h < H + KV; h++) { // q heads then k heads: contiguous
            float *x = row + (int64_t)h * hd;
            for (int j = 0; j < half; j++) {
                float x1 = x[j], x2 = x[j + half];
                float sn = sign * s[j];
                x[j] = x1 * c[j] - x2 * sn;
                x[j + half] = x2 * c[j] + x1 * sn;
            }
        }
    }
}

void rope_forward(float *qkv, const float *cos_table, const float *sin_table, int B, int T, int H, int KV,
                  int hd) {
    rope_apply(qkv, cos_table, sin_table, B, T, H, KV, hd, 1.0f);
}

void rope_backward(float *dqkv, const float *cos_table, const float *sin_table, int B, int T, int H, int KV,
                   int hd) {
    rope_apply(dqkv, cos_table, sin_table, B, T, H, KV, hd, -1.0f);
}

/* Register tiles of the block products: MM_R rows × 16·MM_V columns, as many accumulators as
 * the registers hold. AVX-512: 4 × 64 in 16 of the 32 zmm. Otherwise (AVX2) 6 × 16 in 12 of the
 * 16 ymm, written in 8-lane vectors: GCC keeps a tile of 16-lane generic vectors, which are
 * pairs of ymm there, in memory. */
#if defined(__AVX512F__)
#define MM_R 4
#define MM_V 4

/* c[r.., n..] (rows ≤ MM_R, 16·V columns) = [c +] a[r..] · b[.., n..]; V is a constant where
 * it is inlined, so the tile lives in registers. */
static inline __attribute__((always_inline)) void mm_tile(float *restrict c, int ldc, const float *restrict a,
                                                          int lda, const float *restrict b, int ldb, int rows,
                                                          int K, bool acc, const int V) {
    const float *ar[MM_R];
    for (int i = 0; i < MM_R; i++) ar[i] = a + (int64_t)(i < rows ? i : 0) * lda;
    v16f z[MM_R][MM_V];
    for (int i = 0; i < MM_R; i++)
        for (int j = 0; j < V; j++)
            z[i][j] = acc && i < rows ? v16_load(c + (int64_t)i * ldc + 16 * j) : v16_set1(0.0f);
    for (int k = 0; k < K; k++) {
        const float *bk = b + (int64_t)k * ldb;
        v16f bv[MM_V];
        for (int j = 0; j < V; j++) bv[j] = v16_load(bk + 16 * j);
        for (int i = 0; i < MM_R; i++) {
            float x = ar[i][k];
            for (int j = 0; j < V; j++) z[i][j] += x * bv[j];
        }
    }
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < V; j++) v16_store(c + (int64_t)i * ldc + 16 * j, z[i][j]);
}
#else
#define MM_R 6
#define MM_V 1
typedef float v8f __attribute__((vector_size(32)));

static inline v8f v8_load(const float *p) {
    v8f v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void v8_store(float *p, v8f v) { memcpy(p, &v, sizeof v); }

/* The AVX2 tile: 6 rows × 16 columns (V is 1). */
static inline __attribute__((always_inline)) void mm_tile(float *restrict c, int ldc, const float *restrict a,
                                                          int lda, const float *restrict b, int ldb, int rows,
                                                          int K, bool acc, const int V) {
    (void)V;
    const int64_t s1 = rows > 1 ? lda : 0, s2 = rows > 2 ? 2 * (int64_t)lda : 0, s3 = rows > 3 ? 3 * (int64_t)lda : 0,
                  s4 = rows > 4 ? 4 * (int64_t)lda : 0, s5 = rows > 5 ? 5 * (int64_t)lda : 0;
    const v8f zero = {0};
    v8f z00 = zero, z01 = zero, z10 = zero, z11 = zero, z20 = zero, z21 = zero, z30 = zero, z31 = zero,
        z40 = zero, z41 = zero, z50 = zero, z51 = zero;
    if (acc) {
        z00 = v8_load(c), z01 = v8_load(c + 8);
        if (rows > 1) z10 = v8_load(c + ldc), z11 = v8_load(c + ldc + 8);
        if (rows > 2) z20 = v8_load(c + 2 * (int64_t)ldc), z21 = v8_load(c + 2 * (int64_t)ldc + 8);
        if (rows > 3) z30 = v8_load(c + 3 * (int64_t)ldc), z31 = v8_load(c + 3 * (int64_t)ldc + 8);
        if (rows > 4) z40 = v8_load(c + 4 * (int64_t)ldc), z41 = v8_load(c + 4 * (int64_t)ldc + 8);
        if (rows > 5) z50 = v8_load(c + 5 * (int64_t)ldc), z51 = v8_load(c + 5 * (int64_t)ldc + 8);
    }
    for (int k = 0; k < K; k++) {
        const float *bk = b + (int64_t)k * ldb, *ak = a + k;
        const v8f b0 = v8_load(bk), b1 = v8_load(bk + 8);
        float x;
        x = ak[0], z00 += x * b0, z01 += x * b1;
        x = ak[s1], z10 += x * b0, z11 += x * b1;
        x = ak[s2], z20 += x * b0, z21 += x * b1;
        x = ak[s3], z30 += x * b0, z31 += x * b1;
        x = ak[s4], z40 += x * b0, z41 += x * b1;
        x = ak[s5], z50 += x * b0, z51 += x * b1;
    }
    v8_store(c, z00), v8_store(c + 8, z01);
    if (rows > 1) v8_store(c + ldc, z10), v8_store(c + ldc + 8, z11);
    if (rows > 2) v8_store(c + 2 * (int64_t)ldc, z20), v8_store(c + 2 * (int64_t)ldc + 8, z21);
    if (rows > 3) v8_store(c + 3 * (int64_t)ldc, z30), v8_store(c + 3 * (int64_t)ldc + 8, z31);
    if (rows > 4) v8_store(c + 4 * (int64_t)ldc, z40), v8_store(c + 4 * (int64_t)ldc + 8, z41);
    if (rows > 5) v8_store(c + 5 * (int64_t)ldc, z50), v8_store(c + 5 * (int64_t)ldc + 8, z51);
}
#endif

/* c (M, N) = [c +] a (M, K) · b (K, N): row-major with row strides; the block products. Each
 * element is one chain of products in the order of k, whatever the tile. */
static void mm(float *restrict c, int ldc, const float *restrict a, int lda, const float *restrict b, int ldb,
               int M, int N, int K, bool acc) {
    int n = 0;
    for (; n + 16 * MM_V <= N; n += 16 * MM_V)
        for (int r = 0; r < M; r += MM_R)
            mm_tile(c + (int64_t)r * ldc + n, ldc, a + (int64_t)r * lda, lda, b + n, ldb,
                    M - r < MM_R ? M - r : MM_R, K, acc, MM_V);
    for (; n + 16 <= N; n += 16)
        for (int r = 0; r < M; r += MM_R)
            mm_tile(c + (int64_t)r * ldc + n, ldc, a + (int64_t)r * lda, lda, b + n, ldb,
                    M - r < MM_R ? M - r : MM_R, K, acc, 1);
    for (; n < N; n++) {
        for (int r = 0; r < M; r++) {
            const float *ar = a + (int64_t)r * lda;
            float z = acc ? c[(int64_t)r * ldc + n] : 0.0f;
            for (int k = 0; k < K; k++) z += ar[k] * b[(int64_t)k * ldb + n];
            c[(int64_t)r * ldc + n] = z;
        }
    }
}

/* dst (cols, ld_dst) = srcᵀ for src (rows, cols) with stride ld_src; columns of dst past `rows`
 * up to ld_dst are zeroed. */
static void transpose(float *restrict dst, int ld_dst, const float *restrict src, int ld_src, int rows, int cols) {
    for (int c = 0; c < cols; c++) {
        float *d = dst + (int64_t)c * ld_dst;
        for (int r = 0; r < rows; r++) d[r] = src[(int64_t)r * ld_src + c];
        for (int r = rows; r < ld_dst; r++) d[r] = 0.0f;
    }
}

static inline int round16(int x) { return (x + 15) & ~15; }

void attention_forward(float *out, float *lse, const float *qkv, int B, int T, int H, int KV, int hd) {
    int width = (H + 2 * KV) * hd;
    int group = H / KV;
    float scale = 1.0f / sqrtf((float)hd);
#pragma omp parallel for collapse(2) schedule(dynamic, 1)
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < H; h++) {
            int kvh = h / group;
            const float *base = qkv + (int64_t)b * T * width;
            const float *q = base + (int64_t)h * hd, *k = base + (int64_t)(H + kvh) * hd,
                        *v = base + (int64_t)(H + KV + kvh) * hd;
            float kt[hd * BLK], s[BLK * BLK], o[BLK * hd], mx[BLK], sum[BLK];
            for (int i0 = 0; i0 < T; i0 += BLK) {
                int mi = T - i0 < BLK ? T - i0 : BLK;
                for (int r = 0; r < mi; r++) mx[r] = -INFINITY, sum[r] = 0.0f;
                memset(o, 0, sizeof(float) * (size_t)(mi * hd));
                for (int j0 = 0; j0 <= i0; j0 += BLK) {
                    int nj = i0 + mi - j0 < BLK ? i0 + mi - j0 : BLK; // keys that some row may see
                    int njp = round16(nj);
                    transpose(kt, njp, k + (int64_t)j0 * width, width, nj, hd);
                    mm(s, njp, q + (int64_t)i0 * width, width, kt, njp, mi, njp, hd, false);
                    for (int r = 0; r < mi; r++) {
                        int valid = i0 + r - j0 + 1 < nj ? i0 + r - j0 + 1 : nj; // causal
                        float *sr = s + r * njp;
                        float m = mx[r];
                        for (int c = 0; c < valid; c++) {
                            sr[c] *= scale;
                            m = sr[c] > m ? sr[c] : m;
                        }
                        float corr = vexpf(mx[r] - m), rs = 0.0f;
#pragma omp simd reduction(+ : rs)
                        for (int c = 0; c < valid; c++) {
                            float e = vexpf(sr[c] - m);
                            sr[c] = e;
                            rs += e;
                        }
                        for (int c = valid; c < njp; c++) sr[c] = 0.0f;
                        sum[r] = sum[r] * corr + rs;
                        mx[r] = m;
                        if (corr != 1.0f)
                            for (int d = 0; d < hd; d++) o[r * hd + d] *= corr;
                    }
                    mm(o, hd, s, njp, v + (int64_t)j0 * width, width, mi, hd, nj, true);
                }
                for (int r = 0; r < mi; r++) {
                    int t = i0 + r;
                    float inv = 1.0f / sum[r];
                    float *dst = out + ((int64_t)b * T + t) * H * hd + (int64_t)h * hd;
                    for (int d = 0; d < hd; d++) dst[d] = o[r * hd + d] * inv;
                    lse[((int64_t)b * H + h) * T + t] = mx[r] + logf(sum[r]);
                }
            }
        }
    }
}

void attention_backward(float *dqkv, const float *dout, const float *qkv, const float *out, const float *lse,
                        int B, int T, int H, int KV, int hd) {
    int width = (H + 2 * KV) * hd;
    int group = H / KV;
    float scale = 1.0f / sqrtf((float)hd);
    int64_t ow = (int64_t)H * hd; // row stride of out and dout
#pragma omp parallel for collapse(2) schedule(dynamic, 1)
    for (int b = 0; b < B; b++) {
        for (int kvh = 0; kvh < KV; kvh++) {
            const float *base = qkv + (int64_t)b * T * width;
            float *dbase = dqkv + (int64_t)b * T * width;
            // this group owns: q heads [kvh·group, (kvh+1)·group), k head kvh, v head kvh
            for (int t = 0; t < T; t++) {
                float *row = dbase + (int64_t)t * width;
                memset(row + (int64_t)kvh * group * hd, 0, sizeof(float) * group * hd);
                memset(row + (int64_t)(H + kvh) * hd, 0, sizeof(float) * hd);
                memset(row + (int64_t)(H + KV + kvh) * hd, 0, sizeof(float) * hd);
            }
            const float *k = base + (int64_t)(H + kvh) * hd, *v = base + (int64_t)(H + KV + kvh) * hd;
            float *dk = dbase + (int64_t)(H + kvh) * hd, *dv = dbase + (int64_t)(H + KV + kvh) * hd;
            float kt[hd * BLK], vt[hd * BLK], p[BLK * BLK], pt[BLK * BLK], dp[BLK * BLK];
            float dka[BLK * hd], dva[BLK * hd], D[T];
            for (int h = kvh * group; h < (kvh + 1) * group; h++) {
                const float *q = base + (int64_t)h * hd;
                float *dq = dbase + (int64_t)h * hd;
                const float *o = out + (int64_t)b * T * ow + (int64_t)h * hd;
                const float *dO = dout + (int64_t)b * T * ow + (int64_t)h * hd;
                const float *L = lse + ((int64_t)b * H + h) * T;
                for (int t = 0; t < T; t++) { // D = rowsum(dO ∘ O)
                    float acc = 0.0f;
                    for (int d = 0; d < hd; d++) acc += dO[(int64_t)t * ow + d] * o[(int64_t)t * ow + d];
                    D[t] = acc;
                }
                for (int j0 = 0; j0 < T; j0 += BLK) {
                    int nj = T - j0 < BLK ? T - j0 : BLK;
                    int njp = round16(nj);
                    transpose(kt, njp, k + (int64_t)j0 * width, width, nj, hd);
                    transpose(vt, njp, v + (int64_t)j0 * width, width, nj, hd);
                    memset(dka, 0, sizeof(float) * (size_t)(nj * hd));
                    memset(dva, 0, sizeof(float) * (size_t)(nj * hd));
                    for (int i0 = j0; i0 < T; i0 += BLK) {
                        int mi = T - i0 < BLK ? T - i0 : BLK;
                        // P = exp(scale·Q·Kᵀ − lse), causal
                        mm(p, njp, q + (int64_t)i0 * width, width, kt, njp, mi, njp, hd, false);
                        for (int r = 0; r < mi; r++) {
                            int valid = i0 + r - j0 + 1 < nj ? i0 + r - j0 + 1 : nj;
                            float *pr = p + r * njp, l = L[i0 + r];
#pragma omp simd
                            for (int c = 0; c < valid; c++) pr[c] = vexpf(pr[c] * scale - l);
                            for (int c = valid; c < njp; c++) pr[c] = 0.0f;
                        }
                        // dV += Pᵀ·dO
                        transpose(pt, BLK, p, njp, mi, nj);
                        mm(dva, hd, pt, BLK, dO + (int64_t)i0 * ow, (int)ow, nj, hd, mi, true);
                        // dP = dO·Vᵀ; dS = P ∘ (dP − D)·scale (kept in p)
                        mm(dp, njp, dO + (int64_t)i0 * ow, (int)ow, vt, njp, mi, njp, hd, false);
                        for (int r = 0; r < mi; r++) {
                            float *pr = p + r * njp, *dpr = dp + r * njp, Dr = D[i0 + r];
#pragma omp simd
                            for (int c = 0; c < njp; c++) pr[c] = pr[c] * (dpr[c] - Dr) * scale;
                        }
                        // dQ += dS·K; dK += dSᵀ·Q
                        mm(dq + (int64_t)i0 * width, width, p, njp, k + (int64_t)j0 * width, width, mi, hd, nj, true);
                        transpose(pt, BLK, p, njp, mi, nj);
                        mm(dka, hd, pt, BLK, q + (int64_t)i0 * width, width, nj, hd, mi, true);
                    }
                    for (int r = 0; r < nj; r++)
                        for (int d = 0; d < hd; d++) {
                            dk[(int64_t)(j0 + r) * width + d] += dka[r * hd + d];
                            dv[(int64_t)(j0 + r) * width + d] += dva[r * hd + d];
                        }
                }
            }
        }
    }
}
