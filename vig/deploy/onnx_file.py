"""The ONNX file MindSpore's exporter writes, made batch-size independent and fast in onnxruntime
(vig/deploy/infer.py runs it), with the `onnx` package.

MindSpore 2.10's `mindspore.export(..., file_format="ONNX")` cannot write a dynamic batch: an input
`Tensor(shape=[None, 3, S, S])` is refused ("ValueError: Export ONNX format model not support dynamic
shape mode."), so the file is exported for a fixed batch and its batch axis opened here with the
`onnx` package: the graph input and output get a symbolic first dimension, the stored intermediate
shapes are dropped (onnxruntime infers them), and the only ops whose constants hold the batch size -
Expand, which broadcasts the kNN indices over the channels - broadcast from 1 instead. Reshapes need nothing: the cells write -1 for the batch, and the exporter keeps it.

Two rewrites then replace what the exporter could only write in slow ops (vig/ops/onnx.py) by ONNX's
own: GELU's erf polynomial (~17 elementwise passes) by Erf, which onnxruntime fuses into one Gelu
kernel, and the batched neighbour gathers (GatherElements on channel-expanded indices) by row Gathers.
On ViG-Ti at batch 8 this halves onnxruntime's time (bench/deploy_throughput.py).
"""
from __future__ import annotations

import numpy as np

BATCH_AXIS_NAME = "batch"


def _constant_values(graph) -> dict:
    from onnx import numpy_helper

    values = {init.name: (init, numpy_helper.to_array(init)) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = (node.attribute[0].t, numpy_helper.to_array(node.attribute[0].t))
    return values


def open_batch_axis(model, batch: int):
    """`model` (onnx.ModelProto exported for a batch of `batch`, batch > 1) with its batch axis symbolic.

    Raises ValueError naming the node for a shape constant that holds the batch size and that this
    function does not know how to open (the file would silently run one batch size only)."""
    from onnx import numpy_helper

    if batch < 2:
        raise ValueError(f"open_batch_axis: export with a batch of at least 2 (got {batch}); with 1 the "
                         f"batch cannot be told apart from the other unit dimensions")
    graph = model.graph
    for value in list(graph.input) + list(graph.output):
        dim = value.type.tensor_type.shape.dim[0]
        if dim.dim_value != batch:
            raise ValueError(f"{value.name}: first dimension {dim.dim_value or dim.dim_param!r}, expected the "
                             f"exported batch {batch}")
        dim.ClearField("dim_value")
        dim.dim_param = BATCH_AXIS_NAME
    del graph.value_info[:]
    constants = _constant_values(graph)
    for node in graph.node:
        if node.op_type not in ("Expand", "Reshape") or node.input[1] not in constants:
            continue
        tensor, shape = constants[node.input[1]]
        if shape.ndim != 1 or shape.size == 0 or shape[0] != batch:
            continue
        if node.op_type == "Reshape":
            raise ValueError(f"ONNX node {node.name}: Reshape to {shape.tolist()} holds the batch size "
                             f"{batch}; write -1 for the batch in the cell that reshapes")
        shape = shape.copy()
        shape[0] = 1  # Expand broadcasts: 1 keeps the input's batch
        tensor.CopyFrom(numpy_helper.from_array(shape, tensor.name))
    return model


# ---------------------------------------------------------------------------------------------------
# Rewrites for onnxruntime: what the exporter can only write slowly, in ONNX's own ops
# ---------------------------------------------------------------------------------------------------
def _consumers(graph) -> dict:
    users = {}
    for node in graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    return users


def _drop_dead_nodes(graph) -> int:
    """Remove nodes none of whose outputs is used (repeatedly), then unused initializers; returns how many."""
    outputs = {v.name for v in graph.output}
    dropped = 0
    while True:
        used = {name for node in graph.node for name in node.input} | outputs
        dead = [i for i, node in enumerate(graph.node) if not any(o in used for o in node.output)]
        if not dead:
            break
        for i in reversed(dead):
            del graph.node[i]
        dropped += len(dead)
    used = {name for node in graph.node for name in node.input}
    for i in reversed([i for i, init in enumerate(graph.initializer) if init.name not in used]):
        del graph.initializer[i]
    return dropped


def _constant(graph, name: str, value) -> str:
    from onnx import numpy_helper

    graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
    return name


def exact_gelu(model) -> int:
    """Replace each GELU the "onnx" ops setting wrote (x * Sigmoid(polynomial), vig/ops/onnx.py: Erf has no
    mapping in MindSpore's exporter) by ONNX's exact x * 0.5 * (1 + Erf(x / sqrt 2)), which onnxruntime
    fuses into one Gelu kernel; ~17 elementwise passes over the tensor become one. Returns how many.

    A GELU is found by its structure (the exporter leaves Sigmoid nodes without a scope): a Mul of x with
    a Sigmoid whose argument is computed from Clip(x) to +-ERF_CLAMP*sqrt(2), the bound onnx.Gelu clamps to.
    """
    from onnx import helper

    from ..ops.onnx import ERF_CLAMP

    graph = model.graph
    users = _consumers(graph)
    producer = {out: node for node in graph.node for out in node.output}
    constants = _constant_values(graph)
    bound = ERF_CLAMP * np.sqrt(2.0)

    def clamps_at_gelu_bound(node, x) -> bool:
        if node.op_type != "Clip" or node.input[0] != x or len(node.input) < 3:
            return False
        low, high = (constants.get(name, (None, None))[1] for name in node.input[1:3])
        return low is not None and high is not None and np.isclose(-low, bound) and np.isclose(high, bound)

    def computed_from_clip_of(name, x) -> bool:
        seen, todo = set(), [name]
        while todo and len(seen) < 64:  # the polynomial is ~15 nodes
            node = producer.get(todo.pop())
            if node is None or node.name in seen:
                continue
            seen.add(node.name)
            if clamps_at_gelu_bound(node, x):
                return True
            todo.extend(i for i in node.input if i != x)
        return False

    replaced = 0
    for sigmoid in list(graph.node):
        if sigmoid.op_type != "Sigmoid" or len(users.get(sigmoid.output[0], [])) != 1:
            continue
        mul = users[sigmoid.output[0]][0]
        if mul.op_type != "Mul":
            continue
        x = next(name for name in mul.input if name != sigmoid.output[0])
        if not computed_from_clip_of(sigmoid.input[0], x):
            continue
        tag = f"vig_gelu_{replaced}"
        sqrt2 = _constant(graph, f"{tag}/sqrt2", np.float32(np.sqrt(2.0)))
        one = _constant(graph, f"{tag}/one", np.float32(1.0))
        half = _constant(graph, f"{tag}/half", np.float32(0.5))
        exact = [helper.make_node("Div", [x, sqrt2], [f"{tag}/scaled"], name=f"{tag}/Div"),
                 helper.make_node("Erf", [f"{tag}/scaled"], [f"{tag}/erf"], name=f"{tag}/Erf"),
                 helper.make_node("Add", [f"{tag}/erf", one], [f"{tag}/phi2"], name=f"{tag}/Add"),
                 helper.make_node("Mul", [x, f"{tag}/phi2"], [f"{tag}/x_phi2"], name=f"{tag}/Mul"),
                 helper.make_node("Mul", [f"{tag}/x_phi2", half], [mul.output[0]], name=f"{tag}/Half")]
        mul.output[0] = f"{tag}/replaced"
        position = list(graph.node).index(mul) + 1
        for offset, node in enumerate(exact):
            graph.node.insert(position + offset, node)
        replaced += 1
    _drop_dead_nodes(graph)
    return replaced


def flat_gathers(model) -> int:
    """Replace each batched gather the "onnx" ops setting wrote (GatherElements on axis 1 of (B, M, C)
    with the (B, L, 1) indices Expanded over C) by one Gather of rows from (B*M, C) at index + b*M, the
    batch offsets computed from the input's shape (opset 11 has no batch_dims): the same values without
    materialising L*C indices. Returns how many."""
    from onnx import helper

    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    constants = _constant_values(graph)
    replaced = 0
    for gather in list(graph.node):
        if gather.op_type != "GatherElements" or producer.get(gather.input[1], None) is None:
            continue
        expand = producer[gather.input[1]]
        axis = next((a.i for a in gather.attribute if a.name == "axis"), 0)
        if expand.op_type != "Expand" or axis != 1:
            continue
        data, index = gather.input[0], expand.input[0]  # (B, M, C), (B, L, 1)
        channels = int(constants[expand.input[1]][1][-1])  # the Expand's shape: (B or 1, L, C)
        t = f"vig_gather_{replaced}"
        c = lambda suffix, value: _constant(graph, f"{t}/{suffix}", value)  # noqa: E731
        new = [helper.make_node("Shape", [data], [f"{t}/shape"]),
               helper.make_node("Gather", [f"{t}/shape", c("i0", np.int64(0))], [f"{t}/b"], axis=0),
               helper.make_node("Gather", [f"{t}/shape", c("i1", np.int64(1))], [f"{t}/m"], axis=0),
               helper.make_node("Mul", [f"{t}/b", f"{t}/m"], [f"{t}/bm"]),
               helper.make_node("Range", [c("zero", np.int64(0)), f"{t}/bm", f"{t}/m"], [f"{t}/offsets"]),
               helper.make_node("Reshape", [f"{t}/offsets", c("col", np.array([-1, 1, 1], np.int64))],
                                [f"{t}/offsets3"]),
               helper.make_node("Cast", [index], [f"{t}/index64"], to=7),  # int64
               helper.make_node("Add", [f"{t}/index64", f"{t}/offsets3"], [f"{t}/rows3"]),
               helper.make_node("Squeeze", [f"{t}/rows3"], [f"{t}/rows"], axes=[2]),
               helper.make_node("Reshape", [data, c("flat_shape", np.array([-1, channels], np.int64))], [f"{t}/flat"]),
               helper.make_node("Gather", [f"{t}/flat", f"{t}/rows"], [gather.output[0]], axis=0)]
        position = list(graph.node).index(gather)
        del graph.node[position]
        for offset, node in enumerate(new):
            node.name = f"{t}/{node.op_type}_{offset}"
            graph.node.insert(position + offset, node)
        replaced += 1
    _drop_dead_nodes(graph)
    return replaced
