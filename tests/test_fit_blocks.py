"""Out-of-core minibatches (fit/blocks.py): every row once, right pairing, same fit quality."""

from __future__ import annotations

import json

import numpy as np
import pytest

from xnetmap.extract import FeatureStore
from xnetmap.extract import store as st
from xnetmap.fit import blocks
from xnetmap.fit.blocks import BlockBatches, window_rows
from xnetmap.fit.gd import GDConfig, fit_gd
from xnetmap.fit.gd_ops import HostOps
from xnetmap.fit.solvers import accumulate_moments
from xnetmap.fit.store_rows import StoreRows


def _write_store(path, M: np.ndarray, shard_rows: int) -> FeatureStore:
    """A complete store in the extractor's layout (several shards)."""
    path.mkdir()
    shards = []
    for k, s in enumerate(range(0, len(M), shard_rows)):
        e = min(len(M), s + shard_rows)
        sha = st.atomic_save_npy(path / st.shard_name(k), M[s:e])
        shards.append({"index": k, "file": st.shard_name(k), "start": s, "stop": e,
                       "sha256": sha})
    st.atomic_save_npy(path / st.MASK, np.zeros(len(M), bool))
    (path / st.IDS).write_text(json.dumps([f"s{i}" for i in range(len(M))]))
    (path / st.MANIFEST).write_text(json.dumps({
        "format": st.FORMAT, "format_version": st.FORMAT_VERSION, "n": len(M),
        "dim": M.shape[1], "dtype": "float32", "model_sha256": "x", "labeled": False,
        "shards": shards, "complete": True}))
    return FeatureStore.open(path)


@pytest.mark.parametrize("read_ahead", [False, True])
def test_every_train_row_once_per_epoch_paired_across_shards(tmp_path, monkeypatch, read_ahead):
    if read_ahead:  # as for data larger than memory: madvise the next window's blocks
        monkeypatch.setattr(blocks, "READ_AHEAD_SHARE", 0.0)
    n = 5000
    rows_id = np.arange(n, dtype=np.float32)
    X = np.stack([rows_id, rows_id * 2], axis=1)
    Y = np.stack([rows_id, -rows_id, rows_id + 0.5], axis=1)
    Xs = StoreRows(_write_store(tmp_path / "x", X, 333))  # shards cut blocks anywhere
    Ys = StoreRows(_write_store(tmp_path / "y", Y, 700))
    rng = np.random.default_rng(0)
    train = np.sort(rng.choice(n, 4100, replace=False))  # gaps: held-out rows skipped
    t_norm = np.linalg.norm(Y, axis=1).astype(np.float32)
    bb = BlockBatches(Xs, Ys, train, t_norm, batch=256)
    assert (bb.ahead is not None) == read_ahead
    if read_ahead:  # every block has its ranges, in both stores (a block may cross shards)
        assert all(len(r) >= 2 for r in bb.ahead)
    seen = []
    for A, T, tn in bb.epoch(np.random.default_rng(1)):
        assert len(A) <= 256
        ids = A[:, 0].astype(np.int64)
        np.testing.assert_array_equal(A[:, 1], 2 * A[:, 0])
        np.testing.assert_array_equal(T, Y[ids])
        np.testing.assert_array_equal(tn, t_norm[ids])
        seen.append(ids)
    allseen = np.concatenate(seen)
    np.testing.assert_array_equal(np.sort(allseen), train)
    # shuffled: not in file order, and a new order next epoch
    assert not np.array_equal(allseen, train)
    again = np.concatenate([A[:, 0] for A, _, _ in bb.epoch(np.random.default_rng(2))])
    assert not np.array_equal(again.astype(np.int64), allseen)


def test_window_memory_does_not_grow_with_n():
    small = window_rows(8192, 512, 768, 100_000)
    big = window_rows(8192, 512, 768, 10_000_000)
    assert small == big and small % 8192 == 0 and small >= 2 * 8192
    assert 2 * big * (512 + 768) * 4 <= 2 * blocks.WINDOW_BYTES


def _planted(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Rows in 'class order' (sorted by cluster), so neighbours in the store are correlated."""
    rng = np.random.default_rng(seed)
    d_in, d_out, k = 48, 64, 20
    centres = rng.standard_normal((k, d_in)) * 2.0
    cls = np.sort(rng.integers(0, k, n))
    A = centres[cls] + rng.standard_normal((n, d_in))
    W = rng.standard_normal((d_out, d_in)) / np.sqrt(d_in)
    Y = A @ W.T + 1.0 + 0.3 * rng.standard_normal((n, d_out))
    return A.astype(np.float32), Y.astype(np.float32)


@pytest.mark.parametrize("seed", [0, 1])
def test_block_shuffle_fits_as_well_as_full_permutation(seed, monkeypatch):
    # windows of 4 minibatches (16 blocks of 256 rows) out of 54,000 rows: far from a full shuffle
    monkeypatch.setattr(blocks, "WINDOW_BYTES", 4 * 1024 * (48 + 64 + 1) * 4)
    A, Y = _planted(60_000, seed)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(A))
    hold, train = np.sort(perm[:6000]), np.sort(perm[6000:])
    m = accumulate_moments(A, Y, train, cross=False)
    W0 = np.zeros((Y.shape[1], A.shape[1]))
    got = {}
    for shuffle in ("full", "block"):
        cfg = GDConfig(epochs=8, batch_size=1024, seed=seed, shuffle=shuffle)
        res = fit_gd(A, Y, train, hold, mean_x=m.mean_x, cov_xx=m.cov_xx, W0=W0, b0=m.mean_y,
                     cfg=cfg)
        got[shuffle] = min(r["holdout_loss"] for r in res.history)
        if shuffle == "block":
            assert window_rows(1024, 48, 64, len(train)) == 4096
    assert got["block"] <= 1.01 * got["full"], got


def test_auto_shuffle_blocks_only_data_on_disk_too_large_to_load(tmp_path):
    A, Y = _planted(2000)
    train = np.arange(2000, dtype=np.int64)
    assert not HostOps(A, Y, train, 256, 1e-8).block  # in memory: full permutation
    np.save(tmp_path / "a.npy", A)
    Am = np.load(tmp_path / "a.npy", mmap_mode="r")
    ops = HostOps(Am, Y, train, 256, 1e-8)
    assert not ops.block and not isinstance(ops.X, np.memmap)  # small: loaded once
    assert HostOps(Am, Y, train, 256, 1e-8, shuffle="block").block
