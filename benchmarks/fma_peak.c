/*
 * fma_peak.c: the machine's float32 fused multiply-add peak, in GFLOP/s,
 * on 1 and on T threads (default 2), to put run.py's sgemm rate and the
 * step rates in proportion: a case already at most of this peak cannot
 * get much faster, whatever the code around its products does.
 *
 * Each thread runs independent FMA chains on 16 vector registers (enough
 * to cover the instruction's latency on two pipes) for a fixed count, and
 * the rate counts 2 FLOPs per lane. It uses AVX-512 when the CPU has it,
 * else AVX2 with FMA. Not part of the package; build and run it by hand:
 *
 *   gcc -O2 -pthread benchmarks/fma_peak.c -o /tmp/fma_peak && /tmp/fma_peak 2
 */
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define CHAINS 16
#define ROUNDS 50000000L /* iterations of CHAINS FMAs per thread */

static volatile float sink; /* keeps the chains' results alive */

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

__attribute__((target("avx512f"))) static void *chains_avx512(void *arg)
{
    __m512 acc[CHAINS], b = _mm512_set1_ps(1.0000001f), c = _mm512_set1_ps(1e-7f);
    float s = 0;
    long k;
    int i;
    (void)arg;
    for (i = 0; i < CHAINS; i++)
        acc[i] = _mm512_set1_ps((float)i);
    for (k = 0; k < ROUNDS; k++)
#pragma GCC unroll 16 /* the chains stay in registers */
        for (i = 0; i < CHAINS; i++)
            acc[i] = _mm512_fmadd_ps(acc[i], b, c);
    for (i = 0; i < CHAINS; i++)
        s += _mm512_reduce_add_ps(acc[i]);
    sink = s;
    return NULL;
}

__attribute__((target("avx2,fma"))) static void *chains_avx2(void *arg)
{
    __m256 acc[CHAINS], b = _mm256_set1_ps(1.0000001f), c = _mm256_set1_ps(1e-7f);
    float lanes[8], s = 0;
    long k;
    int i, l;
    (void)arg;
    for (i = 0; i < CHAINS; i++)
        acc[i] = _mm256_set1_ps((float)i);
    for (k = 0; k < ROUNDS; k++)
#pragma GCC unroll 16
        for (i = 0; i < CHAINS; i++)
            acc[i] = _mm256_fmadd_ps(acc[i], b, c);
    for (i = 0; i < CHAINS; i++) {
        _mm256_storeu_ps(lanes, acc[i]);
        for (l = 0; l < 8; l++)
            s += lanes[l];
    }
    sink = s;
    return NULL;
}

/* GFLOP/s of `threads` threads running fn at once */
static double rate(void *(*fn)(void *), int threads, int lanes)
{
    pthread_t t[64];
    double t0 = now();
    int i, made = 0;
    for (i = 0; i < threads; i++)
        if (pthread_create(&t[i], NULL, fn, NULL) == 0)
            made++;
    for (i = 0; i < made; i++)
        pthread_join(t[i], NULL);
    return made * (double)ROUNDS * CHAINS * lanes * 2 / (now() - t0) / 1e9;
}

int main(int argc, char **argv)
{
    int threads = argc > 1 ? atoi(argv[1]) : 2, avx512, lanes;
    void *(*fn)(void *);
    if (threads < 1 || threads > 64) {
        fprintf(stderr, "usage: %s [threads, 1..64]\n", argv[0]);
        return 2;
    }
    __builtin_cpu_init();
    avx512 = __builtin_cpu_supports("avx512f");
    if (!avx512 && !(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))) {
        fprintf(stderr, "this CPU has neither AVX-512 nor AVX2 with FMA\n");
        return 1;
    }
    fn = avx512 ? chains_avx512 : chains_avx2;
    lanes = avx512 ? 16 : 8;
    printf("%s float32 FMA peak: 1 thread %.1f GFLOP/s, %d threads %.1f GFLOP/s\n",
           avx512 ? "AVX-512" : "AVX2", rate(fn, 1, lanes), threads,
           rate(fn, threads, lanes));
    return 0;
}
