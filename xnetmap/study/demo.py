"""``xnetmap demo``: the study on the bundled zoo and the bundled Fashion-MNIST.

The zoo (``models/*.onnx``) and the data (``data/fashion-mnist``) ship with the
source tree, next to the ``xnetmap`` package. Maps are fitted on the 20,000
bundled training images and evaluated on the 10,000 test images.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import InputError, XnetmapError
from ..graph import load_model

# Display order and names: the paper's pair first (ResNet-style vs Inception-style).
_ORDER = ("resnet", "inception", "vgg", "mobilenet", "mixer", "vit")
_FAMILY_NAMES = {
    "resnet": "ResNet-v2",
    "inception": "Inception",
    "vgg": "VGG",
    "mobilenet": "MobileNet",
    "mixer": "MLP-Mixer",
    "vit": "ViT",
}


def source_root() -> Path:
    """The source tree holding ``models/`` and ``data/`` (the package's parent folder)."""
    return Path(__file__).resolve().parent.parent.parent


def bundled_models(root: Path | None = None) -> list[Path]:
    """The zoo's classifiers, the ResNet-style and Inception-style models first."""
    root = root or source_root()
    folder = root / "models"
    found = sorted(p for p in folder.glob("*.onnx") if p.name.count(".") == 1)
    if len(found) < 2:
        raise InputError(
            f"the demo needs the bundled zoo in {folder} (found {len(found)} models); "
            "run it from a clone of the repository installed with `pip install -e .`"
        )

    def rank(p: Path) -> tuple[int, str]:
        for k, key in enumerate(_ORDER):
            if p.stem.startswith(key):
                return (k, p.stem)
        return (len(_ORDER), p.stem)

    return sorted(found, key=rank)


def display_name(model_path: Path) -> str:
    """Family name from the model card metadata, else from the file name."""
    for key, name in _FAMILY_NAMES.items():
        if model_path.stem.startswith(key):
            return name
    try:
        model = load_model(model_path, load_external_data=False)
        for prop in model.metadata_props:
            if prop.key == "xnetmap.model_card":
                return str(json.loads(prop.value).get("family", model_path.stem))
    except (XnetmapError, ValueError, AttributeError):
        pass  # no readable model card: the file name
    return model_path.stem


def bundled_data(root: Path | None = None) -> tuple[Path, Path]:
    """(train, val) IDX image files of the bundled Fashion-MNIST."""
    root = root or source_root()
    folder = root / "data" / "fashion-mnist"
    train = folder / "train-images-idx3-ubyte.gz"
    val = folder / "t10k-images-idx3-ubyte.gz"
    for p in (train, val):
        if not p.exists():
            raise InputError(
                f"bundled data file {p} is missing; the demo runs from a clone of the repository"
            )
    return train, val
