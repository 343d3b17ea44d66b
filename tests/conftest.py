"""Suite-wide settings: keep xnetmap's on-disk caches inside pytest's temporary folder."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="session")
def _private_xnetmap_cache(tmp_path_factory):
    """Optimized onnxruntime graphs go to a per-run folder, not the user's ~/.cache."""
    mp = pytest.MonkeyPatch()
    mp.setenv("XNETMAP_CACHE", str(tmp_path_factory.mktemp("xnetmap-cache")))
    yield
    mp.undo()
