/*
 * rng.c — xoshiro256** (Blackman & Vigna), seeded through splitmix64.
 *
 * One generator per consumer (init, data order, sampling), each with its own seed, so that a
 * run is reproducible and its state can be saved in four words.
 */
#include "alloy/base.h"

#include <math.h>

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void alloy_rng_seed(alloy_rng *rng, uint64_t seed) {
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) rng->s[i] = splitmix64(&x);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t alloy_rng_u64(alloy_rng *rng) {
    uint64_t *s = rng->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double alloy_rng_uniform(alloy_rng *rng) {
    return (double)(alloy_rng_u64(rng) >> 11) * 0x1.0p-53;
}

uint64_t alloy_rng_below(alloy_rng *rng, uint64_t n) {
    /* Lemire's nearly-divisionless method with rejection: exactly uniform. */
    unsigned __int128 m = (unsigned __int128)alloy_rng_u64(rng) * n;
    uint64_t low = (uint64_t)m;
    if (low < n) {
        uint64_t threshold = -n % n;
        while (low < threshold) {
            m = (unsigned __int128)alloy_rng_u64(rng) * n;
            low = (uint64_t)m;
        }
    }
    return (uint64_t)(m >> 64);
}

double alloy_rng_normal(alloy_rng *rng) {
    /* Box-Muller; u1 in (0, 1] so that log never sees 0. */
    double u1 = 1.0 - alloy_rng_uniform(rng);
    double u2 = alloy_rng_uniform(rng);
    return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

uint64_t alloy_fnv64(uint64_t h, const void *data, size_t size) {
    const uint8_t *p = data;
    for (size_t i = 0; i < size; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}
