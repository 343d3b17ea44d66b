"""Deterministic model fuzzer: mutated ONNX models through ``xnetmap inspect`` and ``split``.

Every case is made from ``(seed, case index)`` alone: a seed model (the bundled
``models/*.onnx`` or a tiny hand-made graph) and one or two mutations (byte
flips, truncation, and edits through onnx's Python API: a deleted node, an
input renamed to a missing tensor, dims 0/-1/huge, rank over 64, unknown
element types, duplicate node names, cycles, opset 1 and 999, custom domains in
nodes and local functions, EPContext, odd external-data keys and locations,
odd preprocessing metadata). Each case runs ``inspect`` and ``split`` through
the real CLI entry point (``xnetmap.cli.main``) inside a worker process; the
parent gives each case a time limit and restarts the worker after a timeout or
a signal. A run fails on any exit 5, traceback, signal or timeout.

Usage::

    python tools/fuzz_models.py --cases 200 --seed 0
    python tools/fuzz_models.py --minutes 10 --seed 1      # as many cases as fit
    python tools/fuzz_models.py --only 17 --seed 0         # replay one case, full output

Prints the case count, the exit-code histogram per command and every failure;
exits 1 when any case failed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import select
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
USER_EXITS = {0, 1, 2, 3, 4}
WORKER_MEMORY = 6 << 30  # address-space cap of the worker: a runaway allocation fails fast


# ---------------------------------------------------------------- seed models
def _tiny_models() -> dict:
    """Hand-made classifiers: name -> (ModelProto, {file name: bytes})."""
    import numpy as np
    import onnx
    from onnx import TensorProto as T
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(0)

    def w(name, *shape):
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * 0.3, name)

    def model(nodes, inits, in_shape, out_shape=("N", 5), functions=(), opsets=(("", 17),)):
        graph = helper.make_graph(
            nodes, "fuzz", [helper.make_tensor_value_info("input", T.FLOAT, list(in_shape))],
            [helper.make_tensor_value_info("logits", T.FLOAT, list(out_shape))], inits,
        )
        m = helper.make_model(
            graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets],
            functions=list(functions),
        )
        m.ir_version = 8
        m.metadata_props.add(key="xnetmap.fuzz", value="1")
        return m

    def conv_nodes(act="Relu", act_domain=""):
        return [
            helper.make_node("Conv", ["input", "cw", "cb"], ["c"], name="conv", pads=[1] * 4),
            helper.make_node(act, ["c"], ["r"], name="act", domain=act_domain),
            helper.make_node("GlobalAveragePool", ["r"], ["gap"], name="gap"),
            helper.make_node("Flatten", ["gap"], ["pooled"], name="flatten"),
            helper.make_node("Gemm", ["pooled", "fw", "fb"], ["logits"], name="fc", transB=1),
        ]

    def conv_inits():
        return [w("cw", 4, 3, 3, 3), w("cb", 4), w("fw", 5, 4), w("fb", 5)]

    seeds = {}
    seeds["conv"] = (model(conv_nodes(), conv_inits(), ["N", 3, 8, 8]), {})
    seeds["fixed_batch"] = (model(conv_nodes(), conv_inits(), [2, 3, 8, 8], [2, 5]), {})
    mlp = [
        helper.make_node("MatMul", ["input", "w1"], ["h"], name="mm1"),
        helper.make_node("Add", ["h", "b1"], ["hb"], name="add1"),
        helper.make_node("Relu", ["hb"], ["pooled"], name="relu"),
        helper.make_node("MatMul", ["pooled", "w2"], ["z"], name="mm2"),
        helper.make_node("Add", ["z", "b2"], ["logits"], name="add2"),
    ]
    seeds["mlp"] = (model(mlp, [w("w1", 12, 6), w("b1", 6), w("w2", 6, 5), w("b2", 5)],
                          ["N", 12]), {})
    body = [helper.make_node("Relu", ["x"], ["y"], name="inner")]
    fn = helper.make_function("local.fuzz", "MyRelu", ["x"], ["y"], body,
                              [helper.make_opsetid("", 17)])
    seeds["function"] = (model(conv_nodes("MyRelu", "local.fuzz"), conv_inits(), ["N", 3, 8, 8],
                               functions=[fn], opsets=(("", 17), ("local.fuzz", 1))), {})
    branch = helper.make_graph(
        [helper.make_node("Relu", ["c"], ["rb"], name="branch_relu")], "branch", [],
        [helper.make_tensor_value_info("rb", T.FLOAT, None)],
    )
    if_nodes = conv_nodes()
    if_nodes[1] = helper.make_node("If", ["flag"], ["r"], name="if", then_branch=branch,
                                   else_branch=branch)
    flag = numpy_helper.from_array(np.array(True), "flag")
    seeds["if_subgraph"] = (model(if_nodes, [*conv_inits(), flag], ["N", 3, 8, 8]), {})
    ext = model(conv_nodes(), conv_inits(), ["N", 3, 8, 8])
    blob = bytearray()
    for init in ext.graph.initializer:
        data = init.raw_data or numpy_helper.to_array(init).tobytes()
        init.ClearField("raw_data")
        init.ClearField("float_data")
        init.data_location = T.EXTERNAL
        for key, value in (("location", "weights.bin"), ("offset", str(len(blob))),
                           ("length", str(len(data)))):
            init.external_data.add(key=key, value=value)
        blob += data
    seeds["external"] = (ext, {"weights.bin": bytes(blob)})
    for m, _ in seeds.values():
        if not any(i.data_location == T.EXTERNAL for i in m.graph.initializer):
            onnx.checker.check_model(m)
    return seeds


_SEEDS: dict | None = None


def seed_models() -> dict:
    """Bundled models and tiny hand-made graphs, loaded once per process."""
    global _SEEDS
    if _SEEDS is None:
        import onnx

        seeds = {}
        for path in sorted((ROOT / "models").glob("*.onnx")):
            seeds[f"bundled/{path.stem}"] = (onnx.load(str(path)), {})
        seeds.update(_tiny_models())
        _SEEDS = seeds
    return _SEEDS


# ---------------------------------------------------------------- mutations
@dataclass
class Case:
    """One mutated model: proto (or raw bytes once a byte mutation ran) plus files."""

    model: object
    files: dict = field(default_factory=dict)
    raw: bytes | None = None
    applied: list = field(default_factory=list)


def _pick(rng, seq):
    return seq[int(rng.integers(len(seq)))]


def _all_value_infos(m):
    g = m.graph
    return [*g.input, *g.output, *g.value_info]


def _weight_ranges(case, data: bytes) -> list[tuple[int, int]]:
    """Byte ranges of large initializer payloads inside the serialized model."""
    if case.raw is not None:
        return []
    ranges = []
    for init in case.model.graph.initializer:
        if len(init.raw_data) >= 64:
            start = data.find(init.raw_data)
            if start >= 0:
                ranges.append((start, start + len(init.raw_data)))
    return ranges


def mut_byte_flip(case, rng):
    """Flip bits or bytes; half the time only outside the weights (the structure)."""
    data = bytearray(case.raw if case.raw is not None else case.model.SerializeToString())
    weights = _weight_ranges(case, bytes(data)) if rng.random() < 0.5 else []
    k = int(rng.integers(1, 9))
    for _ in range(k):
        for _attempt in range(50):
            i = int(rng.integers(len(data)))
            if not any(a <= i < b for a, b in weights):
                break
        data[i] ^= 1 << int(rng.integers(8)) if rng.random() < 0.7 else int(rng.integers(256))
    case.raw = bytes(data)
    return f"byte_flip x{k}{' (structure)' if weights else ''}"


def mut_truncate(case, rng):
    data = case.raw if case.raw is not None else case.model.SerializeToString()
    cut = int(rng.integers(len(data)))
    case.raw = data[:cut]
    return f"truncate at {cut}/{len(data)}"


def mut_delete_node(case, rng):
    nodes = case.model.graph.node
    i = int(rng.integers(len(nodes)))
    name = nodes[i].op_type
    del nodes[i]
    return f"delete node {i} ({name})"


def mut_missing_input(case, rng):
    node = _pick(rng, case.model.graph.node)
    if not node.input:
        node.input.append("no_such_tensor")
    else:
        node.input[int(rng.integers(len(node.input)))] = "no_such_tensor"
    return f"input of {node.op_type} -> missing tensor"


def mut_missing_output(case, rng):
    case.model.graph.output[0].name = "no_such_output"
    return "graph output -> missing tensor"


def mut_dims(case, rng):
    vi = _pick(rng, _all_value_infos(case.model))
    dims = vi.type.tensor_type.shape.dim
    # huge values are all over the loader's input cap on every seed model: a dim that
    # passes it (10**5 x 28 pixels) is a real, only slow, model, not a hang
    value = _pick(rng, [0, -1, -7, 10**7, 2**31 - 1, 2**62, 10**9])
    if not dims:
        dims.add()
    d = dims[int(rng.integers(len(dims)))]
    d.dim_value = value
    return f"dim of {vi.name} -> {value}"


def mut_rank(case, rng):
    vi = _pick(rng, _all_value_infos(case.model))
    rank = _pick(rng, [65, 100, 10000])
    shape = vi.type.tensor_type.shape
    del shape.dim[:]
    for _ in range(rank):
        shape.dim.add().dim_value = 1
    return f"rank of {vi.name} -> {rank}"


def mut_dtype(case, rng):
    value = _pick(rng, [0, 999, 8, 23, 2**20])
    if rng.random() < 0.7:
        vi = _pick(rng, _all_value_infos(case.model))
        vi.type.tensor_type.elem_type = value
        return f"elem_type of {vi.name} -> {value}"
    init = _pick(rng, case.model.graph.initializer)
    init.data_type = value
    return f"data_type of initializer {init.name} -> {value}"


def mut_duplicate_names(case, rng):
    nodes = case.model.graph.node
    if rng.random() < 0.5:
        for n in nodes:
            n.name = "same"
        return "every node named 'same'"
    a = _pick(rng, nodes)
    b = _pick(rng, nodes)
    b.output[0] = a.output[0]
    return f"two nodes write {a.output[0]!r}"


def mut_cycle(case, rng):
    nodes = case.model.graph.node
    i = int(rng.integers(len(nodes)))
    j = int(rng.integers(i, len(nodes)))
    nodes[i].input[0] = nodes[j].output[0]
    return f"node {i} reads node {j}'s output (cycle)"


def mut_opset(case, rng):
    value = _pick(rng, [1, 6, 999, 0, -3])
    for opset in case.model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            opset.version = value
    return f"default opset -> {value}"


def mut_custom_node(case, rng):
    m = case.model
    domain = _pick(rng, ["com.microsoft", "com.example", "ai.onnx.ml", "local.fuzz"])
    node = _pick(rng, m.graph.node)
    node.domain = domain
    m.opset_import.add(domain=domain, version=1)
    return f"{node.op_type} node in domain {domain}"


def mut_custom_function(case, rng):
    """An unused local function in a custom domain, plus a node in that domain
    (sometimes an EPContext pointing at a file outside the model's folder)."""
    from onnx import helper

    m = case.model
    domain = _pick(rng, ["com.microsoft", "com.example"])
    body = [helper.make_node("Identity", ["x"], ["y"])]
    m.functions.append(helper.make_function(domain, "Unused", ["x"], ["y"], body,
                                            [helper.make_opsetid("", 17)]))
    m.opset_import.add(domain=domain, version=1)
    node = _pick(rng, m.graph.node)
    if rng.random() < 0.5:
        node.op_type, node.domain = "EPContext", "com.microsoft"
        del node.attribute[:]
        node.attribute.append(helper.make_attribute("ep_cache_context", "../../../etc/passwd"))
        node.attribute.append(helper.make_attribute("embed_mode", 0))
        return "unused custom function + EPContext node"
    node.domain = domain
    return f"unused {domain} function + {node.op_type} node in {domain}"


EXT_VARIANTS = {
    "unknown_key": ({"basepath": "."}, None),
    "odd_key": ({"foo": "1"}, None),
    "checksum": ({"checksum": "abc"}, None),
    "dup_location": ({"location+": "weights.bin"}, None),
    "absolute": ({}, "/etc/passwd"),
    "dotdot": ({}, "../weights.bin"),
    "backslash": ({}, "..\\weights.bin"),
    "drive": ({}, "C:weights.bin"),
    "ort_memory": ({}, "*/_ORT_MEM_ADDR_/*"),
    "empty": ({}, ""),
    "nul": ({}, "weights\x00.bin"),
    "long": ({}, "a" * 5000),
    "folder": ({}, "sub"),
    "missing": ({}, "nothere.bin"),
    "symlink": ({}, "link.bin"),
    "not_utf8": ({}, "@NOTUTF8@"),
    "offset_hex": ({"offset": "0x0"}, None),
    "offset_plus": ({"offset": "+0"}, None),
    "offset_space": ({"offset": " 0"}, None),
    "offset_huge": ({"offset": str(2**70)}, None),
    "length_negative": ({"length": "-4"}, None),
    "length_short": ({"length": "4"}, None),
    "no_length": ({"length-": ""}, None),
}


def mut_external(case, rng):
    """Move an initializer to external data, then give it an odd key or location."""
    import numpy as np
    from onnx import TensorProto as T
    from onnx import numpy_helper

    m = case.model
    inits = [i for i in m.graph.initializer if i.data_location != T.EXTERNAL]
    variant = _pick(rng, sorted(EXT_VARIANTS))
    keys, location = EXT_VARIANTS[variant]
    if inits:
        init = max(inits, key=lambda t: len(t.raw_data) or len(t.float_data) * 4)
        try:
            data = numpy_helper.to_array(init).tobytes()
        except Exception:  # noqa: BLE001 - an earlier mutation broke the tensor
            data = bytes(init.raw_data)
        for f in ("raw_data", "float_data", "int64_data", "int32_data", "double_data"):
            init.ClearField(f)
        init.data_location = T.EXTERNAL
        del init.external_data[:]
        name = f"w{len(case.files)}.bin"
        case.files[name] = data
        entries = {"location": name, "offset": "0", "length": str(len(data))}
    else:
        init = _pick(rng, m.graph.initializer)
        entries = {e.key: e.value for e in init.external_data}
        del init.external_data[:]
    if location is not None:
        entries["location"] = location
    extra = []
    for key, value in keys.items():
        if key.endswith("+"):
            extra.append((key[:-1], value))
        elif key.endswith("-"):
            entries.pop(key[:-1], None)
        else:
            entries[key] = value
    for key, value in [*entries.items(), *extra]:
        init.external_data.add(key=key, value=value)
    if variant == "folder":
        case.files["sub/"] = None
    if variant == "symlink":
        case.files["link.bin"] = ("symlink", name if inits else "weights.bin")
    _ = np
    return f"external data: {variant}"


def mut_metadata(case, rng):
    m = case.model
    value = _pick(rng, [
        '{"size": [1000000000, 1000000000]}', '{"size": [-1, 0]}', '{"size": "big"}',
        '{"mean": [1, 2, 3, 4, 5], "std": [0]}', "[1, 2", '{"layout": "NHWC", "size": [8]}',
        '{"version": 99}', "null",
    ])
    for p in list(m.metadata_props):
        if p.key == "xnetmap.preprocess":
            m.metadata_props.remove(p)
    m.metadata_props.add(key="xnetmap.preprocess", value=value)
    if rng.random() < 0.3:
        m.metadata_props.add(key="xnetmap.labels", value=_pick(rng, ['["a"]', "{", '"x"', "[]"]))
    return f"xnetmap.preprocess = {value}"


def mut_attribute(case, rng):
    nodes = [n for n in case.model.graph.node if n.attribute]
    if not nodes:
        return mut_delete_node(case, rng)
    node = _pick(rng, nodes)
    attr = _pick(rng, node.attribute)
    value = _pick(rng, [0, -1, 2**31, 10**6])
    if attr.ints:
        attr.ints[int(rng.integers(len(attr.ints)))] = value
    else:
        attr.i = value
    return f"attribute {node.op_type}.{attr.name} -> {value}"


def mut_delete_initializer(case, rng):
    inits = case.model.graph.initializer
    if not inits:
        return mut_delete_node(case, rng)
    i = int(rng.integers(len(inits)))
    name = inits[i].name
    del inits[i]
    return f"delete initializer {name}"


PROTO_MUTATIONS = [
    mut_delete_node, mut_missing_input, mut_missing_output, mut_dims, mut_rank, mut_dtype,
    mut_duplicate_names, mut_cycle, mut_opset, mut_custom_node, mut_custom_function,
    mut_external, mut_metadata, mut_attribute, mut_delete_initializer,
]
BYTE_MUTATIONS = [mut_byte_flip, mut_truncate]


def make_case(seed: int, index: int) -> tuple[str, Case]:
    """The case ``index`` of run ``seed``: (seed model name, mutated case)."""
    import numpy as np
    import onnx

    rng = np.random.default_rng([seed, index])
    seeds = seed_models()
    name = _pick(rng, sorted(seeds))
    proto, files = seeds[name]
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    case = Case(model, dict(files))
    n = 1 if rng.random() < 0.6 else 2
    for _ in range(n):
        if rng.random() < 0.25:
            mutation = _pick(rng, BYTE_MUTATIONS)
        else:
            mutation = _pick(rng, PROTO_MUTATIONS)
            if case.raw is not None:  # proto edits after a byte edit: reparse if possible
                try:
                    case.model = onnx.load_from_string(case.raw)
                    case.raw = None
                except Exception:  # noqa: BLE001
                    mutation = mut_byte_flip
        try:
            case.applied.append(mutation(case, rng))
        except (IndexError, ValueError, TypeError, AttributeError) as err:
            case.applied.append(f"{mutation.__name__} not applicable ({type(err).__name__})")
    return name, case


def write_case(case: Case, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in case.files.items():
        target = folder / name
        if content is None:
            target.mkdir(parents=True, exist_ok=True)
        elif isinstance(content, tuple):
            os.symlink(content[1], target)
        else:
            target.write_bytes(content)
    data = case.raw if case.raw is not None else case.model.SerializeToString()
    if case.raw is None:
        data = data.replace(b"@NOTUTF8@", b"\xff\xfe\xfd.bin..")  # same length
    path = folder / "model.onnx"
    path.write_bytes(data)
    return path


# ---------------------------------------------------------------- running
class _BuiltOnce:
    """The typer app with its click command built once: typer rebuilds the whole
    command tree on every call, most of a refused case's cost. Same command,
    same ``xnetmap.cli.main`` error mapping around it."""

    def __init__(self, app):
        import typer.main

        self.app = app
        self.command = typer.main.get_command(app)

    def __call__(self, *args, **kwargs):
        return self.command(*args, **kwargs)


def run_cli(args: list[str]) -> tuple[int, str]:
    """``xnetmap ARGS`` in this process: (exit code, stdout + stderr)."""
    import xnetmap.cli as cli

    if not isinstance(cli.app, _BuiltOnce):
        cli.app = _BuiltOnce(cli.app)
    main = cli.main

    out = io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            main(args)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException as exc:  # noqa: BLE001 - escaped main(): a bug in itself
            import traceback

            traceback.print_exc(file=out)
            code = 5
            if isinstance(exc, KeyboardInterrupt):
                raise
    return code, out.getvalue()


def run_case(seed: int, index: int, work: Path) -> dict:
    name, case = make_case(seed, index)
    folder = work / f"case{index}"
    path = write_case(case, folder)
    runs = []
    for command in ("inspect", "split"):
        args = [command, str(path)]
        if command == "split":
            args += ["-o", str(folder / "out"), "--samples", "2"]
        code, text = run_cli(args)
        lines = [line for line in text.splitlines() if line.strip()]
        runs.append({
            "command": command,
            "code": code,
            "traceback": "Traceback (most recent call last)" in text,
            "message": lines[-1][:300] if lines else "",
            "output": text[-4000:] if (code not in USER_EXITS or "Traceback" in text) else "",
        })
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
    return {"case": index, "seed_model": name, "mutations": case.applied, "runs": runs}


def worker(fd: int, seed: int) -> None:
    """Read case indices on stdin, write one JSON line per case to ``fd``."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY, WORKER_MEMORY))
    out = os.fdopen(fd, "w", buffering=1)
    with tempfile.TemporaryDirectory(prefix="xnetmap-fuzz-") as tmp:
        os.environ["XNETMAP_CACHE"] = str(Path(tmp) / "cache")
        for line in sys.stdin:
            index = int(line)
            result = run_case(seed, index, Path(tmp))
            out.write(json.dumps(result) + "\n")


@dataclass
class Summary:
    cases: int = 0
    histogram: dict = field(default_factory=lambda: {"inspect": Counter(), "split": Counter()})
    failures: list = field(default_factory=list)
    certificate_failed: list = field(default_factory=list)  # split exit 1: worth a look
    seconds: float = 0.0

    def text(self) -> str:
        lines = [f"{self.cases} cases in {self.seconds:.1f} s"]
        for command, counts in self.histogram.items():
            shown = ", ".join(f"exit {k}: {v}" for k, v in sorted(counts.items(), key=str))
            lines.append(f"  {command:8s} {shown}")
        tracebacks = sum(1 for f in self.failures if f.get("traceback"))
        lines.append(f"  failures: {len(self.failures)} (tracebacks {tracebacks}, "
                     f"timeouts {sum(f['kind'] == 'timeout' for f in self.failures)}, "
                     f"signals {sum(f['kind'] == 'signal' for f in self.failures)})")
        for f in self.failures[:20]:
            lines.append(f"  FAIL case {f['case']} {f['kind']}: {json.dumps(f)[:600]}")
        for c in self.certificate_failed[:10]:
            lines.append(f"  certificate failed (exit 1), case {c['case']}: {c['seed_model']} "
                         f"{c['mutations']}")
        return "\n".join(lines)


class _Worker:
    def __init__(self, seed: int):
        read, write = os.pipe()
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--worker", str(write),
             "--seed", str(seed)],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            pass_fds=(write,), text=True, cwd=str(ROOT),
        )
        os.close(write)
        self.reader = os.fdopen(read, "r")

    def ask(self, index: int, timeout: float) -> dict | str:
        """The case's result, or 'timeout' / 'signal N' / 'exit N'."""
        self.proc.stdin.write(f"{index}\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.reader], [], [], timeout)
        if not ready:
            self.close()
            return "timeout"
        line = self.reader.readline()
        if not line:
            code = self.proc.wait()
            return f"signal {-code}" if code < 0 else f"exit {code}"
        return json.loads(line)

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.reader.close()


def run_fuzz(cases: int | None, seed: int = 0, *, timeout: float = 60.0,
             minutes: float | None = None, first_timeout: float = 120.0, progress=None) -> Summary:
    """Run cases ``0..cases-1`` (or until ``minutes`` pass) in a worker process."""
    summary = Summary()
    start = time.monotonic()
    deadline = start + minutes * 60 if minutes else None
    worker_proc = _Worker(seed)
    fresh = True
    index = 0
    try:
        while cases is None or index < cases:
            if deadline is not None and time.monotonic() >= deadline:
                break
            # the first case of a worker also pays for importing onnx and onnxruntime
            result = worker_proc.ask(index, first_timeout if fresh else timeout)
            fresh = False
            summary.cases += 1
            if isinstance(result, str):
                kind = "timeout" if result == "timeout" else "signal"
                summary.failures.append({"case": index, "kind": kind, "detail": result})
                for command in summary.histogram:
                    summary.histogram[command][result] += 1
                worker_proc.close()
                worker_proc, fresh = _Worker(seed), True
            else:
                for run in result["runs"]:
                    summary.histogram[run["command"]][run["code"]] += 1
                    if run["command"] == "split" and run["code"] == 1:
                        summary.certificate_failed.append(
                            {k: result[k] for k in ("case", "seed_model", "mutations")}
                        )
                    if run["code"] not in USER_EXITS or run["traceback"]:
                        summary.failures.append({
                            "case": index, "kind": "exit 5" if run["code"] == 5 else "traceback",
                            "traceback": run["traceback"], "seed_model": result["seed_model"],
                            "mutations": result["mutations"], "command": run["command"],
                            "code": run["code"], "output": run["output"],
                        })
            if progress is not None:
                progress(index, result)
            index += 1
    finally:
        worker_proc.close()
        summary.seconds = time.monotonic() - start
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=200, help="number of cases (default 200)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--minutes", type=float, help="run until this many minutes pass")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per case")
    parser.add_argument("--only", type=int, help="replay one case in this process, verbosely")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        worker(args.worker, args.seed)
        return
    if args.only is not None:
        with tempfile.TemporaryDirectory() as tmp:
            os.environ.setdefault("XNETMAP_CACHE", str(Path(tmp) / "cache"))
            result = run_case(args.seed, args.only, Path(tmp))
        for run in result["runs"]:
            run["output"] = run["output"] or run["message"]
        print(json.dumps(result, indent=2))
        return
    summary = run_fuzz(None if args.minutes else args.cases, args.seed,
                       timeout=args.timeout, minutes=args.minutes)
    print(summary.text())
    sys.exit(1 if summary.failures else 0)


if __name__ == "__main__":
    main()
