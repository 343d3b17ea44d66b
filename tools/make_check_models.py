"""Make the two candidates of the README's ``xnetmap check`` examples from a zoo model.

- ``OUT/resnet_v2_fp16.onnx``: the reference converted to float16 as converters do it
  (fp16 weights and compute, float32 input and output): it should pass the check.
- ``OUT/resnet_v2_swapped.onnx``: the reference with two rows of its classifier exchanged
  (classes 0 and 6 of Fashion-MNIST, T-shirt and Shirt): it should fail.

Usage (from the repository root; needs only the package's own dependencies)::

    python tools/make_check_models.py [--model models/resnet_v2.onnx] [--out out]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper


def _final_gemm(model: onnx.ModelProto):
    """The last Gemm node, its weight initializer and its bias (the classifier layer)."""
    inits = {t.name: t for t in model.graph.initializer}
    for node in reversed(model.graph.node):
        if node.op_type == "Gemm":
            return node, inits[node.input[1]], inits.get(node.input[2])
    raise SystemExit("make_check_models: the model has no Gemm classifier layer")


def swap_classes(src: Path, dst: Path, a: int = 0, b: int = 6) -> Path:
    """Write ``src`` with classifier rows ``a`` and ``b`` exchanged (weights and bias)."""
    model = onnx.load(str(src))
    node, w, bias = _final_gemm(model)
    trans_b = next((x.i for x in node.attribute if x.name == "transB"), 0)
    W = numpy_helper.to_array(w).copy()
    if trans_b:
        W[[a, b]] = W[[b, a]]
    else:
        W[:, [a, b]] = W[:, [b, a]]
    w.CopyFrom(numpy_helper.from_array(W, w.name))
    if bias is not None:
        B = numpy_helper.to_array(bias).copy()
        B[[a, b]] = B[[b, a]]
        bias.CopyFrom(numpy_helper.from_array(B, bias.name))
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    return dst


def _half_constants(g) -> None:
    for t in g.initializer:
        if t.data_type == onnx.TensorProto.FLOAT:
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float16), t.name))
    for node in g.node:
        for a in node.attribute:
            if node.op_type == "Constant" and a.name == "value" \
                    and a.t.data_type == onnx.TensorProto.FLOAT:
                a.t.CopyFrom(numpy_helper.from_array(
                    numpy_helper.to_array(a.t).astype(np.float16), a.t.name))
            if node.op_type == "Cast" and a.name == "to" and a.i == onnx.TensorProto.FLOAT:
                a.i = onnx.TensorProto.FLOAT16


def to_fp16(src: Path, dst: Path) -> Path:
    """Write ``src`` with float16 weights and compute, keeping float32 input and outputs."""
    model = onnx.load(str(src))
    g = model.graph
    _half_constants(g)
    inp, out = g.input[0].name, [o.name for o in g.output]
    for node in g.node:
        node.input[:] = [f"{inp}_fp16" if x == inp else x for x in node.input]
        node.output[:] = [f"{x}_fp16" if x in out else x for x in node.output]
    for node in g.node:
        node.input[:] = [f"{x}_fp16" if x in out else x for x in node.input]
    cast_in = onnx.helper.make_node("Cast", [inp], [f"{inp}_fp16"], to=onnx.TensorProto.FLOAT16)
    casts_out = [onnx.helper.make_node("Cast", [f"{o}_fp16"], [o], to=onnx.TensorProto.FLOAT)
                 for o in out]
    nodes = [cast_in, *g.node, *casts_out]
    del g.node[:]
    g.node.extend(nodes)
    del g.value_info[:]
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    return dst


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=Path("models/resnet_v2.onnx"))
    parser.add_argument("--out", type=Path, default=Path("out"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.model.stem
    for path in (to_fp16(args.model, args.out / f"{stem}_fp16.onnx"),
                 swap_classes(args.model, args.out / f"{stem}_swapped.onnx")):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
