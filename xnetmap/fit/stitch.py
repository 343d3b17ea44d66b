"""``stitch_models``: one ONNX model F_A → M_{A→B} → C_B from files (models and a map file).

The path-level twin of :func:`xnetmap.graph.stitch.stitch_graphs`; it sits above
both the graph package (splitting, loading) and the fit package (the map file).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import UsageError
from ..fsutil import atomic_write_bytes, file_sha256
from ..graph.load import load_model
from ..graph.split import split_model
from ..graph.stitch import stitch_graphs
from .affine_map import AffineMap


def stitch_models(
    model_a, model_b, map_path, out_path, *, split_dir=None, cut: str = "pooled",
    check_digests: bool = True,
):
    """Path-level twin of :func:`stitch_graphs`: ``xnetmap stitch A.onnx B.onnx MAP.npz -o OUT``.

    A and B are full classifiers (split on the fly into ``split_dir``, default a
    temporary folder) or
    already-split parts (``NAME.features.onnx`` for A, ``NAME.classifier.onnx`` for B).
    Returns the output path. The written model passes onnx.checker.
    With ``check_digests`` (default), a map whose recorded source/target model
    digests name other models is refused (UsageError), even when widths agree.
    """
    import tempfile

    import onnx

    out_path = Path(out_path)
    with tempfile.TemporaryDirectory(prefix="xnetmap-stitch-") as tmp:
        # Each model is split into its own folder: two models with one file name never collide.
        base = Path(split_dir) if split_dir is not None else Path(tmp)
        part_a = _part(model_a, "features", base / "a", cut, split_model)
        part_b = _part(model_b, "classifier", base / "b", cut, split_model)
        fa, cb = load_model(part_a), load_model(part_b)
        # a map's provenance may name the full model or (stores extracted from a bare
        # NAME.features.onnx) a split part: accept any of them
        sibling = Path(part_b).with_name(
            Path(part_b).name.removesuffix(".classifier.onnx") + ".features.onnx"
        )
        known = {
            "A": _digests(model_a) | _digests(part_a),
            "B": _digests(model_b) | _digests(part_b)
            | (_digests(sibling) if sibling.exists() else set()),
        }
    amap = AffineMap.load(map_path)
    if check_digests:
        prov = getattr(amap, "provenance_", {}) or {}
        for role, model, key in (("A", model_a, "source_model_sha256"),
                                 ("B", model_b, "target_model_sha256")):
            want = prov.get(key)
            if want and want not in known[role]:
                raise UsageError(
                    f"{map_path} was fitted for a different model {role} than {model} "
                    f"(map's {key} {want[:12]}…, file {file_sha256(model)[:12]}…); "
                    "fit a map for these models, or pass --any-map to stitch it anyway"
                )
    W, b = amap.W_, amap.b_
    d_in = _width(fa.graph.output[0])
    d_out = _width(cb.graph.input[0])
    if (d_in is not None and W.shape[1] != d_in) or (d_out is not None and W.shape[0] != d_out):
        raise UsageError(
            f"{map_path}: W has shape {tuple(W.shape)} but A's features are {d_in}-d and "
            f"B's classifier takes {d_out}-d; was the map fitted from A to B?"
        )
    cal = getattr(amap, "calibration_", {}) or {}
    norm = None
    if cal.get("mode") == "norm":
        norm = {"norm_w": cal["norm_w"], "norm_b": cal["norm_b"], "eps": amap.eps}
    model = stitch_graphs(
        fa, W, b, cb, name=f"{Path(model_a).stem}_to_{Path(model_b).stem}", norm=norm
    )
    model.metadata_props.add(
        key="xnetmap.stitch",
        value=json.dumps({"a": str(model_a), "b": str(model_b), "map": str(map_path)}),
    )
    onnx.checker.check_model(model)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out_path, model.SerializeToString())
    return out_path


def _digests(model) -> set[str]:
    """Digests a map's provenance may name for ``model``.

    The file itself, and for a split part (``NAME.features.onnx`` /
    ``NAME.classifier.onnx``) the digests recorded in ``NAME.split.json``.
    """
    path = Path(model)
    out = {file_sha256(path)}
    for part in (".features.onnx", ".classifier.onnx"):
        if path.name.endswith(part):
            sj = path.with_name(path.name.removesuffix(part) + ".split.json")
            try:
                info = json.loads(sj.read_text())
            except (OSError, ValueError):
                continue
            out |= {v for k, v in info.items() if k.endswith("sha256") and isinstance(v, str)}
    return out


def _width(value_info):
    dims = value_info.type.tensor_type.shape.dim
    if len(dims) == 2 and dims[1].HasField("dim_value"):
        return int(dims[1].dim_value)
    return None


def _part(model, which, split_dir, cut, split_model):
    path = Path(model)
    if path.name.endswith(f".{which}.onnx"):
        return path
    result = split_model(path, split_dir, cut=cut, verify=False)
    return Path(result.features_path if which == "features" else result.classifier_path)
