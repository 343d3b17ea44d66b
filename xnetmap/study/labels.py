"""Label spaces: may the models' own classifiers be compared, and in which class order?"""

from __future__ import annotations

import numpy as np

from ..errors import InputError, UsageError


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


def align_labels(labels: np.ndarray, ds, model_labels) -> np.ndarray:
    """Re-index a dataset's labels into the models' class order (``--head native``).

    A folder dataset numbers its classes by sorted folder name, which rarely is the
    order of the classifier's outputs. When the dataset's class names are known and
    all appear in the model's ``xnetmap.labels``, each label is mapped to the
    model's index of its name; names unrelated to the model's (e.g. folders
    ``0``..``9``) are left as they are; a partial overlap is an error.

    Parameters
    ----------
    labels : ndarray of shape (n,), int
        Class ids in the dataset's numbering.
    ds : Dataset
        Supplies ``class_names`` and, for messages, ``describe()``.
    model_labels : sequence of str or None
        The models' class names, index = output.
    """
    names = getattr(ds, "class_names", None)
    if not names or not model_labels or list(names) == list(model_labels):
        return labels
    index = {n: i for i, n in enumerate(model_labels)}
    unknown = [n for n in names if n not in index]
    if len(unknown) == len(names):
        return labels
    if unknown:
        raise InputError(
            f"{ds.describe()}: classes {unknown[:5]} are not among the models' labels "
            f"({', '.join(list(model_labels)[:5])}...); give val images of the models' classes, "
            "or use --head probe"
        )
    perm = np.array([index[n] for n in names], dtype=np.int64)
    return perm[labels]
