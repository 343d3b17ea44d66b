"""AffineMap contract, input errors, map files, and fitting from real feature stores."""

from __future__ import annotations

import json

import numpy as np
import pytest
from extract_fixtures import conv_features_model, write_folder_dataset, write_idx_dataset

from xnetmap.cli import app
from xnetmap.errors import InputError, UsageError
from xnetmap.fit import AffineMap, NotFittedError, fit_map


def data(seed=0, n=3000, d_in=12, d_out=9, noise=0.02):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, d_in)) + 1.0
    W = rng.standard_normal((d_out, d_in))
    Y = A @ W.T + 2.0 + noise * rng.standard_normal((n, d_out))
    return A.astype(np.float32), Y.astype(np.float32)


def test_unfitted_map_refuses():
    m = AffineMap()
    with pytest.raises(NotFittedError, match="not fitted"):
        m.transform(np.zeros((2, 3), np.float32))
    with pytest.raises(NotFittedError):
        m.score(np.zeros((2, 3)), np.zeros((2, 3)))
    assert isinstance(NotFittedError("x"), UsageError)


def test_init_stores_params_only_and_fit_validates():
    m = AffineMap(solver="nope", lr=-1)  # no validation in __init__
    assert m.get_params()["solver"] == "nope"
    A, Y = data()
    with pytest.raises(UsageError, match="--solver 'nope'"):
        m.fit(A, Y)
    with pytest.raises(UsageError, match="--calibrate"):
        AffineMap(calibrate="bad").fit(A, Y)
    with pytest.raises(InputError, match="paired row by row"):
        AffineMap().fit(A, Y[:-1])
    fitted = AffineMap(solver="lstsq").fit(A, Y)
    assert fitted.transform(A).shape == (3000, 9)
    assert 0.99 < fitted.score(A, Y) <= 1.0
    with pytest.raises(InputError, match=r"\(n, 12\)"):
        fitted.transform(A[:, :5])


def test_nan_rows_rejected_with_row_indices():
    A, Y = data()
    A[17, 3] = np.nan
    Y[2999, 0] = np.inf
    with pytest.raises(InputError, match=r"2 feature row\(s\).*rows 17, 2999"):
        AffineMap(solver="lstsq").fit(A, Y)


def test_zero_target_rows_dropped_and_all_zero_is_an_error():
    A, Y = data()
    Y[:50] = 0.0
    A[50:60] = 0.0  # zero source rows are fine: they map to b
    m = AffineMap(solver="gd", epochs=2, batch_size=256).fit(A, Y)
    assert m.info_["n_zero_target_rows"] == 50
    assert np.all(np.isfinite(m.W_)) and m.metrics_["cosine"] > 0.99
    with pytest.raises(InputError, match="usable row"):
        AffineMap(solver="lstsq").fit(A, np.zeros_like(Y))


def test_gd_is_deterministic_on_cpu_and_reads_memmaps(tmp_path):
    A, Y = data(1)
    np.save(tmp_path / "a.npy", A)
    np.save(tmp_path / "y.npy", Y)
    Am = np.load(tmp_path / "a.npy", mmap_mode="r")
    Ym = np.load(tmp_path / "y.npy", mmap_mode="r")
    m1 = AffineMap(epochs=3, batch_size=300, seed=4).fit(A, Y)
    m2 = AffineMap(epochs=3, batch_size=300, seed=4).fit(Am, Ym)
    assert np.array_equal(m1.W_, m2.W_) and np.array_equal(m1.b_, m2.b_)
    assert [h["holdout_loss"] for h in m1.history_] == [h["holdout_loss"] for h in m2.history_]
    m3 = AffineMap(epochs=3, batch_size=300, seed=5).fit(A, Y)
    assert not np.array_equal(m1.W_, m3.W_)


@pytest.mark.parametrize("calibrate", ["scalar", "norm", "none"])
def test_map_file_round_trip(tmp_path, calibrate):
    A, Y = data(2)
    m = AffineMap(epochs=2, batch_size=500, calibrate=calibrate).fit(A, Y)
    path = m.save(tmp_path / "sub" / "m.npz", note="hello")
    with np.load(path, allow_pickle=False) as z:
        assert z["W"].shape == (9, 12) and z["b"].shape == (9,)
        meta = json.loads(str(z["metadata"]))
    assert meta["solver"] == "gd" and meta["d_in"] == 12 and meta["d_out"] == 9
    assert meta["calibration"]["mode"] == calibrate and meta["note"] == "hello"
    assert len(meta["history"]) == len(m.history_) and "loss" in meta["metrics"]
    back = AffineMap.load(path)
    assert np.array_equal(back.W_, m.W_) and np.array_equal(back.b_, m.b_)
    np.testing.assert_array_equal(back.transform(A[:20]), m.transform(A[:20]))
    assert not list(tmp_path.glob("sub/.*tmp"))  # atomic write left no temp file


def test_load_rejects_non_map_files(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        AffineMap.load(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="not a readable"):
        AffineMap.load(tmp_path / "junk.npz")
    np.savez(tmp_path / "other.npz", W=np.zeros((2, 2)), b=np.zeros(2),
             metadata=np.array(json.dumps({"format": "something"})))
    with pytest.raises(InputError, match="not an xnetmap map"):
        AffineMap.load(tmp_path / "other.npz")


# ---- real feature stores ------------------------------------------------------------


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    from xnetmap.extract import extract_features

    tmp = tmp_path_factory.mktemp("fitstores")
    src_model = conv_features_model(tmp / "src.features.onnx", channels=6, seed=1)
    tgt_model = conv_features_model(tmp / "tgt.features.onnx", channels=5, seed=2)
    folder = write_folder_dataset(tmp / "imgs", n_per_class=30, bad=True)
    src = extract_features(src_model, str(folder), tmp / "src_store", max_bad=0.5)
    tgt = extract_features(tgt_model, str(folder), tmp / "tgt_store", max_bad=0.5)
    other = extract_features(tgt_model, f"idx:{write_idx_dataset(tmp / 'idx', 40)}",
                             tmp / "other_store")
    return tmp, src, tgt, other


def test_fit_map_from_stores_skips_masked_rows(stores):
    tmp, src, tgt, _ = stores
    assert src.mask.sum() == 2
    m = fit_map(src.path, tgt.path, tmp / "m.npz", solver="lstsq")
    assert m.info_["n_masked"] == 2
    assert m.info_["n_train"] + m.info_["n_holdout"] + m.info_["n_zero_target_rows"] == src.n - 2
    meta = AffineMap.load(tmp / "m.npz").metadata_
    assert meta["source_model_sha256"] == src.model_sha256
    assert meta["target_model_sha256"] == tgt.model_sha256
    assert meta["d_in"] == 6 and meta["d_out"] == 5


def test_mismatched_sample_ids_name_the_first_mismatch(stores):
    tmp, src, _, other = stores
    with pytest.raises(InputError, match=r"differ at row 0"):
        fit_map(src, other, None)


def test_cli_fit_json_and_exit_codes(stores, capsys):
    from xnetmap.cli import main

    tmp, src, tgt, other = stores
    out = tmp / "cli.npz"
    with pytest.raises(SystemExit) as exc:
        main(["fit", str(src.path), str(tgt.path), "-o", str(out), "--solver", "gd",
              "--epochs", "3", "--batch-size", "32", "--json"])
    assert exc.value.code in (0, None)
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["solver"] == "gd" and summary["n_masked"] == 2 and out.exists()
    assert summary["calibration"] == "scalar" and summary["epochs_run"] >= 1
    with pytest.raises(SystemExit) as exc:
        main(["fit", str(src.path), str(other.path), "-o", str(tmp / "bad.npz")])
    assert exc.value.code == 2
    assert "differ at row 0" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["fit", str(src.path), str(tgt.path), "-o", str(tmp / "x.npz"), "--device", "cuda"]
             if False else ["fit", str(src.path), str(tgt.path), "-o", str(tmp / "x.npz"),
                            "--solver", "bogus"])
    assert exc.value.code == 2
    assert app is not None


def test_multi_shard_store_streams_rows_like_an_array(stores):
    from xnetmap.extract import extract_features
    from xnetmap.fit.store_rows import StoreRows, as_matrix

    tmp, src, tgt, _ = stores
    model = tmp / "src.features.onnx"
    folder = tmp / "imgs"
    sharded = extract_features(model, str(folder), tmp / "src_sharded", max_bad=0.5,
                               shard_rows=16)
    assert len(sharded.manifest["shards"]) > 1 and isinstance(as_matrix(sharded), StoreRows)
    a = fit_map(sharded, tgt, None, solver="gd", epochs=2, batch_size=16)
    rows = np.flatnonzero(~(src.mask | tgt.mask))
    b = AffineMap(solver="gd", epochs=2, batch_size=16).fit(src.features(), tgt.features(),
                                                          rows=rows)
    np.testing.assert_allclose(a.W_, b.W_, rtol=1e-5, atol=1e-6)
    with pytest.raises(InputError, match="rows must index"):
        AffineMap().fit(src.features(), tgt.features(), rows=[0, 10_000])
