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

import typer

app = typer.Typer(
    name="xnetmap",
    help="Do two trained image classifiers extract the same information from images?",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion, as typer offers
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

#: DESIGN.md's exit codes, the epilogue of every command's --help.
EXIT_CODES = (
    "Exit codes: 0 success / equivalent · 1 verification failed / not equivalent · "
    "2 usage, configuration or input error · 3 model rejected · "
    "4 too many unreadable images (over --max-bad) · 5 internal error (a bug)"
)

#: One extraction batch size for extract, run-study and check (StudySettings.batch_size).
BATCH_SIZE = 128

#: AffineMap's defaults for the map options of fit and run-study (a test keeps them equal).
FIT_DEFAULTS = {"epochs": 20, "lr": 0.3, "calibrate": "scalar", "init": "lstsq"}


def _command(name: str):
    """``app.command`` with the exit-code epilogue."""
    return app.command(name, epilog=EXIT_CODES)


def _emit_json(payload, where: Path | None = None) -> None:
    """JSON to stdout (``where`` None or ``-``) or to the file ``where`` (atomically)."""
    import json

    text = json.dumps(payload, indent=2, default=str) + "\n"
    if where is None or str(where) == "-":
        typer.echo(text, nl=False)
    else:
        from .fsutil import atomic_write_text

        atomic_write_text(where, text)


def _progress(quiet: bool):
    """The step renderer for run-study, check and demo (silent with --quiet)."""
    from .progress import StepProgress

    return StepProgress(enabled=not quiet)


def _echo_err(message: str) -> None:
    typer.echo(message, err=True)


# Preprocessing flags shared by annotate and extract (xnetmap.preprocess fields).
_PRE_OPTS = {
    "preset": typer.Option(
        None, "--preset", help="Preprocessing preset: imagenet, inception, caffe."
    ),
    "size": typer.Option(None, "--size", help="Input size: H or H,W."),
    "resize": typer.Option(
        None, "--resize", help="Shorter side before cropping, or 'none' (resize to size)."
    ),
    "crop": typer.Option(None, "--crop", help="center or none."),
    "interpolation": typer.Option(None, "--interpolation", help="bilinear, bicubic or nearest."),
    "colour": typer.Option(None, "--colour", "--color", help="L or RGB."),
    "channel_order": typer.Option(None, "--channel-order", help="RGB or BGR."),
    "layout": typer.Option(None, "--layout", help="NCHW or NHWC."),
    "scale": typer.Option(
        None, "--scale", help="Multiply 0..255 pixels by this first (e.g. 1/255)."
    ),
    "mean": typer.Option(None, "--mean", help="Per-channel mean, comma-separated."),
    "std": typer.Option(None, "--std", help="Per-channel std, comma-separated."),
}


_CLASS_INDEX_HELP = (
    "Class-index file placing the dataset's classes on the classifier outputs: JSON "
    "{name: output index} (or a list of names), or text 'name index' per line. Without "
    "it, numeric class folders 0..K-1 and integer labels are output indices, and named "
    "classes go through the models' xnetmap.labels (see `xnetmap annotate --labels`).")
_CLASS_INDEX_OPT = typer.Option(None, "--class-index", help=_CLASS_INDEX_HELP)
_STRICT_OPT = typer.Option(False, "--strict", help="Refuse (exit 2) when train and val share "
                           "images (by content), instead of a warning.")


def _shown(path) -> str:
    """A path as the user would type it: relative to the current folder when inside it."""
    import os

    p = Path(path)
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return os.fspath(p)


# ---- section: graph (inspect, split, stitch) -------------------------------


@_command("inspect")
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


@_command("split")
def split_cmd(
    model: Path = typer.Argument(..., help="ONNX classifier to split."),
    out_dir: Path | None = typer.Option(
        None, "-o", "--out", help="Output folder (never the model's own folder unless given).",
        show_default="a folder of the xnetmap cache named by the model's digest and the cut",
    ),
    cut: str = typer.Option("pooled", "--cut", help="pooled, penultimate, or a tensor name."),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="Certify C(F(x)) == model(x)."),
    samples: int = typer.Option(8, "--samples", min=1, help="Certificate inputs."),
    images: Path | None = typer.Option(
        None, "--images", help="Certify on images from this folder."
    ),
    atol: float | None = typer.Option(None, "--atol", help="Absolute tolerance (by dtype).",
                                      show_default="by dtype"),
    rtol: float | None = typer.Option(None, "--rtol", help="Relative tolerance (by dtype).",
                                      show_default="by dtype"),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Split a classifier into NAME.features.onnx (F) and NAME.classifier.onnx (C)."""
    from .errors import VerificationFailed
    from .graph import split_model
    from .graph.split_cache import split_cached

    options = dict(cut=cut, verify=verify, samples=samples, images=images, atol=atol, rtol=rtol)
    try:
        if out_dir is None:
            result = split_cached(model, **options)
        else:
            result = split_model(model, out_dir, **options)
    except VerificationFailed as err:
        _echo_err(f"xnetmap: certificate FAILED: {err.message}")
        raise typer.Exit(err.exit_code) from None
    if as_json:
        _emit_json({
            "features": str(result.features_path), "classifier": str(result.classifier_path),
            "record": str(result.json_path), "cut": result.cut, "cut_tensor": result.cut_tensor,
            "feature_dim": result.feature_dim, "outputs": list(result.output_names),
            "certificate": result.certificate,
        })
        return
    typer.echo(f"features   {_shown(result.features_path)}  [N, {result.feature_dim}]")
    typer.echo(
        f"classifier {_shown(result.classifier_path)}  -> {', '.join(result.output_names)}"
    )
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
    typer.echo(f"record     {_shown(result.json_path)}")


# ---- end section: graph -----------------------------------------------------

# ---- section: data (annotate) ------------------------------------------------


@_command("annotate")
def annotate_cmd(
    model: Path = typer.Argument(..., help="The ONNX model to annotate."),
    out: Path | None = typer.Option(
        None, "-o", "--out", help="Write the annotated copy here."
    ),
    in_place: bool = typer.Option(False, "--in-place", help="Overwrite MODEL instead."),
    preset: str | None = _PRE_OPTS["preset"],
    size: str | None = _PRE_OPTS["size"],
    resize: str | None = _PRE_OPTS["resize"],
    crop: str | None = _PRE_OPTS["crop"],
    interpolation: str | None = _PRE_OPTS["interpolation"],
    colour: str | None = _PRE_OPTS["colour"],
    channel_order: str | None = _PRE_OPTS["channel_order"],
    layout: str | None = _PRE_OPTS["layout"],
    scale: str | None = _PRE_OPTS["scale"],
    mean: str | None = _PRE_OPTS["mean"],
    std: str | None = _PRE_OPTS["std"],
    labels: str | None = typer.Option(
        None, "--labels", help="Class names, one per line (sets xnetmap.labels); "
        "'imagenet': the bundled ImageNet-1k list.",
    ),
) -> None:
    """Write preprocessing (xnetmap.preprocess) and class names into MODEL's metadata."""
    from .data.preprocess import overrides_from_strings
    from .graph import annotate_model

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


_ENGINE_OPT = typer.Option(
    "local", "--engine",
    help="Extraction engine: local (threads here) or ray (a Ray cluster; pip install "
    "'xnetmap\\[ray]'). With ray, --workers is the number of actors.",
)
_RAY_ADDRESS_OPT = typer.Option(
    None, "--ray-address",
    help="Ray cluster to join (auto, HOST:PORT, ray://HOST:PORT); default: start one here.",
    show_default="a new local cluster",
)


@_command("extract")
def extract_cmd(
    model: Path = typer.Argument(..., help="Full classifier .onnx (split on the fly) or "
                                 "NAME.features.onnx."),
    dataset: str = typer.Argument(..., help="Dataset path or kind:path (folder, flat, idx, "
                                  "npz, npy, unlabeled)."),
    out: Path = typer.Option(..., "-o", "--out",
                             help="Feature store directory (created; resumed if present)."),
    device: str = typer.Option("cpu", "--device",
                               help="cpu, cuda or auto. cuda without a GPU is an error."),
    batch_size: int = typer.Option(BATCH_SIZE, "--batch-size",
                                   help="Images per onnxruntime call."),
    workers: int | None = typer.Option(
        None, "--workers", help="Decode/preprocess threads.", show_default="cores",
    ),
    threads: int | None = typer.Option(
        None, "--threads", help="onnxruntime intra-op threads.", show_default="cores",
    ),
    dtype: str = typer.Option("float32", "--dtype", help="Storage type: float32 or float16."),
    max_bad: float = typer.Option(0.0, "--max-bad",
                                  help="Largest allowed fraction of unreadable images."),
    overwrite: bool = typer.Option(False, "--overwrite",
                                   help="Replace a store of another model/dataset/preprocessing."),
    cut: str = typer.Option("pooled", "--cut", help="Split point for a full classifier: "
                            "pooled, penultimate or a tensor name."),
    split_dir: Path | None = typer.Option(
        None, "--split-dir", help="Where the split F/C files go (never MODEL's folder).",
        show_default="the xnetmap cache",
    ),
    preset: str | None = _PRE_OPTS["preset"],
    size: str | None = _PRE_OPTS["size"],
    resize: str | None = _PRE_OPTS["resize"],
    crop: str | None = _PRE_OPTS["crop"],
    interpolation: str | None = _PRE_OPTS["interpolation"],
    colour: str | None = _PRE_OPTS["colour"],
    channel_order: str | None = _PRE_OPTS["channel_order"],
    layout: str | None = _PRE_OPTS["layout"],
    scale: str | None = _PRE_OPTS["scale"],
    mean: str | None = _PRE_OPTS["mean"],
    std: str | None = _PRE_OPTS["std"],
    shard_rows: int | None = typer.Option(None, "--shard-rows", hidden=True,
                                          help="Rows per shard of a new store."),
    class_index: Path | None = _CLASS_INDEX_OPT,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary."),
    as_json: bool = typer.Option(False, "--json", help="Print a one-line JSON summary."),
    engine: str = _ENGINE_OPT,
    ray_address: str | None = _RAY_ADDRESS_OPT,
) -> None:
    """Run the feature extractor F of MODEL over DATASET into a resumable feature store."""
    import time as _time

    from .data.preprocess import overrides_from_strings
    from .extract import extract_features

    preprocess = overrides_from_strings(
        size=size, resize=resize, crop=crop, interpolation=interpolation, colour=colour,
        channel_order=channel_order, layout=layout, scale=scale, mean=mean, std=std,
    )
    if preset is not None:
        preprocess["preset"] = preset
    if not quiet:
        _warn_split_folders(dataset)
    if class_index is not None:
        from .data import open_dataset

        dataset = open_dataset(dataset, class_index=class_index)
    bar, callback = _extract_bar(not quiet and not as_json and sys.stderr.isatty())
    t0 = _time.perf_counter()
    with bar:
        store = extract_features(
            model, dataset, out, device=device, batch_size=batch_size, workers=workers,
            dtype=dtype, max_bad=max_bad, overwrite=overwrite, preprocess=preprocess or None,
            cut=cut, split_dir=split_dir, progress=callback, threads=threads,
            shard_rows=shard_rows, engine=engine, ray_address=ray_address,
        )
    _print_extract(store, out, _time.perf_counter() - t0, quiet=quiet, as_json=as_json)


def _extract_bar(show: bool):
    """(context, callback): a rich bar with img/s and ETA on a terminal, else nothing."""
    import contextlib

    if not show:
        return contextlib.nullcontext(), None
    from rich.console import Console
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

    bar = Progress(
        TextColumn("extract"), BarColumn(), MofNCompleteColumn(), _Rate(""),
        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), transient=True,
        console=Console(stderr=True),
    )
    task_id = bar.add_task("extract", total=None)

    def callback(done: int, total: int) -> None:
        bar.update(task_id, completed=done, total=total)

    return bar, callback


def _print_extract(store, out: Path, secs: float, *, quiet: bool, as_json: bool) -> None:
    """What ``xnetmap extract`` says about the store it made or reused."""
    import json

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
        typer.echo(
            f"{out}: {store.n} x {store.dim} {store.dtype} features; computed "
            f"{run['computed_rows']} rows in {secs:.1f} s ({summary['images_per_s']} img/s), "
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


#: Folder names that name a dataset's split, not a class.
_SPLIT_NAMES = {"train", "training", "val", "valid", "validation", "test", "testing", "dev"}


def _warn_split_folders(dataset: str) -> None:
    """Warn when an image-folder dataset's class folders look like split names (train/val)."""
    kind, _, rest = dataset.partition(":")
    path = Path(rest if kind == "folder" else dataset)
    if kind not in ("folder", dataset) or not path.is_dir():
        return
    subdirs = sorted(d.name for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
    if len(subdirs) >= 2 and {d.lower() for d in subdirs} <= _SPLIT_NAMES:
        _echo_err(
            f"xnetmap: warning: the class folders of {dataset} are {', '.join(subdirs)}: these "
            f"look like dataset splits, not classes; did you mean {path / subdirs[0]}?"
        )

# ---- end section: extract -----------------------------------------------------

# ---- section: fit ---------------------------------------------------------------


@_command("fit")
def fit_cmd(
    source_store: Path = typer.Argument(..., help="Feature store of the source network A."),
    target_store: Path = typer.Argument(..., help="Feature store of the target network B."),
    out: Path = typer.Option(..., "-o", "--out", help="Map file to write (.npz)."),
    solver: str = typer.Option(
        "gd", "--solver",
        help="gd (the paper's cosine-loss gradient descent), lstsq, ridge or procrustes.",
    ),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or auto (gd only)."),
    epochs: int = typer.Option(20, "--epochs", help="Maximum gd epochs (early stopping)."),
    batch_size: int | None = typer.Option(
        None, "--batch-size", help="gd minibatch rows (default: n_train/16 within 256..8192).",
    ),
    lr: float = typer.Option(
        FIT_DEFAULTS["lr"], "--lr",
        help="gd step, dimensionless (times the curvature step ||y||^2/2).",
    ),
    average: bool = typer.Option(
        True, "--average/--last-iterate",
        help="gd keeps the mean of each epoch's iterates (default) or the last one.",
    ),
    seed: int = typer.Option(0, "--seed", help="Seeds the held-out split and batch order."),
    init: str = typer.Option("lstsq", "--init", help="gd start: lstsq or zero."),
    calibrate: str = typer.Option(
        "scalar", "--calibrate",
        help="Output length: scalar (global least-squares scale, default), norm or none.",
    ),
    holdout: float = typer.Option(0.1, "--holdout", help="Held-out fraction for early stopping."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No per-epoch lines."),
    as_json: bool = typer.Option(False, "--json", help="Print a one-line JSON summary."),
) -> None:
    """Fit the affine map SOURCE_STORE features -> TARGET_STORE features into a map file."""
    import json
    import math
    from numbers import Real

    from .fit import fit_map

    def progress(rec: dict) -> None:
        _echo_err(f"epoch {rec['epoch']}: train loss {rec['train_loss']:.6f}, held-out "
                  f"{rec['holdout_loss']:.6f}, lr {rec['lr']:.3g}, {rec['seconds']:.1f} s")

    amap = fit_map(
        source_store, target_store, out, solver=solver, device=device, epochs=epochs,
        batch_size=batch_size, lr=lr, average=average, seed=seed, init=init,
        calibrate=calibrate, holdout=holdout, progress=None if (quiet or as_json) else progress,
    )
    m = amap.metrics_
    summary = {"map": str(out), "solver": solver, "d_in": amap.n_features_in_,
               "d_out": amap.n_features_out_, "calibration": amap.calibration_["mode"],
               "scale": amap.calibration_.get("scale"), "loss": m["loss"],
               "cosine": m["cosine"], "r2": m["r2"], "metrics_on": m.get("on"),
               "n_train": amap.info_["n_train"], "n_holdout": amap.info_["n_holdout"],
               "n_masked": amap.info_.get("n_masked", 0),
               "n_zero_target_rows": amap.info_["n_zero_target_rows"],
               "epochs_run": len(amap.history_), "seconds": amap.info_["fit_seconds"]}
    if as_json:  # NaN/inf (r2 of a constant target) is not JSON: null
        typer.echo(json.dumps({k: None if isinstance(v, Real) and not math.isfinite(v) else v
                               for k, v in summary.items()}))
    elif not quiet:
        typer.echo(
            f"wrote {out}: {solver} map {amap.n_features_in_} -> {amap.n_features_out_}, "
            f"{m.get('on', 'holdout')} loss {m['loss']:.6f}, cosine {m['cosine']:.5f}, "
            f"R2 {m['r2']:.4f} ({summary['n_train']:,} train / {summary['n_holdout']:,} "
            f"held-out rows, {summary['n_masked']} masked, {summary['seconds']:.1f} s)"
        )

# ---- end section: fit -----------------------------------------------------------

# ---- section: study (run-study, demo) --------------------------------------------


def _study_settings(head, cut, solver, device, batch_size, workers, max_bad, bootstrap, seed,
                    epochs, lr, calibrate, init, engine="local", ray_address=None):
    from .study.settings import StudySettings

    # Only settings that differ from AffineMap's defaults enter StudySettings.fit, so that a
    # study run with the defaults shares its cached maps with check and the library.
    given = {"epochs": epochs, "lr": lr, "calibrate": calibrate, "init": init}
    fit = {k: v for k, v in given.items() if v != FIT_DEFAULTS[k]}
    return StudySettings(head=head, cut=cut, solver=solver, fit=fit, device=device,
                         batch_size=batch_size, workers=workers, max_bad=max_bad,
                         n_boot=bootstrap, seed=seed, engine=engine, ray_address=ray_address)


def _write_study(outcome, out: Path, loss_range: float | None = None) -> dict:
    """Write the study's reports and maps into ``out`` (the library only returns values)."""
    from .report.study_files import write_study

    return write_study(outcome.study, outcome.map_files, out, loss_range=loss_range)


def _print_study(outcome, reports: dict, *, json_out: bool, table_pair=None) -> None:
    from .report import format_matrix, format_table1

    study = outcome.study
    if json_out:
        import json

        typer.echo(json.dumps({
            "report": {k: str(v) for k, v in reports.items()},
            "seconds": outcome.seconds,
            "models": [m.name for m in study.models],
        }))
        return
    shown = study
    if table_pair is not None and len(study.models) > 2:
        shown = _sub_study(study, table_pair)
    typer.echo(format_table1(shown))
    if len(shown.models) == 2:
        typer.echo("")
        for pair in shown.pairs:
            typer.echo(_pair_line(shown, pair))
    if len(study.models) > 2 and study.labelled:
        typer.echo("")
        typer.echo("Native top-1 (each model's own classifier): " + ", ".join(
            f"{study.codes[m.name]} {m.name} {m.percent:.1f}%" for m in study.models))
    if len(study.models) > 2:
        for attribute in ("loss", "agreement", "cka"):
            if attribute != "loss" or study.labelled:
                typer.echo("")
                typer.echo(format_matrix(study, attribute))
    typer.echo("")
    out = reports.get("report.md")
    if out is not None:
        typer.echo(f"reports: {Path(out).parent}/report.md, report.html, report.json, results.csv")


def _pair_line(study, pair) -> str:
    codes = study.codes
    parts = [f"{codes[pair.source]} → {codes[pair.target]}:"]
    if pair.loss is not None:
        ci = f" [95% CI {pair.loss_ci[0]:.1f}, {pair.loss_ci[1]:.1f}]" if pair.loss_ci else ""
        # An interval that spans 0 is no measurable difference, whatever the point's sign.
        if pair.loss_ci and pair.loss_ci[0] <= 0 <= pair.loss_ci[1]:
            ci += " (no measurable difference)"
        parts.append(f"loss {pair.loss:.1f}{ci},")
    if pair.agreement is not None:
        parts.append(f"agreement {100 * pair.agreement:.1f}%,")
    if pair.mcnemar_p is not None:
        parts.append(f"McNemar p={pair.mcnemar_p:.2g},")
    if pair.cka is not None:
        parts.append(f"CKA {pair.cka:.3f},")
    if pair.fit_cosine is not None:
        parts.append(f"map held-out cosine {pair.fit_cosine:.3f}")
    return " ".join(parts).rstrip(",")


def _sub_study(study, names):
    from dataclasses import replace

    models = [m for m in study.models if m.name in names]
    pairs = [p for p in study.pairs if p.source in names and p.target in names]
    return replace(study, models=models, pairs=pairs)


_CACHE_OPT = typer.Option(
    None, "--cache", help="Cache folder for splits, features and maps.",
    show_default="$XNETMAP_CACHE, else the user cache folder, e.g. ~/.cache/xnetmap")

_LOSS_RANGE_OPT = typer.Option(
    None, "--loss-range", help="Fix the loss colour scale to ±R points, so that figures of "
    "several studies compare (default: from the data).")

_STUDY_OPTS = {
    "head": typer.Option("native", "--head", help="native: the models' own classifiers; "
                         "probe: a softmax probe per model (different label sets)."),
    "cut": typer.Option("pooled", "--cut", help="pooled or penultimate."),
    "solver": typer.Option("gd", "--solver", help="gd (the paper's), lstsq, ridge, procrustes."),
    "device": typer.Option("cpu", "--device", help="cpu, cuda or auto."),
}


@_command("run-study")
def run_study_cmd(
    models: list[Path] = typer.Argument(..., help="Two or more ONNX classifiers."),
    train: str | None = typer.Option(None, "--train", help="Training images for the maps "
                                        "(path or kind:path; labels not needed)."),
    val: str = typer.Option(..., "--val", help="Validation images (path or kind:path)."),
    out: Path = typer.Option(Path("xnetmap-study"), "-o", "--out", help="Report folder."),
    names: str | None = typer.Option(None, "--names", help="Comma-separated display names.",
                                     show_default="the file names"),
    head: str = _STUDY_OPTS["head"],
    cut: str = _STUDY_OPTS["cut"],
    solver: str = _STUDY_OPTS["solver"],
    device: str = _STUDY_OPTS["device"],
    cache: Path | None = _CACHE_OPT,
    loss_range: float | None = _LOSS_RANGE_OPT,
    batch_size: int = typer.Option(BATCH_SIZE, "--batch-size", help="Extraction batch size."),
    workers: int | None = typer.Option(None, "--workers", help="Decode threads.",
                                       show_default="cores"),
    max_bad: float = typer.Option(0.0, "--max-bad", help="Allowed fraction of unreadable images."),
    epochs: int = typer.Option(FIT_DEFAULTS["epochs"], "--epochs",
                               help="Maximum gd epochs (early stopping)."),
    lr: float = typer.Option(FIT_DEFAULTS["lr"], "--lr",
                             help="gd step, dimensionless (as fit's --lr)."),
    calibrate: str = typer.Option(FIT_DEFAULTS["calibrate"], "--calibrate",
                                  help="none, scalar or norm."),
    init: str = typer.Option(FIT_DEFAULTS["init"], "--init", help="gd start: zero or lstsq."),
    bootstrap: int = typer.Option(1000, "--bootstrap", help="Bootstrap resamples for the CI."),
    seed: int = typer.Option(0, "--seed", help="Seeds the map fits and the bootstrap."),
    class_index: Path | None = _CLASS_INDEX_OPT,
    engine: str = _ENGINE_OPT,
    ray_address: str | None = _RAY_ADDRESS_OPT,
    strict: bool = _STRICT_OPT,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or step lines."),
    json_out: bool = typer.Option(False, "--json", help="Print a one-line JSON summary."),
) -> None:
    """The paper's Table 1 for any set of models: split, extract, fit maps, evaluate, report."""
    from .study.run import run_study

    settings = _study_settings(head, cut, solver, device, batch_size, workers, max_bad,
                               bootstrap, seed, epochs, lr, calibrate, init, engine, ray_address)
    with _progress(quiet) as progress:
        outcome = run_study(
            models, val=val, train=train,
            names=[n.strip() for n in names.split(",")] if names else None,
            settings=settings, cache_dir=cache, class_index=class_index, strict=strict,
            progress=progress,
        )
    _print_notes(outcome.study.notes)
    _print_study(outcome, _write_study(outcome, out, loss_range), json_out=json_out)


def _print_notes(notes) -> None:
    """Each note of a run once, on stderr (warnings included, even with --quiet)."""
    for note in notes:
        _echo_err(f"xnetmap: {note}" if note.startswith("warning:") else f"xnetmap: note: {note}")


@_command("demo")
def demo_cmd(
    out: Path = typer.Option(Path("xnetmap-demo"), "-o", "--out", help="Report folder."),
    train: str | None = typer.Option(None, "--train", help="Training images for the maps "
                                        "(default: the 20,000 bundled ones)."),
    solver: str = _STUDY_OPTS["solver"],
    device: str = _STUDY_OPTS["device"],
    cache: Path | None = _CACHE_OPT,
    loss_range: float | None = _LOSS_RANGE_OPT,
    class_index: Path | None = _CLASS_INDEX_OPT,
    engine: str = _ENGINE_OPT,
    ray_address: str | None = _RAY_ADDRESS_OPT,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or step lines."),
    json_out: bool = typer.Option(False, "--json", help="Print a one-line JSON summary."),
) -> None:
    """Run the study on the bundled zoo and Fashion-MNIST; print Table 1 and the matrices."""
    from .study.demo import bundled_data, bundled_models, display_name
    from .study.run import run_study
    from .study.settings import StudySettings

    models = bundled_models()
    names = [display_name(m) for m in models]
    bundled_train, val = bundled_data()
    with _progress(quiet) as progress:
        outcome = run_study(
            models, val=str(val), train=train or str(bundled_train), names=names,
            settings=StudySettings(solver=solver, device=device, engine=engine,
                                   ray_address=ray_address), cache_dir=cache,
            class_index=class_index, progress=progress,
        )
    _print_notes(outcome.study.notes)
    reports = _write_study(outcome, out, loss_range)
    if not json_out:
        typer.echo(f"Table 1 on Fashion-MNIST test (10,000 images): {names[0]} vs {names[1]}")
    _print_study(outcome, reports, json_out=json_out, table_pair=names[:2])


@_command("stitch")
def stitch_cmd(
    model_a: Path = typer.Argument(..., help="Source classifier A (or A.features.onnx)."),
    model_b: Path = typer.Argument(..., help="Target classifier B (or B.classifier.onnx)."),
    map_file: Path = typer.Argument(..., help="Map fitted from A to B (.npz)."),
    out: Path = typer.Option(..., "-o", "--out", help="Stitched ONNX model to write."),
    cut: str = _STUDY_OPTS["cut"],
    split_dir: Path | None = typer.Option(None, "--split-dir", help="Where to cache splits.",
                                          show_default="the xnetmap cache"),
    any_map: bool = typer.Option(False, "--any-map", help="Stitch even when the map records "
                                 "other source/target model digests."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Write one ONNX model F_A → M_{A→B} → C_B."""
    from .fit.stitch import stitch_models

    path = stitch_models(model_a, model_b, map_file, out, split_dir=split_dir, cut=cut,
                         check_digests=not any_map)
    if as_json:
        _emit_json({"stitched": str(path), "source": str(model_a), "target": str(model_b),
                    "map": str(map_file), "cut": cut})
        return
    typer.echo(f"wrote {path}: F of {model_a.name} -> map {map_file.name} -> C of {model_b.name}")

# ---- end section: study ----------------------------------------------------------

# ---- section: check ----------------------------------------------------------------

#: check's gates when no threshold is given (xnetmap.check.policy.DEFAULT_THRESHOLDS, which a
#: test keeps equal; not imported here so that --help stays instant).
_CHECK_DEFAULTS = {"min_agreement": 99.0, "max_acc_drop": 0.5, "max_loss": 1.0}


def _gate_default(name: str) -> str:
    if name in _CHECK_DEFAULTS:
        return f"{_CHECK_DEFAULTS[name]:g} when no threshold is given"
    return "not gated"



@_command("check")
def check_cmd(
    reference: Path = typer.Argument(..., help="Reference ONNX classifier."),
    candidate: Path = typer.Argument(..., help="Candidate ONNX classifier."),
    val: str = typer.Option(..., "--val", help="Validation images (path or kind:path)."),
    train: str | None = typer.Option(None, "--train", help="Training images: enables the "
                                        "map-based comparison (needed when outputs differ)."),
    policy: Path | None = typer.Option(None, "--policy", help="TOML policy file."),
    max_loss: float | None = typer.Option(
        None, "--max-loss", help="Max stitched loss, points (needs --train).",
        show_default=_gate_default("max_loss")),
    min_agreement: float | None = typer.Option(
        None, "--min-agreement", help="Min top-1 agreement, %.",
        show_default=_gate_default("min_agreement")),
    max_acc_drop: float | None = typer.Option(
        None, "--max-acc-drop", help="Max accuracy drop, points.",
        show_default=_gate_default("max_acc_drop")),
    max_abs_diff: float | None = typer.Option(
        None, "--max-abs-diff", help="Max absolute output difference.",
        show_default=_gate_default("max_abs_diff")),
    min_cka: float | None = typer.Option(None, "--min-cka", help="Min linear CKA.",
                                         show_default=_gate_default("min_cka")),
    baseline: Path | None = typer.Option(None, "--baseline", help="Golden baseline to compare."),
    save_baseline: Path | None = typer.Option(None, "--save-baseline",
                                                 help="Write this run's metrics as a baseline."),
    json_file: Path | None = typer.Option(
        None, "--json", help="Write the result as JSON to this file ('-': stdout; the text "
        "summary then goes to stderr)."),
    junit: Path | None = typer.Option(
        None, "--junit", help="Write JUnit XML (one test case per metric)."
    ),
    cache: Path | None = _CACHE_OPT,
    solver: str = _STUDY_OPTS["solver"],
    device: str = _STUDY_OPTS["device"],
    cut: str = _STUDY_OPTS["cut"],
    batch_size: int = typer.Option(BATCH_SIZE, "--batch-size", help="Extraction batch size."),
    max_bad: float = typer.Option(0.0, "--max-bad", help="Allowed fraction of unreadable images."),
    class_index: Path | None = _CLASS_INDEX_OPT,
    engine: str = _ENGINE_OPT,
    ray_address: str | None = _RAY_ADDRESS_OPT,
    strict: bool = _STRICT_OPT,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or step lines."),
) -> None:
    """CI gate: is CANDIDATE still functionally equivalent to REFERENCE? Exit 0 pass, 1 fail."""
    from . import check as chk
    from .study.settings import StudySettings

    pol = chk.load_policy(policy, max_loss=max_loss, min_agreement=min_agreement,
                          max_acc_drop=max_acc_drop, max_abs_diff=max_abs_diff, min_cka=min_cka)
    settings = StudySettings(cut=cut, solver=solver, device=device, batch_size=batch_size,
                             max_bad=max_bad, engine=engine, ray_address=ray_address)
    with _progress(quiet) as progress:
        result = chk.check_models(
            reference, candidate, val=val, train=train, policy=pol, baseline=baseline,
            settings=settings, cache_dir=cache, class_index=class_index, strict=strict,
            progress=progress,
        )
    json_stdout = json_file is not None and str(json_file) == "-"
    typer.echo(chk.format_summary(result), err=json_stdout)
    if json_stdout:
        _emit_json(result.to_dict())
    elif json_file is not None:
        chk.write_json(result, json_file)
    if junit is not None:
        chk.write_junit(result, junit)
    if save_baseline is not None:
        chk.save_baseline(result, save_baseline)
        typer.echo(f"baseline written to {save_baseline}", err=json_stdout)
    raise typer.Exit(0 if result.passed else 1)

# ---- end section: check ------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
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
    version: bool = typer.Option(False, "--version", "-V", help="Print the version and exit."),
) -> None:
    """Do two trained image classifiers extract the same information from images?"""
    if version:
        from . import __version__

        typer.echo(f"xnetmap {__version__}")
        raise typer.Exit(0)
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())
        raise typer.Exit(0)

