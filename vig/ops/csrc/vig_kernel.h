// What every ViG CPU kernel shares: the conventions of mindspore.ops.Custom(func_type="aot"), the small
// shape/dtype helpers and oneDNN's sgemm.
//
// Every entry point has MindSpore's AOT signature
//   int F(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream, void *extra)
// with the inputs first and the outputs last in `params`. All tensors are contiguous float32 / int32.
// A non-zero return makes MindSpore raise, so every kernel checks the dtypes it relies on.
//
// The sources are compiled one library each by vig/ops/build.py, which hashes this header with them.
#pragma once

#include <cstdint>
#include <cstring>

// oneDNN's sgemm, from the libdnnl.so.3 MindSpore ships (vig/ops/build.py links it for the sources that call it)
extern "C" int dnnl_sgemm(char transa, char transb, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                          int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc);

namespace vig {

// dtypes[i] as MindSpore names it ("float32", "int32")
inline bool is(const char *dtype, const char *want) { return std::strcmp(dtype, want) == 0; }

inline int64_t numel(int ndim, const int64_t *shape) {
  int64_t n = 1;
  for (int i = 0; i < ndim; ++i) n *= shape[i];
  return n;
}

// (B, C, rest...) -> B, C and the contiguous extent S of one (b, c) plane
inline bool planes(int ndim, const int64_t *shape, int64_t *B, int64_t *C, int64_t *S) {
  if (ndim < 2) return false;
  *B = shape[0];
  *C = shape[1];
  *S = numel(ndim - 2, shape + 2);
  return true;
}

}  // namespace vig
