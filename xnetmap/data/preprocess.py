"""Preprocessing that travels with the model (``xnetmap.preprocess`` metadata).

One :class:`PreprocessSpec` turns a decoded image into the network's input
tensor, in this order:

1. convert to ``colour`` (``"L"``: ITU-R 601-2 luma, Pillow's conversion; ``"RGB"``);
2. ``resize`` not null: scale the shorter side to ``resize`` keeping the aspect
   ratio (longer side ``int(resize * long / short)``, torchvision's rule);
   ``resize`` null: scale the whole image straight to ``size`` unless ``crop``
   is ``"center"`` (then the crop is taken from the original);
3. ``crop == "center"``: centre crop to ``size`` (top ``round((h - H) / 2)``,
   torchvision's rule; zero padding where the image is smaller);
4. channel order (``"BGR"`` reverses RGB), then ``x * scale``, then
   ``(x - mean) / std`` per channel (``mean``/``std`` are listed in the output
   channel order, so caffe's BGR mean reads ``[103.939, 116.779, 123.68]``);
5. layout: ``NCHW`` -> array (C, H, W); ``NHWC`` -> (H, W, C); float32.

Resizing uses Pillow (antialiased, as torchvision does for PIL images); the
arithmetic is one vectorised multiply-add in NumPy.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InputError, UsageError
from .decode import MAX_PIXELS

SCHEMA_VERSION = 1
PREPROCESS_KEY = "xnetmap.preprocess"
LABELS_KEY = "xnetmap.labels"
_FIELDS = ("size", "resize", "crop", "interpolation", "colour", "channel_order", "layout",
           "scale", "mean", "std")


@dataclass(frozen=True)
class PreprocessSpec:
    """How to turn an image into a network input (schema: contracts / DESIGN.md).

    Parameters
    ----------
    size : tuple (H, W)
        Network input spatial size.
    resize : int or None
        Shorter side resized to this before cropping; None = resize straight to ``size``.
    crop : {"center", "none"}
    interpolation : {"bilinear", "bicubic", "nearest"}
    colour : {"L", "RGB"}
    channel_order : {"RGB", "BGR"}
    layout : {"NCHW", "NHWC"}
    scale : float
        Pixel value 0..255 multiplied by this first.
    mean, std : tuple of float, one per channel (in output channel order)
    """

    size: tuple[int, int]
    resize: int | None = None
    crop: str = "none"
    interpolation: str = "bilinear"
    colour: str = "RGB"
    channel_order: str = "RGB"
    layout: str = "NCHW"
    scale: float = 1.0 / 255.0
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    _affine: Any = field(default=None, init=False, repr=False, compare=False)
    _lut: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        size = self.size
        if isinstance(size, (int, np.integer)):
            size = (int(size), int(size))
        try:
            size = tuple(int(v) for v in size)
        except (TypeError, ValueError) as err:
            raise InputError(f"preprocess size {self.size!r} is not [H, W]") from err
        if len(size) != 2 or min(size) <= 0:
            raise InputError(f"preprocess size {self.size!r} must be two positive integers [H, W]")
        if size[0] * size[1] > MAX_PIXELS:  # the decoder's own limit: never build more
            raise InputError(
                f"preprocess size {list(size)} is {size[0] * size[1]:,} pixels, over the limit "
                f"of {MAX_PIXELS:,}; use a smaller --size"
            )
        object.__setattr__(self, "size", size)
        if self.resize is not None:
            if int(self.resize) <= 0:
                raise InputError(f"preprocess resize {self.resize!r} must be positive or null")
            object.__setattr__(self, "resize", int(self.resize))
        for name, allowed in (("crop", ("center", "none")),
                              ("interpolation", ("bilinear", "bicubic", "nearest")),
                              ("colour", ("L", "RGB")), ("channel_order", ("RGB", "BGR")),
                              ("layout", ("NCHW", "NHWC"))):
            value = getattr(self, name)
            if value not in allowed:
                raise InputError(f"preprocess {name} {value!r} is not one of {', '.join(allowed)}")
        channels = 1 if self.colour == "L" else 3
        scale = float(self.scale)
        if not math.isfinite(scale) or scale == 0:
            raise InputError(f"preprocess scale {self.scale!r} must be a finite non-zero number")
        object.__setattr__(self, "scale", scale)
        for name in ("mean", "std"):
            raw = getattr(self, name)
            vals = (raw,) if isinstance(raw, (int, float)) else tuple(raw)
            try:
                vals = tuple(float(v) for v in vals)
            except (TypeError, ValueError) as err:
                raise InputError(f"preprocess {name} {raw!r} is not a list of numbers") from err
            if len(vals) == 1 and channels == 3:
                vals = vals * 3
            if len(vals) == 3 and channels == 1 and len(set(vals)) == 1:
                vals = vals[:1]
            if len(vals) != channels:
                raise InputError(
                    f"preprocess {name} has {len(vals)} values but colour {self.colour} has "
                    f"{channels} channel{'s' * (channels > 1)}"
                )
            if not all(math.isfinite(v) for v in vals):
                raise InputError(f"preprocess {name} {raw!r} must be finite")
            object.__setattr__(self, name, vals)
        if any(v == 0 for v in self.std):
            raise InputError(f"preprocess std {list(self.std)} must not contain 0")
        # x * a + b == (x * scale - mean) / std, per channel
        a = np.array([scale / s for s in self.std], dtype=np.float32)
        b = np.array([-m / s for m, s in zip(self.mean, self.std, strict=True)], dtype=np.float32)
        object.__setattr__(self, "_affine", (a, b))
        # The same float32 multiply-add evaluated once for each of the 256 pixel values:
        # indexing this table gives bit-identical results to x * a + b, three times faster.
        lut = np.arange(256, dtype=np.float32)[None, :] * a[:, None] + b[:, None]
        object.__setattr__(self, "_lut", lut)

    @property
    def channels(self) -> int:
        """1 for ``"L"``, 3 for ``"RGB"``."""
        return 1 if self.colour == "L" else 3

    # ------------------------------------------------------------------ JSON

    def to_dict(self) -> dict:
        """The ``xnetmap.preprocess`` JSON object (schema version 1)."""
        return {"version": SCHEMA_VERSION, "size": list(self.size), "resize": self.resize,
                "crop": self.crop, "interpolation": self.interpolation, "colour": self.colour,
                "channel_order": self.channel_order, "layout": self.layout,
                "scale": self.scale, "mean": list(self.mean), "std": list(self.std)}

    def to_json(self) -> str:
        """Compact JSON text of :meth:`to_dict`."""
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, obj: dict) -> PreprocessSpec:
        """Validate and build from a parsed ``xnetmap.preprocess`` object."""
        if not isinstance(obj, dict):
            raise InputError("xnetmap.preprocess must be a JSON object")
        version = obj.get("version", SCHEMA_VERSION)
        if version != SCHEMA_VERSION:
            raise InputError(
                f"xnetmap.preprocess version {version!r} is not supported (expected "
                f"{SCHEMA_VERSION}); upgrade xnetmap or re-annotate the model"
            )
        unknown = sorted(set(obj) - set(_FIELDS) - {"version"})
        if unknown:
            raise InputError(f"xnetmap.preprocess has unknown fields {unknown}")
        if "size" not in obj:
            raise InputError("xnetmap.preprocess lacks 'size'")
        return cls(**{k: obj[k] for k in _FIELDS if k in obj})

    @classmethod
    def from_json(cls, text: str) -> PreprocessSpec:
        """Parse ``xnetmap.preprocess`` JSON text."""
        try:
            obj = json.loads(text)
        except (json.JSONDecodeError, TypeError) as err:
            raise InputError(f"xnetmap.preprocess is not valid JSON: {err}") from err
        return cls.from_dict(obj)

    def digest(self) -> str:
        """Hex SHA-256 of the canonical JSON: equal specs have equal digests."""
        canon = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canon.encode()).hexdigest()

    def replace(self, **changes) -> PreprocessSpec:
        """A copy with some fields changed (validated)."""
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ apply

    def geometry(self, width: int, height: int) -> tuple[tuple[int, int] | None, tuple | None]:
        """Resize target and crop box for an image of ``width`` x ``height``.

        Returns
        -------
        resize_to : (w, h) or None
            Pillow size to resize to; None = no resize.
        box : (left, top, right, bottom) or None
            Crop box in the resized image (may extend outside it: zero padding).
        """
        H, W = self.size
        if self.resize is not None:
            r = self.resize
            if width <= height:
                new_w, new_h = r, int(r * height / width)
            else:
                new_w, new_h = int(r * width / height), r
            resize_to = None if (new_w, new_h) == (width, height) else (new_w, new_h)
        elif self.crop == "center":
            new_w, new_h, resize_to = width, height, None
        else:
            new_w, new_h = W, H
            resize_to = None if (W, H) == (width, height) else (W, H)
        box = None
        if self.crop == "center" and (new_w, new_h) != (W, H):
            top = int(round((new_h - H) / 2.0))
            left = int(round((new_w - W) / 2.0))
            box = (left, top, left + W, top + H)
        elif (new_w, new_h) != (W, H):
            # crop "none" with a shorter-side resize: the result must still be H x W.
            resize_to = (W, H)
        return resize_to, box

    def apply(self, img) -> np.ndarray:
        """Preprocess one decoded image.

        Parameters
        ----------
        img : PIL.Image.Image
            Any mode Pillow can convert (datasets give ``"L"`` or ``"RGB"``).

        Returns
        -------
        ndarray, float32, of shape (C, H, W) for NCHW or (H, W, C) for NHWC
        """
        from PIL import Image

        if img.mode != self.colour:
            img = img.convert(self.colour)
        resize_to, box = self.geometry(*img.size)
        if resize_to is not None:
            img = img.resize(resize_to, getattr(Image.Resampling, self.interpolation.upper()))
        if box is not None:
            img = img.crop(box)  # Pillow pads out-of-bounds regions with zeros
        u = np.asarray(img)
        if u.dtype != np.uint8:  # pragma: no cover - "L"/"RGB" images are always uint8
            raise InputError(f"expected an 8-bit image, got {u.dtype}")
        if u.ndim == 2:
            u = u[:, :, None]
        h, w, c = u.shape
        # BGR: output channel k is input channel c - 1 - k.
        src = range(c - 1, -1, -1) if self.channel_order == "BGR" else range(c)
        if self.layout == "NCHW":
            out = np.empty((c, h, w), dtype=np.float32)
            for k, j in enumerate(src):
                np.take(self._lut[k], u[:, :, j], out=out[k])
        else:
            out = np.empty((h, w, c), dtype=np.float32)
            for k, j in enumerate(src):
                out[:, :, k] = self._lut[k][u[:, :, j]]
        return out

    # ------------------------------------------------------------------ from a model

    @classmethod
    def from_model(cls, model_or_path, preset: str | None = None,
                   overrides: dict | None = None, *,
                   name: str | None = None) -> tuple[PreprocessSpec, list[str]]:
        """The spec for a model: preset, else its metadata, else inferred; then overrides.

        Parameters
        ----------
        model_or_path : onnx.ModelProto
            Already read by the graph package's safe loader (data never reads models).
        preset : str, optional
            One of :data:`PRESETS`; wins over the model's metadata. Its size and
            layout are adapted to a static model input shape that disagrees (noted).
        overrides : dict, optional
            Field -> value (e.g. from CLI flags), applied last.
        name : str, optional
            How errors name the model (default: "the model").

        Returns
        -------
        spec : PreprocessSpec
        notes : list of str
            What was assumed or adapted, for the user to read.

        Raises
        ------
        UsageError
            Unknown preset, or a spec whose samples do not fit the model's static
            input shape (channels, size, layout).
        InputError
            Unreadable ``xnetmap.preprocess`` metadata.
        """
        if isinstance(model_or_path, (str, os.PathLike)):
            raise TypeError("PreprocessSpec.from_model takes a loaded model; read files with "
                            "xnetmap.graph.model_preprocess (the safe loader)")
        model = model_or_path
        where = name or "the model"
        shape = _input_shape(model)
        notes: list[str] = []
        meta = {p.key: p.value for p in model.metadata_props}
        if preset is not None:
            if preset not in PRESETS:
                raise UsageError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
            spec = _adapt_to_shape(PRESETS[preset], shape, notes, f"preset {preset}")
        elif PREPROCESS_KEY in meta:
            try:
                spec = cls.from_json(meta[PREPROCESS_KEY])
            except InputError as err:  # name the model whose metadata is wrong
                raise InputError(
                    f"{where}: {err.message}; fix it with `xnetmap annotate`"
                ) from None
        else:
            spec = _infer(shape, notes, (overrides or {}).get("size"))
        if overrides:
            spec = apply_overrides(spec, overrides)
        _check_fits(spec, shape, _input_name(model), where)
        return spec, notes


def check_spec_fits(spec: PreprocessSpec, model, where: str) -> None:
    """Refuse (UsageError) a spec whose samples cannot feed ``model``'s static input."""
    _check_fits(spec, _input_shape(model), _input_name(model), where)


def _input_name(model) -> str:
    inits = {t.name for t in model.graph.initializer}
    return next((i.name for i in model.graph.input if i.name not in inits), "?")


def _check_fits(spec: PreprocessSpec, shape: list, name: str, where: str) -> None:
    """Refuse a spec whose samples cannot feed the model's static input shape."""
    if len(shape) != 4:
        return
    c = 1 if spec.colour == "L" else 3
    H, W = spec.size
    sample = (c, H, W) if spec.layout == "NCHW" else (H, W, c)
    if all(d is None or d == s for d, s in zip(shape[1:], sample)):
        return
    shown = ["N" if d is None else d for d in shape]
    raise UsageError(
        f"{where}: the preprocessing makes {spec.layout} samples of shape {list(sample)} "
        f"(colour {spec.colour}, size {H}x{W}) but the model input {name!r} is {shown}; "
        "set --colour/--size/--layout (or a --preset) to match, or fix the model's metadata "
        "with `xnetmap annotate`"
    )


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Named conventions: torchvision ImageNet, TF-slim Inception ([-1, 1]), caffe (BGR, 0..255).
PRESETS: dict[str, PreprocessSpec] = {
    "imagenet": PreprocessSpec(size=(224, 224), resize=256, crop="center",
                               interpolation="bilinear", colour="RGB", channel_order="RGB",
                               layout="NCHW", scale=1 / 255, mean=IMAGENET_MEAN,
                               std=IMAGENET_STD),
    # TF-slim: central_crop(0.875) then resize to 299 ~ resize shorter side to 299/0.875 = 342.
    "inception": PreprocessSpec(size=(299, 299), resize=342, crop="center",
                                interpolation="bilinear", colour="RGB", channel_order="RGB",
                                layout="NCHW", scale=1 / 127.5, mean=(1.0, 1.0, 1.0),
                                std=(1.0, 1.0, 1.0)),
    "caffe": PreprocessSpec(size=(224, 224), resize=256, crop="center",
                            interpolation="bilinear", colour="RGB", channel_order="BGR",
                            layout="NCHW", scale=1.0, mean=(103.939, 116.779, 123.68),
                            std=(1.0, 1.0, 1.0)),
}


def apply_overrides(spec: PreprocessSpec, overrides: dict) -> PreprocessSpec:
    """Replace fields of ``spec``; ``None`` values are ignored.

    A colour change to ``L`` with 3-value mean/std (or back) needs mean/std too,
    unless they are uniform; otherwise the error says so.
    """
    changes = {k: v for k, v in overrides.items() if v is not None}
    unknown = sorted(set(changes) - set(_FIELDS))
    if unknown:
        raise UsageError(f"unknown preprocessing fields {unknown}; known: {', '.join(_FIELDS)}")
    if changes.get("resize") in ("none", "null", 0):
        changes["resize"] = None  # an explicit "no shorter-side resize"
    if "colour" in changes and changes["colour"] != spec.colour:
        n = 1 if changes["colour"] == "L" else 3
        for name in ("mean", "std"):
            vals = changes.get(name, getattr(spec, name))
            if len(vals) != n and len(set(vals)) == 1:
                changes.setdefault(name, (vals[0],) * n)
    return dataclasses.replace(spec, **changes)


def overrides_from_strings(*, size: str | None = None, resize: str | None = None,
                           crop: str | None = None, interpolation: str | None = None,
                           colour: str | None = None, channel_order: str | None = None,
                           layout: str | None = None, scale: str | None = None,
                           mean: str | None = None, std: str | None = None) -> dict:
    """Parse CLI flag strings into an overrides dict for :meth:`PreprocessSpec.from_model`.

    ``size``: ``224`` or ``224,224`` or ``224x224``; ``resize``: int or ``none``;
    ``scale``: float or fraction (``1/255``); ``mean``/``std``: comma-separated floats.
    """
    out: dict[str, Any] = {}

    def num(text: str, what: str) -> float:
        try:
            if "/" in text:
                a, b = text.split("/", 1)
                return float(a) / float(b)
            return float(text)
        except (ValueError, ZeroDivisionError) as err:
            raise UsageError(f"--{what} {text!r} is not a number") from err

    if size is not None:
        parts = [p for p in size.replace("x", ",").split(",") if p.strip()]
        try:
            vals = [int(p) for p in parts]
        except ValueError as err:
            raise UsageError(f"--size {size!r}: expected H or H,W (e.g. 224 or 224,224)") from err
        if len(vals) not in (1, 2):
            raise UsageError(f"--size {size!r}: expected H or H,W")
        out["size"] = (vals[0], vals[-1])
    if resize is not None:
        if resize.strip().lower() in ("none", "null", "0"):
            out["resize"] = "none"
        else:
            try:
                out["resize"] = int(resize)
            except ValueError as err:
                raise UsageError(f"--resize {resize!r}: expected an integer or 'none'") from err
    for name, value in (("crop", crop), ("interpolation", interpolation), ("colour", colour),
                        ("channel_order", channel_order), ("layout", layout)):
        if value is not None:
            out[name] = value.lower() if name in ("crop", "interpolation") else value.upper()
    if scale is not None:
        out["scale"] = num(scale, "scale")
    if mean is not None:
        out["mean"] = tuple(num(v, "mean") for v in mean.split(",") if v.strip())
    if std is not None:
        out["std"] = tuple(num(v, "std") for v in std.split(",") if v.strip())
    if out.get("colour") == "GREY" or out.get("colour") == "GRAY":
        out["colour"] = "L"
    return out


def _input_shape(model) -> list:
    """Shape of the first graph input that is not an initializer (ints, or None when dynamic)."""
    inits = {t.name for t in model.graph.initializer}
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        dims = inp.type.tensor_type.shape.dim
        return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                for d in dims]
    raise InputError("the model has no image input")


def _layout_from_shape(shape: list) -> tuple[str | None, int | None, tuple | None]:
    """(layout, channels, (H, W)) read from a rank-4 input shape; parts None when unknown."""
    if len(shape) != 4:
        return None, None, None
    c1, c3 = shape[1], shape[3]
    if c1 in (1, 3) and c3 not in (1, 3):
        layout, c, hw = "NCHW", c1, (shape[2], shape[3])
    elif c3 in (1, 3) and c1 not in (1, 3):
        layout, c, hw = "NHWC", c3, (shape[1], shape[2])
    elif c1 in (1, 3):
        layout, c, hw = "NCHW", c1, (shape[2], shape[3])
    else:
        return None, None, None
    if None in hw:
        hw = None
    return layout, c, hw


def _adapt_to_shape(spec: PreprocessSpec, shape: list, notes: list[str], what: str):
    layout, c, hw = _layout_from_shape(shape)
    changes: dict[str, Any] = {}
    if layout is not None and layout != spec.layout:
        changes["layout"] = layout
        notes.append(f"{what} says {spec.layout} but the model input {shape} is {layout}; "
                     f"using {layout}")
    if hw is not None and tuple(hw) != spec.size:
        changes["size"] = tuple(hw)
        if spec.resize is not None:
            changes["resize"] = int(round(min(hw) * spec.resize / min(spec.size)))
        notes.append(f"{what} says size {list(spec.size)} but the model input is {list(hw)}; "
                     f"using {list(hw)}" + (f" with resize {changes['resize']}"
                                            if "resize" in changes else ""))
    if c == 1 and spec.colour != "L":
        changes.update(colour="L", mean=spec.mean[:1], std=spec.std[:1])
        notes.append(f"the model input has 1 channel; using colour L with {what}'s first "
                     "channel mean/std")
    return spec.replace(**changes) if changes else spec


def _infer(shape: list, notes: list[str], size=None) -> PreprocessSpec:
    layout, c, hw = _layout_from_shape(shape)
    if hw is None and size is not None:
        hw = (size, size) if isinstance(size, int) else tuple(size)
    if layout is None:
        raise InputError(
            f"the model carries no xnetmap.preprocess metadata and its input shape {shape} is "
            "not N x C x H x W or N x H x W x C with C in 1, 3; pass a preset (--preset "
            "imagenet|inception|caffe) or annotate the model (xnetmap annotate)"
        )
    if hw is None:
        raise InputError(
            f"the model carries no xnetmap.preprocess metadata and its input shape {shape} has "
            "no fixed height/width; pass --size H,W or a preset (--preset imagenet|inception|caffe)"
        )
    colour = "L" if c == 1 else "RGB"
    spec = PreprocessSpec(size=hw, resize=None, crop="none", interpolation="bilinear",
                          colour=colour, channel_order="RGB", layout=layout, scale=1 / 255,
                          mean=(0.0,) * c, std=(1.0,) * c)
    notes.append(
        f"the model carries no xnetmap.preprocess metadata; assumed from its input {shape}: "
        f"layout {layout}, {c} channel{'s' * (c > 1)} ({colour}), size {list(hw)}, the whole "
        "image resized to that size (no crop), bilinear, pixels scaled to 0..1, no mean/std; "
        "if the model was trained otherwise, give a preset (imagenet, inception, caffe) or "
        "preprocessing flags, and store them with xnetmap annotate"
    )
    return spec


def preprocess_sample(ds, i: int, spec: PreprocessSpec) -> np.ndarray:
    """Load sample ``i`` of ``ds`` and apply ``spec``.

    Returns
    -------
    ndarray, float32, (C, H, W) or (H, W, C)

    Raises
    ------
    UnreadableImage
    """
    return spec.apply(ds.load(i))
