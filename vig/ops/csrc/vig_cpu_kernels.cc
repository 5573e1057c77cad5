// CPU kernels for ViG, called through mindspore.ops.Custom(func_type="aot"); conventions in vig_kernel.h.
//
// The exact GELU lives in vig_gelu.cc (built with -ffast-math).
//
// Why these exist: MindSpore 2.10 on CPU runs k x k convolutions on oneDNN's reference kernel, exact GELU,
// top-k, max-over-neighbours (with the subtract and interleave around it) and the strided slices of an im2col 10-100x slower than PyTorch
// (docs/performance.md).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "vig_kernel.h"

using vig::is;

extern "C" {

// ---------------------------------------------------------------------------------------------------
// im2col for a k x k convolution: x (B, C, H, W) -> cols (B, k*k*C, Ho, Wo), channel (dy*k + dx)*C + c,
// zero padding `pad` on every side; geometry = int32 [k, stride, pad].  Col2Im is its adjoint (the
// gradient).  The channel order is that of the slice-based im2col in vig/models/layers.py, so both paths
// feed the same matrix product and give bit-identical convolutions.
// ---------------------------------------------------------------------------------------------------
int Im2Col(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *, void *) {
  if (nparam != 3 || ndims[0] != 4 || ndims[2] != 4 || !is(dtypes[0], "float32") || !is(dtypes[1], "int32"))
    return 1;
  const float *x = static_cast<const float *>(params[0]);
  const int32_t *geo = static_cast<const int32_t *>(params[1]);
  float *cols = static_cast<float *>(params[2]);
  const int64_t B = shapes[0][0], C = shapes[0][1], H = shapes[0][2], W = shapes[0][3];
  const int64_t k = geo[0], s = geo[1], p = geo[2];
  const int64_t Ho = shapes[2][2], Wo = shapes[2][3];
  if (shapes[2][1] != k * k * C) return 2;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t plane = 0; plane < k * k * C; ++plane) {
      const int64_t tap = plane / C, c = plane % C, dy = tap / k, dx = tap % k;
      const float *src = x + (b * C + c) * H * W;
      float *dst = cols + (b * k * k * C + plane) * Ho * Wo;
      for (int64_t oy = 0; oy < Ho; ++oy) {
        const int64_t iy = oy * s + dy - p;
        float *row = dst + oy * Wo;
        if (iy < 0 || iy >= H) {
          std::memset(row, 0, sizeof(float) * Wo);
          continue;
        }
        const float *srow = src + iy * W;
        for (int64_t ox = 0; ox < Wo; ++ox) {
          const int64_t ix = ox * s + dx - p;
          row[ox] = (ix >= 0 && ix < W) ? srow[ix] : 0.0f;
        }
      }
    }
  }
  return 0;
}

// inputs: dcols (B, k*k*C, Ho, Wo), geometry, x (only its shape is used); output dx (B, C, H, W)
int Col2Im(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *, void *) {
  if (nparam != 4 || ndims[0] != 4 || ndims[3] != 4 || !is(dtypes[0], "float32") || !is(dtypes[1], "int32"))
    return 1;
  const float *cols = static_cast<const float *>(params[0]);
  const int32_t *geo = static_cast<const int32_t *>(params[1]);
  float *dx_out = static_cast<float *>(params[3]);
  const int64_t B = shapes[3][0], C = shapes[3][1], H = shapes[3][2], W = shapes[3][3];
  const int64_t k = geo[0], s = geo[1], p = geo[2];
  const int64_t Ho = shapes[0][2], Wo = shapes[0][3];
  if (shapes[0][1] != k * k * C) return 2;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t c = 0; c < C; ++c) {
      float *dst = dx_out + (b * C + c) * H * W;
      std::memset(dst, 0, sizeof(float) * H * W);
      for (int64_t tap = 0; tap < k * k; ++tap) {
        const int64_t dy = tap / k, dx = tap % k;
        const float *src = cols + (b * k * k * C + tap * C + c) * Ho * Wo;
        for (int64_t oy = 0; oy < Ho; ++oy) {
          const int64_t iy = oy * s + dy - p;
          if (iy < 0 || iy >= H) continue;
          float *drow = dst + iy * W;
          const float *srow = src + oy * Wo;
          for (int64_t ox = 0; ox < Wo; ++ox) {
            const int64_t ix = ox * s + dx - p;
            if (ix >= 0 && ix < W) drow[ix] += srow[ox];
          }
        }
      }
    }
  }
  return 0;
}

// ---------------------------------------------------------------------------------------------------
// MRConv's max-relative features, fused: x (B, C, N, 1) nodes, y (B, C, M, 1) keys, idx (B, N, K) int32 ->
//   out (B, 2C, N, 1) with channel 2c = x[c] and 2c+1 = max_j y[c, idx[n, j]] - x[c] (the original's
//   interleaved cat of x and max_j(x_j - x_i); subtraction is monotonic, so the max can come first),
//   arg (B, C, N, 1) int32 = the winning key index (the first maximum wins, like PyTorch's max).
// MaxRelativeBackward: dx = dout[2c] - dout[2c+1]; dy = dout[2c+1] scattered (added) to arg.
// ---------------------------------------------------------------------------------------------------
int MaxRelative(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *, void *) {
  if (nparam != 5 || !is(dtypes[0], "float32") || !is(dtypes[1], "float32") || !is(dtypes[2], "int32") ||
      ndims[2] != 3)
    return 1;
  const float *x = static_cast<const float *>(params[0]);
  const float *y = static_cast<const float *>(params[1]);
  const int32_t *idx = static_cast<const int32_t *>(params[2]);
  float *out = static_cast<float *>(params[3]);
  int32_t *arg = static_cast<int32_t *>(params[4]);
  const int64_t B = shapes[1][0], C = shapes[1][1], M = shapes[1][2];
  const int64_t N = shapes[2][1], K = shapes[2][2];
  if (shapes[0][1] != C || shapes[0][2] != N) return 2;
  // Per batch: transpose the keys to (M, C) so every neighbour is one contiguous row, and take the
  // running max over a whole channel vector at a time (vectorised compare + blend).
// The maxima are collected node-major (N, C) and written out channel-major at the end, so every store
// is contiguous.
#pragma omp parallel
  {
    std::vector<float> keys(M * C), best(N * C), best_at(N * C);
#pragma omp for schedule(static)
    for (int64_t b = 0; b < B; ++b) {
      const float *yb = y + b * C * M;
      for (int64_t c = 0; c < C; ++c)
        for (int64_t m = 0; m < M; ++m) keys[m * C + c] = yb[c * M + m];
      for (int64_t n = 0; n < N; ++n) {
        const int32_t *nb = idx + (b * N + n) * K;
        float *__restrict bv = best.data() + n * C;
        float *__restrict ba = best_at.data() + n * C;  // key index as float (exact below 2^24): one blend type
        const float *__restrict first = &keys[nb[0] * C];
        const float first_at = static_cast<float>(nb[0]);
        for (int64_t c = 0; c < C; ++c) {
          bv[c] = first[c];
          ba[c] = first_at;
        }
        for (int64_t j = 1; j < K; ++j) {
          const float *__restrict row = &keys[nb[j] * C];
          const float at = static_cast<float>(nb[j]);
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) {
            const bool better = row[c] > bv[c];
            bv[c] = better ? row[c] : bv[c];
            ba[c] = better ? at : ba[c];
          }
        }
      }
      for (int64_t c = 0; c < C; ++c) {
        const float *xc = x + (b * C + c) * N;
        float *o = out + (b * 2 * C + 2 * c) * N;
        int32_t *a = arg + (b * C + c) * N;
        std::memcpy(o, xc, sizeof(float) * N);
        for (int64_t n = 0; n < N; ++n) {
          o[N + n] = best[n * C + c] - xc[n];
          a[n] = static_cast<int32_t>(best_at[n * C + c]);
        }
      }
    }
  }
  return 0;
}

// inputs: dout (B, 2C, N, 1), arg (B, C, N, 1) int32, y (only its shape is used);
// outputs: dx (B, C, N, 1), dy (B, C, M, 1)
int MaxRelativeBackward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *,
                        void *) {
  if (nparam != 5 || !is(dtypes[0], "float32") || !is(dtypes[1], "int32")) return 1;
  const float *dout = static_cast<const float *>(params[0]);
  const int32_t *arg = static_cast<const int32_t *>(params[1]);
  float *dx = static_cast<float *>(params[3]);
  float *dy = static_cast<float *>(params[4]);
  const int64_t B = shapes[4][0], C = shapes[4][1], M = shapes[4][2];
  const int64_t N = shapes[1][2];
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t c = 0; c < C; ++c) {
      const float *g_x = dout + (b * 2 * C + 2 * c) * N;
      const float *g_rel = g_x + N;
      float *d = dy + (b * C + c) * M;
      float *e = dx + (b * C + c) * N;
      std::memset(d, 0, sizeof(float) * M);
      const int32_t *a = arg + (b * C + c) * N;
      for (int64_t n = 0; n < N; ++n) {
        e[n] = g_x[n] - g_rel[n];
        d[a[n]] += g_rel[n];
      }
    }
  }
  return 0;
}

// ---------------------------------------------------------------------------------------------------
// Dilated kNN on cosine-normalised features, fused: x (B, C, N, 1) queries, y (B, C, M, 1) keys,
// [rel (1 or B, N, M) added to the distance], geometry int32 [k, dilation] -> idx (B, N, k) int32:
// the k*dilation nearest keys by ||x_n||^2 - 2 x_n.y_m + ||y_m||^2 (after L2 normalisation, eps 1e-12),
// ascending (ties: lower key index first), every dilation-th kept.
// ---------------------------------------------------------------------------------------------------
static void normalise_columns(const float *src, int64_t C, int64_t nodes, float *dst, float *sq) {
  // F.normalize(p=2, dim=channels): every node (column of the (C, nodes) map) divided by max(||.||, 1e-12)
  std::vector<float> inv(nodes, 0.0f);
  for (int64_t c = 0; c < C; ++c)
    for (int64_t n = 0; n < nodes; ++n) inv[n] += src[c * nodes + n] * src[c * nodes + n];
  for (int64_t n = 0; n < nodes; ++n) inv[n] = 1.0f / std::max(std::sqrt(inv[n]), 1e-12f);
  std::fill(sq, sq + nodes, 0.0f);
  for (int64_t c = 0; c < C; ++c)
    for (int64_t n = 0; n < nodes; ++n) {
      const float v = src[c * nodes + n] * inv[n];
      dst[c * nodes + n] = v;
      sq[n] += v * v;
    }
}

static int knn_impl(const float *x, const float *y, const float *rel, int64_t rel_batch, const int32_t *geo,
                    int32_t *out, int64_t B, int64_t C, int64_t N, int64_t M) {
  const int64_t k = geo[0], d = geo[1], kd = k * d;
  if (k < 1 || d < 1 || kd > M) return 3;
  const bool self_keys = (x == y);
  constexpr int64_t kQueries = 64;  // queries per inner-product block (bounds the distance buffer)
#pragma omp parallel
  {
    std::vector<float> xn(C * N), yn(self_keys ? 0 : C * M), xsq(N), ysq(self_keys ? 0 : M);
    std::vector<float> dist(kQueries * M);
    std::vector<int32_t> order(M);
#pragma omp for schedule(static)
    for (int64_t b = 0; b < B; ++b) {
      normalise_columns(x + b * C * N, C, N, xn.data(), xsq.data());
      if (!self_keys) normalise_columns(y + b * C * M, C, M, yn.data(), ysq.data());
      const float *keys = self_keys ? xn.data() : yn.data();
      const float *ksq = self_keys ? xsq.data() : ysq.data();
      for (int64_t n0 = 0; n0 < N; n0 += kQueries) {
        const int64_t nq = std::min(kQueries, N - n0);
        // inner products of nq queries with every key: dist (nq, M) = xn[:, n0:n0+nq]^T (nq, C) @ keys (C, M)
        dnnl_sgemm('T', 'N', nq, M, C, 1.0f, xn.data() + n0, N, keys, M, 0.0f, dist.data(), M);
        for (int64_t q = 0; q < nq; ++q) {
          const int64_t n = n0 + q;
          float *drow = &dist[q * M];
          const float *r = rel ? rel + ((rel_batch == 1 ? 0 : b) * N + n) * M : nullptr;
          for (int64_t m = 0; m < M; ++m) {
            drow[m] = xsq[n] - 2.0f * drow[m] + ksq[m];
            if (r) drow[m] += r[m];
            if (std::isnan(drow[m])) drow[m] = INFINITY;  // keeps the sort's ordering strict-weak
          }
          // the kd smallest in ascending order; ties go to the lower key index
          for (int64_t m = 0; m < M; ++m) order[m] = static_cast<int32_t>(m);
          auto closer = [drow](int32_t i, int32_t j) { return drow[i] < drow[j] || (drow[i] == drow[j] && i < j); };
          if (kd < M) std::nth_element(order.begin(), order.begin() + kd, order.end(), closer);
          std::sort(order.begin(), order.begin() + kd, closer);
          int32_t *o = out + (b * N + n) * k;
          for (int64_t j = 0; j < k; ++j) o[j] = order[j * d];
        }
      }
    }
  }
  return 0;
}

// inputs: x (B, C, N, 1), y (B, C, M, 1), geometry; output idx (B, N, k)
int DilatedKnn(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *, void *) {
  if (nparam != 4 || !is(dtypes[0], "float32") || !is(dtypes[1], "float32") || !is(dtypes[2], "int32")) return 1;
  const int64_t B = shapes[0][0], C = shapes[0][1], N = shapes[0][2], M = shapes[1][2];
  const float *x = static_cast<const float *>(params[0]);
  const float *y = static_cast<const float *>(params[1]);
  return knn_impl(x, x == y ? x : y, nullptr, 1, static_cast<const int32_t *>(params[2]),
                  static_cast<int32_t *>(params[3]), B, C, N, M);
}

// inputs: x (B, C, N, 1), y (B, C, M, 1), rel (1 or B, N, M), geometry; output idx (B, N, k)
int DilatedKnnRel(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *, void *) {
  if (nparam != 5 || !is(dtypes[0], "float32") || !is(dtypes[1], "float32") || !is(dtypes[2], "float32") ||
      !is(dtypes[3], "int32") || ndims[2] != 3)
    return 1;
  const int64_t B = shapes[0][0], C = shapes[0][1], N = shapes[0][2], M = shapes[1][2];
  if (shapes[2][1] != N || shapes[2][2] != M) return 2;
  const float *x = static_cast<const float *>(params[0]);
  const float *y = static_cast<const float *>(params[1]);
  return knn_impl(x, x == y ? x : y, static_cast<const float *>(params[2]), shapes[2][0],
                  static_cast<const int32_t *>(params[3]), static_cast<int32_t *>(params[4]), B, C, N, M);
}

}  // extern "C"
