/*
 * matmul.c — matrix products of the linear layers, through OpenBLAS (row-major sgemm) in fp32
 * or our own AVX-512 BF16 kernels (gemm_bf16.c), plus the bias terms. A naive reference lives
 * in tests/test_kernels.c.
 */
#include "alloy/kernels.h"

#include <cblas.h>
#include <string.h>

/* Row-major C (M, N) = op(A)·op(B) + beta·C in the chosen precision. */
static void gemm(alloy_precision prec, bool ta, bool tb, int M, int N, int K, const float *A, int lda, const float *B,
                 int ldb, float beta, float *C, int ldc) {
    if (prec == ALLOY_PRECISION_BF16)
        gemm_bf16(ta, tb, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc);
    else
        cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K, 1.0f, A,
                    lda, B, ldb, beta, C, ldc);
}

void matmul_forward(float *out, const float *inp, const float *weight, const float *bias,
                    int64_t N, int IC, int OC, alloy_weight_layout layout, float beta, alloy_precision prec) {
    // out (N, OC) = inp (N, IC) · W, where W is (OC, IC) stored transposed or (IC, OC) as is
    if (layout == ALLOY_WEIGHT_OUT_IN)
        gemm(prec, false, true, (int)N, OC, IC, inp, IC, weight, IC, beta, out, OC);
    else
        gemm(prec, false, false, (int)N, OC, IC, inp, IC, weight, OC, beta, out, OC);
    if (bias) {
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < N; i++) {
            float *row = out + i * OC;
            for (int o = 0; o < OC; o++) row[o] += bias[o];
        }
    }
}

void matmul_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                     const float *weight, int64_t N, int IC, int OC, alloy_weight_layout layout,
                     alloy_precision prec) {
    if (layout == ALLOY_WEIGHT_OUT_IN) {
        // dinp (N, IC) = dout (N, OC) · W (OC, IC)
        if (dinp)
            gemm(prec, false, false, (int)N, IC, OC, dout, OC, weight, IC, 0.0f, dinp, IC);
        // dW (OC, IC) += doutᵀ (OC, N) · inp (N, IC)
        gemm(prec, true, false, OC, IC, (int)N, dout, OC, inp, IC, 1.0f, dweight, IC);
    } else {
        // dinp (N, IC) = dout (N, OC) · Wᵀ, W (IC, OC)
        if (dinp)
            gemm(prec, false, true, (int)N, IC, OC, dout, OC, weight, OC, 0.0f, dinp, IC);
        // dW (IC, OC) += inpᵀ (IC, N) · dout (N, OC)
        gemm(prec, true, false, IC, OC, (int)N, inp, IC, dout, OC, 1.0f, dweight, OC);
    }
    if (dbias) {
        // column sums, split by column blocks so that each sum keeps one order
        const int block = 64;
        int nblocks = (OC + block - 1) / block;
#pragma omp parallel for schedule(static)
        for (int b = 0; b < nblocks; b++) {
            int o0 = b * block, o1 = o0 + block < OC ? o0 + block : OC;
            float acc[64];
            memset(acc, 0, sizeof acc);
            for (int64_t i = 0; i < N; i++) {
                const float *row = dout + i * OC;
                for (int o = o0; o < o1; o++) acc[o - o0] += row[o];
            }
            for (int o = o0; o < o1; o++) dbias[o] += acc[o - o0];
        }
    }
}
