"""Fused Triton IPOT: all outer iterations of :func:`wma_core.ot.ipot_eager` in one kernel launch.

Same maths, masks, guards and output as the eager reference (see :mod:`wma_core.ot`)::

    C  = nan_to_num(cost) in float32          (nan -> 0, +inf -> 1e30, -inf -> 0)
    mu = x_mask / max(n, 1);  nu = y_mask / max(m, 1)
    G  = exp(-(C - cmin) / step) on valid (p, q), 0 elsewhere    (cmin: per-sample min over valid)
    T  = joint mask;  v = nu
    repeat iters:  Q = G * T
                   repeat inner:  u = mu / max(Q v, 1e-30);  v = nu / max(Q^T u, 1e-30)
                   T = u Q v

One Triton program per sample. The program loads its cost matrix once (any float dtype, any
strides, masks applied on load), keeps ``G`` and ``T`` in registers for the whole solve, runs
every outer and inner iteration in fp32 without leaving the kernel, and writes the plan once.
The eager loop launches ~8 PyTorch kernels per iteration (~400 launches for 50 iterations);
this is one launch, so the time goes to on-chip work instead of launch latency and
``[B, N, M]`` round trips through GPU memory in every iteration.

Tile layout (why not one ``next_pow2(N) x next_pow2(M)`` tile). Triton block shapes must be
powers of two. For ViLT-B/32 the token sets are 39 text tokens (40 minus CLS) x 144 image
patches (384 x 384 / 32^2): the naive 64 x 256 tile has 16384 slots for 5616 entries (34%
useful), and it is the *padded* size that costs time (every elementwise op and every
reduction runs over the whole tile) and registers (``G``, ``T`` and the temporary ``Q`` live
in registers: 3 x 16384 fp32 is 192 registers per thread at 8 warps, past the point where
the compiler spills). Instead each axis is split into at most two power-of-two blocks,
``L -> (B0, B1)`` with ``B0 = next_pow2(L) / 2`` and ``B1 = next_pow2(L - B0)``, kept only
when it is smaller than one ``next_pow2(L)`` block (:func:`split_pow2`). The matrix becomes
up to four register tiles ``[B0n, B0m] [B0n, B1m] [B1n, B0m] [B1n, B1m]``; row sums add the
two column tiles' partial sums and column sums add the two row tiles'. For 39 x 144 this is
(32 + 8) x (128 + 16) = 5760 slots, 97.5% useful (2.8x less work and registers than 64 x 256).
Any ``L`` is covered with at most ~1.33x padding per axis (vs up to ~2x), at the price of up
to 4 partial reductions instead of 2 per half-step, which are cheap next to the elementwise
work. ``layout="pow2"`` keeps the naive single tile, so the benchmark can compare both on a
GPU. Putting the smaller side on the other axis does not change the padding (both axes pad
independently), so the kernel keeps the caller's ``[N, M]`` orientation.

Registers, as compiled for sm_90 (H100) by Triton 3.9's ptxas (no GPU needed; see the test
``test_compiles_for_h100_without_register_spills``), for the 39 x 144 case:

    layout  tile slots  4 warps              8 warps              16 warps
    split     5760      168 regs, 16 B stack  244 regs, no spill   128 regs, no spill
    pow2     16384      255 regs + 800 B      255 regs + 144 B     128 regs + 80 B spilled

``num_warps`` defaults to the smallest of 4/8/16 for which the three tiles take about <= 64 fp32
registers per thread (16 for 39 x 144 split and for 64 x 256 pow2, 8 for 64 x 64, 4 for small
tiles); the env var ``WMA_TRITON_NUM_WARPS`` or the ``num_warps`` argument overrides it, and
``benchmarks/bench_ipot.py --num-warps 4 8 16`` measures the choice on a GPU. ``N`` and ``M``
are runtime arguments: only the block sizes are compile-time, so variable image sizes (MM-IMDb)
compile a handful of variants, not one per shape.

Divergence from the eager code, on purpose: entries outside the joint mask get ``G = 0`` via a
select; the eager code multiplies ``exp(...)`` by the mask, which gives ``inf * 0 = nan`` when a
*masked* entry's cost lies far below the valid minimum (impossible for the cosine cost in
[0, 2], possible for arbitrary costs given to :func:`wma_core.ot.ipot`). Everywhere the eager
plan is finite, the two agree to float rounding (reduction order, ``exp``/division ulps).

Triton is imported lazily (this module imports without it; :func:`available` on a CPU tensor
does not import it), and the kernel is a plain ``triton.jit`` function built on first use.
``TRITON_INTERPRET=1`` runs it in Triton's interpreter on CPU tensors (the tests do); like
any Triton code, that variable must be set before triton is first imported in the process
(``triton.language`` itself is built in one mode or the other), so the tests use a child
process rather than toggling it. :func:`wma_core.ot.ipot` / :func:`wma_core.ot.ot_distance` with
``backend="triton"`` (or ``"auto"`` on CUDA) are the entry points; a fused ``ot_distance``
would only save the ``[B, N, M]`` cost write/read (about 1.4 MB for a batch of 64), not
worth a second kernel and a custom backward.
"""

from __future__ import annotations

import os

import torch

from ._ot_common import _TINY, _check_masks

triton = None  # bound by _import_triton(); the kernel body reads the module global ``tl``
tl = None

#: Largest padded tile (elements) that :func:`available` accepts for the automatic path; past
#: it the register-resident tiles would spill heavily and the eager loop is used instead.
MAX_AUTO_TILE = 32768
#: Hard limit of :func:`ipot_fused` (beyond this the compile itself becomes unreasonable).
MAX_TILE = 131072

_KERNEL = None  # triton.jit(_ipot_kernel), built on first use


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _disabled() -> bool:
    """``WMA_DISABLE_TRITON`` set to anything but empty or ``0`` switches the fused path off."""
    return os.environ.get("WMA_DISABLE_TRITON", "").strip() not in ("", "0")


def _interpret() -> bool:
    return _env_true("TRITON_INTERPRET")


def _import_triton() -> bool:
    """Import triton on first use; False when it is not installed."""
    global triton, tl
    if triton is None:
        try:
            import triton as _triton
            import triton.language as _tl
        except ImportError:
            return False
        triton, tl = _triton, _tl
    return True


def _next_pow2(x: int) -> int:
    return 1 if x <= 1 else 1 << (x - 1).bit_length()


def split_pow2(length: int) -> tuple[int, int]:
    """Cover ``length`` with at most two power-of-two blocks: ``(B0, B1)``, ``B1 = 0`` for one.

    ``39 -> (32, 8)``, ``144 -> (128, 16)``, ``64 -> (64, 0)``, ``60 -> (64, 0)``, ``1 -> (1, 0)``.
    """
    full = _next_pow2(length)
    if full == length or length <= 2:
        return full, 0
    lo = full // 2
    rest = _next_pow2(length - lo)
    return (lo, rest) if lo + rest < full else (full, 0)


def blocks(N: int, M: int, layout: str = "split") -> tuple[int, int, int, int]:
    """``(BN0, BN1, BM0, BM1)`` for an ``N x M`` cost; ``layout`` is ``"split"`` or ``"pow2"``."""
    if layout == "split":
        return (*split_pow2(N), *split_pow2(M))
    if layout == "pow2":
        return _next_pow2(N), 0, _next_pow2(M), 0
    raise ValueError(f"layout must be 'split' or 'pow2', got {layout!r}")


def padded_size(N: int, M: int, layout: str = "split") -> int:
    """Number of tile slots the kernel computes on for one ``N x M`` sample."""
    bn0, bn1, bm0, bm1 = blocks(N, M, layout)
    return (bn0 + bn1) * (bm0 + bm1)


def default_num_warps(tile: int) -> int:
    """Warps so that G, T and Q (3 x ``tile`` fp32) take about <= 64 registers per thread."""
    env = os.environ.get("WMA_TRITON_NUM_WARPS", "").strip()
    if env:
        return int(env)
    w = 4
    while w < 16 and 3 * tile > 64 * 32 * w:
        w *= 2
    return w


def available(cost: torch.Tensor | None = None) -> bool:
    """Whether :func:`ipot_fused` can run on ``cost`` (and is worth it for ``backend="auto"``).

    True when triton imports, ``WMA_DISABLE_TRITON`` is not set, and either ``cost`` is a CUDA
    tensor or ``TRITON_INTERPRET=1`` (the CPU interpreter, for tests). With a ``cost`` given,
    it must also be ``[B, N, M]`` with a padded tile of at most :data:`MAX_AUTO_TILE` slots.
    """
    if _disabled():
        return False
    if cost is not None:
        if not (cost.is_cuda or _interpret()):
            return False
        if cost.dim() != 3 or padded_size(cost.shape[1], cost.shape[2]) > MAX_AUTO_TILE:
            return False
    elif not (_interpret() or torch.cuda.is_available()):
        return False
    return _import_triton()


def _kernel():
    global _KERNEL
    if _KERNEL is None:
        if not _import_triton():
            raise RuntimeError("the fused IPOT kernel needs triton (pip install triton)")
        _KERNEL = triton.jit(_ipot_kernel)
    return _KERNEL


@torch.no_grad()
def ipot_fused(
    cost: torch.Tensor,
    x_mask: torch.Tensor | None = None,
    y_mask: torch.Tensor | None = None,
    *,
    step: float = 0.5,
    iters: int = 50,
    inner: int = 1,
    layout: str = "split",
    num_warps: int | None = None,
) -> torch.Tensor:
    """Batched, masked IPOT plan in one Triton launch; same result as :func:`~wma_core.ot.ipot_eager`.

    Args:
        cost: ``[B, N, M]`` costs, float16/bfloat16/float32 read as they are (other dtypes are
            cast to float32 first), any strides; CUDA (or CPU under ``TRITON_INTERPRET=1``).
        x_mask, y_mask: ``[B, N]`` / ``[B, M]`` bool valid-token masks (default all valid).
        step, iters, inner: proximal step, outer iterations, Sinkhorn steps per iteration.
        layout: ``"split"`` (default, at most 2 power-of-two blocks per axis) or ``"pow2"``
            (one ``next_pow2(N) x next_pow2(M)`` tile); see the module docstring.
        num_warps: Triton warps per program (default :func:`default_num_warps`).
    Returns:
        ``[B, N, M]`` float32 contiguous plan, zero on padded rows/columns and on samples with
        an empty side.
    """
    if cost.dim() != 3:
        raise ValueError(f"cost must be [B, N, M], got shape {tuple(cost.shape)}")
    if step <= 0 or iters < 1 or inner < 1:
        raise ValueError(f"need step > 0, iters >= 1, inner >= 1; got {step}, {iters}, {inner}")
    B, N, M = cost.shape
    xm = _check_masks("x_mask", x_mask, B, N, cost.device)
    ym = _check_masks("y_mask", y_mask, B, M, cost.device)
    plan = torch.zeros(B, N, M, dtype=torch.float32, device=cost.device)
    if B * N * M == 0:
        return plan
    if not (cost.is_cuda or _interpret()):
        raise RuntimeError(
            "ipot_fused needs a CUDA tensor (or TRITON_INTERPRET=1 for the CPU interpreter); "
            "use wma_core.ot.ipot(..., backend='auto') to fall back to the eager loop"
        )
    bn0, bn1, bm0, bm1 = blocks(N, M, layout)
    tile = (bn0 + bn1) * (bm0 + bm1)
    if tile > MAX_TILE:
        raise ValueError(f"cost {N} x {M} pads to {tile} slots > {MAX_TILE}: use the eager backend")
    kernel = _kernel()
    c = cost.detach()
    if c.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        c = c.float()
    xm8 = xm.to(torch.uint8).contiguous()
    ym8 = ym.to(torch.uint8).contiguous()
    warps = num_warps or default_num_warps(tile)
    # fp fusion (FMA in the row/column sums) stated explicitly: Triton 3.10 changes its default
    launch = dict(BN0=bn0, BN1=bn1, BM0=bm0, BM1=bm1, TINY=_TINY, num_warps=warps, enable_fp_fusion=True)
    args = (c, xm8, ym8, plan, N, M, c.stride(0), c.stride(1), c.stride(2), float(step), int(iters), int(inner))
    if cost.is_cuda:
        with torch.cuda.device(cost.device):
            kernel[(B,)](*args, **launch)
    else:
        kernel[(B,)](*args, **launch)
    return plan


# The kernel. A plain function turned into a ``triton.jit`` kernel by :func:`_kernel` (so that
# triton is imported only when used); ``tl`` is this module's global, bound by _import_triton.
# Tiles: ``_ab`` = row block a (0: rows [0, BN0), 1: rows [BN0, BN0 + BN1)) x column block b;
# blocks with size 0 do not exist (compile-time ``if``).
def _ipot_kernel(
    C,  # [B, N, M] cost, fp16/bf16/fp32, strides s_cb, s_cn, s_cm
    XM,  # [B, N] uint8 valid x tokens
    YM,  # [B, M] uint8 valid y tokens
    P,  # [B, N, M] fp32 plan, contiguous (output)
    N,
    M,
    s_cb,
    s_cn,
    s_cm,
    step,
    iters,
    inner,
    BN0: tl.constexpr,
    BN1: tl.constexpr,
    BM0: tl.constexpr,
    BM1: tl.constexpr,
    TINY: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    cb = C + b * s_cb
    pb = P + b * N * M
    big = 3.4028234663852886e38  # largest finite fp32: only +-inf lie beyond

    # ---- masks and uniform marginals over the valid tokens -----------------------------
    r0 = tl.arange(0, BN0)
    k0 = tl.arange(0, BM0)
    xm0 = tl.load(XM + b * N + r0, mask=r0 < N, other=0) != 0  # [BN0]
    ym0 = tl.load(YM + b * M + k0, mask=k0 < M, other=0) != 0  # [BM0]
    n = tl.sum(xm0.to(tl.float32), axis=0)
    m = tl.sum(ym0.to(tl.float32), axis=0)
    if BN1 > 0:
        r1 = BN0 + tl.arange(0, BN1)
        xm1 = tl.load(XM + b * N + r1, mask=r1 < N, other=0) != 0  # [BN1]
        n += tl.sum(xm1.to(tl.float32), axis=0)
    if BM1 > 0:
        k1 = BM0 + tl.arange(0, BM1)
        ym1 = tl.load(YM + b * M + k1, mask=k1 < M, other=0) != 0  # [BM1]
        m += tl.sum(ym1.to(tl.float32), axis=0)
    n = tl.maximum(n, 1.0)
    m = tl.maximum(m, 1.0)
    mu0 = tl.div_rn(xm0.to(tl.float32), n)
    nu0 = tl.div_rn(ym0.to(tl.float32), m)
    if BN1 > 0:
        mu1 = tl.div_rn(xm1.to(tl.float32), n)
    if BM1 > 0:
        nu1 = tl.div_rn(ym1.to(tl.float32), m)

    # ---- cost tiles (masked load, nan_to_num), per-sample min over the valid entries -----
    j00 = xm0[:, None] & ym0[None, :]
    c00 = tl.load(cb + r0[:, None] * s_cn + k0[None, :] * s_cm, mask=j00, other=0.0).to(tl.float32)
    c00 = tl.where(c00 != c00, 0.0, c00)
    c00 = tl.where(c00 > big, 1e30, c00)
    c00 = tl.where(c00 < -big, 0.0, c00)
    cmin = tl.min(tl.min(tl.where(j00, c00, float("inf")), axis=1), axis=0)
    if BM1 > 0:
        j01 = xm0[:, None] & ym1[None, :]
        c01 = tl.load(cb + r0[:, None] * s_cn + k1[None, :] * s_cm, mask=j01, other=0.0).to(tl.float32)
        c01 = tl.where(c01 != c01, 0.0, c01)
        c01 = tl.where(c01 > big, 1e30, c01)
        c01 = tl.where(c01 < -big, 0.0, c01)
        cmin = tl.minimum(cmin, tl.min(tl.min(tl.where(j01, c01, float("inf")), axis=1), axis=0))
    if BN1 > 0:
        j10 = xm1[:, None] & ym0[None, :]
        c10 = tl.load(cb + r1[:, None] * s_cn + k0[None, :] * s_cm, mask=j10, other=0.0).to(tl.float32)
        c10 = tl.where(c10 != c10, 0.0, c10)
        c10 = tl.where(c10 > big, 1e30, c10)
        c10 = tl.where(c10 < -big, 0.0, c10)
        cmin = tl.minimum(cmin, tl.min(tl.min(tl.where(j10, c10, float("inf")), axis=1), axis=0))
        if BM1 > 0:
            j11 = xm1[:, None] & ym1[None, :]
            c11 = tl.load(cb + r1[:, None] * s_cn + k1[None, :] * s_cm, mask=j11, other=0.0).to(tl.float32)
            c11 = tl.where(c11 != c11, 0.0, c11)
            c11 = tl.where(c11 > big, 1e30, c11)
            c11 = tl.where(c11 < -big, 0.0, c11)
            cmin = tl.minimum(cmin, tl.min(tl.min(tl.where(j11, c11, float("inf")), axis=1), axis=0))
    cmin = tl.where(cmin > big, 0.0, cmin)  # no valid entry: cmin = +inf -> 0

    # ---- G = exp(-(C - cmin) / step) on valid entries (exp(0) on the rest, then 0), T = joint
    g00 = tl.where(j00, tl.exp(tl.div_rn(-tl.where(j00, c00 - cmin, 0.0), step)), 0.0)
    t00 = j00.to(tl.float32)
    if BM1 > 0:
        g01 = tl.where(j01, tl.exp(tl.div_rn(-tl.where(j01, c01 - cmin, 0.0), step)), 0.0)
        t01 = j01.to(tl.float32)
    if BN1 > 0:
        g10 = tl.where(j10, tl.exp(tl.div_rn(-tl.where(j10, c10 - cmin, 0.0), step)), 0.0)
        t10 = j10.to(tl.float32)
        if BM1 > 0:
            g11 = tl.where(j11, tl.exp(tl.div_rn(-tl.where(j11, c11 - cmin, 0.0), step)), 0.0)
            t11 = j11.to(tl.float32)

    # ---- proximal iterations, all in registers -----------------------------------------
    v0 = nu0
    u0 = mu0
    if BM1 > 0:
        v1 = nu1
    if BN1 > 0:
        u1 = mu1
    for _it in range(iters):
        q00 = g00 * t00
        if BM1 > 0:
            q01 = g01 * t01
        if BN1 > 0:
            q10 = g10 * t10
            if BM1 > 0:
                q11 = g11 * t11
        for _in in range(inner):
            # u = mu / max(Q v, tiny)
            a0 = tl.sum(q00 * v0[None, :], axis=1)
            if BM1 > 0:
                a0 += tl.sum(q01 * v1[None, :], axis=1)
            u0 = tl.div_rn(mu0, tl.maximum(a0, TINY))
            if BN1 > 0:
                a1 = tl.sum(q10 * v0[None, :], axis=1)
                if BM1 > 0:
                    a1 += tl.sum(q11 * v1[None, :], axis=1)
                u1 = tl.div_rn(mu1, tl.maximum(a1, TINY))
            # v = nu / max(Q^T u, tiny)
            s0 = tl.sum(q00 * u0[:, None], axis=0)
            if BN1 > 0:
                s0 += tl.sum(q10 * u1[:, None], axis=0)
            v0 = tl.div_rn(nu0, tl.maximum(s0, TINY))
            if BM1 > 0:
                s1 = tl.sum(q01 * u0[:, None], axis=0)
                if BN1 > 0:
                    s1 += tl.sum(q11 * u1[:, None], axis=0)
                v1 = tl.div_rn(nu1, tl.maximum(s1, TINY))
        # T = diag(u) Q diag(v), evaluated left to right as in the eager code
        t00 = u0[:, None] * q00 * v0[None, :]
        if BM1 > 0:
            t01 = u0[:, None] * q01 * v1[None, :]
        if BN1 > 0:
            t10 = u1[:, None] * q10 * v0[None, :]
            if BM1 > 0:
                t11 = u1[:, None] * q11 * v1[None, :]

    # ---- write the plan (padding rows/columns inside [N, M] are exact zeros) -------------
    tl.store(pb + r0[:, None] * M + k0[None, :], t00, mask=(r0[:, None] < N) & (k0[None, :] < M))
    if BM1 > 0:
        tl.store(pb + r0[:, None] * M + k1[None, :], t01, mask=(r0[:, None] < N) & (k1[None, :] < M))
    if BN1 > 0:
        tl.store(pb + r1[:, None] * M + k0[None, :], t10, mask=(r1[:, None] < N) & (k0[None, :] < M))
        if BM1 > 0:
            tl.store(pb + r1[:, None] * M + k1[None, :], t11, mask=(r1[:, None] < N) & (k1[None, :] < M))
