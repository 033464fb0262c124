"""Optimal transport between token sets: cosine cost, batched masked IPOT, the OT distance.

IPOT (Xie et al., 2018, "A fast proximal point method for computing exact Wasserstein
distance"), as used by ViLT's word-patch alignment. For one sample with ``n`` valid tokens on
the x side and ``m`` on the y side, uniform marginals ``mu = 1/n``, ``nu = 1/m`` and cost
``C`` (n x m), the proximal point iteration with step ``step`` is::

    G = exp(-C / step);  T = 1 1^T;  v = 1/m
    repeat iters times:
        Q = G * T                               (elementwise)
        repeat inner times:  u = mu / (Q v);  v = nu / (Q^T u)
        T = diag(u) Q diag(v)

``T`` converges to an optimal plan of ``min_T <C, T>`` s.t. ``T 1 = mu, T^T 1 = nu``; the OT
distance is ``D = <C, T>``. The plan is computed without gradient on the detached cost and
the gradient of ``D`` flows through ``C`` only (envelope theorem), as ViLT does.

Everything here runs in float32, whatever the caller's dtype or autocast state, and every
division is guarded, so all-zero features (a missing modality), a side with one valid
token, huge values and bf16 inputs all give a finite ``D``. A sample whose x or y side has
no valid token gets ``D = 0``; :func:`pair_valid` tells which samples those are.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._ot_common import _TINY, _check_masks


def _unit_rows(x: torch.Tensor) -> torch.Tensor:
    """Rows of ``x`` scaled to unit L2 norm in float32; an all-zero row stays zero.

    Rows are first divided by their max-abs value so that huge inputs cannot overflow the
    squared norm.
    """
    x = x.float()
    scale = x.abs().amax(dim=-1, keepdim=True)
    nonzero = scale != 0
    # an all-zero row is divided by 1 and kept out of the gradient: dividing it by a tiny
    # floor, then normalising, would give it an infinite gradient
    x = x / torch.where(nonzero, scale, torch.ones_like(scale))
    return torch.where(nonzero, F.normalize(x, dim=-1, eps=1e-12), torch.zeros_like(x))


def cosine_cost(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cosine distance ``C[b, p, q] = 1 - cos(x[b, p], y[b, q])``, values in [0, 2].

    Args:
        x: ``[B, N, d]`` tokens, any float dtype.
        y: ``[B, M, d]`` tokens.
    Returns:
        ``[B, N, M]`` float32 cost. An all-zero token has cosine 0 with everything (cost 1).
    """
    if x.dim() != 3 or y.dim() != 3 or x.shape[0] != y.shape[0] or x.shape[-1] != y.shape[-1]:
        raise ValueError(f"cosine_cost expects [B,N,d] and [B,M,d], got {tuple(x.shape)} and {tuple(y.shape)}")
    with torch.autocast(device_type=x.device.type, enabled=False):
        cos = torch.bmm(_unit_rows(x), _unit_rows(y).transpose(1, 2))
        return (1.0 - cos).clamp(0.0, 2.0)


@torch.no_grad()
def ipot_eager(
    cost: torch.Tensor,
    x_mask: torch.Tensor | None = None,
    y_mask: torch.Tensor | None = None,
    *,
    step: float = 0.5,
    iters: int = 50,
    inner: int = 1,
) -> torch.Tensor:
    """Reference batched IPOT in plain PyTorch (any device). See :func:`ipot`."""
    if cost.dim() != 3:
        raise ValueError(f"cost must be [B, N, M], got shape {tuple(cost.shape)}")
    if step <= 0 or iters < 1 or inner < 1:
        raise ValueError(f"need step > 0, iters >= 1, inner >= 1; got {step}, {iters}, {inner}")
    B, N, M = cost.shape
    xm = _check_masks("x_mask", x_mask, B, N, cost.device)
    ym = _check_masks("y_mask", y_mask, B, M, cost.device)
    with torch.autocast(device_type=cost.device.type, enabled=False):
        C = torch.nan_to_num(cost.detach().float(), nan=0.0, posinf=1e30, neginf=0.0)
        joint = xm[:, :, None] & ym[:, None, :]  # [B, N, M]
        n = xm.sum(1, keepdim=True).clamp_min(1).float()  # [B, 1]
        m = ym.sum(1, keepdim=True).clamp_min(1).float()
        mu = (xm.float() / n)[:, :, None]  # [B, N, 1]
        nu = (ym.float() / m)[:, :, None]  # [B, M, 1]
        # exp(-C/step): subtracting the per-sample min keeps G <= 1 for any cost scale; this
        # only rescales G by a constant per sample, which the Sinkhorn scalings absorb.
        cmin = C.masked_fill(~joint, float("inf")).amin(dim=(1, 2), keepdim=True)
        cmin = torch.where(torch.isfinite(cmin), cmin, torch.zeros_like(cmin))
        # masked entries get G = 0 by selection (a masked cost far below the valid minimum
        # would otherwise overflow exp and give inf * 0 = NaN)
        G = torch.where(joint, torch.exp(-(C - cmin).masked_fill(~joint, 0.0) / step), 0.0)
        # Q holds G * T of the current iteration (T starts as all ones on the valid block, so
        # Q starts as G); it is updated in place, Q <- G * diag(u) Q diag(v), which is the
        # next iteration's G * T. The CPU runs this loop as about 7 small kernels per
        # iteration; most of its time is per-kernel overhead, so fewer kernels is faster.
        Q = G.clone()
        v = nu
        for it in range(iters):
            for _ in range(inner):
                # a denominator that underflowed is floored at _TINY (padded rows and columns
                # have marginal 0, so u = 0 and v = 0 there)
                u = mu / torch.bmm(Q, v).clamp_min_(_TINY)  # [B, N, 1]
                v = nu / torch.bmm(Q.transpose(1, 2), u).clamp_min_(_TINY)  # [B, M, 1]
            if it + 1 < iters:
                Q.mul_(u).mul_(v.transpose(1, 2)).mul_(G)  # T = diag(u) Q diag(v) first, as the kernel does
        return Q.mul_(u).mul_(v.transpose(1, 2))  # T = diag(u) Q diag(v)


def ipot(
    cost: torch.Tensor,
    x_mask: torch.Tensor | None = None,
    y_mask: torch.Tensor | None = None,
    *,
    step: float = 0.5,
    iters: int = 50,
    inner: int = 1,
    backend: str = "auto",
) -> torch.Tensor:
    """Batched, masked IPOT transport plan (no gradient).

    Args:
        cost: ``[B, N, M]`` cost matrices (detached and cast to float32 inside).
        x_mask: ``[B, N]`` bool, True on valid x tokens (default: all valid).
        y_mask: ``[B, M]`` bool, True on valid y tokens.
        step: proximal step (ViLT's ``beta`` = 0.5; called ``step`` here because WMA's β is
            another quantity).
        iters: outer proximal iterations (50).
        inner: Sinkhorn steps per outer iteration (1).
        backend: ``"eager"`` (reference PyTorch loop), ``"triton"`` (fused GPU kernel, one
            program per sample) or ``"auto"`` (triton on CUDA when available, else eager).
    Returns:
        ``[B, N, M]`` float32 plan, zero on padded rows and columns, with row sums ``1/n``
        and column sums ``1/m`` over the valid tokens (up to convergence).
    """
    if backend not in ("auto", "eager", "triton"):
        raise ValueError(f"backend must be 'auto', 'eager' or 'triton', got {backend!r}")
    if backend != "eager":
        from . import ot_fused  # local import: the fused path is optional

        if backend == "triton" or ot_fused.available(cost):
            return ot_fused.ipot_fused(cost, x_mask, y_mask, step=step, iters=iters, inner=inner)
    return ipot_eager(cost, x_mask, y_mask, step=step, iters=iters, inner=inner)


def pair_valid(x_mask: torch.Tensor | None, y_mask: torch.Tensor | None, batch: int, device) -> torch.Tensor:
    """``[B]`` bool: samples with at least one valid token on both sides."""
    xv = torch.ones(batch, dtype=torch.bool, device=device) if x_mask is None else x_mask.bool().any(1)
    yv = torch.ones(batch, dtype=torch.bool, device=device) if y_mask is None else y_mask.bool().any(1)
    return xv & yv


def ot_distance(
    x: torch.Tensor,
    y: torch.Tensor,
    x_mask: torch.Tensor | None = None,
    y_mask: torch.Tensor | None = None,
    *,
    step: float = 0.5,
    iters: int = 50,
    backend: str = "auto",
) -> torch.Tensor:
    """OT distance between the token sets of two modalities, per sample.

    ``D[b] = sum_{p,q} C[b,p,q] * T*[b,p,q]`` with the cosine cost ``C`` of :func:`cosine_cost`
    and the IPOT plan ``T*`` of :func:`ipot` computed on the detached cost; the gradient flows
    through ``C`` only.

    Args:
        x: ``[B, N, d]`` tokens of modality 1 (no CLS, padding marked in ``x_mask``).
        y: ``[B, M, d]`` tokens of modality 2.
        x_mask, y_mask: ``[B, N]`` / ``[B, M]`` bool valid-token masks (default all valid).
    Returns:
        ``[B]`` float32 distances in [0, 2]; 0 where a side has no valid token.
    """
    if x.dim() != 3 or y.dim() != 3:
        raise ValueError(f"ot_distance expects [B,N,d] and [B,M,d], got {tuple(x.shape)} and {tuple(y.shape)}")
    xm = _check_masks("x_mask", x_mask, x.shape[0], x.shape[1], x.device)
    ym = _check_masks("y_mask", y_mask, y.shape[0], y.shape[1], y.device)
    # padding never enters the cost, so garbage there (NaN, inf) reaches neither D nor its gradient
    if x_mask is not None:
        x = x.masked_fill(~xm[..., None], 0)
    if y_mask is not None:
        y = y.masked_fill(~ym[..., None], 0)
    C = cosine_cost(x, y)  # [B, N, M] float32, differentiable
    T = ipot(C.detach(), xm, ym, step=step, iters=iters, backend=backend)
    return (C * T).sum(dim=(1, 2))
