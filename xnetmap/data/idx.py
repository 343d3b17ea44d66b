"""IDX files (the MNIST / Fashion-MNIST format), gzip-compressed or raw.

Format: two zero bytes, a type code, the number of dimensions ``ndim``, then
``ndim`` big-endian uint32 sizes, then the data in C order (big-endian for
multi-byte types). An images file finds its labels file beside it by the
standard naming: ``X-images-idx3-ubyte[.gz]`` <-> ``X-labels-idx1-ubyte[.gz]``
(also ``X-images.idx3-ubyte``, the variant some mirrors use).
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..fsutil import atomic_write_bytes

# type code -> big-endian numpy dtype
_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {dt.newbyteorder("=").str if dt.itemsize > 1 else dt.str: c for c, dt in _DTYPES.items()}

_IMAGES_RE = re.compile(
    r"^(?P<stem>.*?)(?P<sep>[-_.])images(?P<mid>[-.])idx(?P<nd>\d)-ubyte(?P<gz>\.gz)?$"
)


def is_idx_name(name: str) -> bool:
    """True when a file name looks like an IDX file (``...idxN-ubyte[.gz]``)."""
    return re.search(r"idx\d-ubyte(\.gz)?$", name) is not None


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


def read_idx(path: str | Path, *, mmap: bool = True) -> np.ndarray:
    """Read an IDX file.

    Parameters
    ----------
    path : str or Path
        File, gzip-compressed (detected from its content) or raw.
    mmap : bool
        Memory-map a raw uint8 file instead of reading it (gzip files are
        always decompressed into memory).

    Returns
    -------
    ndarray of shape given by the header
        Native byte order.

    Raises
    ------
    InputError
        Missing file, bad magic, unknown type code or a size that does not
        match the header.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"IDX file {path} does not exist")
    try:
        gz = _is_gzip(path)
        if gz:
            with gzip.open(path, "rb") as fh:
                data = fh.read()
        else:
            data = None
            with open(path, "rb") as fh:
                head = fh.read(4 + 4 * 255)
    except (OSError, EOFError) as err:
        raise InputError(f"cannot read IDX file {path}: {err}") from err
    head = data[: 4 + 4 * 255] if gz else head
    if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in _DTYPES:
        raise InputError(
            f"{path} is not an IDX file (bad magic {head[:4].hex() or 'empty'}); expected "
            "00 00 <type> <ndim>"
        )
    dtype = _DTYPES[head[2]]
    ndim = head[3]
    if len(head) < 4 + 4 * ndim:
        raise InputError(f"IDX file {path} is truncated in its header")
    shape = tuple(int(v) for v in np.frombuffer(head[4 : 4 + 4 * ndim], dtype=">u4"))
    offset = 4 + 4 * ndim
    count = int(np.prod(shape, dtype=np.int64))
    expected = offset + count * dtype.itemsize
    size = len(data) if gz else path.stat().st_size
    if size != expected:
        raise InputError(
            f"IDX file {path}: header says shape {shape} ({expected:,} bytes) but the "
            f"{'decompressed ' if gz else ''}file has {size:,} bytes; it is truncated or corrupt"
        )
    if gz:
        arr = np.frombuffer(data, dtype=dtype, count=count, offset=offset).reshape(shape)
    elif mmap and dtype.itemsize == 1:
        arr = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)
    else:
        arr = np.fromfile(path, dtype=dtype, count=count, offset=offset).reshape(shape)
    if dtype.itemsize > 1:
        arr = arr.astype(dtype.newbyteorder("="))
    return arr


def write_idx(path: str | Path, array: np.ndarray) -> Path:
    """Write ``array`` as an IDX file; gzip-compressed when the name ends in ``.gz``.

    Parameters
    ----------
    path : str or Path
    array : ndarray, dtype uint8, int8, int16, int32, float32 or float64

    Returns
    -------
    Path
        The written file (written atomically).
    """

    a = np.asarray(array)
    key = a.dtype.newbyteorder("=").str if a.dtype.itemsize > 1 else a.dtype.str
    code = _CODES.get(key)
    if code is None:
        raise InputError(f"IDX cannot store dtype {a.dtype}")
    be = a.astype(_DTYPES[code], copy=False)
    header = bytes([0, 0, code, a.ndim]) + np.asarray(a.shape, dtype=">u4").tobytes()
    payload = header + np.ascontiguousarray(be).tobytes()
    path = Path(path)
    if path.name.endswith(".gz"):
        payload = gzip.compress(payload, mtime=0)
    return atomic_write_bytes(path, payload)


def labels_path_for(images_path: str | Path) -> Path | None:
    """The labels file that pairs with an IDX images file, or None when there is none.

    ``X-images-idx3-ubyte[.gz]`` -> ``X-labels-idx1-ubyte`` or ``X-labels-idx1-ubyte.gz``
    (either compression; the images file's own suffix is tried first);
    ``X-images.idx3-ubyte`` -> ``X-labels.idx1-ubyte`` likewise.
    """
    images_path = Path(images_path)
    m = _IMAGES_RE.match(images_path.name)
    if m is None:
        return None
    base = f"{m['stem']}{m['sep']}labels{m['mid']}idx1-ubyte"
    suffixes = [".gz", ""] if m["gz"] else ["", ".gz"]
    for suffix in suffixes:
        cand = images_path.with_name(base + suffix)
        if cand.is_file():
            return cand
    return None


def find_images_files(folder: str | Path) -> list[Path]:
    """IDX images files (``*images*idx[3-4]-ubyte[.gz]``) directly in ``folder``, sorted."""
    folder = Path(folder)
    return sorted(
        p for p in folder.iterdir() if p.is_file() and _IMAGES_RE.match(p.name) is not None
    )
