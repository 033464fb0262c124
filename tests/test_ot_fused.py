"""Tests of the fused Triton IPOT kernel (:mod:`wma_core.ot_fused`).

The kernel runs on CPU tensors in Triton's interpreter (``TRITON_INTERPRET=1``). That variable
must be set before triton is first imported (``triton.language`` is built in one mode or the
other), and it must not leak into this pytest process: on a CUDA machine it would turn every
Triton kernel, ours and ``torch.compile``'s, into the interpreter. So the ``test_interp_*``
tests are skipped in the normal run and :func:`test_interpreter_suite` runs them in a child
``python -m pytest THIS_FILE -k interp`` with ``TRITON_INTERPRET=1`` set. Running
``TRITON_INTERPRET=1 python -m pytest tests/test_ot_fused.py`` runs them directly.

References: :func:`wma_core.ot.ipot_eager` (plan to 1e-6 absolute, float32) and POT's exact
``ot.emd2`` (relative error <= 2% at 50 iterations). ``test_cuda_*`` run the compiled kernel
when a GPU is present; without one, ``test_compiles_for_h100_without_register_spills`` still
compiles it ahead of time for sm_90 with triton's bundled ptxas and checks that the ViLT-B/32
case keeps its tiles in registers.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from wma_core import ot_fused
from wma_core.ot import cosine_cost, ipot, ipot_eager, ot_distance

ROOT = Path(__file__).resolve().parents[1]
INTERP = ot_fused._env_true("TRITON_INTERPRET")

interp_only = pytest.mark.skipif(
    not INTERP, reason="runs in the TRITON_INTERPRET=1 child process of test_interpreter_suite"
)


def _has_triton() -> bool:
    try:
        import importlib.util

        return importlib.util.find_spec("triton") is not None
    except (ImportError, ValueError):
        return False


def _batch(B, N, M, seed, d=16, p_valid=0.7, scale=1.0):
    """Random cosine-cost batch with random masks (each sample keeps >= 1 token per side)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, N, d, generator=g)
    y = torch.randn(B, M, d, generator=g) + 0.3
    xm = torch.rand(B, N, generator=g) < p_valid
    ym = torch.rand(B, M, generator=g) < p_valid
    xm[:, 0] = True
    ym[:, 0] = True
    return cosine_cost(x, y) * scale, xm, ym


def _assert_same_plan(C, xm, ym, tol=1e-6, layout="split", **kw):
    Tf = ot_fused.ipot_fused(C, xm, ym, layout=layout, **kw)
    Te = ipot_eager(C, xm, ym, **kw)
    assert Tf.dtype == torch.float32 and Tf.shape == Te.shape and Tf.is_contiguous()
    assert torch.isfinite(Tf).all()
    err = (Tf - Te).abs().max().item()
    assert err <= tol, f"max |fused - eager| = {err:.3g} for {tuple(C.shape)} {kw}"
    return Tf


# ---- pure Python parts (no triton needed) -------------------------------------------------
def test_split_pow2_covers_with_little_padding():
    assert ot_fused.split_pow2(39) == (32, 8)
    assert ot_fused.split_pow2(144) == (128, 16)
    assert ot_fused.split_pow2(64) == (64, 0)
    assert ot_fused.split_pow2(60) == (64, 0)
    assert ot_fused.split_pow2(1) == (1, 0)
    for L in range(1, 600):
        b0, b1 = ot_fused.split_pow2(L)
        assert b0 & (b0 - 1) == 0 and (b1 == 0 or b1 & (b1 - 1) == 0)
        assert L <= b0 + b1 <= ot_fused._next_pow2(L)
        assert b0 + b1 <= max(4 * L / 3, 2), (L, b0, b1)  # at most ~1.33x padding per axis
    assert ot_fused.padded_size(39, 144) == 40 * 144  # ViLT-B/32: 97.5% useful
    assert ot_fused.padded_size(39, 144, "pow2") == 64 * 256  # 34% useful
    with pytest.raises(ValueError):
        ot_fused.blocks(3, 4, "square")


def test_available_is_false_without_gpu_or_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    C = torch.rand(2, 3, 4)
    assert not ot_fused.available(C)  # CPU tensor, no interpreter
    monkeypatch.setenv("WMA_DISABLE_TRITON", "1")
    assert not ot_fused.available(C)
    # the automatic path falls back to the eager loop on CPU
    assert torch.equal(ipot(C, backend="auto", iters=3), ipot_eager(C, iters=3))


def test_cpu_tensor_without_interpreter_is_refused(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(RuntimeError, match="CUDA"):
        ot_fused.ipot_fused(torch.rand(2, 3, 4))


def test_imports_and_falls_back_without_triton():
    code = (
        "import sys; sys.modules['triton'] = None\n"
        "import torch\n"
        "from wma_core import ot_fused\n"
        "from wma_core.ot import ipot, ipot_eager\n"
        "C = torch.rand(2, 3, 4)\n"
        "assert not ot_fused.available(C) and not ot_fused._import_triton()\n"
        "assert torch.equal(ipot(C, iters=3), ipot_eager(C, iters=3))\n"
        "print('ok')\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.pop("TRITON_INTERPRET", None)
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "ok" in r.stdout, r.stdout + r.stderr


@pytest.mark.skipif(INTERP or not _has_triton(), reason="needs triton in compiled mode")
def test_compiles_for_h100_without_register_spills():
    """Ahead-of-time compile for sm_90 with triton's bundled ptxas (no GPU needed): the kernel
    lowers for odd block shapes, and the ViLT-B/32 case keeps its tiles in registers."""
    import re
    import shutil
    import tempfile

    triton = pytest.importorskip("triton")
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    kernel = ot_fused._kernel()
    sig = {"C": "*fp32", "XM": "*u8", "YM": "*u8", "P": "*fp32", "N": "i32", "M": "i32", "s_cb": "i32",
           "s_cn": "i32", "s_cm": "i32", "step": "fp32", "iters": "i32", "inner": "i32"}
    sig.update({k: "constexpr" for k in ("BN0", "BN1", "BM0", "BM1", "TINY")})
    bindir = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
    cuobjdump = shutil.which("cuobjdump", path=str(bindir)) or shutil.which("cuobjdump")
    for N, M, dtype in [(39, 144, "*fp32"), (39, 144, "*bf16"), (1, 1, "*fp32"), (3, 6, "*fp32")]:
        bn0, bn1, bm0, bm1 = ot_fused.blocks(N, M)
        consts = {"BN0": bn0, "BN1": bn1, "BM0": bm0, "BM1": bm1, "TINY": 1e-30}
        warps = ot_fused.default_num_warps(ot_fused.padded_size(N, M))
        try:
            compiled = triton.compile(ASTSource(kernel, {**sig, "C": dtype}, consts),
                                      target=GPUTarget("cuda", 90, 32), options={"num_warps": warps, "enable_fp_fusion": True})
        except Exception as err:  # a missing CUDA toolchain piece is not a kernel bug
            if "ptxas" in str(err).lower() and "not found" in str(err).lower():
                pytest.skip(f"no ptxas: {err}")
            raise
        if (N, M) == (39, 144) and cuobjdump:
            with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
                f.write(compiled.asm["cubin"])
                f.flush()
                usage = subprocess.run([cuobjdump, "--dump-resource-usage", f.name],
                                       capture_output=True, text=True).stdout
            m = re.search(r"REG:(\d+).*?STACK:(\d+).*?LOCAL:(\d+)", usage, re.S)
            assert m, usage
            regs, stack, local = map(int, m.groups())
            assert stack == 0 and local == 0, f"register spills at 39 x 144: {usage}"


# ---- the interpreter suite ----------------------------------------------------------------
@pytest.mark.skipif(INTERP, reason="this is the child process")
def test_interpreter_suite():
    """Run the ``test_interp_*`` tests in a child process with ``TRITON_INTERPRET=1``."""
    if not _has_triton():
        pytest.skip("triton is not installed")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(Path(__file__)), "-k", "interp"]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    out = r.stdout + r.stderr
    print(out[-4000:])
    assert r.returncode == 0, out[-8000:]
    assert " passed" in out and " failed" not in out


SHAPES = [  # (B, N, M, iters, inner, layout)
    (3, 5, 7, 8, 1, "split"),
    (2, 39, 144, 4, 1, "split"),  # ViLT-B/32: (32 + 8) x (128 + 16) tiles
    (2, 39, 144, 3, 1, "pow2"),
    (2, 1, 1, 5, 1, "split"),
    (2, 1, 9, 5, 1, "split"),
    (2, 6, 1, 5, 1, "split"),
    (3, 3, 3, 5, 2, "split"),
    (2, 16, 32, 6, 3, "split"),
    (2, 17, 33, 6, 1, "split"),
]


@interp_only
@pytest.mark.parametrize("B,N,M,iters,inner,layout", SHAPES)
def test_interp_matches_eager(B, N, M, iters, inner, layout):
    C, xm, ym = _batch(B, N, M, seed=B * 1000 + N * 10 + M)
    _assert_same_plan(C, xm, ym, iters=iters, inner=inner, layout=layout)
    _assert_same_plan(C, None, None, iters=iters, inner=inner, layout=layout, step=0.1)


@interp_only
def test_interp_empty_side_gives_zero_plan():
    C, xm, ym = _batch(4, 7, 12, seed=3)
    xm[0] = False  # sample 0: no x token
    ym[1] = False  # sample 1: no y token
    xm[2] = False
    ym[2] = False  # sample 2: neither
    T = _assert_same_plan(C, xm, ym, iters=6)
    assert (T[:3] == 0).all() and T[3].sum() > 0.99
    D = ot_distance(torch.randn(4, 7, 8), torch.randn(4, 12, 8), xm, ym, iters=6, backend="triton")
    assert torch.isfinite(D).all() and (D[:3] == 0).all()


@interp_only
def test_interp_zero_features_and_extreme_costs():
    B, N, M = 3, 6, 9
    _, xm, ym = _batch(B, N, M, seed=4)
    x, y = torch.zeros(B, N, 16), torch.randn(B, M, 16)  # a missing modality: cost 1 everywhere
    T = _assert_same_plan(cosine_cost(x, y), xm, ym, iters=6)
    n, m = xm.sum(1).float(), ym.sum(1).float()
    assert torch.allclose(T.sum((1, 2)), torch.ones(B), atol=1e-6)
    assert torch.allclose(T.sum(2)[xm], (1 / n)[:, None].expand(B, N)[xm], atol=1e-6)
    assert torch.allclose(T.sum(1)[ym], (1 / m)[:, None].expand(B, M)[ym], atol=1e-6)
    C, xm, ym = _batch(B, N, M, seed=5)
    joint = xm[:, :, None] & ym[:, None, :]
    # large costs; masked entries above the valid ones (see the next test for the other case)
    _assert_same_plan((C * 1e6).masked_fill(~joint, 3e6), xm, ym, iters=6)
    _assert_same_plan(C * 1e6, None, None, iters=6)
    _assert_same_plan(torch.rand(B, N, M) * 1e4 + 5e3, None, None, iters=6)
    _assert_same_plan(torch.full((2, 3, 4), 3e38), None, None, iters=4)
    _assert_same_plan(-torch.rand(B, N, M) * 1e3, None, None, iters=4)
    Cbad = C.clone()
    Cbad[0, 0, 0] = float("nan")
    Cbad[1, 1, 1] = float("inf")
    Cbad[2, 0, 2] = -float("inf")
    _assert_same_plan(Cbad, xm, ym, iters=5)  # same nan_to_num as the eager code


@interp_only
def test_interp_masked_cost_far_below_valid_min_stays_finite():
    """Documented divergence: the eager code computes exp(...) * mask, which is inf * 0 = nan
    when a masked entry's cost lies far below the valid minimum; the kernel selects 0."""
    C, xm, ym = _batch(2, 4, 5, seed=6)
    C = C * 1e4 + 5e3
    C[~(xm[:, :, None] & ym[:, None, :])] = 0.0
    Tf = ot_fused.ipot_fused(C, xm, ym, iters=5)
    assert torch.isfinite(Tf).all()
    Te = ipot_eager(C, xm, ym, iters=5)
    C2 = C.masked_fill(~(xm[:, :, None] & ym[:, None, :]), 3e4)  # masked values do not matter ...
    assert torch.allclose(Tf, ipot_eager(C2, xm, ym, iters=5), atol=1e-6, rtol=0)  # ... to the kernel
    finite = torch.isfinite(Te).flatten(1).all(1)
    assert torch.allclose(Tf[finite], Te[finite], atol=1e-6, rtol=0)


@interp_only
def test_interp_cost_dtypes_and_strides():
    C, xm, ym = _batch(3, 7, 10, seed=7)
    for c in (C.bfloat16(), C.half(), C.double(), C.transpose(1, 2).contiguous().transpose(1, 2), C[:, :, ::1]):
        _assert_same_plan(c, xm, ym, iters=4)
    wide = torch.rand(3, 7, 20)
    _assert_same_plan(wide[:, :, ::2], xm, ym, iters=4)  # non-unit last stride


@interp_only
def test_interp_close_to_exact_emd_at_50_iterations():
    ot = pytest.importorskip("ot")
    g = torch.Generator().manual_seed(1)
    B, N, M = 4, 16, 24
    x, y = torch.randn(B, N, 32, generator=g), torch.randn(B, M, 32, generator=g) + 0.3
    xm, ym = torch.zeros(B, N, dtype=torch.bool), torch.zeros(B, M, dtype=torch.bool)
    for b, (n, m) in enumerate([(16, 24), (9, 20), (15, 6), (1, 13)]):
        xm[b, :n], ym[b, :m] = True, True
    C = cosine_cost(x, y)
    D = (C * ot_fused.ipot_fused(C, xm, ym, iters=50)).sum((1, 2))
    for b in range(B):
        n, m = int(xm[b].sum()), int(ym[b].sum())
        exact = ot.emd2(np.full(n, 1 / n), np.full(m, 1 / m), C[b, :n, :m].double().numpy())
        assert abs(D[b].item() - exact) <= 0.02 * exact, (b, D[b].item(), exact)


@interp_only
def test_interp_ot_distance_value_and_gradient():
    g = torch.Generator().manual_seed(2)
    B, N, M, d = 3, 6, 11, 16
    x0, y0 = torch.randn(B, N, d, generator=g), torch.randn(B, M, d, generator=g)
    _, xm, ym = _batch(B, N, M, seed=8)
    res = {}
    for backend in ("eager", "triton", "auto"):
        x, y = x0.clone().requires_grad_(), y0.clone().requires_grad_()
        D = ot_distance(x, y, xm, ym, iters=8, backend=backend)
        (D * torch.arange(1.0, B + 1)).sum().backward()
        res[backend] = (D.detach(), x.grad, y.grad)
    for backend in ("triton", "auto"):  # auto uses the interpreter here (available() is True)
        for a, b in zip(res[backend], res["eager"]):
            assert torch.allclose(a, b, atol=1e-6, rtol=0), (backend, (a - b).abs().max())


@interp_only
def test_interp_available_and_validation(monkeypatch):
    C = torch.rand(2, 3, 4)
    assert ot_fused.available(C) and ot_fused.available()
    assert not ot_fused.available(torch.rand(3, 4))
    assert not ot_fused.available(torch.rand(1, 400, 400))  # too big a tile for the auto path
    monkeypatch.setenv("WMA_DISABLE_TRITON", "1")
    assert not ot_fused.available(C)
    monkeypatch.setenv("WMA_DISABLE_TRITON", "0")
    assert ot_fused.available(C)
    for kw in (dict(step=0.0), dict(iters=0), dict(inner=0)):
        with pytest.raises(ValueError):
            ot_fused.ipot_fused(C, **kw)
    with pytest.raises(ValueError):
        ot_fused.ipot_fused(torch.rand(3, 4))
    with pytest.raises(ValueError):
        ot_fused.ipot_fused(C, torch.ones(2, 4, dtype=torch.bool))
    assert ot_fused.ipot_fused(torch.rand(0, 3, 4)).shape == (0, 3, 4)
    assert ot_fused.ipot_fused(torch.rand(2, 0, 4)).shape == (2, 0, 4)


# ---- compiled kernel on a GPU --------------------------------------------------------------
cuda_only = pytest.mark.skipif(
    INTERP or not torch.cuda.is_available() or not _has_triton(), reason="needs CUDA and triton (compiled kernel)"
)


@cuda_only
@pytest.mark.parametrize("layout", ["split", "pow2"])
def test_cuda_matches_eager_at_vilt_shape(layout):
    C, xm, ym = _batch(16, 39, 144, seed=9, d=64)
    C, xm, ym = C.cuda(), xm.cuda(), ym.cuda()
    xm[0] = False  # an empty side
    Tf = ot_fused.ipot_fused(C, xm, ym, iters=50, layout=layout)
    Te = ipot_eager(C, xm, ym, iters=50)
    assert torch.isfinite(Tf).all() and (Tf - Te).abs().max().item() <= 1e-5
    assert (Tf[0] == 0).all()
    Tb = ot_fused.ipot_fused(C.bfloat16(), xm, ym, iters=50, layout=layout)
    assert (Tb - ipot_eager(C.bfloat16(), xm, ym, iters=50)).abs().max().item() <= 1e-5
    assert ot_fused.available(C)
    assert torch.equal(ipot(C, xm, ym, backend="auto"), ot_fused.ipot_fused(C, xm, ym))


@cuda_only
def test_cuda_small_shapes_and_gradient():
    for B, N, M in [(3, 1, 1), (4, 1, 9), (4, 6, 1), (5, 17, 33), (2, 64, 64)]:
        C, xm, ym = _batch(B, N, M, seed=N + M)
        Tf = ot_fused.ipot_fused(C.cuda(), xm.cuda(), ym.cuda(), iters=20)
        assert (Tf.cpu() - ipot_eager(C, xm, ym, iters=20)).abs().max().item() <= 1e-5
    g = torch.Generator().manual_seed(3)
    x0, y0 = torch.randn(8, 39, 64, generator=g).cuda(), torch.randn(8, 144, 64, generator=g).cuda()
    grads = {}
    for backend in ("eager", "triton"):
        x, y = x0.clone().requires_grad_(), y0.clone().requires_grad_()
        D = ot_distance(x, y, backend=backend)
        D.sum().backward()
        grads[backend] = (D.detach(), x.grad, y.grad)
    for a, b in zip(grads["triton"], grads["eager"]):
        assert torch.allclose(a, b, atol=1e-5, rtol=0)
