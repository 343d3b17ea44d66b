"""A source's Gram sums computed once (``accumulate_gram``, ``GramCache``) give the same moments."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from xnetmap.fit.gram_cache import GramCache
from xnetmap.fit.solvers import accumulate_gram, accumulate_moments


def _data(n=5000, d_in=7, d_out=5, seed=0):
    rng = np.random.default_rng(seed)
    X = (rng.standard_normal((n, d_in)) * 3 + 40).astype(np.float32)  # ReLU-like large means
    Y = (X @ rng.standard_normal((d_in, d_out)) + rng.standard_normal((n, d_out))).astype(
        np.float32)
    return X, Y, np.sort(rng.choice(n, 4000, replace=False)).astype(np.int64)


@pytest.mark.parametrize("cross", [True, False])
def test_moments_from_a_shared_gram_equal_the_one_pass_moments(cross):
    X, Y, rows = _data()
    one = accumulate_moments(X, Y, rows, cross=cross)
    two = accumulate_moments(X, Y, rows, cross=cross, gram=accumulate_gram(X, rows))
    assert two.n == one.n
    for name in ("mean_x", "mean_y", "cov_xx") + (("cov_xy",) if cross else ()):
        np.testing.assert_allclose(getattr(two, name), getattr(one, name), rtol=1e-10,
                                   atol=1e-9, err_msg=name)


def test_a_gram_of_other_rows_is_refused():
    X, Y, rows = _data()
    with pytest.raises(ValueError, match="4000 rows"):
        accumulate_moments(X, Y, rows[:100], gram=accumulate_gram(X, rows))


def test_gram_cache_computes_once_per_source_and_rows_even_from_two_threads():
    X, _, rows = _data()
    cache = GramCache()
    got = []
    threads = [threading.Thread(target=lambda: got.append(cache.source("a").gram(X, rows)))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert cache.computed == 1 and all(g is got[0] for g in got)
    cache.source("a").gram(X, rows[1:])  # other rows: another pass
    cache.source("b").gram(X, rows)  # another source: another pass
    assert cache.computed == 3
