"""Label spaces: may the models' own classifiers be compared, and in which class order?

A dataset numbers its classes its own way (sorted folder names, a class-index
file, integer labels). Before any accuracy is counted, every dataset class must
be *placed* on a classifier output; when that cannot be done, the study refuses
(exit 2) instead of counting right answers against the wrong outputs.
"""

from __future__ import annotations

import numpy as np

from ..errors import UsageError

WAYS_OUT = (
    "ways out: --class-index FILE (JSON {name: output index} or two-column text "
    "'name index'); `xnetmap annotate MODEL --labels NAMES.txt` to record the models' "
    "class names; --head probe (run-study) to fit a classifier on your own classes; or "
    "unlabeled:PATH to compare predictions without labels"
)


def shared_labels(infos) -> tuple[str, ...] | None:
    """The first ``xnetmap.labels`` found among the models (ModelInfo), or None."""
    return next((info.labels for info in infos if info.labels), None)


def check_label_space(infos, names, widths) -> None:
    """``--head native`` needs every classifier to speak the same label space.

    Parameters
    ----------
    infos : list of ModelInfo
    names : list of str
    widths : list of int or None
        Each classifier's output width.
    """
    if len(set(widths)) != 1:
        listing = ", ".join(f"{n}: {w}" for n, w in zip(names, widths))
        raise UsageError(
            f"--head native needs a shared label space but the classifiers output different "
            f"numbers of classes ({listing}); use --head probe to fit a linear probe per model"
        )
    known = [(n, info.labels) for n, info in zip(names, infos) if info.labels is not None]
    for n, lab in known[1:]:
        if lab != known[0][1]:
            raise UsageError(
                f"--head native needs a shared label space but {n} and {known[0][0]} carry "
                f"different xnetmap.labels metadata; use --head probe"
            )


def same_output_space(infos, widths) -> bool:
    """True when every classifier has the same known width and no labels disagree."""
    known = [info.labels for info in infos if info.labels is not None]
    return (len(set(widths)) == 1 and None not in widths
            and all(lab == known[0] for lab in known))


def _numeric(names) -> list[int] | None:
    """Class names that are all non-negative integers (``"0"``.. ``"K-1"``), as ints."""
    try:
        values = [int(n) for n in names]
    except (TypeError, ValueError):
        return None
    return values if all(v >= 0 and str(v) == str(n).strip() for v, n in zip(values, names)) \
        else None


def _shown(names, k: int = 6) -> str:
    names = list(names)
    return ", ".join(map(repr, names[:k])) + (f", ... ({len(names)} in all)" if len(names) > k
                                              else "")


def _root_hint(names) -> str:
    if names and {"train", "val"} <= set(names) <= {"train", "val", "test"}:
        return (" NOTE: its only classes are train/val: this looks like a dataset root; "
                "give the train or val folder itself.")
    return ""


def place_classes(ds, width: int | None, model_labels, what: str = "the classifiers"
                  ) -> tuple[np.ndarray | None, list[str]]:
    """Map each class id of a labelled dataset to a classifier output (``--head native``).

    Rules, in order: a class-index file gives output indices explicitly; integer
    labels without names, and numeric class names ``0..K-1`` (folders named by
    index), are output indices; named classes go through the models'
    ``xnetmap.labels``; without labels metadata, named classes are taken in their
    sorted order only when their count equals the output width.

    Parameters
    ----------
    ds : Dataset
        Supplies ``labels``, ``class_names``, ``class_index`` and ``describe()``.
    width : int or None
        The classifiers' output width (None: unknown, not checked).
    model_labels : sequence of str or None
        The models' class names, index = output.

    Returns
    -------
    class_map : ndarray of shape (n_dataset_classes,), int, or None
        Output index of each dataset class id; None = identity.
    notes : list of str
        What was assumed (for the report).

    Raises
    ------
    UsageError
        The classes cannot be placed (exit 2), naming both label spaces and the ways out.
    """
    if ds.labels is None or not len(ds.labels):
        return None, []
    names = list(ds.class_names) if ds.class_names else None
    n_classes = len(names) if names else int(np.max(ds.labels)) + 1
    model_side = (f"{what} have {width if width is not None else 'an unknown number of'} "
                  "outputs" + (f" named {_shown(model_labels)}" if model_labels else
                               " and no xnetmap.labels metadata"))
    data_side = f"{ds.describe()}; its classes: {_shown(names) if names else 'integer ids'}"

    def refuse(why: str):
        raise UsageError(f"cannot place the dataset's classes on the classifier outputs: "
                         f"{why}. Dataset: {data_side}. Model: {model_side}. {WAYS_OUT}."
                         f"{_root_hint(names)}")

    numeric = _numeric(names) if names else list(range(n_classes))
    if getattr(ds, "class_index", None) or numeric is not None:
        index = np.arange(n_classes) if getattr(ds, "class_index", None) else np.array(numeric)
        top = int(index[np.unique(ds.labels)].max())
        if width is not None and top >= width:
            refuse(f"class id {top} is beyond the last output ({width - 1})")
        return (None if np.array_equal(index, np.arange(n_classes)) else index), []
    if model_labels:
        lookup = {n: i for i, n in enumerate(model_labels)}
        unknown = [n for n in names if n not in lookup]
        if unknown:
            refuse(f"classes {_shown(unknown)} are not among the models' labels")
        index = np.array([lookup[n] for n in names], dtype=np.int64)
        return (None if np.array_equal(index, np.arange(n_classes)) else index), []
    if width is not None and n_classes != width:
        refuse(f"the dataset has {n_classes} classes and the classifiers {width} outputs, "
               "and nothing says which output is which class")
    return None, [f"class ids of {ds.location} follow its sorted class names; the models "
                  "carry no xnetmap.labels to confirm that this is their output order"]


def place_on_train(val_ds, train_ds) -> np.ndarray | None:
    """Map val class ids onto the train set's (``--head probe``: the probe learns train's classes).

    Refuses (exit 2) val classes that train does not have or has no sample of:
    no probe could ever predict them.
    """
    if val_ds.labels is None or train_ds.labels is None:
        return None
    v_names = list(val_ds.class_names) if val_ds.class_names else None
    t_names = list(train_ds.class_names) if train_ds.class_names else None
    n_val = len(v_names) if v_names else int(np.max(val_ds.labels)) + 1
    if v_names and t_names and v_names != t_names:
        lookup = {n: i for i, n in enumerate(t_names)}
        index = np.array([lookup.get(n, -1) for n in v_names], dtype=np.int64)
    else:
        index = np.arange(n_val)
    present = set(np.unique(train_ds.labels).tolist())
    used = np.unique(val_ds.labels)
    absent = [int(c) for c in used if index[c] < 0 or int(index[c]) not in present]
    if absent:
        shown = [v_names[c] if v_names else str(c) for c in absent]
        raise UsageError(
            f"--head probe: val classes {_shown(shown)} have no training images in "
            f"{train_ds.describe()}; a probe fitted on train can never predict them. Give train "
            "images of every val class, or leave those classes out of val"
        )
    return None if np.array_equal(index, np.arange(n_val)) else index
