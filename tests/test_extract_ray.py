"""--engine ray: the same store as --engine local, shard by shard, on a local Ray cluster.

The cluster (2 CPUs) is started once per module by the test itself; the faults
(a Ray worker killed by pid mid-run, the driver killed with SIGKILL and re-run)
are real processes killed from here.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from extract_fixtures import (
    FASHION_PREPROCESS,
    _save,
    features_model_onnxruntime_rejects,
    write_folder_dataset,
    write_idx_dataset,
)
from onnx import TensorProto, helper, numpy_helper
from zoo_data import DATA, MODELS

from xnetmap.extract import extract_features

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def slow_features_model(path: Path, width: int = 32) -> Path:
    """Three 3x3 convolutions on 28x28 (a few ms per image): a run long enough to kill."""
    rng = np.random.default_rng(1)
    inits, nodes, x, c_in = [], [], "input", 1
    for i in range(3):
        W = rng.normal(0, 0.3, (width, c_in, 3, 3)).astype(np.float32)
        inits.append(numpy_helper.from_array(W, f"W{i}"))
        nodes += [helper.make_node("Conv", [x, f"W{i}"], [f"c{i}"], pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"])]
        x, c_in = f"r{i}", width
    nodes += [helper.make_node("GlobalAveragePool", [x], ["g"]),
              helper.make_node("Flatten", ["g"], ["features"], axis=1)]
    graph = helper.make_graph(
        nodes, "slow_features",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 28, 28])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", width])], inits)
    return _save(graph, path, FASHION_PREPROCESS)


def assert_same_store(a, b):
    """Shard by shard, bit for bit; mask, labels and ids too."""
    sa, sb = list(a.shard_arrays()), list(b.shard_arrays())
    assert len(sa) == len(sb) and len(sa) >= 1
    for k, (x, y) in enumerate(zip(sa, sb)):
        assert x.dtype == y.dtype and np.array_equal(x, y), f"shard {k} differs"
    assert np.array_equal(a.mask, b.mask)
    assert (a.labels is None) == (b.labels is None)
    if a.labels is not None:
        assert np.array_equal(a.labels, b.labels)
    assert a.ids == b.ids
    assert [s["sha256"] for s in a.manifest["shards"]] == \
        [s["sha256"] for s in b.manifest["shards"]]


def test_ray_equals_local_on_a_folder_with_unreadable_files(ray_cluster, tmp_path):
    from extract_fixtures import conv_features_model

    model = conv_features_model(tmp_path / "m.features.onnx")
    folder = write_folder_dataset(tmp_path / "imgs", n_per_class=10)  # 24 images, 2 unreadable
    kw = dict(batch_size=4, shard_rows=8, max_bad=0.2)
    local = extract_features(model, f"folder:{folder}", tmp_path / "local", **kw)
    ray_ = extract_features(model, f"folder:{folder}", tmp_path / "ray", engine="ray", **kw)
    assert local.run["n_bad"] == ray_.run["n_bad"] == 2 and ray_.mask.sum() == 2
    assert_same_store(local, ray_)
    assert local.manifest["bad"] == ray_.manifest["bad"]
    eng = ray_.manifest["engine"]
    import ray

    assert eng["name"] == "ray" and eng["ray_version"] == ray.__version__ and eng["workers"] == 2
    assert local.manifest["engine"]["name"] == "local"
    # the identity does not depend on the engine: each reuses the other's store
    again = extract_features(model, f"folder:{folder}", tmp_path / "local", engine="ray", **kw)
    assert again.run["reused"]


def test_ray_equals_local_on_the_bundled_idx_data_and_a_zoo_model(ray_cluster, tmp_path):
    from xnetmap.data import open_dataset

    ds = open_dataset(DATA / "t10k-images-idx3-ubyte.gz").subset(np.arange(500, 1100))
    model = MODELS / "mobilenet.onnx"
    kw = dict(batch_size=32, shard_rows=128, split_dir=tmp_path / "split")
    local = extract_features(model, ds, tmp_path / "local", **kw)
    ray_ = extract_features(model, ds, tmp_path / "ray", engine="ray", **kw)
    assert ray_.n == 600 and len(ray_.manifest["shards"]) == 5
    assert_same_store(local, ray_)


def _actor_pids() -> list[int]:
    pids = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            cmd = (p / "cmdline").read_bytes()
        except OSError:
            continue
        if b"FeatureActor" in cmd and p.stat().st_uid == os.getuid():
            pids.append(int(p.name))
    return pids


@pytest.mark.slow
def test_a_ray_worker_killed_mid_run_still_gives_the_identical_store(ray_cluster, tmp_path):
    model = slow_features_model(tmp_path / "slow.features.onnx")
    data = f"idx:{write_idx_dataset(tmp_path / 'idx', 640)}"
    kw = dict(batch_size=16, shard_rows=32)
    killed = []

    def kill_one(done, total):
        if done and not killed:
            pids = _actor_pids()
            assert pids, "no Ray worker process found"
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])

    ray_ = extract_features(model, data, tmp_path / "ray", engine="ray", progress=kill_one, **kw)
    assert killed and ray_.run["computed_rows"] == 640
    local = extract_features(model, data, tmp_path / "local", **kw)
    assert_same_store(local, ray_)


@pytest.mark.slow
def test_driver_sigkill_then_rerun_resumes_to_the_identical_store(ray_cluster, tmp_path):
    model = slow_features_model(tmp_path / "slow.features.onnx")
    data = f"idx:{write_idx_dataset(tmp_path / 'idx', 1280)}"
    out = tmp_path / "ray"
    cmd = [sys.executable, "-m", "xnetmap", "extract", str(model), data, "-o", str(out),
           "--engine", "ray", "--ray-address", ray_cluster, "--batch-size", "16",
           "--shard-rows", "32", "-q"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    written, deadline = 0, time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        try:
            m = json.loads((out / "manifest.json").read_text())
            written = len(m["shards"])
        except (OSError, ValueError):
            written = 0
        if written >= 2:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    m = json.loads((out / "manifest.json").read_text())
    assert not m["complete"] and 2 <= len(m["shards"]) < 40
    resumed = extract_features(model, data, out, engine="ray", batch_size=16)
    assert resumed.run["resumed_shards"] >= 2 and not resumed.run["reused"]
    assert resumed.run["computed_rows"] < 1280
    local = extract_features(model, data, tmp_path / "local", batch_size=16, shard_rows=32)
    assert_same_store(local, resumed)


def test_workers_that_cannot_open_F_exit_3_with_one_line_naming_the_file(ray_cluster,
                                                                          tmp_path):
    model = features_model_onnxruntime_rejects(tmp_path / "rejected.features.onnx")
    data = f"idx:{write_idx_dataset(tmp_path / 'idx', 64)}"
    cmd = [sys.executable, "-m", "xnetmap", "extract", str(model), data, "-o",
           str(tmp_path / "s"), "--engine", "ray", "--ray-address", ray_cluster,
           "--batch-size", "16", "-q"]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert res.returncode == 3, res.stderr[-3000:]
    # one line from xnetmap; besides it only Ray's own timestamped C++ log lines
    # (Ray Data's actor pools log one on every run), no traceback
    ray_log = re.compile(r"^\[\d{4}-\d\d-\d\d [\d:,]+ [A-Z] \d+ \d+\] \w+\.cc:\d+: ")
    lines = [line for line in res.stderr.splitlines()
             if line.strip() and not ray_log.match(line)]
    assert len(lines) == 1, res.stderr[-3000:]
    assert lines[0].startswith("xnetmap: error: onnxruntime cannot load " + str(model))
    assert "Traceback" not in res.stderr and "RayTaskError" not in res.stderr


def test_a_worker_with_other_preprocessing_is_an_input_error(ray_cluster, tmp_path):
    from extract_fixtures import conv_features_model

    from xnetmap.data import PreprocessSpec, open_dataset
    from xnetmap.errors import InputError
    from xnetmap.extract.engines import units_of
    from xnetmap.extract.ray_engine import RayEngine

    class OtherVersion(PreprocessSpec):
        """The driver's spec as another xnetmap version would digest it."""

        def digest(self) -> str:
            return "0" * 64

    model = conv_features_model(tmp_path / "m.features.onnx")
    ds = open_dataset(f"idx:{write_idx_dataset(tmp_path / 'idx', 32)}")
    spec = OtherVersion.from_json(json.dumps(FASHION_PREPROCESS))
    eng = RayEngine("cpu")
    eng.start(model)
    eng.ready()
    with pytest.raises(InputError, match="install the same xnetmap version on every node"):
        list(eng.run(ds, spec, units_of([(0, 32)], [0], 16)))


def test_engine_ray_without_ray_installed_exits_2_with_the_install_command(tmp_path):
    from extract_fixtures import conv_features_model

    model = conv_features_model(tmp_path / "m.features.onnx")
    data = f"idx:{write_idx_dataset(tmp_path / 'idx', 8)}"
    code = ("import sys; sys.modules['ray'] = None; from xnetmap.cli import main; "
            f"sys.argv = ['xnetmap', 'extract', {str(model)!r}, {data!r}, '-o', "
            f"{str(tmp_path / 's')!r}, '--engine', 'ray']; main()")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 2, res.stderr
    assert "pip install 'xnetmap[ray]'" in res.stderr
    assert not (tmp_path / "s").exists()


def test_unknown_engine_and_address_without_ray_are_usage_errors(tmp_path):
    from extract_fixtures import conv_features_model

    from xnetmap.errors import UsageError

    model = conv_features_model(tmp_path / "m.features.onnx")
    data = f"idx:{write_idx_dataset(tmp_path / 'idx', 8)}"
    with pytest.raises(UsageError, match="--engine 'spark'"):
        extract_features(model, data, tmp_path / "s", engine="spark")
    with pytest.raises(UsageError, match="--ray-address needs --engine ray"):
        extract_features(model, data, tmp_path / "s", ray_address="auto")


@pytest.mark.slow
def test_run_study_with_the_ray_engine_prints_the_same_table1(ray_cluster, tmp_path):
    from zoo_data import fashion, write_npz

    from xnetmap.report.terminal import format_table1
    from xnetmap.study.run import run_study
    from xnetmap.study.settings import StudySettings

    train = write_npz(tmp_path / "train.npz", *fashion("train", 600))
    val = write_npz(tmp_path / "val.npz", *fashion("test", 300))
    models = [MODELS / "resnet_v2.onnx", MODELS / "mobilenet.onnx"]
    tables, stores = {}, {}
    for engine in ("local", "ray"):
        settings = StudySettings(engine=engine, fit={"epochs": 3}, n_boot=20)
        outcome = run_study(models, val=val, train=train, cache_dir=tmp_path / f"cache-{engine}",
                            settings=settings)
        tables[engine] = format_table1(outcome.study)
        stores[engine] = sorted((tmp_path / f"cache-{engine}").rglob("shard-*.npy"))
    assert "resnet_v2" in tables["ray"] and tables["ray"] == tables["local"]
    # every store (2 models x train/val) was made by its engine, and holds the same bytes
    assert len(stores["ray"]) == len(stores["local"]) >= 4
    for a, b in zip(stores["local"], stores["ray"]):
        assert a.relative_to(tmp_path / "cache-local") == b.relative_to(tmp_path / "cache-ray")
        assert a.read_bytes() == b.read_bytes()
    engines = {json.loads(m.read_text())["engine"]["name"]
               for m in (tmp_path / "cache-ray").rglob("manifest.json")}
    assert engines == {"ray"}
