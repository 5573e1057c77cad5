// 1x1 (grouped) convolution on NCHW maps as one matrix product per image and group, forward and both
// gradients, for ops.Custom(aot). AOT conventions in vig_kernel.h.
//
// Why: MindSpore 2.10's CPU Conv2D/Conv2DBackpropInput/Conv2DBackpropFilter took ~2x the time of the same
// products done as plain sgemm calls for ViG's 1x1 convolutions, the backward passes up to 4x
// (docs/performance.md). The products come from oneDNN's sgemm, which MindSpore itself ships
// (libdnnl.so.3, linked by vig/ops/build.py); called from inside an OpenMP loop it runs
// single-threaded, so the parallelism is ours: images x groups, or output-channel blocks for the weight
// gradient. Every image is one product of fixed shape, so a result never depends on the batch size.
#include <algorithm>
#include <cstdint>
#include <cstring>

#include "vig_kernel.h"

using vig::is;

namespace {

struct Geometry {
  int64_t B, Cin, Cout, S, G, cin, cout;  // cin/cout: channels per group
};

// x (B, Cin, ...), w (Cout, Cin/G, 1, 1), groups G
bool geometry(int x_ndim, const int64_t *x, const int64_t *w, int64_t groups, Geometry *g) {
  if (groups < 1 || !vig::planes(x_ndim, x, &g->B, &g->Cin, &g->S)) return false;
  g->Cout = w[0];
  g->G = groups;
  if (g->Cin % groups || g->Cout % groups || w[1] != g->Cin / groups || w[2] != 1 || w[3] != 1) return false;
  g->cin = g->Cin / groups;
  g->cout = g->Cout / groups;
  return true;
}

}  // namespace

extern "C" {

// inputs: x (B, Cin, H, W), w (Cout, Cin/G, 1, 1), groups int32 [G]; output y (B, Cout, H, W)
int Conv1x1(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *, void *) {
  if (nparam != 4 || !is(dtypes[0], "float32") || !is(dtypes[1], "float32") || ndims[1] != 4) return 1;
  Geometry g;
  if (!geometry(ndims[0], shapes[0], shapes[1], static_cast<const int32_t *>(params[2])[0], &g)) return 2;
  const float *x = static_cast<const float *>(params[0]);
  const float *w = static_cast<const float *>(params[1]);
  float *y = static_cast<float *>(params[3]);
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < g.B; ++b)
    for (int64_t k = 0; k < g.G; ++k)  // y[b, k] (cout, S) = w[k] (cout, cin) @ x[b, k] (cin, S)
      dnnl_sgemm('N', 'N', g.cout, g.S, g.cin, 1.0f, w + k * g.cout * g.cin, g.cin,
                 x + (b * g.Cin + k * g.cin) * g.S, g.S, 0.0f, y + (b * g.Cout + k * g.cout) * g.S, g.S);
  return 0;
}

// inputs: dy (B, Cout, H, W), w, groups, x (only its shape is used); output dx (B, Cin, H, W)
int Conv1x1BackwardInput(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *,
                         void *) {
  if (nparam != 5 || !is(dtypes[0], "float32") || !is(dtypes[1], "float32")) return 1;
  Geometry g;
  if (!geometry(ndims[3], shapes[3], shapes[1], static_cast<const int32_t *>(params[2])[0], &g)) return 2;
  const float *dy = static_cast<const float *>(params[0]);
  const float *w = static_cast<const float *>(params[1]);
  float *dx = static_cast<float *>(params[4]);
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < g.B; ++b)
    for (int64_t k = 0; k < g.G; ++k)  // dx[b, k] (cin, S) = w[k]^T (cin, cout) @ dy[b, k] (cout, S)
      dnnl_sgemm('T', 'N', g.cin, g.S, g.cout, 1.0f, w + k * g.cout * g.cin, g.cin,
                 dy + (b * g.Cout + k * g.cout) * g.S, g.S, 0.0f, dx + (b * g.Cin + k * g.cin) * g.S, g.S);
  return 0;
}

// inputs: dy (B, Cout, H, W), x (B, Cin, H, W), groups, w (only its shape is used); output dw (Cout, Cin/G, 1, 1)
//   dw[k] (cout, cin) = sum_b dy[b, k] (cout, S) @ x[b, k]^T (S, cin)
// Parallel over (group, block of output channels): each thread owns its rows of dw and sums over the
// images in order, so the result does not depend on the thread count.
int Conv1x1BackwardWeight(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *,
                          void *) {
  if (nparam != 5 || !is(dtypes[0], "float32") || !is(dtypes[1], "float32")) return 1;
  Geometry g;
  if (!geometry(ndims[1], shapes[1], shapes[3], static_cast<const int32_t *>(params[2])[0], &g)) return 2;
  const float *dy = static_cast<const float *>(params[0]);
  const float *x = static_cast<const float *>(params[1]);
  float *dw = static_cast<float *>(params[4]);
  constexpr int64_t kRows = 32;  // output channels per task: big enough for an efficient product
  const int64_t blocks = (g.cout + kRows - 1) / kRows;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t k = 0; k < g.G; ++k)
    for (int64_t blk = 0; blk < blocks; ++blk) {
      const int64_t r0 = k * g.cout + blk * kRows, rows = std::min(kRows, g.cout - blk * kRows);
      for (int64_t b = 0; b < g.B; ++b)
        dnnl_sgemm('N', 'T', rows, g.cin, g.S, 1.0f, dy + (b * g.Cout + r0) * g.S, g.S,
                   x + (b * g.Cin + k * g.cin) * g.S, g.S, b ? 1.0f : 0.0f, dw + r0 * g.cin, g.cin);
    }
  return 0;
}

}  // extern "C"
