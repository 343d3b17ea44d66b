"""A stand-in GPU for the fit's loop: host memory behind a CuPy-like interface
that records every call and every copy between host and "device".

Arrays are :class:`FakeArray` wrappers (NumPy underneath) that refuse implicit
conversion to NumPy as CuPy does; reading a value back (``float(a)``, ``.get()``,
``to_host``) is logged as ``("d2h", what)``, a copy in as ``("h2d", what)``.
Raw and elementwise kernels are the CUDA sources run by the C++ emulation.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .emulate import EmuElementwiseKernel, EmuRawKernel


def _h(a: Any) -> Any:
    return a.host_view if isinstance(a, FakeArray) else a


class FakeArray:
    """A device array stand-in (see the module docstring)."""

    __array_ufunc__ = None  # NumPy operators defer to ours; no silent conversion

    def __init__(self, a: Any, log: list):
        self.host_view = np.asarray(a)
        self._log = log

    def _w(self, a: Any) -> FakeArray:
        return FakeArray(a, self._log)

    shape = property(lambda self: self.host_view.shape)
    dtype = property(lambda self: self.host_view.dtype)
    size = property(lambda self: self.host_view.size)
    ndim = property(lambda self: self.host_view.ndim)
    flags = property(lambda self: self.host_view.flags)
    T = property(lambda self: self._w(self.host_view.T))

    def __len__(self) -> int:
        return len(self.host_view)

    def __getitem__(self, k: Any) -> FakeArray:
        return self._w(self.host_view[_h(k)])

    def __setitem__(self, k: Any, v: Any) -> None:
        self.host_view[_h(k)] = _h(v)

    def __array__(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("Implicit conversion to a NumPy array is not allowed (as in CuPy); "
                        "use .get() or to_host")

    def _d2h(self, what: str) -> np.ndarray:
        self._log.append(("d2h", what))
        return self.host_view

    def get(self) -> np.ndarray:
        return self._d2h("get").copy()

    def __float__(self) -> float:
        return float(self._d2h("float"))

    def __int__(self) -> int:
        return int(self._d2h("int"))

    def __index__(self) -> int:
        return int(self._d2h("index"))

    def __bool__(self) -> bool:
        return bool(self._d2h("bool"))

    def item(self) -> Any:
        return self._d2h("item").item()

    def tolist(self) -> Any:
        return self._d2h("tolist").tolist()

    def sum(self, axis: Any = None, dtype: Any = None) -> FakeArray:
        self._log.append(("call", "sum"))
        return self._w(self.host_view.sum(axis=axis, dtype=dtype))


def _binop(name: str, inplace: bool = False) -> Any:
    def op(self: FakeArray, other: Any) -> Any:
        self._log.append(("call", name))
        res = getattr(self.host_view, name)(_h(other))
        if res is NotImplemented:
            return res
        return self if inplace else self._w(res)
    return op


for _n in ("add", "sub", "mul", "truediv", "matmul"):
    setattr(FakeArray, f"__{_n}__", _binop(f"__{_n}__"))
    setattr(FakeArray, f"__r{_n}__", _binop(f"__r{_n}__"))
    setattr(FakeArray, f"__i{_n}__", _binop(f"__i{_n}__", inplace=True))


class FakeXP:
    """The few array-module functions the loop calls, on :class:`FakeArray`."""

    float32, float64, int64 = np.float32, np.float64, np.int64

    def __init__(self, log: list):
        self.log = log

    def _w(self, a: Any) -> FakeArray:
        return FakeArray(a, self.log)

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        self.log.append(("call", name))
        out = kwargs.get("out")
        kwargs = {k: _h(v) for k, v in kwargs.items()}
        res = getattr(np, name)(*(_h(a) for a in args), **kwargs)
        return out if out is not None else self._w(res)

    def asarray(self, a: Any, dtype: Any = None) -> FakeArray:
        if isinstance(a, FakeArray):
            return a if dtype is None else self._w(a.host_view.astype(dtype))
        self.log.append(("h2d", "asarray"))
        return self._w(np.array(a, dtype=dtype, copy=True))

    def __getattr__(self, name: str) -> Any:
        if name in ("empty", "zeros", "empty_like", "zeros_like", "matmul", "take", "sum",
                    "reciprocal", "subtract"):
            return lambda *a, **k: self._call(name, *a, **k)
        raise AttributeError(f"the stand-in array module has no {name!r}")


class FakeDevice:
    """A :class:`xnetmap.backend.CupyDevice` stand-in (see the module docstring).

    Parameters
    ----------
    free : int
        Bytes the device reports free (0: the fit streams minibatches from the host).
    """

    name = "fake-cuda"
    synchronous = False

    def __init__(self, free: int = 1 << 34):
        self.log: list[tuple[str, str]] = []
        self.xp = FakeXP(self.log)
        self.free = free

    def upload(self, a: Any, dtype: Any = None) -> FakeArray:
        return self.xp.asarray(a, dtype=dtype)

    def to_host(self, a: FakeArray) -> np.ndarray:
        self.log.append(("d2h", "to_host"))
        return a.host_view.copy()

    def copy_in(self, dst: FakeArray, src: np.ndarray) -> None:
        self.log.append(("h2d", "copy_in"))
        dst.host_view[...] = src

    def free_bytes(self) -> int:
        return self.free

    def raw_kernel(self, source: str, name: str) -> Any:
        kernel = EmuRawKernel(source, name)

        def launch(*args: Any, **kwargs: Any) -> None:
            self.log.append(("kernel", name))
            kernel(*args, **kwargs)
        return launch

    def elementwise_kernel(self, in_params: str, out_params: str, body: str, name: str) -> Any:
        kernel = EmuElementwiseKernel(in_params, out_params, body, name)

        def launch(*args: Any) -> None:
            self.log.append(("kernel", name))
            kernel(*args)
        return launch
