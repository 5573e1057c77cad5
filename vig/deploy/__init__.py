"""Deployment chain of the seed's Ascend-310 recipe, runnable on any MindSpore backend.

export (checkpoint -> MINDIR with a dynamic batch) -> preprocess (one float32 NCHW .bin per image and
the seed's label file) -> infer (MINDIR through `nn.GraphCell`, `result_Files/<stem>_0.bin` logits)
-> postprocess (top-1/top-5). Importing this package does not import MindSpore.
"""
