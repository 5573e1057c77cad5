// Exact (erf) GELU for ViG on CPU, called through mindspore.ops.Custom(func_type="aot").
//
// Built on its own with -ffast-math so that GCC vectorises erff/expf through glibc's libmvec (a scalar
// erff loop is ~10x slower); nothing here depends on NaN/inf semantics beyond what erff/expf provide.
// AOT conventions in vig_kernel.h.
#include <cmath>
#include <cstdint>
#include <cstring>

#include "vig_kernel.h"

using vig::is;
using vig::numel;

namespace {

constexpr float kInvSqrt2 = 0.70710678118654752440f;
constexpr float kInvSqrt2Pi = 0.39894228040143267794f;

}  // namespace

extern "C" {

// ---------------------------------------------------------------------------------------------------
// Exact (erf) GELU: y = x * Phi(x); dx = dy * (Phi(x) + x * phi(x)). 
// ---------------------------------------------------------------------------------------------------
// Elements go through the vector path in fixed blocks (the tail through a padded copy), so every value
// is computed by the same instructions wherever it sits: results do not depend on the batch size,
// alignment or thread split (a scalar erff in a loop remainder differs from the vector one by an ulp).
constexpr int64_t kBlock = 16;

// noinline: one compiled body serves the full blocks and the padded tail, so a value never depends on
// where it sits (inlined into two loops, GCC may vectorise the two copies differently, e.g. AVX-512 vs AVX2).
__attribute__((noinline)) void gelu_block(const float *__restrict x, float *__restrict y) {
#pragma omp simd
  for (int64_t i = 0; i < kBlock; ++i) y[i] = 0.5f * x[i] * (1.0f + erff(x[i] * kInvSqrt2));
}

__attribute__((noinline)) void gelu_grad_block(const float *__restrict x, const float *__restrict dy, float *__restrict dx) {
#pragma omp simd
  for (int64_t i = 0; i < kBlock; ++i) {
    const float cdf = 0.5f * (1.0f + erff(x[i] * kInvSqrt2));
    const float pdf = kInvSqrt2Pi * expf(-0.5f * x[i] * x[i]);
    dx[i] = dy[i] * (cdf + x[i] * pdf);
  }
}

int GeluForward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *, void *) {
  if (nparam != 2 || !is(dtypes[0], "float32") || !is(dtypes[1], "float32")) return 1;
  const float *x = static_cast<const float *>(params[0]);
  float *y = static_cast<float *>(params[1]);
  const int64_t n = numel(ndims[0], shapes[0]), full = n / kBlock;
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t blk = 0; blk < full; ++blk) gelu_block(x + blk * kBlock, y + blk * kBlock);
  if (const int64_t rest = n - full * kBlock) {
    float xin[kBlock] = {0.0f}, yout[kBlock];
    std::memcpy(xin, x + full * kBlock, rest * sizeof(float));
    gelu_block(xin, yout);
    std::memcpy(y + full * kBlock, yout, rest * sizeof(float));
  }
  return 0;
}

int GeluBackward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *, void *) {
  if (nparam != 3 || !is(dtypes[0], "float32") || !is(dtypes[1], "float32")) return 1;
  const float *x = static_cast<const float *>(params[0]);
  const float *dy = static_cast<const float *>(params[1]);
  float *dx = static_cast<float *>(params[2]);
  const int64_t n = numel(ndims[0], shapes[0]), full = n / kBlock;
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t blk = 0; blk < full; ++blk) gelu_grad_block(x + blk * kBlock, dy + blk * kBlock, dx + blk * kBlock);
  if (const int64_t rest = n - full * kBlock) {
    float xin[kBlock] = {0.0f}, gin[kBlock] = {0.0f}, gout[kBlock];
    std::memcpy(xin, x + full * kBlock, rest * sizeof(float));
    std::memcpy(gin, dy + full * kBlock, rest * sizeof(float));
    gelu_grad_block(xin, gin, gout);
    std::memcpy(dx + full * kBlock, gout, rest * sizeof(float));
  }
  return 0;
}

}  // extern "C"
