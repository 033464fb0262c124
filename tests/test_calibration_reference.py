"""The noise calibration (wma_study.calibrate / calibration) against hand-computed expectations.

- the dev drop is oriented so that noise that hurts reads positive, for AUROC (higher is better)
  and for MAE (MOSEI, lower is better);
- the paper's drop (Table 1 baseline) likewise, recomputed here from the transcribed table;
- the choice rule: only amplitudes whose mean drop over seeds is at least ``min_drop``; among
  those the one closest to the target, ties to the smaller amplitude; none hurts → the largest drop;
- calibrate_dataset aims at ``max(paper drop, MIN_DROP)`` and averages drops over seeds.

Nothing is trained: the evaluations are scripted (metric as a known function of the amplitude).
"""

from __future__ import annotations

import types

import numpy as np
import pytest

from wma_study import calibrate as CB
from wma_study import calibration as CAL
from wma_study.paper import load_paper_results


# --------------------------------------------------------------------------- choose
DROPS = [  # two seeds: {amplitude: drop}
    {0.1: 0.002, 0.5: 0.012, 1.0: 0.05, 2.0: 0.03, 4.0: -0.004},
    {0.1: 0.004, 0.5: 0.010, 1.0: 0.03, 2.0: 0.05, 4.0: -0.006},
]
AMPS = (0.1, 0.5, 1.0, 2.0, 4.0)
# means: 0.1 → 0.003, 0.5 → 0.011, 1.0 → 0.04, 2.0 → 0.04, 4.0 → -0.005


@pytest.mark.parametrize("target,want", [
    (0.02, 0.5),    # |0.011-0.02| = 0.009 < |0.04-0.02| = 0.02
    (0.003, 0.5),   # 0.1 is closest (its mean is the target) but does not hurt by min_drop
    (0.04, 1.0),    # 1.0 and 2.0 tie: the smaller amplitude
    (0.1, 1.0),     # beyond every drop: the largest hurting drop, smaller amplitude on the tie
    (-0.005, 0.5),  # 4.0 helps (negative drop): never chosen while something hurts
])
def test_choose_hand_computed(target, want):
    a, drop, hurts = CB.choose(DROPS, target, AMPS, min_drop=0.01, fit="raw")
    means = {0.1: 0.003, 0.5: 0.011, 1.0: 0.04, 2.0: 0.04, 4.0: -0.005}
    assert a == want and hurts is True
    assert drop == pytest.approx(means[want], abs=1e-12)


def test_choose_min_drop_boundary_and_nothing_hurts():
    # a mean drop exactly at min_drop hurts (>=)
    a, drop, hurts = CB.choose([{1.0: 0.01, 2.0: 0.0}, {1.0: 0.01, 2.0: 0.0}], 0.5, (1.0, 2.0), min_drop=0.01, fit="raw")
    assert (a, hurts) == (1.0, True) and drop == pytest.approx(0.01)
    # just below min_drop on every amplitude: the largest mean drop, hurts False
    a, drop, hurts = CB.choose([{1.0: 0.009, 2.0: 0.004}, {1.0: 0.0095, 2.0: 0.015}], 0.5, (1.0, 2.0), min_drop=0.01, fit="raw")
    assert (a, hurts) == (2.0, False) and drop == pytest.approx(0.0095)
    a, _, hurts = CB.choose([{1.0: 0.009, 2.0: 0.004}], 0.5, (1.0, 2.0), min_drop=0.01, fit="raw")
    assert (a, hurts) == (1.0, False)
    # the default min_drop is MIN_DROP = 0.01
    assert CAL.MIN_DROP == 0.01
    assert CB.choose([{1.0: 0.0099, 2.0: 0.02}], 0.0099, (1.0, 2.0), fit="raw")[0] == 2.0


# --------------------------------------------------------------------------- the monotone fit
def test_monotone_fit_pools_adjacent_violators_by_hand():
    # means 0.003, 0.011, 0.04, 0.04, -0.005: the last one violates; pooled with the two before it
    # (0.04 + 0.04 - 0.005) / 3 = 0.025, since pooling only with 2.0 gives 0.0175 < 0.04 (still a violation)
    fitted = CB.monotone_drops({0.1: 0.003, 0.5: 0.011, 1.0: 0.04, 2.0: 0.04, 4.0: -0.005})
    assert fitted == pytest.approx({0.1: 0.003, 0.5: 0.011, 1.0: 0.025, 2.0: 0.025, 4.0: 0.025}, abs=1e-12)
    # already monotone: unchanged
    assert CB.monotone_drops({1.0: 0.0, 2.0: 0.1, 3.0: 0.2}) == pytest.approx({1.0: 0.0, 2.0: 0.1, 3.0: 0.2})


def test_choose_on_the_fit_ignores_a_lucky_amplitude():
    """A small amplitude's dev mean lands on the target by luck (0.06 amid 0.01-0.02): the raw rule
    takes it; the fit pools it with its neighbours, and the amplitude where the curve really
    reaches the target is chosen."""
    amps = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
    drops = [{0.5: 0.01, 1.0: 0.06, 2.0: 0.01, 4.0: 0.02, 8.0: 0.05, 16.0: 0.07}]
    assert CB.choose(drops, 0.06, amps, fit="raw") == (1.0, pytest.approx(0.06), True)
    # pool {1, 2, 4}: (0.06 + 0.01 + 0.02) / 3 = 0.03; then 8 -> 0.05 and 16 -> 0.07 are each 0.01
    # from the target: the tie goes to the smaller amplitude
    a, drop, hurts = CB.choose(drops, 0.06, amps)  # fit="isotonic" by default
    assert (a, hurts) == (8.0, True) and drop == pytest.approx(0.05)
    assert CB.choose(drops, 0.03, amps) == (1.0, pytest.approx(0.03), True)  # the first amplitude of the pool
    with pytest.raises(ValueError, match="fit must be"):
        CB.choose(drops, 0.06, amps, fit="closest")


def test_calibration_uses_three_seeds_by_default():
    assert len(CB.SEEDS) >= 3
    import inspect
    assert inspect.signature(CB.calibrate).parameters["seeds"].default == CB.SEEDS


# --------------------------------------------------------------------------- direction of the drop
class _FakeDS:
    def __init__(self, data_dir, split):
        self.split = split

    def __len__(self):
        return 50


@pytest.mark.parametrize("metric,modalities,normal,slope", [
    ("mae", ("text", "video", "audio"), 0.60, +0.1),   # MOSEI: noise raises the error
    ("auroc", ("text", "image"), 0.70, -0.1),          # noise lowers the AUROC
])
def test_dev_drop_is_positive_when_noise_hurts(monkeypatch, metric, modalities, normal, slope):
    import data_prep.dataset as DS

    monkeypatch.setattr(DS, "PreparedDataset", _FakeDS)
    monkeypatch.setattr(DS, "make_loader", lambda ds, bs, **k: ds)
    seen = []

    def fake_eval(model, loader, kind, *, perturbation=None, **k):
        if perturbation is None:
            return {"metrics": {metric: normal}}
        seen.append((perturbation.modality, perturbation.amplitude, perturbation.scale))
        # a modality-specific effect, so that modalities cannot be mixed up
        w = 1.0 + modalities.index(perturbation.modality)
        return {"metrics": {metric: normal + slope * w * perturbation.amplitude}}

    monkeypatch.setattr(CB, "evaluate", fake_eval)
    cfg = types.SimpleNamespace(device="cpu", data_dir="x", eval_batch_size=8, perturb_seed=0)
    rec = {"headline_metric": metric, "embedding_rms": {m: 2.0 + i for i, m in enumerate(modalities)}}
    task = types.SimpleNamespace(modalities=modalities, kind="regression" if metric == "mae" else "binary")
    out = CB.dev_drops(None, task, rec, cfg, amplitudes=(0.5, 2.0))
    assert out["normal"] == normal
    for i, m in enumerate(modalities):
        for a in (0.5, 2.0):
            assert out["drops"][m][a] == pytest.approx(0.1 * (1 + i) * a, abs=1e-12), (m, a)
    # relative noise: the amplitude multiplies the modality's own embedding RMS
    assert {(m, a, s) for m, a, s in seen} == {(m, a, 2.0 + i) for i, m in enumerate(modalities) for a in (0.5, 2.0)}


@pytest.mark.parametrize("dataset", ["mosei", "hateful_memes", "ur_funny"])
def test_paper_drops_by_hand(dataset):
    p = load_paper_results()
    base = p[(p["table"] == 1) & (p["dataset"] == dataset) & (p["method"] == "baseline")].set_index("test_case")["value"]
    lower_better = dataset == "mosei"
    got = CAL.paper_drops(dataset)
    for m in CAL.MODALITIES[dataset]:
        normal, noisy = float(base["normal"]), float(base[f"{m}_noise"])
        want = (noisy - normal) if lower_better else (normal - noisy)
        assert got[m] == pytest.approx(want, abs=1e-9), m
    if dataset == "mosei":  # MOSEI's text noise raises the MAE 0.807 → 0.814: a positive drop
        assert got["text"] > 0


def test_calibrate_dataset_targets_and_seed_means(monkeypatch):
    ds = "mosei"
    mods = CAL.MODALITIES[ds]
    amps = (0.5, 1.0, 2.0)
    # per seed: {modality: {a: drop}}; chosen by hand below
    per_seed = [
        {"text": {0.5: 0.004, 1.0: 0.012, 2.0: 0.030}, "video": {0.5: 0.02, 1.0: 0.05, 2.0: 0.09}, "audio": {0.5: 0.0, 1.0: 0.001, 2.0: 0.002}},
        {"text": {0.5: 0.006, 1.0: 0.010, 2.0: 0.050}, "video": {0.5: 0.00, 1.0: 0.03, 2.0: 0.11}, "audio": {0.5: 0.0, 1.0: 0.003, 2.0: 0.004}},
    ]
    cfgs = [types.SimpleNamespace(seed=s, model="tiny", epochs=3) for s in (0, 1)]
    monkeypatch.setattr(CB, "prepare_data", lambda *a, **k: "prepared")
    monkeypatch.setattr(CB, "run_configs", lambda *a, **k: cfgs)
    monkeypatch.setattr(CB, "_trained_baseline", lambda cfg, store: (
        {"headline_metric": "mae", "d0": {"text-video": 0.5}, "embedding_rms": {m: 1.0 for m in mods}, "seed": cfg.seed},
        cfg, types.SimpleNamespace(modalities=mods)))
    monkeypatch.setattr(CB, "dev_drops", lambda net, task, rec, cfg, amplitudes: {"normal": 0.6, "drops": per_seed[cfg.seed]})
    monkeypatch.setattr(CB, "first_step_terms", lambda cfg: {})
    out = CB.calibrate_dataset(ds, seeds=(0, 1), amplitudes=amps, store=object(), progress=False)["modalities"]
    paper = CAL.paper_drops(ds)
    for m in mods:
        assert out[m]["target_drop"] == pytest.approx(max(paper[m], 0.01), abs=1e-9)
        for a in amps:
            assert out[m]["dev_drop_per_amplitude"][f"{a:g}"] == pytest.approx(np.mean([d[m][a] for d in per_seed]), abs=1e-6)
    # MOSEI's paper drops (text 0.007, video 0.010, audio 0.000) → targets 0.01, 0.01, 0.01
    # text means 0.005 / 0.011 / 0.040 → 1.0; video 0.01 / 0.04 / 0.10 → 0.5 (exactly min_drop);
    # audio never reaches min_drop → the largest drop (2.0), hurts False
    assert (out["text"]["amplitude"], out["text"]["hurts"]) == (1.0, True)
    assert (out["video"]["amplitude"], out["video"]["hurts"]) == (0.5, True)
    assert (out["audio"]["amplitude"], out["audio"]["hurts"]) == (2.0, False)
    assert out["audio"]["dev_drop"] == pytest.approx(0.003, abs=1e-9)
