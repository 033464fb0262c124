"""The WMA regulariser (Eq. 9 and Eq. 10 of the paper).

For a batch of ``B`` samples and a pair of modalities ``(m1, m2)`` with OT distances
``D_i = OT(H_i^{m1}, H_i^{m2})`` (:func:`wma_core.ot.ot_distance`)::

    R_pair = mean_i (D_i - beta * D0_pair)^2                      (Eq. 9, target "init")
    R_pair = mean_i (D_i - beta * stopgrad(mean_j D_j))^2         (target "batch")
    loss   = task_loss + alpha * sum_pairs R_pair                  (Eq. 10 for 3 modalities)

``D0_pair`` is the mean D over the first training batch under the initial weights, measured
once without gradient before the first update (:meth:`WMARegulariser.calibrate`) and stored
with the run. The cosine cost lies in [0, 2], so ``D <= D_MAX = 2`` for every plan: a target
``beta * D0 > D_MAX`` cannot be reached (D can only approach 2 when every token of one modality
points away from every token of the other) and :func:`target_feasible` flags it.

**Argument order (ViLT's).** At 50 IPOT iterations the distance depends slightly on which side
the Sinkhorn scaling starts from (up to ~4% relative on nearly aligned tokens). ViLT's ``ipot``
initialises the text side's scaling to ``1/n_text`` and updates the image side first; in
:func:`wma_core.ot.ipot` that is the *y* side initialised, the *x* side updated first, so
ViLT's distance is ``ot_distance(image, text)``. For every pair, :func:`pair_distances` puts the
modality that comes first in :data:`TEXT_ROLE_ORDER` (text, then video, then audio, then image)
in ViLT's text role, whatever order the pair is listed in: ``text-image`` ->
``ot_distance(image, text)`` (ViLT exactly); for three modalities ``text-video`` ->
``ot_distance(video, text)``, ``text-audio`` -> ``ot_distance(audio, text)``, ``video-audio`` ->
``ot_distance(audio, video)``. So text, when present, is always where ViLT has it.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import torch

from .ot import ot_distance, pair_valid

TARGETS = ("init", "batch")
#: The largest OT distance under the cosine cost (its values lie in [0, 2]).
D_MAX = 2.0
#: Which modality of a pair takes ViLT's text role in IPOT (the earlier one here; others last).
TEXT_ROLE_ORDER = ("text", "video", "audio", "image")


@dataclass
class WMAConfig:
    """Hyper-parameters of the regulariser.

    Attributes:
        alpha: weight of the regulariser (0 = baseline).
        beta: target OT distance as a multiple of D0.
        target: ``"init"`` (β·D0, the paper's text) or ``"batch"`` (β·detached batch mean).
        step: IPOT proximal step (0.5).
        iters: IPOT outer iterations (50).
    """

    alpha: float = 0.0
    beta: float = 1.0
    target: str = "init"
    step: float = 0.5
    iters: int = 50

    def __post_init__(self):
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {self.target!r}")
        if self.alpha < 0 or self.beta < 0:
            raise ValueError(f"alpha and beta must be >= 0, got alpha={self.alpha}, beta={self.beta}")

    @property
    def method(self) -> str:
        """``baseline`` (α = 0), ``min_ot`` (β = 0) or ``wma``."""
        if self.alpha == 0:
            return "baseline"
        return "min_ot" if self.beta == 0 else "wma"


def modality_pairs(modalities) -> list[tuple[str, str]]:
    """All unordered pairs, in order: ``[(text, image)]`` or ``[(text, video), (text, audio), (video, audio)]``."""
    return list(combinations(modalities, 2))


def pair_key(pair) -> str:
    return f"{pair[0]}-{pair[1]}"


def pair_distances(out, pairs, *, step: float = 0.5, iters: int = 50) -> dict:
    """``{"m1-m2": (D [B] float32, valid [B] bool)}`` for a :class:`~wma_core.model.WMAOutput`.

    ``D = ot_distance(tokens[other], tokens[t])`` with ``t`` the pair's modality in ViLT's text
    role (:func:`text_role`; see the module docstring): ``"text-image"`` equals ViLT's
    ``optimal_transport_dist(text, image)``. Several pairs (three modalities) are solved in one
    batched IPOT of ``len(pairs) * B`` samples, each pair's tokens zero-padded to the longest
    side and masked (:func:`_stack_padded`): the samples are independent, so every D is the
    one a call per pair gives (to float rounding), at a third of the small kernels.
    """
    xs, ys, xms, yms = [], [], [], []
    for a, b in pairs:
        t = text_role(a, b)
        o = b if t == a else a
        xs.append(out.tokens[o])
        ys.append(out.tokens[t])
        xms.append(out.token_masks[o])
        yms.append(out.token_masks[t])
    D_all = ot_distance(_stack_padded(xs), _stack_padded(ys), _stack_padded(xms), _stack_padded(yms),
                        step=step, iters=iters)
    res = {}
    for (a, b), D in zip(pairs, D_all.split([x.shape[0] for x in xs])):
        x, xm, ym = out.tokens[a], out.token_masks[a], out.token_masks[b]
        res[pair_key((a, b))] = (D, pair_valid(xm, ym, x.shape[0], x.device))
    return res


def _stack_padded(parts: list) -> torch.Tensor:
    """``[B_k, L_k, ...]`` tensors -> one ``[sum B_k, max L_k, ...]``, zero (False) padded on dim 1
    (a single tensor is returned as it is: one pair costs no copy)."""
    if len(parts) == 1:
        return parts[0]
    L = max(p.shape[1] for p in parts)
    pads = [torch.nn.functional.pad(p, (0, 0) * (p.dim() - 2) + (0, L - p.shape[1])) if p.shape[1] < L else p
            for p in parts]
    return torch.cat(pads, dim=0)


def text_role(a: str, b: str) -> str:
    """The modality of the pair ``(a, b)`` in ViLT's text role: the earlier in :data:`TEXT_ROLE_ORDER`
    (``a`` when neither is listed or both rank the same)."""
    rank = {m: i for i, m in enumerate(TEXT_ROLE_ORDER)}
    return b if rank.get(b, len(rank)) < rank.get(a, len(rank)) else a


def target_feasible(cfg: WMAConfig, d0: dict | None) -> dict:
    """``{pair: beta * D0_pair <= D_MAX}`` for a WMA run with the ``init`` target; ``{}`` otherwise
    (the baseline has no target; the ``batch`` target moves with the batch)."""
    if cfg.alpha == 0 or cfg.target != "init" or not d0:
        return {}
    return {k: bool(cfg.beta * float(v) <= D_MAX) for k, v in d0.items()}


def _masked_mean(D: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    return (D * valid).sum() / valid.sum().clamp_min(1)


class WMARegulariser:
    """``alpha * sum_pairs mean_i (D_i - target)^2`` with per-pair D0.

    Usage: ``reg.calibrate(pair_distances(out0, pairs))`` once before the first update, then
    ``loss_reg, stats = reg(pair_distances(out, pairs))`` every step.
    """

    def __init__(self, cfg: WMAConfig, pairs, d0: dict | None = None):
        self.cfg = cfg
        self.pairs = [pair_key(p) for p in pairs]
        self.d0 = dict(d0) if d0 else None

    @torch.no_grad()
    def calibrate(self, distances: dict) -> dict:
        """Set ``D0`` per pair from distances measured under the initial weights."""
        self.d0 = {k: float(_masked_mean(D.float(), v)) for k, (D, v) in distances.items()}
        return self.d0

    def __call__(self, distances: dict) -> tuple[torch.Tensor, dict]:
        """Returns ``(alpha * sum_pairs R_pair, {pair: mean D})``."""
        if self.cfg.target == "init" and self.d0 is None:
            raise RuntimeError("WMA target 'init' needs D0: call calibrate() on the first batch before training")
        total = None
        stats = {}
        for k in self.pairs:
            D, valid = distances[k]
            mean_d = _masked_mean(D, valid)
            stats[k] = float(mean_d.detach())
            if self.cfg.target == "init":
                target = self.cfg.beta * self.d0[k]
            else:
                target = self.cfg.beta * mean_d.detach()
            r = _masked_mean((D - target) ** 2, valid)
            total = r if total is None else total + r
        return self.cfg.alpha * total, stats


class L2SP:
    """L2-SP (Li, Grandvalet & Davoine, ICML 2018): an L2 penalty towards the starting point.

    For the backbone's parameters ``θ_j`` (the head is left out: it has no pretrained start)
    and their values ``θ_j^0`` when the run starts::

        R_sp = (λ / 2) Σ_j ||θ_j − θ_j^0||²

    It keeps the whole network near its initialisation, whatever its token geometry; WMA keeps
    one statistic of that geometry (D) near β·D0. So it separates "keeps the alignment" from
    "stays near the start". AdamW's weight decay (towards 0) still applies to every weight.

    Args:
        params: the backbone's parameters (``[tensor]``); frozen ones are left out.
        strength: ``λ`` >= 0.
    """

    def __init__(self, params, strength: float):
        if not strength >= 0:
            raise ValueError(f"the L2-SP strength must be >= 0, got {strength}")
        self.strength = float(strength)
        self.params = [p for p in params if p.requires_grad]
        self.anchors = [p.detach().clone() for p in self.params]

    def _squared(self) -> torch.Tensor:
        """``Σ_j ||θ_j − θ_j^0||²`` in float32."""
        return sum(((p.float() - a.float()) ** 2).sum() for p, a in zip(self.params, self.anchors))

    def __call__(self) -> torch.Tensor:
        """``R_sp``, a scalar with gradient ``λ (θ_j − θ_j^0)`` for every parameter."""
        return 0.5 * self.strength * self._squared()

    def distance(self) -> float:
        """``||θ − θ^0||`` over all those parameters (no gradient)."""
        with torch.no_grad():
            return float(self._squared()) ** 0.5


def task_loss(kind: str, output: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The task loss of a head's ``output`` ``[B, n_out]``, in float32: BCE with logits for
    ``binary`` and ``multilabel`` tasks, L1 for ``regression`` (MOSEI, as MultiBench trains it)."""
    output = output.float()
    if kind == "binary":
        return torch.nn.functional.binary_cross_entropy_with_logits(output.reshape(-1), labels.float().reshape(-1))
    if kind == "multilabel":
        return torch.nn.functional.binary_cross_entropy_with_logits(output, labels.float())
    if kind == "regression":
        return torch.nn.functional.l1_loss(output.reshape(-1), labels.float().reshape(-1))
    raise ValueError(f"unknown task kind {kind!r}")
