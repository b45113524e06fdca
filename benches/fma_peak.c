/* Peak fused multiply-add throughput at 128-bit and 256-bit vector width,
 * and at 512-bit where the compiler targets AVX-512 (-march=native on a CPU
 * that has it; "gflops_512bit" is null otherwise), all cores, f32: the
 * compute ceiling of the roofline that benchmarks compare kernels against.
 * Prints one JSON object.
 *
 * Build: gcc -O3 -march=native -fopenmp fma_peak.c -o fma_peak
 * Each thread runs 16 independent accumulator chains (enough to cover
 * FMA latency x throughput on current cores), so the loop is bound by
 * FMA issue rate, not by dependencies.
 */
#include <omp.h>
#include <stdio.h>
#include <time.h>

typedef float v4 __attribute__((vector_size(16)));
typedef float v8 __attribute__((vector_size(32)));
#ifdef __AVX512F__
typedef float v16 __attribute__((vector_size(64)));
#endif

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

#define CHAINS 16
#define BODY(V)                                                   \
    V acc[CHAINS];                                                \
    for (int c = 0; c < CHAINS; c++) acc[c] = (V){0} + (float)c;  \
    V a = (V){0} + 0.999999f, b = (V){0} + 1e-7f;                 \
    for (long i = 0; i < iters; i++)                              \
        for (int c = 0; c < CHAINS; c++) acc[c] = acc[c] * a + b; \
    V s = acc[0];                                                 \
    for (int c = 1; c < CHAINS; c++) s += acc[c];                 \
    sink += s[0];

static double run(int width, long iters, int threads) {
    double t0 = now();
    double total = 0;
#pragma omp parallel num_threads(threads) reduction(+ : total)
    {
        float sink = 0;
        if (width == 4) {
            BODY(v4)
        } else if (width == 8) {
            BODY(v8)
        }
#ifdef __AVX512F__
        else {
            BODY(v16)
        }
#endif
        total += sink;
    }
    double dt = now() - t0;
    if (total == 12345.0) printf("#");  /* keep the result alive */
    return 2.0 * CHAINS * width * (double)iters * threads / dt / 1e9;
}

int main(void) {
    int threads = omp_get_max_threads();
    long iters = 20000000;
    double best4 = 0, best8 = 0, best16 = 0, one4 = 0;
    for (int r = 0; r < 5; r++) {
        double g4 = run(4, iters, threads), g8 = run(8, iters, threads), o4 = run(4, iters, 1);
        if (g4 > best4) best4 = g4;
        if (g8 > best8) best8 = g8;
        if (o4 > one4) one4 = o4;
#ifdef __AVX512F__
        double g16 = run(16, iters, threads);
        if (g16 > best16) best16 = g16;
#endif
    }
    char w16[32] = "null";
    if (best16 > 0) snprintf(w16, sizeof w16, "%.2f", best16);
    printf("{\"threads\": %d, \"gflops_128bit\": %.2f, \"gflops_256bit\": %.2f, \"gflops_512bit\": %s, "
           "\"gflops_128bit_1thread\": %.2f}\n",
           threads, best4, best8, w16, one4);
    return 0;
}
