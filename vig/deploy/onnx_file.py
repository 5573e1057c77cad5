"""The ONNX file MindSpore's exporter writes, made batch-size independent (vig/deploy/infer.py runs it).

MindSpore 2.10's `mindspore.export(..., file_format="ONNX")` cannot write a dynamic batch: an input
`Tensor(shape=[None, 3, S, S])` is refused, so the file is exported for a fixed batch and its batch
axis opened here with the `onnx` package: the graph input and output get a symbolic first dimension,
the stored intermediate shapes are dropped (onnxruntime infers them), and the only ops whose constants
hold the batch size - Expand, which broadcasts the kNN indices over the channels - broadcast from 1
instead. Reshapes need nothing: the cells write -1 for the batch, and the exporter keeps it.
"""
from __future__ import annotations

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
