"""The ops ViG's layers call, each a compiled CPU kernel or MindSpore's native op.

build.py compiles the C++ kernels in csrc/ (one shared header, vig_kernel.h) into a content-hashed cache.
"""
