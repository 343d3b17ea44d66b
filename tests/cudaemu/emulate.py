"""Run the fit's CUDA sources on the CPU, and hand them to NVRTC.

* :class:`EmuRawKernel` compiles a ``RawKernel`` source with the system C++
  compiler after ``cuda_emu.h`` and launches it through ctypes with CuPy's call
  convention ``k(grid, block, args, shared_mem=...)``.
* :class:`EmuElementwiseKernel` turns an ``ElementwiseKernel`` (parameter lists and
  body) into a C++ loop over ``i`` and calls it like CuPy does ``k(*ins, *outs)``.
* :func:`elementwise_cuda_source` wraps the same body in a grid-stride CUDA kernel
  (what the NVRTC test compiles).
* :func:`nvrtc_compile` compiles a CUDA source to PTX with NVRTC (no GPU needed).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

HEADER = Path(__file__).with_name("cuda_emu.h")
_BUILD = Path(tempfile.gettempdir()) / "xnetmap-cuda-emu"  # libraries cached by source hash
_SIG = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(\w+)\s*\(([^)]*)\)')
_SHARED = re.compile(r"extern\s+__shared__\s+(\w+)\s+(\w+)\s*\[\s*\]\s*;")
_CTYPES = [("double*", ctypes.c_void_p), ("float*", ctypes.c_void_p), ("*", ctypes.c_void_p),
           ("long long", ctypes.c_longlong), ("size_t", ctypes.c_size_t),
           ("unsigned", ctypes.c_uint), ("int", ctypes.c_int), ("double", ctypes.c_double),
           ("float", ctypes.c_float), ("bool", ctypes.c_bool)]
_CTYPE_OF = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}


def cxx() -> str | None:
    """The C++ compiler the emulation uses (None when the machine has none)."""
    return shutil.which("g++") or shutil.which("clang++")


def _build(code: str, fibers: bool = True) -> ctypes.CDLL:
    """Compile ``code`` after the emulation header into a shared library (cached by hash)."""
    prelude = "#define EMU_FIBERS 1\n" if fibers else ""
    full = f'{prelude}#include "{HEADER}"\n{code}'
    key = hashlib.sha256((full + HEADER.read_text()).encode()).hexdigest()[:16]
    lib = _BUILD / f"k{key}.so"
    if not lib.exists():
        _BUILD.mkdir(exist_ok=True)
        src = _BUILD / f"k{key}.cpp"
        src.write_text(full)
        tmp = lib.with_suffix(f".{os.getpid()}.tmp")
        cmd = [cxx() or "g++", "-std=c++20", "-O1", "-shared", "-fPIC", "-pthread",
               "-Wall", "-Werror=return-type", str(src), "-o", str(tmp)]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode:
            raise RuntimeError(f"C++ emulation build failed:\n{res.stderr}")
        os.replace(tmp, lib)
    return ctypes.CDLL(str(lib))


def _ctype(decl: str) -> Any:
    t = decl.replace("__restrict__", "").replace("const", "")
    t = " ".join(t.split()[:-1]).replace(" *", "*")
    for key, ct in _CTYPES:
        if key in t:
            return ct
    raise ValueError(f"no ctypes mapping for parameter {decl!r}")


def kernel_params(source: str, name: str) -> list[str]:
    """The parameter declarations of ``extern "C" __global__ void name(...)`` in ``source``."""
    for m in _SIG.finditer(source):
        if m.group(1) == name:
            return [p.strip() for p in m.group(2).split(",")]
    raise ValueError(f"no kernel {name!r} in the source")


def unwrap(a: Any) -> Any:
    """The NumPy array behind a stand-in device array (the array itself otherwise)."""
    return getattr(a, "host_view", a)


def _carg(a: Any, ct: Any) -> Any:
    a = unwrap(a)
    if ct is ctypes.c_void_p:
        if not isinstance(a, np.ndarray):
            raise TypeError(f"kernel pointer argument got {type(a).__name__}, not an array")
        return ctypes.c_void_p(a.ctypes.data)
    if isinstance(a, np.ndarray):
        raise TypeError("kernel scalar argument got an array")
    return ct(a.item() if hasattr(a, "item") else a)


class EmuRawKernel:
    """A ``cp.RawKernel`` stand-in: the CUDA source run on the CPU.

    ``fibers=False`` runs each block on ``blockDim.x`` std::threads with a
    std::barrier (real concurrency, slow: keep the shapes small); the default runs
    them as coroutines on one thread (deterministic, fast).
    """

    def __init__(self, source: str, name: str, fibers: bool = True):
        if "__shared__" in _SHARED.sub("", source):
            raise ValueError("only dynamic shared memory (extern __shared__ T x[]) is emulated")
        params = kernel_params(source, name)
        names = [p.split()[-1].lstrip("*") for p in params]
        code = _SHARED.sub(r"\1* \2 = reinterpret_cast<\1*>(emu_shared_);", source)
        code += (f'\nextern "C" int emu_launch_{name}(unsigned grid, unsigned block, '
                 f'std::size_t shmem, {", ".join(params)}) {{\n'
                 f'    return emu_launch({name}, grid, block, shmem, {", ".join(names)});\n}}\n')
        self.fn = getattr(_build(code, fibers), f"emu_launch_{name}")
        self.types = [_ctype(p) for p in params]
        self.fn.argtypes = [ctypes.c_uint, ctypes.c_uint, ctypes.c_size_t, *self.types]
        self.fn.restype = ctypes.c_int
        self.launches: list[tuple] = []

    def __call__(self, grid: tuple, block: tuple, args: tuple, shared_mem: int = 0) -> None:
        if len(args) != len(self.types):
            raise TypeError(f"kernel takes {len(self.types)} arguments, got {len(args)}")
        (gx, *gyz), (bx, *byz) = grid, block
        if any(v != 1 for v in (*gyz, *byz)):
            raise ValueError("the emulation runs 1-D grids and blocks only")
        if not (1 <= bx <= 1024 and 1 <= gx < 2**31):
            raise ValueError(f"invalid launch configuration grid {grid}, block {block}")
        self.launches.append((grid, block, shared_mem))
        if self.fn(gx, bx, shared_mem, *(_carg(a, t) for a, t in zip(args, self.types))):
            raise RuntimeError("divergent __syncthreads(): some threads of a block returned "
                               "while others wait at the barrier (a deadlock on a GPU)")


def _split_params(spec: str) -> list[tuple[bool, str, str]]:
    """``"T g, raw T lr"`` -> [(raw, type, name), ...]."""
    out = []
    for p in spec.split(","):
        words = p.split()
        raw = words[0] == "raw"
        out.append((raw, words[-2], words[-1]))
    return out


def _elementwise_parts(in_params: str, out_params: str, body: str, ctype: str,
                       is_array: list[bool]) -> tuple[list[str], str]:
    """C parameter list and loop-body prologue + body for one call pattern."""
    decls, pro = [], []
    specs = [(p, True) for p in _split_params(in_params)] + \
        [(p, False) for p in _split_params(out_params)]
    for ((raw, t, name), is_in), arr in zip(specs, is_array):
        t = ctype if t == "T" else t
        const = "const " if is_in else ""
        if raw:
            decls.append(f"{const}{t}* {name}")
        elif arr:
            decls.append(f"{const}{t}* {name}_p_")
            pro.append(f"const {t} {name} = {name}_p_[i];" if is_in else
                       f"{t}& {name} = {name}_p_[i];")
        else:
            decls.append(f"const {t} {name}")
    return decls, " ".join(pro) + " " + body


def elementwise_cuda_source(in_params: str, out_params: str, body: str, name: str,
                            ctype: str = "float", scalars: tuple[str, ...] = ()) -> str:
    """The elementwise body as a grid-stride CUDA kernel, as CuPy generates it: every
    non-raw operand an array indexed by ``i``, except the inputs named in ``scalars``
    (passed by value)."""
    names = [n for _, _, n in _split_params(in_params) + _split_params(out_params)]
    is_array = [n not in scalars for n in names]
    decls, loop = _elementwise_parts(in_params, out_params, body, ctype, is_array)
    return (f'extern "C" __global__ void {name}({", ".join(decls)}, const long long n) {{\n'
            "    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;\n"
            "         i += (long long)blockDim.x * gridDim.x) {\n"
            f"        {loop}\n    }}\n}}\n")


class EmuElementwiseKernel:
    """A ``cp.ElementwiseKernel`` stand-in: the body in a C++ loop over ``i``."""

    def __init__(self, in_params: str, out_params: str, body: str, name: str):
        self.spec = (in_params, out_params, body)
        self.name = name
        self.n_in = len(_split_params(in_params))
        self.params = _split_params(in_params) + _split_params(out_params)
        self._fns: dict[tuple, Any] = {}
        self.calls = 0

    def __call__(self, *args: Any) -> None:
        if len(args) != len(self.params):
            raise TypeError(f"{self.name} takes {len(self.params)} arguments, got {len(args)}")
        vals = [unwrap(a) for a in args]
        is_array = [isinstance(v, np.ndarray) for v in vals]
        arrays = [v for v, (raw, _, _), arr in zip(vals, self.params, is_array) if arr and not raw]
        size = arrays[0].size
        for v in arrays:
            if v.size != size or not v.flags.c_contiguous:
                raise ValueError("emulated elementwise operands must be C-contiguous, same size")
        ctype = _CTYPE_OF[arrays[0].dtype]
        key = (ctype, tuple(is_array))
        if key not in self._fns:
            decls, loop = _elementwise_parts(*self.spec, ctype, is_array)
            code = (f'extern "C" void emu_{self.name}(std::size_t n, {", ".join(decls)}) {{\n'
                    f"    for (std::size_t i = 0; i < n; ++i) {{ {loop} }}\n}}\n")
            fn = getattr(_build(code), f"emu_{self.name}")
            fn.argtypes = [ctypes.c_size_t] + [_ctype(d) for d in decls]
            fn.restype = None
            self._fns[key] = fn
        fn = self._fns[key]
        for v, arr in zip(vals, is_array):
            if arr and v.dtype != arrays[0].dtype:
                raise TypeError(f"{self.name}: mixed dtypes {v.dtype} and {arrays[0].dtype}")
        self.calls += 1
        fn(size, *(_carg(v, t) for v, t in zip(vals, fn.argtypes[1:])))


def nvrtc_compile(source: str, arch: str, name: str = "kernel.cu") -> str:
    """Compile ``source`` with NVRTC for ``arch`` (e.g. ``compute_80``); returns the PTX.

    Raises
    ------
    RuntimeError
        With NVRTC's log when the source does not compile.
    """
    from cuda.bindings import nvrtc  # noqa: PLC0415

    err, prog = nvrtc.nvrtcCreateProgram(source.encode(), name.encode(), 0, [], [])
    if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        raise RuntimeError(f"nvrtcCreateProgram: {err}")
    try:
        opts = [f"--gpu-architecture={arch}".encode(), b"--std=c++17"]
        (err,) = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
        _, size = nvrtc.nvrtcGetProgramLogSize(prog)
        log = b" " * size
        nvrtc.nvrtcGetProgramLog(prog, log)
        if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
            text = log.decode(errors="replace").rstrip("\x00")
            raise RuntimeError(f"NVRTC ({arch}) failed on {name}:\n{text}")
        _, size = nvrtc.nvrtcGetPTXSize(prog)
        ptx = b" " * size
        nvrtc.nvrtcGetPTX(prog, ptx)
        return ptx.decode(errors="replace").rstrip("\x00")
    finally:
        nvrtc.nvrtcDestroyProgram(prog)
