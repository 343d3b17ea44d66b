"""Thin typer commands over the library API.

Each command parses options, calls one public library function, prints the
result. Heavy modules (onnx, onnxruntime, numpy kernels) are imported inside
the commands so that ``xnetmap --help`` stays instant. Errors: an
``XnetmapError`` becomes one line on stderr and its exit code; anything else
is a bug (traceback, exit 5).
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(
    name="xnetmap",
    help="Do two trained image classifiers extract the same information from images?",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _echo_err(message: str) -> None:
    typer.echo(message, err=True)


# ---- section: graph (inspect, split, stitch) -------------------------------


@app.command("inspect")
def inspect_cmd(
    model: Path = typer.Argument(..., help="ONNX classifier to describe."),
    as_json: bool = typer.Option(False, "--json", help="Print the description as JSON."),
) -> None:
    """Show a model's inputs/outputs, opset, parameters, classifier head and cut candidates."""
    import json

    from .graph import inspect_model

    info = inspect_model(model)
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    typer.echo(f"model      {info['path']}")
    typer.echo(f"producer   {info['producer'] or '?'}   IR {info['ir_version']}   opsets "
               + ", ".join(f"{d} {v}" for d, v in info["opsets"].items()))
    typer.echo(f"nodes      {info['nodes']}   parameters {info['parameters']:,}")
    for kind in ("inputs", "outputs"):
        for v in info[kind]:
            typer.echo(f"{kind[:-1]:<10} {v['name']}  {v['dtype']}  {v['shape']}")
    head = info["head"]
    if head is None:
        typer.echo(f"head       none detected: {info['head_error']}")
    else:
        typer.echo(f"head       -> {head['logits']} ({head['affine_layers']} affine layer(s))")
        for step in head["chain"]:
            typer.echo(f"  {step['kind']:<10} {step['label']:<28} -> {step['output_shape']}")
        for definition, cutinfo in info["cuts"].items():
            typer.echo(
                f"cut {definition:<12} {cutinfo['tensor']}  {cutinfo['shape']}  D={cutinfo['D']}"
            )
    typer.echo("--cut candidates (tensor, shape):")
    for cand in info["candidates"]:
        typer.echo(f"  {cand['tensor']}  {cand['shape']}")
    if info["preprocess"] is not None:
        typer.echo(f"preprocess {json.dumps(info['preprocess'])}")
    if info["labels"] is not None:
        typer.echo(f"labels     {info['labels']} classes")


@app.command("split")
def split_cmd(
    model: Path = typer.Argument(..., help="ONNX classifier to split."),
    out_dir: Path | None = typer.Option(
        None, "-o", "--out", help="Output folder (default: the model's)."
    ),
    cut: str = typer.Option("pooled", "--cut", help="pooled, penultimate, or a tensor name."),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="Certify C(F(x)) == model(x)."),
    samples: int = typer.Option(8, "--samples", min=1, help="Certificate inputs."),
    images: Path | None = typer.Option(
        None, "--images", help="Certify on images from this folder."
    ),
    atol: float | None = typer.Option(None, "--atol", help="Absolute tolerance (by dtype)."),
    rtol: float | None = typer.Option(None, "--rtol", help="Relative tolerance (by dtype)."),
) -> None:
    """Split a classifier into NAME.features.onnx (F) and NAME.classifier.onnx (C)."""
    from .errors import VerificationFailed
    from .graph import split_model

    try:
        result = split_model(model, out_dir, cut=cut, verify=verify, samples=samples,
                             images=images, atol=atol, rtol=rtol)
    except VerificationFailed as err:
        _echo_err(f"xnetmap: certificate FAILED: {err.message}")
        raise typer.Exit(err.exit_code) from None
    typer.echo(f"features   {result.features_path}  [N, {result.feature_dim}]")
    typer.echo(f"classifier {result.classifier_path}  -> {', '.join(result.output_names)}")
    typer.echo(f"cut        {result.cut} = {result.cut_tensor}   D = {result.feature_dim}")
    cert = result.certificate
    if cert is None:
        typer.echo("certificate skipped (--no-verify)")
    else:
        top1 = "n/a" if cert["top1_agreement"] is None else f"{cert['top1_agreement']:.3f}"
        typer.echo(
            f"certificate {'PASSED' if cert['passed'] else 'FAILED'} on {cert['samples']} "
            f"{cert['inputs']}: max abs diff {cert['max_abs_diff']:.3g}, max rel diff "
            f"{cert['max_rel_diff']:.3g}, top-1 agreement {top1} (atol {cert['atol']:g}, "
            f"rtol {cert['rtol']:g})"
        )
    typer.echo(f"record     {result.json_path}")


# ---- end section: graph -----------------------------------------------------

# ---- section: data (annotate) ------------------------------------------------


@app.command("annotate")
def annotate_cmd(
    model: Path = typer.Argument(..., help="The ONNX model to annotate."),
    out: Path | None = typer.Option(
        None, "-o", "--out", help="Write the annotated copy here."
    ),
    in_place: bool = typer.Option(False, "--in-place", help="Overwrite MODEL instead."),
    preset: str | None = typer.Option(
        None, "--preset", help="Preprocessing preset: imagenet, inception, caffe."
    ),
    size: str | None = typer.Option(None, "--size", help="Input size: H or H,W."),
    resize: str | None = typer.Option(
        None, "--resize", help="Shorter side before cropping, or 'none' (resize to size)."
    ),
    crop: str | None = typer.Option(None, "--crop", help="center or none."),
    interpolation: str | None = typer.Option(
        None, "--interpolation", help="bilinear, bicubic or nearest."
    ),
    colour: str | None = typer.Option(None, "--colour", "--color", help="L or RGB."),
    channel_order: str | None = typer.Option(None, "--channel-order", help="RGB or BGR."),
    layout: str | None = typer.Option(None, "--layout", help="NCHW or NHWC."),
    scale: str | None = typer.Option(
        None, "--scale", help="Multiply 0..255 pixels by this first (e.g. 1/255)."
    ),
    mean: str | None = typer.Option(None, "--mean", help="Per-channel mean, comma-separated."),
    std: str | None = typer.Option(None, "--std", help="Per-channel std, comma-separated."),
    labels: Path | None = typer.Option(
        None, "--labels", help="Class names, one per line (sets xnetmap.labels)."
    ),
) -> None:
    """Write preprocessing (xnetmap.preprocess) and class names into MODEL's metadata."""
    from .data.annotate import annotate_model
    from .data.preprocess import overrides_from_strings

    overrides = overrides_from_strings(
        size=size, resize=resize, crop=crop, interpolation=interpolation, colour=colour,
        channel_order=channel_order, layout=layout, scale=scale, mean=mean, std=std,
    )
    result = annotate_model(
        model, out, preset=preset, overrides=overrides, labels=labels, in_place=in_place
    )
    for note in result["notes"]:
        _echo_err(f"note: {note}")
    typer.echo(f"wrote {result['path']}")
    pre = result["preprocess"]
    typer.echo("  xnetmap.preprocess: " + ", ".join(
        f"{k}={pre[k]}" for k in pre if k != "version"))
    if result["labels"] is not None:
        shown = ", ".join(result["labels"][:5]) + (", ..." if len(result["labels"]) > 5 else "")
        typer.echo(f"  xnetmap.labels: {len(result['labels'])} classes ({shown})")

# ---- end section: data -------------------------------------------------------

# ---- section: extract ---------------------------------------------------------


@app.command("extract")
def extract_cmd(
    model: Path = typer.Argument(
        ...,
        help="Full classifier .onnx (split on the fly) or NAME.features.onnx.",
    ),
    dataset: str = typer.Argument(
        ...,
        help="Dataset path or kind:path (folder, flat, idx, npz, npy, unlabeled).",
    ),
    out: Path = typer.Option(
        ..., "-o", "--out",
        help="Feature store directory (created; resumed if present).",
    ),
    device: str = typer.Option(
        "cpu", "--device",
        help="cpu, cuda or auto. cuda without a GPU is an error.",
    ),
    batch_size: int = typer.Option(64, "--batch-size", help="Images per onnxruntime call."),
    workers: int | None = typer.Option(
        None, "--workers",
        help="Decode/preprocess threads (default: cores).",
    ),
    threads: int | None = typer.Option(
        None, "--threads",
        help="onnxruntime intra-op threads (default: cores).",
    ),
    dtype: str = typer.Option("float32", "--dtype", help="Storage type: float32 or float16."),
    max_bad: float = typer.Option(
        0.0, "--max-bad",
        help="Largest allowed fraction of unreadable images.",
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite",
        help="Replace a store of another model/dataset/preprocessing.",
    ),
    cut: str = typer.Option(
        "pooled", "--cut",
        help="Split point for a full classifier: pooled, penultimate or a tensor name.",
    ),
    split_dir: Path | None = typer.Option(
        None, "--split-dir",
        help="Where the split F/C files go (default: beside MODEL).",
    ),
    preset: str | None = typer.Option(
        None, "--preset",
        help="Preprocessing preset: imagenet, inception, caffe.",
    ),
    preprocess_json: str | None = typer.Option(
        None, "--preprocess",
        help="Preprocessing overrides as JSON (keys of xnetmap.preprocess).",
    ),
    shard_rows: int | None = typer.Option(
        None, "--shard-rows", hidden=True,
        help="Rows per shard of a new store.",
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary."),
    as_json: bool = typer.Option(False, "--json", help="Print a one-line JSON summary."),
) -> None:
    """Run the feature extractor F of MODEL over DATASET into a resumable feature store."""
    import json
    import time as _time

    from .errors import UsageError
    from .extract import extract_features

    preprocess = None
    if preprocess_json is not None:
        try:
            preprocess = json.loads(preprocess_json)
        except ValueError as err:
            raise UsageError(f"--preprocess is not valid JSON: {err}") from err
        if not isinstance(preprocess, dict):
            raise UsageError("--preprocess must be a JSON object of preprocessing fields")
    if preset is not None:
        preprocess = {**(preprocess or {}), "preset": preset}
    show_bar = not quiet and not as_json and sys.stderr.isatty()
    bar_ctx = None
    callback = None
    if show_bar:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        class _Rate(TextColumn):
            def render(self, task):  # images/s of this run
                speed = task.finished_speed or task.speed
                return TextColumn.render(self, task) if speed is None else f"{speed:,.0f} img/s"

        bar_ctx = Progress(
            TextColumn("extract"), BarColumn(), MofNCompleteColumn(), _Rate(""),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), transient=True,
        )
        task_id = bar_ctx.add_task("extract", total=None)

        def callback(done: int, total: int) -> None:
            bar_ctx.update(task_id, completed=done, total=total)

    t0 = _time.perf_counter()
    if bar_ctx is not None:
        with bar_ctx:
            store = extract_features(
                model, dataset, out, device=device, batch_size=batch_size, workers=workers,
                dtype=dtype, max_bad=max_bad, overwrite=overwrite, preprocess=preprocess,
                cut=cut, split_dir=split_dir, progress=callback, threads=threads,
                shard_rows=shard_rows,
            )
    else:
        store = extract_features(
            model, dataset, out, device=device, batch_size=batch_size, workers=workers,
            dtype=dtype, max_bad=max_bad, overwrite=overwrite, preprocess=preprocess,
            cut=cut, split_dir=split_dir, threads=threads, shard_rows=shard_rows,
        )
    secs = _time.perf_counter() - t0
    run = store.run
    summary = {
        "store": str(out), "n": store.n, "dim": store.dim, "dtype": str(store.dtype),
        "device": run.get("device"), "reused": run["reused"],
        "resumed_shards": run["resumed_shards"], "recomputed_shards": run["recomputed_shards"],
        "computed_rows": run["computed_rows"], "n_bad": run["n_bad"],
        "nonfinite": run["nonfinite"], "zero_norm": run["zero_norm"],
        "seconds": round(secs, 3),
        "images_per_s": round(run["computed_rows"] / secs, 1) if secs > 0 else None,
        "model_sha256": store.model_sha256, "notes": run.get("notes", []),
    }
    if as_json:
        typer.echo(json.dumps(summary, separators=(",", ":")))
        return
    for k in run["recomputed_shards"]:
        _echo_err(f"xnetmap: warning: shard {k} of {out} failed its sha256 check; recomputed it")
    if quiet:
        return
    for note in run.get("notes", []):
        _echo_err(f"xnetmap: note: {note}")
    if run["reused"]:
        typer.echo(f"{out}: complete store reused ({store.n} x {store.dim}, {store.dtype})")
    else:
        rate = summary["images_per_s"]
        typer.echo(
            f"{out}: {store.n} x {store.dim} {store.dtype} features; computed "
            f"{run['computed_rows']} rows in {secs:.1f} s ({rate} img/s), "
            f"{run['resumed_shards']} shard(s) resumed"
        )
    if run["n_bad"]:
        bad = store.manifest.get("bad", [])
        shown = ", ".join(f"{b['id']} ({b['reason']})" for b in bad[:3])
        typer.echo(f"unreadable images: {run['n_bad']} masked (zero rows): {shown}"
                   f"{' ...' if len(bad) > 3 else ''}")
    if run["nonfinite"] or run["zero_norm"]:
        typer.echo(f"warning: {run['nonfinite']} non-finite and {run['zero_norm']} zero-norm "
                   "feature rows (listed in manifest.json)")

# ---- end section: extract -----------------------------------------------------

# ---- section: fit ---------------------------------------------------------------

# ---- end section: fit -----------------------------------------------------------

# ---- section: study (run-study, demo) --------------------------------------------

# ---- end section: study ----------------------------------------------------------

# ---- section: check ----------------------------------------------------------------

# ---- end section: check ------------------------------------------------------------


def main(argv: Optional[list[str]] = None) -> None:
    """Console entry point: run the typer app, map errors to DESIGN.md's exit codes.

    typer (click) handles usage errors itself (exit 2) and ``--help``; an
    ``XnetmapError`` becomes one line on stderr and its own exit code; any other
    exception is a bug: traceback and exit 5.
    """
    from .errors import XnetmapError

    try:
        app(args=argv, prog_name="xnetmap")
    except XnetmapError as err:
        if err.exit_code == 5:
            traceback.print_exc()
            _echo_err("xnetmap: internal error; please report it with the traceback above.")
        else:
            _echo_err(f"xnetmap: error: {err.message}")
        sys.exit(err.exit_code)
    except SystemExit:
        raise
    except Exception:
        traceback.print_exc()
        _echo_err("xnetmap: internal error (a bug); please report it with the traceback above.")
        sys.exit(5)


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    version: bool = typer.Option(False, "--version", help="Print the version and exit."),
) -> None:
    """Do two trained image classifiers extract the same information from images?"""
    if version:
        from . import __version__

        typer.echo(f"xnetmap {__version__}")
        raise typer.Exit(0)
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())
        raise typer.Exit(0)


_ = (Path,)  # Path is used by the command sections
