"""Every CUDA source of the fit compiles with NVRTC for sm_80 and sm_90 (no GPU needed).

NVRTC comes from the PyPI packages ``nvidia-cuda-nvrtc`` and ``cuda-bindings``
(the ``test`` extra). A failure shows the compiler's log.
"""

from __future__ import annotations

import pytest
from cudaemu.emulate import elementwise_cuda_source, nvrtc_compile

from xnetmap.fit.kernels import RAW_KERNELS
from xnetmap.fit.optim import ELEMENTWISE_KERNELS

pytest.importorskip("cuda.bindings.nvrtc", reason="needs the nvidia-cuda-nvrtc and "
                    "cuda-bindings packages (pip install -e '.[test]')")

ARCHS = ["compute_80", "compute_90"]
#: Elementwise operands the fit passes as scalars (CuPy declares them by value).
SCALARS = {"xnetmap_nesterov": ("mu",)}


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("name", sorted(RAW_KERNELS))
def test_raw_kernel_compiles(name, arch):
    ptx = nvrtc_compile(RAW_KERNELS[name], arch, f"{name}.cu")
    assert f".entry {name}" in ptx
    assert f".target sm_{arch[-2:]}" in ptx


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("ctype", ["float", "double"])
@pytest.mark.parametrize("name", sorted(ELEMENTWISE_KERNELS))
def test_elementwise_kernel_compiles(name, ctype, arch):
    src = elementwise_cuda_source(*ELEMENTWISE_KERNELS[name], name, ctype,
                                  scalars=SCALARS.get(name, ()))
    assert f".entry {name}" in nvrtc_compile(src, arch, f"{name}.cu")


def test_a_misspelt_intrinsic_fails_with_the_compiler_log():
    """The check can fail: NVRTC's message reaches the test report."""
    bad = RAW_KERNELS["cosine_loss_grad"].replace("fmaxf(sqrtf(sh[0])", "fmaxf(sqrtff(sh[0])")
    with pytest.raises(RuntimeError, match=r"(?s)compute_80.*identifier \"sqrtff\" is undefined"):
        nvrtc_compile(bad, "compute_80", "bad.cu")
