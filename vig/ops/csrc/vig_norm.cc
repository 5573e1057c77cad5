// Training-mode BatchNorm and the bias add of a convolution, forward and backward, for ops.Custom(aot).
// AOT conventions in vig_kernel.h (inputs first, outputs last, float32).
//
// Why: in a ViG training step MindSpore 2.10's CPU BatchNorm/BatchNormGrad and the ReduceSum that autodiff
// emits for a broadcast bias add took ~0.8 s of a ~3.7 s step (docs/performance.md); each is one or two
// passes over memory here. Statistics are accumulated in double per channel (two passes: mean, then the
// centred sum of squares), so they are at least as accurate as the native kernel's.
#include <cmath>
#include <cstdint>
#include <cstring>

#include "vig_kernel.h"

using vig::is;
using vig::numel;
using vig::planes;

namespace {

// sum of channel c over every (b, c) plane of a (B, C, S) map, accumulated in double
double channel_sum(const float *x, int64_t B, int64_t C, int64_t S, int64_t c) {
  double sum = 0.0;
  for (int64_t b = 0; b < B; ++b) {
    const float *p = x + (b * C + c) * S;
#pragma omp simd reduction(+ : sum)
    for (int64_t i = 0; i < S; ++i) sum += p[i];
  }
  return sum;
}

}  // namespace

extern "C" {

// inputs: x (B, C, ...), gamma (C), beta (C), moving_mean (C), moving_var (C), hyper (2) = [eps, momentum]
// outputs: y (like x), mean (C), invstd (C) = 1/sqrt(var + eps) with the biased variance (used to
// normalise and by the gradient), and the updated running statistics (1 - momentum) * moving + momentum *
// batch, the variance unbiased (as PyTorch and MindSpore's own BatchNorm; `momentum` weights the batch).
// Updating them here spares four tiny elementwise ops per layer, each costing a kernel launch.
int BatchNormTrain(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *,
                   void *) {
  if (nparam != 11 || !is(dtypes[0], "float32") || !is(dtypes[1], "float32") || !is(dtypes[5], "float32"))
    return 1;
  int64_t B, C, S;
  if (!planes(ndims[0], shapes[0], &B, &C, &S) || shapes[1][0] != C || shapes[3][0] != C) return 2;
  const float *x = static_cast<const float *>(params[0]);
  const float *gamma = static_cast<const float *>(params[1]);
  const float *beta = static_cast<const float *>(params[2]);
  const float *moving_mean = static_cast<const float *>(params[3]);
  const float *moving_var = static_cast<const float *>(params[4]);
  const double eps = static_cast<const float *>(params[5])[0];
  const float momentum = static_cast<const float *>(params[5])[1];
  float *y = static_cast<float *>(params[6]);
  float *mean_out = static_cast<float *>(params[7]);
  float *invstd_out = static_cast<float *>(params[8]);
  float *new_mean = static_cast<float *>(params[9]);
  float *new_var = static_cast<float *>(params[10]);
  const double n = static_cast<double>(B * S);
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < C; ++c) {
    const double mean = channel_sum(x, B, C, S, c) / n;
    double sq = 0.0;
    for (int64_t b = 0; b < B; ++b) {
      const float *p = x + (b * C + c) * S;
#pragma omp simd reduction(+ : sq)
      for (int64_t i = 0; i < S; ++i) {
        const double d = p[i] - mean;
        sq += d * d;
      }
    }
    const double var = sq / n;
    const double invstd = 1.0 / std::sqrt(var + eps);
    const float scale = static_cast<float>(gamma[c] * invstd);
    const float shift = static_cast<float>(beta[c] - mean * gamma[c] * invstd);
    for (int64_t b = 0; b < B; ++b) {
      const float *p = x + (b * C + c) * S;
      float *q = y + (b * C + c) * S;
#pragma omp simd
      for (int64_t i = 0; i < S; ++i) q[i] = p[i] * scale + shift;
    }
    mean_out[c] = static_cast<float>(mean);
    invstd_out[c] = static_cast<float>(invstd);
    const float unbiased = static_cast<float>(n > 1 ? sq / (n - 1) : var);
    new_mean[c] = moving_mean[c] * (1.0f - momentum) + static_cast<float>(mean) * momentum;
    new_var[c] = moving_var[c] * (1.0f - momentum) + unbiased * momentum;
  }
  return 0;
}

// inputs: dy (B, C, ...), x, gamma (C), mean (C), invstd (C); outputs: dx (like x), dgamma (C), dbeta (C)
//   xhat = (x - mean) * invstd;  dbeta = sum dy;  dgamma = sum dy * xhat;
//   dx = gamma * invstd * (dy - dbeta / n - xhat * dgamma / n)
int BatchNormTrainGrad(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *,
                       void *) {
  if (nparam != 8 || !is(dtypes[0], "float32") || !is(dtypes[1], "float32")) return 1;
  int64_t B, C, S;
  if (!planes(ndims[0], shapes[0], &B, &C, &S) || shapes[2][0] != C) return 2;
  const float *dy = static_cast<const float *>(params[0]);
  const float *x = static_cast<const float *>(params[1]);
  const float *gamma = static_cast<const float *>(params[2]);
  const float *mean_in = static_cast<const float *>(params[3]);
  const float *invstd_in = static_cast<const float *>(params[4]);
  float *dx = static_cast<float *>(params[5]);
  float *dgamma = static_cast<float *>(params[6]);
  float *dbeta = static_cast<float *>(params[7]);
  const double n = static_cast<double>(B * S);
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < C; ++c) {
    const float mean = mean_in[c], invstd = invstd_in[c];
    double sum_dy = 0.0, sum_dy_xc = 0.0;  // sum dy, sum dy * (x - mean)
    for (int64_t b = 0; b < B; ++b) {
      const float *g = dy + (b * C + c) * S;
      const float *p = x + (b * C + c) * S;
#pragma omp simd reduction(+ : sum_dy, sum_dy_xc)
      for (int64_t i = 0; i < S; ++i) {
        sum_dy += g[i];
        sum_dy_xc += static_cast<double>(g[i]) * (p[i] - mean);
      }
    }
    const double dgam = sum_dy_xc * invstd;
    dbeta[c] = static_cast<float>(sum_dy);
    dgamma[c] = static_cast<float>(dgam);
    // dx = k * dy + kx * (x - mean) + k0 with the per-channel constants folded (x stays centred, so
    // nothing cancels when the mean is large)
    const double k = gamma[c] * invstd;
    const float kf = static_cast<float>(k);
    const float kx = static_cast<float>(-k * dgam * invstd / n);
    const float k0 = static_cast<float>(-k * sum_dy / n);
    for (int64_t b = 0; b < B; ++b) {
      const float *g = dy + (b * C + c) * S;
      const float *p = x + (b * C + c) * S;
      float *q = dx + (b * C + c) * S;
#pragma omp simd
      for (int64_t i = 0; i < S; ++i) q[i] = kf * g[i] + kx * (p[i] - mean) + k0;
    }
  }
  return 0;
}

// inputs: x (B, C, ...), bias (C); output: x + bias broadcast over every (b, c) plane
int BiasAdd(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *, void *) {
  if (nparam != 3 || !is(dtypes[0], "float32") || !is(dtypes[1], "float32")) return 1;
  int64_t B, C, S;
  if (!planes(ndims[0], shapes[0], &B, &C, &S) || shapes[1][0] != C) return 2;
  const float *x = static_cast<const float *>(params[0]);
  const float *bias = static_cast<const float *>(params[1]);
  float *y = static_cast<float *>(params[2]);
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < B; ++b)
    for (int64_t c = 0; c < C; ++c) {
      const float *p = x + (b * C + c) * S;
      float *q = y + (b * C + c) * S;
      const float v = bias[c];
#pragma omp simd
      for (int64_t i = 0; i < S; ++i) q[i] = p[i] + v;
    }
  return 0;
}

// inputs: dy (B, C, ...), bias (only its shape is used); output: dbias (C) = sum of dy over all but C
int BiasAddGrad(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *, void *) {
  if (nparam != 3 || !is(dtypes[0], "float32")) return 1;
  int64_t B, C, S;
  if (!planes(ndims[0], shapes[0], &B, &C, &S) || shapes[2][0] != C) return 2;
  const float *dy = static_cast<const float *>(params[0]);
  float *db = static_cast<float *>(params[2]);
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < C; ++c) db[c] = static_cast<float>(channel_sum(dy, B, C, S, c));
  return 0;
}

// Per-gradient helpers of the train step (one launch each instead of MindSpore's slow scalar-broadcast
// Mul and Square + ReduceSum on big tensors).
// inputs: g (any shape, float32); output: sum of squares (1,), accumulated in double
int SquareSum(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *, void *) {
  if (nparam != 2 || !is(dtypes[0], "float32")) return 1;
  const int64_t n = numel(ndims[0], shapes[0]);
  const float *g = static_cast<const float *>(params[0]);
  double sum = 0.0;
#pragma omp parallel for simd reduction(+ : sum) schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) sum += static_cast<double>(g[i]) * g[i];
  static_cast<float *>(params[1])[0] = static_cast<float>(sum);
  return 0;
}

// inputs: g (any shape, float32), factor (1,) float32; output: g * factor
int Scale(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *, void *) {
  if (nparam != 3 || !is(dtypes[0], "float32") || !is(dtypes[1], "float32")) return 1;
  const int64_t n = numel(ndims[0], shapes[0]);
  const float *g = static_cast<const float *>(params[0]);
  const float f = static_cast<const float *>(params[1])[0];
  float *out = static_cast<float *>(params[2]);
#pragma omp parallel for simd schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) out[i] = g[i] * f;
  return 0;
}

}  // extern "C"
