"""The decode pipeline: order, bounded prefetch, bad samples, and the exact array fast path."""

from __future__ import annotations

import os
import sys
import threading
import time

import numpy as np
import pytest

from xnetmap.data import PreprocessSpec, open_dataset
from xnetmap.extract.fastpath import array_batch_preparer
from xnetmap.extract.pipeline import PreparedBatch, prepared_batches


class Unreadable(Exception):
    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


def test_order_is_dataset_order_whatever_the_finish_order():
    rng = np.random.default_rng(0)
    delays = rng.uniform(0, 0.003, 200)

    def load(i):
        time.sleep(delays[i])  # workers finish out of order
        return np.full((2, 3), i, dtype=np.float32)

    batches = [np.arange(s, min(s + 7, 200)) for s in range(0, 200, 7)]
    got = list(prepared_batches(load, iter(batches), workers=4))
    assert [b.indices.tolist() for b in got] == [b.tolist() for b in batches]
    X = np.concatenate([b.X for b in got])
    assert np.array_equal(X[:, 0, 0], np.arange(200))


def test_prefetch_is_bounded():
    inflight, peak, lock = [0], [0], threading.Lock()
    started = []

    def load(i):
        with lock:
            inflight[0] += 1
            peak[0] = max(peak[0], inflight[0])
        time.sleep(0.001)
        with lock:
            inflight[0] -= 1
        return np.zeros(1, np.float32)

    def batches():
        for s in range(0, 400, 10):
            started.append(s)
            yield np.arange(s, s + 10)

    consumed = 0
    for _ in prepared_batches(load, batches(), workers=2, prefetch=3):
        consumed += 1
        # never more than `prefetch` batches taken from the source ahead of the consumer
        assert len(started) - consumed <= 3
        time.sleep(0.002)
    assert consumed == 40 and peak[0] <= 2


def test_bad_samples_listed_never_replaced():
    def load(i):
        if i % 5 == 3:
            raise Unreadable(f"broken {i}")
        return np.array([i], np.float32)

    got = list(prepared_batches(load, iter([np.arange(0, 10), np.arange(10, 13)]), workers=2,
                                bad_types=(Unreadable,)))
    assert got[0].bad == {3: "broken 3", 8: "broken 8"}
    assert got[0].good.tolist() == [i % 5 != 3 for i in range(10)]
    assert got[0].X[:, 0].tolist() == [0, 1, 2, 4, 5, 6, 7, 9]
    assert got[1].bad == {} and got[1].X[:, 0].tolist() == [10, 11, 12]


def test_other_errors_propagate():
    def load(i):
        raise ZeroDivisionError("bug")

    with pytest.raises(ZeroDivisionError):
        list(prepared_batches(load, iter([np.arange(3)]), workers=2, bad_types=(Unreadable,)))


@pytest.mark.parametrize("shape", [(40, 28, 28), (40, 28, 28, 1), (40, 20, 24, 3), (40, 20, 24, 4)])
@pytest.mark.parametrize("variant", ["plain", "bgr_nhwc", "to_rgb"])
def test_array_fast_path_is_bit_identical(tmp_path, shape, variant):
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 256, shape, dtype=np.uint8)
    np.save(tmp_path / "x.npy", arr)
    ds = open_dataset(f"npy:{tmp_path / 'x.npy'}")
    H, W = shape[1], shape[2]
    colour = "RGB" if len(shape) == 4 and shape[3] >= 3 else "L"
    kw = {"size": (H, W), "colour": colour, "mean": (0.3,), "std": (0.2,)}
    if variant == "bgr_nhwc":
        kw.update(channel_order="BGR", layout="NHWC")
    if variant == "to_rgb":
        kw.update(colour="RGB", mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.25))
    spec = PreprocessSpec(**kw)
    prepare = array_batch_preparer(ds, spec)
    assert prepare is not None
    sub = ds.subset([5, 1, 39, 2])
    prepare_sub = array_batch_preparer(sub, spec)
    for d, prep in ((ds, prepare), (sub, prepare_sub)):
        idx = np.arange(len(d))[::-1][:4]
        fast = prep(idx).X
        slow = np.stack([spec.apply(d.load(int(i))) for i in idx])
        assert fast.dtype == np.float32 and np.array_equal(fast, slow)


def test_fast_path_declines_resize_and_luma(tmp_path):
    arr = np.zeros((4, 20, 24, 3), np.uint8)
    np.save(tmp_path / "x.npy", arr)
    ds = open_dataset(f"npy:{tmp_path / 'x.npy'}")
    assert array_batch_preparer(ds, PreprocessSpec(size=(10, 12))) is None
    assert array_batch_preparer(ds, PreprocessSpec(size=(20, 24), colour="L", mean=(0,),
                                                   std=(1,))) is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux's")
def test_image_decoders_run_at_lowest_priority_array_path_does_not():
    seen: list[tuple[str, int]] = []

    def load(i):
        seen.append(("image", os.getpriority(os.PRIO_PROCESS, threading.get_native_id())))
        return np.zeros(3, np.float32)

    def prepare(idx):
        seen.append(("array", os.getpriority(os.PRIO_PROCESS, threading.get_native_id())))
        return PreparedBatch(idx, np.zeros((len(idx), 3), np.float32), np.ones(len(idx), bool))

    base = os.getpriority(os.PRIO_PROCESS, 0)
    list(prepared_batches(load, [np.arange(4), np.arange(4, 8)], workers=2))
    list(prepared_batches(None, [np.arange(4)], workers=2, prepare=prepare))
    assert {p for k, p in seen if k == "image"} == {19}
    assert {p for k, p in seen if k == "array"} == {base}
    assert os.getpriority(os.PRIO_PROCESS, 0) == base  # the calling thread is untouched
