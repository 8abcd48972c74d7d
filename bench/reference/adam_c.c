/*
 * The AdamW update of shaders/adam.wgsl in plain C, over the same 16M fp32 params, beside memcpy:
 * what this machine's cores do when nothing stands between them and memory. It puts the Adam
 * benchmark's figures on a software GPU in context (README, "Adam vs the device's own copy
 * bandwidth"); it is not part of `npm run bench`.
 *
 *   gcc -O2 -march=native -fopenmp bench/reference/adam_c.c -o /tmp/adam_c -lm
 *   OMP_NUM_THREADS=1 /tmp/adam_c; OMP_NUM_THREADS=2 /tmp/adam_c
 *
 * Prints one JSON object per run: Adam at 28 bytes per param, memcpy at 8 bytes per float (read +
 * written), as the benchmark counts them.
 */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

int main(void) {
  const size_t n = (size_t)16 << 20;
  float *p = malloc(n * 4), *g = malloc(n * 4), *m = malloc(n * 4), *v = malloc(n * 4), *d = malloc(n * 4);
  if (!p || !g || !m || !v || !d) return 1;
  for (size_t i = 0; i < n; i++) {
    p[i] = sinf((float)i);
    g[i] = cosf((float)i) * 1e-2f;
    m[i] = 0;
    v[i] = 0;
  }
  const float lr = 1e-3f, beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f, wd = 1e-2f;
  for (int step = 1; step <= 6; step++) {
    const float step_size = lr / (1 - powf(beta1, step));
    const float bc2_sqrt = sqrtf(1 - powf(beta2, step));
    double t0 = now_ms();
#pragma omp parallel for
    for (size_t i = 0; i < n; i++) {
      float gi = g[i];
      float pi = p[i] * (1 - lr * wd);
      float mi = beta1 * m[i] + (1 - beta1) * gi;
      float vi = beta2 * v[i] + (1 - beta2) * gi * gi;
      m[i] = mi;
      v[i] = vi;
      p[i] = pi - step_size * (mi / (sqrtf(vi) / bc2_sqrt + eps));
    }
    double t1 = now_ms();
    memcpy(d, g, n * 4);
    double t2 = now_ms();
    // Read a copied value so the copy cannot be left out.
    volatile float sink = d[(size_t)step * 12345 % n];
    (void)sink;
    printf("{\"threads\":%d,\"step\":%d,\"adam_ms\":%.2f,\"adam_gb_per_s\":%.2f,\"memcpy_gb_per_s\":%.2f}\n",
           omp_get_max_threads(), step, t1 - t0, 28.0 * n / (t1 - t0) / 1e6, 8.0 * n / (t2 - t1) / 1e6);
  }
  return 0;
}
