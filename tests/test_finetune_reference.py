"""Fine-tuning with the default profile's options, each checked against what it must be computed from.

One tiny run (Hateful Memes twin, 120 samples) with ``head_bias="prior"``, ``max_train_samples``,
``patience=1``, ``eval_amp="bf16"`` and ``keep_best=True``; its per-epoch dev scores are scripted
(0.70, 0.90, 0.80, ...), so the best epoch (2) is not the last (3) and patience must stop after
epoch 3. Then:

- every test case, re-evaluated here from the saved best weights (``best.pt``, equal to the
  weights after epoch 2) with scikit-learn's metrics, equals the record case by case (every
  metric, and the per-sample distances); the last epoch's weights give other numbers;
- the prior head bias equals the log-odds (scipy) of the *training* labels of the samples
  trained on (the first ``max_train_samples``), not those of the whole train, dev or test split;
- ``max_train_samples`` limits ``train_samples`` and ``steps``;
- every evaluation (dev and test) runs in bf16, and the recorded distances are those of a bf16
  forward, not a float32 one.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import logit
from sklearn.metrics import accuracy_score, roc_auc_score

from data_prep.dataset import PreparedDataset, make_loader, task_info
from wma_core import perturb as P
from wma_core import train as T
from wma_core.evaluate import evaluate as real_evaluate
from wma_core.store import ResultsStore

torch.set_num_threads(1)
SCORES = [0.70, 0.90, 0.80, 0.60, 0.50]
BATCH = 16


def _rate_logit(y):
    return float(logit(np.clip(np.asarray(y, dtype=np.float64).reshape(-1).mean(), 1e-3, 1 - 1e-3)))


@pytest.fixture(scope="module")
def run(hm_twin, tmp_path_factory):
    data = hm_twin(120, 3)
    train_y = PreparedDataset(data, "train").labels
    others = [_rate_logit(train_y), _rate_logit(PreparedDataset(data, "dev").labels),
              _rate_logit(PreparedDataset(data, "test").labels)]
    # the cap whose training-label rate is most unlike the other splits' (so the test can tell them apart)
    n_cap = max((24, 32, 40, 48, 56), key=lambda n: min(abs(_rate_logit(train_y[:n]) - o) for o in others))
    assert min(abs(_rate_logit(train_y[:n_cap]) - o) for o in others) > 0.05
    cfg = T.TrainConfig(dataset="hateful_memes", data_dir=str(data), epochs=5, patience=1, batch_size=BATCH, lr=1e-3,
                        seed=0, progress=False, device="cpu", ot_iters=5, max_train_samples=n_cap,
                        head_bias="prior", eval_amp="bf16", keep_best=True)
    mp = pytest.MonkeyPatch()
    seen = {"amp": [], "bias": [], "labels": [], "last": []}
    scores = iter(SCORES)

    def scripted(model, loader, kind, **k):
        seen["amp"].append((loader.dataset.split, k.get("amp")))
        res = real_evaluate(model, loader, kind, **k)
        if k.get("perturbation") is None and loader.dataset.split == "dev":
            res["metrics"]["auroc"] = next(scores)
        return res

    real_init = T.init_head_bias

    def spy_init(model, mode, kind, labels):
        real_init(model, mode, kind, labels)
        seen["bias"].append(model.head[-1].bias.detach().clone())

    real_save = T.checkpoint.save

    def spy_save(obj, path):
        if path.name == "last.pt":
            seen["last"].append({k: v.clone() for k, v in obj["model"].items()})
        real_save(obj, path)

    mp.setattr(T, "evaluate", scripted)
    mp.setattr(T, "init_head_bias", spy_init)
    mp.setattr(T.checkpoint, "save", spy_save)
    store = ResultsStore(tmp_path_factory.mktemp("store"))
    try:
        rec = T.fit(cfg, store)
    finally:
        mp.undo()
    return cfg, rec, store, seen, n_cap


def _model(cfg, state=None):
    ds = PreparedDataset(cfg.data_dir, "train")
    m = T.build_model(task_info(ds.manifest), cfg)
    if state is not None:
        m.load_state_dict(state)
    return m.eval()


def _every_case(cfg, rec, model, amp):
    test = PreparedDataset(cfg.data_dir, "test")
    loader = make_loader(test, 64)
    cases = P.test_cases(model.modalities, amplitude=cfg.amplitude, scales=rec["embedding_rms"], mode=cfg.noise_mode,
                         rate=cfg.missing_rate, seed=cfg.perturb_seed)
    out = {}
    for name, pert in cases.items():
        pert = pert.for_split(len(test)) if pert is not None else None
        res = real_evaluate(model, loader, "binary", perturbation=pert, amp=amp, ot_iters=cfg.ot_iters)
        y = res["labels"].reshape(-1)
        p = 1 / (1 + np.exp(-res["output"].reshape(-1).astype(np.float64)))
        out[name] = ({"auroc": roc_auc_score(y, p), "accuracy": accuracy_score(y, p >= 0.5)},
                     {k: np.round(d.astype(np.float64), 6) for k, d in res["distances"].items()})
    return out


def test_patience_stops_after_the_right_epoch(run):
    cfg, rec, _, _, _ = run
    # best 0.90 at epoch 2, epoch 3 is one bad epoch = patience 1: stop before epoch 4
    assert rec["best_epoch"] == 2 and rec["epochs_run"] == 3
    assert [h["dev_auroc"] for h in rec["history"]] == SCORES[:3]
    assert rec["dev_metrics"]["auroc"] == 0.90


def test_every_test_case_is_evaluated_on_the_restored_best_checkpoint(run):
    cfg, rec, store, seen, _ = run
    best = torch.load(store.run_dir(rec["key"]) / "best.pt", map_location="cpu", weights_only=True)
    assert len(seen["last"]) == rec["epochs_run"]
    assert all(torch.equal(best[k], seen["last"][rec["best_epoch"] - 1][k]) for k in best), "best.pt is not epoch 2"
    ref = _every_case(cfg, rec, _model(cfg, best), "bf16")
    assert set(ref) == set(rec["metrics"]) == {"normal", "text_noise", "image_noise", "text_missing", "image_missing"}
    for case, (metrics, dists) in ref.items():
        for k, v in metrics.items():
            assert rec["metrics"][case][k] == pytest.approx(v, abs=1e-9), (case, k)
        for pair, d in dists.items():
            np.testing.assert_allclose(rec["distances"][case][pair], d, atol=2e-6, err_msg=case)
    # the last epoch's weights give other test numbers (so the check above can fail)
    last = _every_case(cfg, rec, _model(cfg, seen["last"][-1]), "bf16")
    assert any(not np.allclose(last[c][1]["text-image"], ref[c][1]["text-image"], atol=1e-4) for c in ref)


def test_prior_head_bias_is_the_log_odds_of_the_labels_trained_on(run):
    cfg, rec, _, seen, n_cap = run
    (bias,) = seen["bias"]
    train_y = PreparedDataset(cfg.data_dir, "train").labels
    want = _rate_logit(train_y[:n_cap])
    assert float(bias.reshape(-1)[0]) == pytest.approx(want, abs=1e-5)
    for other in (train_y, PreparedDataset(cfg.data_dir, "dev").labels, PreparedDataset(cfg.data_dir, "test").labels):
        assert abs(float(bias.reshape(-1)[0]) - _rate_logit(other)) > 0.05


def test_max_train_samples_limits_the_samples_trained_on(run):
    cfg, rec, _, _, n_cap = run
    assert n_cap < len(PreparedDataset(cfg.data_dir, "train"))
    assert rec["timings"]["train_samples"] == rec["epochs_run"] * n_cap
    assert rec["timings"]["steps"] == rec["epochs_run"] * math.ceil(n_cap / BATCH)


def test_every_evaluation_runs_in_the_eval_dtype(run):
    cfg, rec, store, seen, _ = run
    assert cfg.amp is None and cfg.eval_autocast == "bf16"
    splits = [s for s, _ in seen["amp"]]
    assert splits.count("dev") == rec["epochs_run"] and splits.count("test") == 5
    assert all(amp == "bf16" for _, amp in seen["amp"]), seen["amp"]
    # the recorded distances are a bf16 forward's, not a float32 one's
    best = torch.load(store.run_dir(rec["key"]) / "best.pt", map_location="cpu", weights_only=True)
    f32 = _every_case(cfg, rec, _model(cfg, best), None)
    assert any(np.abs(np.asarray(rec["distances"][c]["text-image"]) - f32[c][1]["text-image"]).max() > 1e-4 for c in f32)
