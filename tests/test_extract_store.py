"""extract_features + FeatureStore: known answers, determinism, reuse, checksums, refusal."""

from __future__ import annotations

import json

import numpy as np
import pytest
from extract_fixtures import conv_features_model, write_idx_dataset

from xnetmap.data import open_dataset
from xnetmap.errors import DeviceUnavailable, InputError, UsageError
from xnetmap.extract import FeatureStore, extract_features
from xnetmap.graph import model_preprocess
from xnetmap.runtime import make_session, run_model


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("extract")
    model = conv_features_model(tmp / "tiny.features.onnx")
    images = write_idx_dataset(tmp / "idx", 300)
    return tmp, model, f"idx:{images}"


def _expected(model, spec_str):
    """Features computed the plain way: preprocess every image, one onnxruntime call."""
    ds = open_dataset(spec_str)
    spec, _ = model_preprocess(model)
    X = np.stack([spec.apply(ds.load(i)) for i in range(len(ds))])
    return run_model(model, X, batch_size=len(X))["features"], ds


def test_known_answer_and_two_runs_identical(setup, tmp_path):
    _, model, data = setup
    a = extract_features(model, data, tmp_path / "a", batch_size=32, shard_rows=64, workers=2)
    b = extract_features(model, data, tmp_path / "b", batch_size=32, shard_rows=64, workers=0)
    F, ds = _expected(model, data)
    assert a.n == 300 and a.dim == 8 and len(a.manifest["shards"]) == 5
    np.testing.assert_allclose(a.features(), F, rtol=1e-5, atol=1e-6)
    assert np.array_equal(a.features(), b.features())
    assert a.ids == b.ids == ds.ids
    assert np.array_equal(a.labels, ds.labels) and a.labels.dtype == np.int64
    assert not a.mask.any()
    assert a.manifest["complete"] is True
    assert a.manifest["model_sha256"] == a.model_sha256
    for s in a.manifest["shards"]:  # every shard file matches its recorded checksum
        assert (tmp_path / "a" / s["file"]).exists()
    assert a.verify() == []


def test_reader_api(setup, tmp_path):
    _, model, data = setup
    st = extract_features(model, data, tmp_path / "s", batch_size=16, shard_rows=48,
                          dtype="float16")
    full = st.features()
    assert full.dtype == np.float32 and st.dtype == np.float16
    idx = [299, 0, 47, 48, 150]
    assert np.array_equal(st.take(idx), full[idx])
    got = np.concatenate(list(st.iter_batches(70)))
    assert np.array_equal(got, full)
    got = np.concatenate(list(st.iter_batches(2, indices=idx)))
    assert np.array_equal(got, full[idx])
    F, _ = _expected(model, data)
    np.testing.assert_allclose(full, F.astype(np.float16).astype(np.float32))
    reopened = FeatureStore.open(tmp_path / "s")
    assert reopened.n == 300 and reopened.ids == st.ids


def test_shards_are_verified_memory_maps_not_process_memory(setup, tmp_path):
    """A shard is mapped (page cache, not the process's memory), hashed, and read ahead."""
    _, model, data = setup
    st = FeatureStore.open(
        extract_features(model, data, tmp_path / "m", batch_size=16, shard_rows=48).path)
    full = st.features()
    shards = list(st.shard_arrays())
    assert all(isinstance(a, np.memmap) and not a.flags.writeable for a in shards)
    assert np.array_equal(np.concatenate(shards), full)
    # read-ahead over ranges that start mid-page and cross shards: the kernel accepts them
    for lo, hi in ((0, 300), (1, 2), (47, 49), (95, 250), (299, 300)):
        st.advise(lo, hi)
    fresh = FeatureStore.open(st.path)
    fresh.advise(0, 300)  # nothing mapped yet: nothing to advise, no error
    assert np.array_equal(fresh.take([5, 120]), full[[5, 120]])


def test_complete_store_reused_at_once(setup, tmp_path):
    _, model, data = setup
    first = extract_features(model, data, tmp_path / "s", batch_size=32, shard_rows=64)
    again = extract_features(model, data, tmp_path / "s", batch_size=32)
    assert first.run["reused"] is False and first.run["computed_rows"] == 300
    assert again.run["reused"] is True and again.run["computed_rows"] == 0
    assert np.array_equal(first.features(), again.features())


def test_flipped_byte_detected_and_recomputed(setup, tmp_path):
    _, model, data = setup
    good = extract_features(model, data, tmp_path / "s", batch_size=32, shard_rows=64)
    ref = good.features()
    shard = tmp_path / "s" / "shard-00002.npy"
    raw = bytearray(shard.read_bytes())
    raw[-5] ^= 0x40  # a feature byte, not the header: np.load would still read it
    shard.write_bytes(bytes(raw))
    with pytest.raises(InputError, match="shard-00002.npy .*sha256.*`xnetmap extract`"):
        FeatureStore.open(tmp_path / "s").features()
    assert FeatureStore.open(tmp_path / "s").verify() == [2]
    fixed = extract_features(model, data, tmp_path / "s", batch_size=32)
    assert fixed.run["recomputed_shards"] == [2]
    assert fixed.run["computed_rows"] == 64 and fixed.run["resumed_shards"] == 4
    assert np.array_equal(fixed.features(), ref)
    assert fixed.verify() == []


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_fit_refuses_a_damaged_shard_naming_it(setup, tmp_path, damage):
    """A flipped byte or a truncated shard: `xnetmap fit` exits 2 naming the shard, and
    says that `xnetmap extract` on the same store recomputes it (no traceback)."""
    from cli_run import run_cli

    _, model, data = setup
    ref = extract_features(model, data, tmp_path / "a", batch_size=32, shard_rows=64).features()
    extract_features(model, data, tmp_path / "b", batch_size=32, shard_rows=64,
                     preprocess={"mean": [0.5]})
    args = ["fit", tmp_path / "a", tmp_path / "b", "-o", tmp_path / "m.npz", "--solver", "lstsq"]
    code, out = run_cli(*args)
    assert code == 0, out
    shard = tmp_path / "a" / "shard-00003.npy"
    raw = bytearray(shard.read_bytes())
    if damage == "flip":
        raw[200] ^= 0x01  # one feature bit: the array still loads
        shard.write_bytes(bytes(raw))
    else:
        shard.write_bytes(bytes(raw[: len(raw) // 2]))
    code, out = run_cli(*args)
    assert code == 2, out
    assert "shard-00003.npy" in out and "`xnetmap extract`" in out and "Traceback" not in out
    assert ("truncated" if damage == "truncate" else "sha256") in out
    fixed = extract_features(model, data, tmp_path / "a", batch_size=32)
    assert fixed.run["recomputed_shards"] == [3]
    assert np.array_equal(fixed.features(), ref)
    assert run_cli(*args)[0] == 0


def test_missing_or_tampered_ids_labels_mask_are_rebuilt(setup, tmp_path):
    _, model, data = setup
    good = extract_features(model, data, tmp_path / "s", batch_size=32, shard_rows=64)
    ids, labels, mask = list(good.ids), good.labels.copy(), good.mask.copy()
    out = tmp_path / "s"
    (out / "ids.json").write_text('["x"]\n')
    np.save(out / "labels.npy", np.zeros_like(labels))
    (out / "mask.npy").unlink()
    with pytest.raises(InputError, match="mask.npy is missing"):
        FeatureStore.open(out)
    again = extract_features(model, data, out, batch_size=32)
    assert again.run["reused"] and len(again.run["notes"]) == 3
    assert again.ids == ids and np.array_equal(again.labels, labels)
    assert np.array_equal(again.mask, mask)
    (out / "ids.json").write_text('["x"]\n')
    with pytest.raises(InputError, match="ids.json is missing or wrong"):
        _ = FeatureStore.open(out).ids
    (out / "labels.npy").unlink()  # a labelled store never opens as unlabeled
    with pytest.raises(InputError, match="labels.npy is missing"):
        FeatureStore.open(out)


def test_unwritable_store_file_is_an_input_error(setup, tmp_path):
    _, model, data = setup
    (tmp_path / "s" / "shard-00001.npy" / "x").mkdir(parents=True)  # a folder in the way
    with pytest.raises(InputError, match="cannot write the feature store .*re-run"):
        extract_features(model, data, tmp_path / "s", batch_size=32, shard_rows=64)


def test_fingerprint_refusal_and_overwrite(setup, tmp_path):
    tmp, model, data = setup
    extract_features(model, data, tmp_path / "s", batch_size=32)
    with pytest.raises(UsageError, match="preprocess_digest"):
        extract_features(model, data, tmp_path / "s", preprocess={"mean": [0.5]})
    other = write_idx_dataset(tmp_path / "other", 300, seed=7)
    with pytest.raises(UsageError, match="dataset_fingerprint"):
        extract_features(model, f"idx:{other}", tmp_path / "s")
    model2 = conv_features_model(tmp_path / "other.features.onnx", seed=5)
    with pytest.raises(UsageError, match="model_sha256"):
        extract_features(model2, data, tmp_path / "s")
    with pytest.raises(UsageError, match="dtype"):
        extract_features(model, data, tmp_path / "s", dtype="float16")
    st = extract_features(model2, data, tmp_path / "s", overwrite=True)
    assert st.run["reused"] is False and st.model_sha256 == st.manifest["features_sha256"]


def test_refuses_foreign_directory_and_opens_only_complete(setup, tmp_path):
    _, model, data = setup
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="not part of a feature store"):
        extract_features(model, data, tmp_path / "d", overwrite=True)
    assert (tmp_path / "d" / "notes.txt").exists()
    with pytest.raises(InputError, match="not a feature store"):
        FeatureStore.open(tmp_path / "d")
    st = extract_features(model, data, tmp_path / "s", shard_rows=64)
    m = st.manifest
    m["complete"] = False
    (tmp_path / "s" / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(InputError, match="incomplete"):
        FeatureStore.open(tmp_path / "s")


def test_bad_arguments(setup, tmp_path):
    _, model, data = setup
    for kwargs in ({"batch_size": 0}, {"dtype": "int8"}, {"max_bad": 1.5}, {"device": "tpu"},
                   {"threads": -2}):
        with pytest.raises(UsageError):
            extract_features(model, data, tmp_path / "s", **kwargs)


def test_run_model_batches_match_one_call(setup):
    _, model, _ = setup
    X = np.random.default_rng(0).normal(size=(50, 1, 28, 28)).astype(np.float32)
    one = run_model(model, X, batch_size=50)["features"]
    many = run_model(make_session(model), X, batch_size=7)["features"]
    assert one.shape == (50, 8)
    np.testing.assert_allclose(many, one, rtol=1e-5, atol=1e-6)


def test_cuda_that_is_not_obtained_is_an_error(setup):
    _, model, _ = setup
    from xnetmap.runtime import has_ort_cuda

    if has_ort_cuda():
        pytest.skip("a CUDA GPU is present")
    with pytest.raises(DeviceUnavailable, match="--device cuda"):
        make_session(model, "cuda")


def test_full_classifier_split_on_the_fly(setup, tmp_path):
    from extract_fixtures import conv_classifier_model

    from xnetmap.graph import file_sha256

    _, _, data = setup
    full = conv_classifier_model(tmp_path / "clf.onnx")
    st = extract_features(full, data, tmp_path / "s", split_dir=tmp_path / "split")
    assert st.dim == 8 and st.model_sha256 == file_sha256(full)
    feats = sorted((tmp_path / "split").glob("*.features.onnx"))
    assert len(feats) == 1
    direct = extract_features(feats[0], data, tmp_path / "d")
    assert direct.model_sha256 == st.model_sha256  # read from NAME.split.json
    assert np.array_equal(direct.features(), st.features())
    again = extract_features(full, data, tmp_path / "s", split_dir=tmp_path / "split")
    assert again.run["reused"] is True


def test_new_external_weights_are_a_new_store_identity(setup, tmp_path):
    import onnx
    from extract_fixtures import conv_classifier_model

    _, _, data = setup
    tmp = conv_classifier_model(tmp_path / "tmp.onnx")
    model = onnx.load(str(tmp))
    folder = tmp_path / "m"
    folder.mkdir()
    onnx.save(model, str(folder / "clf.onnx"), save_as_external_data=True, location="w.bin",
              size_threshold=0)
    first = extract_features(folder / "clf.onnx", data, tmp_path / "s", split_dir=tmp_path / "p")
    weights = bytearray((folder / "w.bin").read_bytes())
    W = np.frombuffer(bytes(weights[:288]), dtype=np.float32) * -1.0  # conv weight (8,1,3,3)
    weights[:288] = W.tobytes()
    (folder / "w.bin").write_bytes(bytes(weights))  # same size, same .onnx file
    with pytest.raises(UsageError, match="features_sha256"):
        extract_features(folder / "clf.onnx", data, tmp_path / "s", split_dir=tmp_path / "p")
    again = extract_features(folder / "clf.onnx", data, tmp_path / "s2", split_dir=tmp_path / "p")
    assert not np.array_equal(again.features(), first.features())


def test_features_file_with_unsafe_external_data_is_refused(setup, tmp_path):
    import onnx

    from xnetmap.errors import ModelRejected

    _, model, data = setup
    folder = tmp_path / "m"
    folder.mkdir()
    onnx.save(onnx.load(str(model)), str(folder / "x.features.onnx"),
              save_as_external_data=True, location="w.bin", size_threshold=0)
    (tmp_path / "w.bin").write_bytes((folder / "w.bin").read_bytes())
    (folder / "w.bin").unlink()
    (folder / "w.bin").symlink_to(tmp_path / "w.bin")  # points outside the model folder
    with pytest.raises(ModelRejected, match="symbolic link"):
        extract_features(folder / "x.features.onnx", data, tmp_path / "s")
    custom = onnx.load(str(model))  # checked like any model before onnxruntime opens it
    custom.graph.node[0].domain = "com.evil"
    custom.opset_import.add(domain="com.evil", version=1)
    onnx.save(custom, str(tmp_path / "c.features.onnx"))
    with pytest.raises(ModelRejected, match="custom-domain operators"):
        extract_features(tmp_path / "c.features.onnx", data, tmp_path / "s")


def test_concurrent_writer_refused(setup, tmp_path):
    fcntl = pytest.importorskip("fcntl")
    _, model, data = setup
    (tmp_path / "s").mkdir()
    with open(tmp_path / "s" / ".xnetmap-extract.lock", "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        with pytest.raises(UsageError, match="another"):
            extract_features(model, data, tmp_path / "s")
    st = extract_features(model, data, tmp_path / "s")  # lock released: runs
    assert st.n == 300


def test_io_binding_path_matches_plain_run(setup):
    from xnetmap.runtime import Runner

    _, model, _ = setup
    sess = make_session(model)
    X = np.random.default_rng(2).normal(size=(9, 1, 28, 28)).astype(np.float32)
    plain = Runner(sess)(X)[0]
    bound = Runner(sess, bind_device="cpu")(X)[0]  # the CUDA path's binding calls, on CPU
    assert np.array_equal(plain, bound)


def test_progress_and_symbolic_feature_width(setup, tmp_path):
    _, _, data = setup
    model = conv_features_model(tmp_path / "sym.features.onnx", channels=5, symbolic_dim=True)
    calls = []
    st = extract_features(model, data, tmp_path / "s", batch_size=64,
                          progress=lambda done, total: calls.append((done, total)))
    assert st.dim == 5 and st.features().shape == (300, 5)
    assert calls[0] == (0, 300) and calls[-1] == (300, 300)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_unlabeled_dataset_has_no_labels(tmp_path):
    from extract_fixtures import smooth_images
    from PIL import Image

    model = conv_features_model(tmp_path / "tiny.features.onnx")
    (tmp_path / "u").mkdir()
    for i, img in enumerate(smooth_images(5)):
        Image.fromarray(img).save(tmp_path / "u" / f"{i}.png")
    st = extract_features(model, f"unlabeled:{tmp_path / 'u'}", tmp_path / "s")
    assert st.labels is None and st.n == 5 and not (tmp_path / "s" / "labels.npy").exists()
    assert FeatureStore.open(tmp_path / "s").labels is None


def test_optimized_session_cache_gives_identical_outputs(tmp_path, monkeypatch):
    """A session from the optimized-graph cache computes exactly what a fresh one does,
    and a damaged cache entry is replaced, not trusted."""
    from extract_fixtures import conv_features_model

    from xnetmap.runtime import make_session, optimized_cache_dir

    monkeypatch.setenv("XNETMAP_CACHE", str(tmp_path / "cache"))
    model = conv_features_model(tmp_path / "f.features.onnx")
    x = np.random.default_rng(0).normal(size=(5, 1, 28, 28)).astype(np.float32)
    plain = make_session(model, cache_optimized=False)
    want = plain.run(None, {plain.get_inputs()[0].name: x})[0]
    first = make_session(model)  # fills the cache
    entries = list(optimized_cache_dir().glob("*.onnx"))
    assert len(entries) == 1
    second = make_session(model)  # loads the cached optimized graph
    for sess in (first, second):
        assert np.array_equal(sess.run(None, {sess.get_inputs()[0].name: x})[0], want)
    entries[0].write_bytes(b"not an onnx model")
    third = make_session(model)
    assert np.array_equal(third.run(None, {third.get_inputs()[0].name: x})[0], want)
    assert entries[0].read_bytes() != b"not an onnx model"
