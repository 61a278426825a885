/*
 * gemm_bf16.c — placeholder until the AVX-512 BF16 kernels land: reports no support.
 */
#include "alloy/kernels.h"

bool gemm_bf16_supported(void) { return false; }

void gemm_bf16(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float *A, int lda,
               const float *B, int ldb, float beta, float *C, int ldc) {
    (void)trans_a; (void)trans_b; (void)M; (void)N; (void)K; (void)alpha; (void)A; (void)lda;
    (void)B; (void)ldb; (void)beta; (void)C; (void)ldc;
}
