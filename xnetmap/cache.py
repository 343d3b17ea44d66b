"""Where xnetmap keeps what it can recompute: one content-addressed cache folder.

The folder is, in order of precedence: an explicit ``--cache DIR`` (the
``root`` argument), ``$XNETMAP_CACHE``, ``$XDG_CACHE_HOME/xnetmap``, or
``~/.cache/xnetmap``. It is never the current folder or a model's folder, so a
checkout under test (a pull request in CI) cannot plant entries in it.

Entries are named by the digests that determine them (see :func:`content_key`);
nothing read back is trusted on its name alone: every reader verifies what it
reuses (split parts against a fresh split, feature shards against their sha256).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

#: Sub-folders of the cache, one per kind of entry.
SPLITS = "splits"
FEATURES = "features"
MAPS = "maps"
PROBES = "probes"
ORT_OPTIMIZED = "ort-optimized"


def cache_root(root: str | os.PathLike | None = None) -> Path:
    """The cache folder (not created): ``root``, ``$XNETMAP_CACHE`` or the user cache folder."""
    if root is not None and str(root) != "":
        return Path(root).expanduser()
    env = os.environ.get("XNETMAP_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "xnetmap"


def content_key(*parts: Any, length: int = 16) -> str:
    """A short hex digest of ``parts`` (JSON, sorted keys): the name of a cache entry."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def slug(name: str, length: int = 40) -> str:
    """``name`` reduced to characters safe in a file name."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:length]
