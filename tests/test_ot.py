"""Tests of wma_core.ot against independent references.

References: POT's exact ``ot.emd2`` (numpy and torch backends) for the distance and its
gradient, scipy's ``cdist(..., "cosine")`` and a numpy cosine cost written here for the
cost, and ``torch.autograd.gradcheck`` for the envelope-theorem gradient.
"""

from __future__ import annotations

import numpy as np
import ot
import pytest
import torch
from scipy.spatial.distance import cdist

from wma_core.ot import cosine_cost, ipot, ot_distance, pair_valid


# -- independent references ----------------------------------------------------------------
def np_cosine_cost(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``1 - cos`` between the rows of ``a`` [n, d] and ``b`` [m, d], float64 numpy."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    an = a / np.linalg.norm(a, axis=1, keepdims=True)
    bn = b / np.linalg.norm(b, axis=1, keepdims=True)
    return 1.0 - an @ bn.T


def torch_cosine_cost(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Same as :func:`np_cosine_cost`, differentiable, any float dtype, batched [B, n, d]."""
    an = a / a.norm(dim=-1, keepdim=True)
    bn = b / b.norm(dim=-1, keepdim=True)
    return 1.0 - an @ bn.transpose(-1, -2)


def emd_reference(x: np.ndarray, y: np.ndarray, xm: np.ndarray, ym: np.ndarray) -> np.ndarray:
    """Exact OT distance per sample: uniform marginals over the valid tokens, numpy cost."""
    out = []
    for b in range(x.shape[0]):
        xv, yv = x[b][xm[b]], y[b][ym[b]]
        n, m = len(xv), len(yv)
        out.append(ot.emd2(np.full(n, 1.0 / n), np.full(m, 1.0 / m), np_cosine_cost(xv, yv)))
    return np.array(out)


def random_problem(seed: int, B=8, N=12, M=9, d=16, shared=0.0):
    """Random masked problem; every sample has >= 1 valid token per side, padding at random
    positions (not only at the end). ``shared`` adds a per-sample common direction
    (correlated tokens, smaller costs)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, N, d))
    y = rng.standard_normal((B, M, d))
    if shared:
        c = rng.standard_normal((B, 1, d)) * shared
        x, y = x + c, y + c
    xm = np.zeros((B, N), bool)
    ym = np.zeros((B, M), bool)
    for b in range(B):
        xm[b, rng.choice(N, rng.integers(1, N + 1), replace=False)] = True
        ym[b, rng.choice(M, rng.integers(1, M + 1), replace=False)] = True
    xm[0] = True  # one full sample
    ym[1, :] = False  # one sample with a single valid y token
    ym[1, 3] = True
    return x, y, xm, ym


def t32(a):
    return torch.tensor(a, dtype=torch.float32)


# -- cosine cost -----------------------------------------------------------------------------
def test_cosine_cost_matches_scipy():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 7, 10))
    y = rng.standard_normal((3, 5, 10))
    C = cosine_cost(t32(x), t32(y))
    assert C.dtype == torch.float32 and C.shape == (3, 7, 5)
    for b in range(3):
        np.testing.assert_allclose(C[b].numpy(), cdist(x[b], y[b], "cosine"), atol=2e-6)


def test_cosine_cost_range_and_zero_rows():
    x = torch.randn(2, 4, 6)
    x[0, 1] = 0.0
    y = torch.cat([x[:, :2], -x[:, :2], torch.randn(2, 3, 6)], dim=1)  # identical and opposite
    C = cosine_cost(x, y)
    assert ((C >= 0) & (C <= 2)).all()
    assert torch.allclose(C[1, 0, 0], torch.tensor(0.0), atol=1e-6)  # same vector
    assert torch.allclose(C[1, 0, 2], torch.tensor(2.0), atol=1e-6)  # opposite vector
    assert torch.equal(C[0, 1], torch.ones(7))  # zero vector: cosine 0 with everything


# -- distance vs exact EMD ------------------------------------------------------------------
@pytest.mark.parametrize("seed,shared", [(0, 0.0), (1, 0.0), (2, 1.0)])
def test_ot_distance_close_to_exact_emd(seed, shared):
    x, y, xm, ym = random_problem(seed, shared=shared)
    ref = emd_reference(x, y, xm, ym)
    args = (t32(x), t32(y), torch.tensor(xm), torch.tensor(ym))
    D50 = ot_distance(*args).numpy()  # defaults: step 0.5, 50 iterations
    D1000 = ot_distance(*args, iters=1000).numpy()
    assert np.all(np.abs(D50 - ref) / ref <= 0.02), (D50, ref)
    assert np.all(np.abs(D1000 - ref) / ref <= 1e-3), (D1000, ref)
    # IPOT is a feasible plan, so its cost is an upper bound of the exact OT (up to rounding)
    assert np.all(D50 >= ref - 1e-5)


def test_ot_distance_strongly_aligned_tokens():
    """Strongly correlated tokens (costs ~0.03-0.1): 50 iterations are within 0.01 in absolute
    terms (relative error can reach ~20% there: IPOT's step 0.5 is large against such costs);
    1000 iterations reach the exact value."""
    x, y, xm, ym = random_problem(3, shared=3.0)
    ref = emd_reference(x, y, xm, ym)
    args = (t32(x), t32(y), torch.tensor(xm), torch.tensor(ym))
    assert np.all(np.abs(ot_distance(*args).numpy() - ref) <= 0.01)
    assert np.all(np.abs(ot_distance(*args, iters=1000).numpy() - ref) <= 1e-4)


def test_plan_marginals_and_padding():
    x, y, xm, ym = random_problem(4)
    C = cosine_cost(t32(x), t32(y))
    for iters, tol in [(50, 2e-3), (1000, 1e-5)]:
        T = ipot(C, torch.tensor(xm), torch.tensor(ym), iters=iters).numpy()
        assert T.dtype == np.float32 and np.all(T >= 0)
        for b in range(x.shape[0]):
            n, m = xm[b].sum(), ym[b].sum()
            rows, cols = T[b].sum(1), T[b].sum(0)
            # relative tolerance on the marginals
            np.testing.assert_allclose(rows[xm[b]], 1.0 / n, rtol=tol, atol=0)
            np.testing.assert_allclose(cols[ym[b]], 1.0 / m, rtol=tol, atol=0)
            assert np.all(T[b][~xm[b]] == 0) and np.all(T[b][:, ~ym[b]] == 0)
            np.testing.assert_allclose(T[b].sum(), 1.0, rtol=tol)


def test_plan_converges_to_exact_plan():
    """With a unique optimum (generic random costs), IPOT's plan approaches POT's exact plan."""
    x, y, xm, ym = random_problem(5, B=3)
    C = cosine_cost(t32(x), t32(y))
    T = ipot(C, torch.tensor(xm), torch.tensor(ym), iters=1000).numpy()
    for b in range(3):
        xv, yv = x[b][xm[b]], y[b][ym[b]]
        n, m = len(xv), len(yv)
        G = ot.emd(np.full(n, 1.0 / n), np.full(m, 1.0 / m), np_cosine_cost(xv, yv))
        np.testing.assert_allclose(T[b][np.ix_(xm[b], ym[b])], G, atol=1e-3 / max(n, m))


def test_default_masks_mean_all_valid():
    x, y = torch.randn(2, 5, 8), torch.randn(2, 4, 8)
    full = ot_distance(x, y, torch.ones(2, 5, dtype=torch.bool), torch.ones(2, 4, dtype=torch.bool))
    assert torch.equal(ot_distance(x, y), full)
    ref = emd_reference(x.numpy(), y.numpy(), np.ones((2, 5), bool), np.ones((2, 4), bool))
    np.testing.assert_allclose(ot_distance(x, y, iters=1000).numpy(), ref, rtol=1e-3)


# -- gradient ---------------------------------------------------------------------------------
def _fixed_plan_problem(seed=6):
    x, y, xm, ym = random_problem(seed, B=3, N=6, M=5, d=8)
    return torch.tensor(x), torch.tensor(y), torch.tensor(xm), torch.tensor(ym)


def test_gradcheck_of_cost_times_fixed_plan():
    """The function whose gradient ot_distance must return is differentiable as claimed."""
    x, y, xm, ym = _fixed_plan_problem()
    T = ipot(cosine_cost(x, y), xm, ym).double()

    def f_indep(a, b):  # float64 throughout
        return (torch_cosine_cost(a, b) * T).sum(dim=(1, 2))

    def f_module(a, b):  # the module's cost (computed in float32 inside)
        return (cosine_cost(a, b).double() * T).sum(dim=(1, 2))

    xs, ys = x.clone().requires_grad_(), y.clone().requires_grad_()
    assert torch.autograd.gradcheck(f_indep, (xs, ys))
    assert torch.autograd.gradcheck(f_module, (xs, ys), eps=1e-3, atol=1e-3, rtol=1e-2)


def test_gradient_is_cost_gradient_at_fixed_plan():
    """Envelope theorem: d D / d(x, y) = d <C(x, y), T*> / d(x, y) with T* held fixed."""
    x, y, xm, ym = _fixed_plan_problem()
    x, y = x.float(), y.float()
    xa, ya = x.clone().requires_grad_(), y.clone().requires_grad_()
    ot_distance(xa, ya, xm, ym).sum().backward()
    T = ipot(cosine_cost(x, y), xm, ym)
    xb, yb = x.clone().requires_grad_(), y.clone().requires_grad_()
    (torch_cosine_cost(xb, yb) * T).sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(ya.grad, yb.grad, atol=1e-6, rtol=1e-5)
    # the plan carries no gradient: differentiating through IPOT would change the result
    assert xa.grad[~xm].abs().max() == 0 and ya.grad[~ym].abs().max() == 0


def test_gradient_matches_pot_emd2_torch_backend():
    """At 1000 iterations the gradient is close to the exact one (POT: the optimal plan)."""
    x, y, xm, ym = _fixed_plan_problem(7)
    xa, ya = x.float().requires_grad_(), y.float().requires_grad_()
    ot_distance(xa, ya, xm, ym, iters=1000).sum().backward()
    xe, ye = x.clone().requires_grad_(), y.clone().requires_grad_()
    total = 0.0
    for b in range(x.shape[0]):
        C = torch_cosine_cost(xe[b][xm[b]], ye[b][ym[b]])
        n, m = C.shape
        a = torch.full((n,), 1.0 / n, dtype=torch.float64)
        c = torch.full((m,), 1.0 / m, dtype=torch.float64)
        total = total + ot.emd2(a, c, C)
    total.backward()
    for got, ref in [(xa.grad.double(), xe.grad), (ya.grad.double(), ye.grad)]:
        assert (got - ref).abs().max() <= 1e-3 * ref.abs().max()


# -- finiteness and edge cases -------------------------------------------------------------
def _assert_finite_with_grad(x, y, xm=None, ym=None):
    xa = x.clone().requires_grad_()
    ya = y.clone().requires_grad_()
    D = ot_distance(xa, ya, xm, ym)
    assert D.dtype == torch.float32 and torch.isfinite(D).all()
    D.sum().backward()
    assert torch.isfinite(xa.grad).all() and torch.isfinite(ya.grad).all()
    return D.detach()


def test_all_zero_features_missing_modality():
    x = torch.zeros(3, 5, 8)
    y = torch.randn(3, 4, 8)
    D = _assert_finite_with_grad(x, y)
    # cost 1 everywhere, and the plan has total mass 1
    torch.testing.assert_close(D, torch.ones(3), atol=1e-6, rtol=0)
    _assert_finite_with_grad(torch.zeros(2, 3, 8), torch.zeros(2, 4, 8))


def test_single_valid_token_side():
    x, y = torch.randn(2, 6, 8), torch.randn(2, 5, 8)
    xm = torch.zeros(2, 6, dtype=torch.bool)
    xm[:, 2] = True
    D = _assert_finite_with_grad(x, y, xm)
    # one source token: the plan is forced, D = mean cost to every y token
    ref = [np_cosine_cost(x[b, 2:3].numpy(), y[b].numpy()).mean() for b in range(2)]
    np.testing.assert_allclose(D.numpy(), ref, atol=1e-5)
    # both sides with a single token: D = that cost
    ym = torch.zeros(2, 5, dtype=torch.bool)
    ym[:, 0] = True
    D1 = _assert_finite_with_grad(x, y, xm, ym)
    ref1 = [np_cosine_cost(x[b, 2:3].numpy(), y[b, :1].numpy())[0, 0] for b in range(2)]
    np.testing.assert_allclose(D1.numpy(), ref1, atol=1e-5)


def test_empty_side_gives_zero_and_invalid():
    x, y, xm, ym = random_problem(8, B=4)
    xm[2] = False  # sample 2: no valid x token
    ym[3] = False  # sample 3: no valid y token
    xt, yt, xmt, ymt = t32(x), t32(y), torch.tensor(xm), torch.tensor(ym)
    D = _assert_finite_with_grad(xt, yt, xmt, ymt)
    assert D[2] == 0 and D[3] == 0
    assert pair_valid(xmt, ymt, 4, "cpu").tolist() == [True, True, False, False]
    assert pair_valid(None, None, 3, "cpu").tolist() == [True] * 3
    # the other samples are not affected by the empty ones
    Dsub = ot_distance(xt[:2], yt[:2], xmt[:2], ymt[:2])
    torch.testing.assert_close(D[:2], Dsub, atol=1e-6, rtol=0)


def test_huge_values():
    x, y = torch.randn(2, 5, 8), torch.randn(2, 4, 8)
    D = ot_distance(x, y)
    Dh = _assert_finite_with_grad(x * 1e30, y)
    torch.testing.assert_close(Dh, D, atol=1e-5, rtol=0)  # cosine is scale invariant
    Dhh = _assert_finite_with_grad(x * 1e30, y * 3e37)
    torch.testing.assert_close(Dhh, D, atol=1e-5, rtol=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_inputs(dtype):
    x, y = torch.randn(3, 6, 16), torch.randn(3, 5, 16)
    xm = torch.ones(3, 6, dtype=torch.bool)
    xm[1, 4:] = False
    D32 = ot_distance(x, y, xm)
    xl, yl = x.to(dtype), y.to(dtype)
    D = _assert_finite_with_grad(xl, yl, xm)
    # computed in float32: same as feeding the rounded values in float32
    torch.testing.assert_close(D, ot_distance(xl.float(), yl.float(), xm), atol=1e-6, rtol=0)
    torch.testing.assert_close(D, D32, atol=2e-2, rtol=0)


def test_bf16_huge_values():
    x, y = torch.randn(2, 5, 8), torch.randn(2, 4, 8)
    D = _assert_finite_with_grad((x * 1e30).bfloat16(), y.bfloat16())
    torch.testing.assert_close(D, ot_distance(x, y), atol=2e-2, rtol=0)


def test_under_autocast_bf16():
    x, y, xm, ym = random_problem(9, B=4)
    args = (t32(x), t32(y), torch.tensor(xm), torch.tensor(ym))
    D32 = ot_distance(*args)
    xa, ya = args[0].clone().requires_grad_(), args[1].clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        D = ot_distance(xa, ya, args[2], args[3])
        T = ipot(cosine_cost(args[0], args[1]), args[2], args[3])
    assert D.dtype == torch.float32 and T.dtype == torch.float32 and torch.isfinite(D).all()
    torch.testing.assert_close(D.detach(), D32, atol=1e-5, rtol=0)
    D.sum().backward()
    assert torch.isfinite(xa.grad).all()


@pytest.mark.parametrize("garbage", [float("nan"), 1e30, float("inf")])
def test_padding_garbage_does_not_change_D(garbage):
    x, y, xm, ym = random_problem(10, B=4)
    xt, yt, xmt, ymt = t32(x), t32(y), torch.tensor(xm), torch.tensor(ym)
    D = ot_distance(xt, yt, xmt, ymt)
    xg, yg = xt.clone(), yt.clone()
    xg[~xmt] = garbage
    yg[~ymt] = garbage
    Dg = _assert_finite_with_grad(xg, yg, xmt, ymt)
    torch.testing.assert_close(Dg, D, atol=1e-6, rtol=0)
    # and the gradient on valid tokens is unchanged too
    xa, ya = xt.clone().requires_grad_(), yt.clone().requires_grad_()
    ot_distance(xa, ya, xmt, ymt).sum().backward()
    xb, yb = xg.clone().requires_grad_(), yg.clone().requires_grad_()
    ot_distance(xb, yb, xmt, ymt).sum().backward()
    torch.testing.assert_close(xb.grad[xmt], xa.grad[xmt])
    assert (xb.grad[~xmt] == 0).all()


def test_permutation_invariance():
    x, y, xm, ym = random_problem(11, B=4)
    xt, yt, xmt, ymt = t32(x), t32(y), torch.tensor(xm), torch.tensor(ym)
    D = ot_distance(xt, yt, xmt, ymt)
    g = torch.Generator().manual_seed(0)
    px = torch.stack([torch.randperm(xt.shape[1], generator=g) for _ in range(4)])
    py = torch.stack([torch.randperm(yt.shape[1], generator=g) for _ in range(4)])
    xp = torch.gather(xt, 1, px[..., None].expand_as(xt))
    xmp = torch.gather(xmt, 1, px)
    yp = torch.gather(yt, 1, py[..., None].expand_as(yt))
    ymp = torch.gather(ymt, 1, py)
    torch.testing.assert_close(ot_distance(xp, yt, xmp, ymt), D, atol=1e-5, rtol=0)
    torch.testing.assert_close(ot_distance(xt, yp, xmt, ymp), D, atol=1e-5, rtol=0)
    # swapping the two sides: the same transport problem, transposed
    torch.testing.assert_close(ot_distance(yt, xt, ymt, xmt), D, atol=1e-4, rtol=0)


# -- errors -----------------------------------------------------------------------------------
def test_shape_and_mask_errors():
    x, y = torch.randn(2, 5, 8), torch.randn(2, 4, 8)
    with pytest.raises(ValueError):
        cosine_cost(x, torch.randn(2, 4, 7))  # feature sizes differ
    with pytest.raises(ValueError):
        cosine_cost(x, torch.randn(3, 4, 8))  # batch sizes differ
    with pytest.raises(ValueError):
        cosine_cost(x[0], y[0])  # not batched
    with pytest.raises(ValueError):
        ot_distance(x, torch.randn(2, 4, 7))
    with pytest.raises(ValueError):
        ot_distance(x, torch.randn(3, 4, 8))
    with pytest.raises(ValueError):
        ot_distance(x[0], y[0])
    with pytest.raises(ValueError):
        ot_distance(x, y, torch.ones(2, 4, dtype=torch.bool))  # x_mask of y's length
    with pytest.raises(ValueError):
        ot_distance(x, y, None, torch.ones(1, 4, dtype=torch.bool))
    C = cosine_cost(x, y)
    with pytest.raises(ValueError):
        ipot(C[0])
    with pytest.raises(ValueError):
        ipot(C, torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError):
        ipot(C, None, torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError):
        ipot(C, step=0.0)
    with pytest.raises(ValueError):
        ipot(C, iters=0)
    with pytest.raises(ValueError):
        ipot(C, backend="cuda")
