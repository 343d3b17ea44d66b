"""Decode one image file with Pillow, the same way for every model.

The decoding policy is fixed, so that two models compared by xnetmap always see
the same pixels (only their own preprocessing differs):

- **Format**: sniffed from the content, never from the file name (a PNG named
  ``.JPEG``, as a few ILSVRC2012 files are, decodes fine).
- **EXIF orientation**: applied (``PIL.ImageOps.exif_transpose``), so an image
  is seen upright, as a photo viewer shows it. NOTE: torchvision's default
  PIL loader does *not* apply it; the difference only touches files that carry
  an orientation tag other than 1 (rare in ILSVRC2012).
- **Colour**: the result is ``"L"`` for single-channel sources (L, 1, LA, I;16*,
  I, F) and ``"RGB"`` for everything else. Alpha is dropped (the stored colours
  are kept, not composited on a background), like ``Image.convert("RGB")``;
  palette images go through RGBA first so palette transparency is handled
  without Pillow's warning. CMYK and YCbCr use Pillow's conversion (embedded
  ICC profiles are ignored). 16-bit greyscale (``I;16``) is mapped to 8 bits by
  ``round(v / 257)`` (0 -> 0, 65535 -> 255); 32-bit integer ``I`` is clipped
  to 0..65535 first and mapped the same way; float ``F`` is clipped to 0..255.
- **Decompression bombs**: an image with more than :data:`MAX_PIXELS`
  (89,478,485 = Pillow's warning threshold, about 9,459 x 9,459) pixels is
  refused from its header, before any pixel is decoded.
- **Errors**: a missing file, a truncated file, a file that is not an image or
  an image over the limit raises :class:`UnreadableImage` naming the file and
  the reason. Nothing is ever substituted; the caller's ``max_bad`` policy
  decides what happens next. Truncated images are not "repaired"
  (``ImageFile.LOAD_TRUNCATED_IMAGES`` is left False). A PNG whose compressed
  pixel stream ends cleanly but early (Pillow fills the missing rows with
  zeros without a word) is unreadable too: its inflated length is checked
  against the size its header declares.
"""

from __future__ import annotations

import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np

#: Largest number of pixels (width x height) accepted; larger files raise UnreadableImage.
MAX_PIXELS = 89_478_485


class UnreadableImage(Exception):
    """One sample could not be decoded.

    Attributes
    ----------
    path : str
        The file (or ``array[index]`` description) that failed.
    reason : str
        Why, in words (truncated, not an image, too large, ...).
    """

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def _to_canonical(img, path: str):
    """Convert a loaded Pillow image to ``"L"`` or ``"RGB"`` per the module policy."""
    from PIL import Image

    mode = img.mode
    if mode in ("L", "RGB"):
        return img
    if mode in ("1", "LA", "La"):
        return img.convert("L")
    if mode.startswith("I;16") or mode == "I":
        a = np.asarray(img)
        a = np.clip(a.astype(np.int64), 0, 65535)
        a8 = ((a * 2 + 257) // 514).astype(np.uint8)  # round(v / 257), half up
        return Image.fromarray(a8)
    if mode == "F":
        a = np.clip(np.asarray(img, dtype=np.float32), 0, 255)
        return Image.fromarray(np.rint(a).astype(np.uint8))
    if mode in ("P", "PA"):
        return img.convert("RGBA").convert("RGB")
    if mode in ("RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"):
        return img.convert("RGB")
    try:
        return img.convert("RGB")
    except (ValueError, OSError) as err:
        raise UnreadableImage(path, f"unsupported image mode {mode!r}: {err}") from err


_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> samples per pixel
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
          (0, 1, 1, 2))  # (x0, y0, dx, dy) of the seven interlace passes


def _png_expected_bytes(width: int, height: int, bits: int, interlaced: bool) -> int:
    """Inflated size of a PNG's pixel data: each row is one filter byte plus its samples."""
    def rows(w: int, h: int) -> int:
        return 0 if w == 0 or h == 0 else h * (1 + (w * bits + 7) // 8)

    if not interlaced:
        return rows(width, height)
    return sum(
        rows((width - x0 + dx - 1) // dx, (height - y0 + dy - 1) // dy)
        for x0, y0, dx, dy in _ADAM7
    )


def png_short_reason(data: bytes) -> str | None:
    """Why a PNG's pixel data is shorter than its header says, or None when complete.

    Inflates the IDAT stream in 1 MiB pieces, counting bytes (nothing is kept).
    """
    pos, width, height, bits, interlaced, inflater, total = 8, 0, 0, 0, False, None, 0
    while pos + 8 <= len(data):
        (length,), kind = struct.unpack(">I", data[pos : pos + 4]), data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR" and len(body) >= 13:
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body[:13])
            bits, interlaced = depth * _PNG_CHANNELS.get(colour, 1), interlace == 1
            inflater = zlib.decompressobj()
        elif kind == b"IDAT" and inflater is not None:
            try:
                total += len(inflater.decompress(body, 1 << 20))
                while inflater.unconsumed_tail:
                    total += len(inflater.decompress(inflater.unconsumed_tail, 1 << 20))
            except zlib.error as err:
                return f"PNG pixel data is corrupt ({err})"
        elif kind == b"IEND":
            break
    if inflater is None:
        return None
    expected = _png_expected_bytes(width, height, bits, interlaced)
    if total < expected:
        return (
            f"PNG pixel data ends early: {total:,} of {expected:,} bytes "
            f"({width}x{height}); the missing rows would be zeros"
        )
    return None


#: Key of ``Image.info`` listing what decoding changed (EXIF rotation, mode conversion).
CONVERSIONS_KEY = "xnetmap.conversions"


def _record_conversions(img, exif_transpose, path: str):
    """EXIF orientation and the canonical mode applied; what changed listed in ``img.info``."""
    orientation = img.getexif().get(0x0112, 1)
    mode = img.mode
    img = _to_canonical(exif_transpose(img), path)
    done = []
    if orientation not in (None, 1):
        done.append("EXIF rotation applied")
    if mode != img.mode:
        done.append(f"{mode} -> {img.mode}")
    if done:
        img.info[CONVERSIONS_KEY] = tuple(done)
    return img


def decode_image(path: str | os.PathLike):
    """Open, fully decode and normalise one image file.

    Parameters
    ----------
    path : str or PathLike
        Image file; its format is sniffed from the content.

    Returns
    -------
    PIL.Image.Image
        Mode ``"L"`` or ``"RGB"``, EXIF orientation applied, fully loaded.

    Raises
    ------
    UnreadableImage
        Missing, truncated (a PNG whose pixel stream ends early included), not
        an image, over :data:`MAX_PIXELS`, or an unsupported mode.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    try:
        with warnings.catch_warnings():
            # Pillow warns (and later raises) on big images; we apply our own limit first.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with open(path, "rb") as fh:
                img = Image.open(fh)
                w, h = img.size
                if w * h > MAX_PIXELS:
                    raise UnreadableImage(
                        path,
                        f"image is {w}x{h} = {w * h:,} pixels, over the decompression-bomb "
                        f"limit of {MAX_PIXELS:,} pixels",
                    )
                img.load()
                if img.format == "PNG":
                    fh.seek(0)
                    reason = png_short_reason(fh.read())
                    if reason is not None:
                        raise UnreadableImage(path, reason)
                return _record_conversions(img, ImageOps.exif_transpose, str(path))
    except UnreadableImage:
        raise
    except FileNotFoundError as err:
        raise UnreadableImage(path, "file not found") from err
    except UnidentifiedImageError as err:
        raise UnreadableImage(path, "not an image Pillow can identify") from err
    except Image.DecompressionBombError as err:
        raise UnreadableImage(
            path, f"over the decompression-bomb limit of {MAX_PIXELS:,} pixels ({err})"
        ) from err
    except (OSError, ValueError, SyntaxError, EOFError) as err:
        # Pillow reports truncated data as OSError("image file is truncated ...").
        raise UnreadableImage(path, f"cannot decode: {err}") from err


def image_from_array(a: np.ndarray, where: str = "array"):
    """Wrap one uint8 sample of an array dataset as a Pillow image.

    Parameters
    ----------
    a : ndarray of shape (H, W) or (H, W, C), dtype uint8, C in {1, 3, 4}
        One image.
    where : str
        Description used in errors (e.g. ``"images.npy[12]"``).

    Returns
    -------
    PIL.Image.Image
        Mode ``"L"`` (C = 1 or 2-D) or ``"RGB"`` (C = 3; C = 4 drops alpha).
    """
    from PIL import Image

    a = np.asarray(a)
    if a.dtype != np.uint8:
        raise UnreadableImage(where, f"dtype {a.dtype} is not uint8")
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim == 2:
        return Image.fromarray(np.ascontiguousarray(a))
    if a.ndim == 3 and a.shape[2] == 3:
        return Image.fromarray(np.ascontiguousarray(a))
    if a.ndim == 3 and a.shape[2] == 4:
        return Image.fromarray(np.ascontiguousarray(a[:, :, :3]))
    raise UnreadableImage(where, f"shape {a.shape} is not (H, W) or (H, W, C) with C in 1, 3, 4")
