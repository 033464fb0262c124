"""Training behaviours that move the headline numbers, each checked against a value computed
here, independently of the run that produced it.

- D0 is the mean OT distance of the seeded initial model on the first *shuffled training* batch,
  before any update (recomputed here from a freshly built model; POT's exact EMD as a sanity bound);
- the test metrics are those of the restored *best* checkpoint (re-evaluated here with
  scikit-learn), and the best epoch is not the last in this setting;
- every test case perturbs the test samples identically for every method and training seed;
- β reaches the loss: WMA with β = 0.5 pulls the training D to 0.5·D0, not D0, and minimising OT
  (α = 1, β = 0) drives D toward 0, far below the baseline's;
- a missing feature modality (UR-FUNNY, MOSEI) keeps its modality-type row: zeros + type row,
  CLS row unchanged, recomputed here from the model's weights;
- an interrupted run that draws random numbers while training (dropout, transformers' random
  patch order) resumes to exactly the uninterrupted result.

The runs are tiny (a 120-sample twin, a few optimiser steps) and shared between the tests.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from data_prep.dataset import PreparedDataset, make_loader, task_info
from wma_core import model as M
from wma_core import perturb as P
from wma_core import record as R
from wma_core import train as T
from wma_core.store import ResultsStore

PAIR = "text-image"


@pytest.fixture(scope="module")
def hm_dir(hm_twin):
    return hm_twin(120, 7)  # a twin on which the best dev epoch is not the last and WMA reaches 0.5·D0


def _cfg(data_dir, **kw):
    base = dict(
        dataset="hateful_memes", data_dir=str(data_dir), epochs=2, batch_size=16, lr=1e-3, seed=0,
        progress=False, device="cpu", ot_iters=10, max_train_samples=64,
    )
    base.update(kw)
    return T.TrainConfig(**base)


class Runs:
    """Three methods, three training seeds, one store: baseline (best checkpoint kept), WMA with
    β = 0.5 and minimise-OT (α = 1, β = 0). Each is trained once, when a test first needs it."""

    def __init__(self, data_dir, store_dir):
        self.store = ResultsStore(store_dir)
        self.cfg = {
            "baseline": _cfg(data_dir, alpha=0.0, seed=0, epochs=3, keep_best=True),
            "wma": _cfg(data_dir, alpha=5.0, beta=0.5, seed=1),
            "min_ot": _cfg(data_dir, alpha=1.0, beta=0.0, seed=2),
        }
        self._rec = {}

    def rec(self, name):
        if name not in self._rec:
            self._rec[name] = T.fit(self.cfg[name], self.store)
        return self._rec[name]


@pytest.fixture(scope="module")
def runs(hm_dir, tmp_path_factory):
    return Runs(hm_dir, tmp_path_factory.mktemp("store"))


def _build(cfg):
    """The run's initial model, built again here from its seed."""
    train_ds = PreparedDataset(cfg.data_dir, "train")
    task = task_info(train_ds.manifest)
    return T.build_model(task, cfg).eval(), task


def _train_subset(cfg):
    ds = PreparedDataset(cfg.data_dir, "train")
    if cfg.max_train_samples is not None:
        ds = torch.utils.data.Subset(ds, range(min(cfg.max_train_samples, len(ds))))
    return ds


def _cosine_emd(x: np.ndarray, y: np.ndarray) -> float:
    """Exact OT distance (POT) between two token sets, uniform marginals, cost 1 - cos."""
    ot = pytest.importorskip("ot")
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    yn = y / np.linalg.norm(y, axis=1, keepdims=True)
    C = (1.0 - xn @ yn.T).astype(np.float64)
    return float(ot.emd2(np.full(len(x), 1 / len(x)), np.full(len(y), 1 / len(y)), C))


@torch.no_grad()
def _mean_distances(model, batch, iters):
    from wma_core.losses import modality_pairs, pair_distances

    _, out = model(batch)
    (D, valid), = pair_distances(out, modality_pairs(model.modalities), iters=iters).values()
    emd = [
        _cosine_emd(out.tokens["text"][i][out.token_masks["text"][i]].numpy(),
                    out.tokens["image"][i][out.token_masks["image"][i]].numpy())
        for i in range(len(D)) if valid[i]
    ]
    return float(D[valid].mean()), float(np.mean(emd))


# ------------------------------------------------------------------------------ D0
@pytest.mark.parametrize("method", ["baseline", "wma"])
def test_d0_is_the_initial_model_on_the_first_shuffled_training_batch(runs, method):
    cfg, rec = runs.cfg[method], runs.rec(method)
    model, _ = _build(cfg)
    first = next(iter(make_loader(_train_subset(cfg), cfg.batch_size, shuffle=True, seed=cfg.seed, epoch=0)))
    d0, d0_emd = _mean_distances(model, first, cfg.ot_iters)
    assert rec["d0"][PAIR] == pytest.approx(d0, rel=1e-5, abs=1e-6)
    # the distance itself is an OT distance: within a few % of POT's exact EMD at 10 IPOT iterations
    assert rec["d0"][PAIR] == pytest.approx(d0_emd, rel=0.05)
    # ...and the test can tell the first training batch from the first dev batch or the unshuffled one
    dev_first = next(iter(make_loader(PreparedDataset(cfg.data_dir, "dev"), cfg.batch_size)))
    unshuffled = next(iter(make_loader(_train_subset(cfg), cfg.batch_size)))
    for other in (dev_first, unshuffled):
        assert abs(_mean_distances(model, other, cfg.ot_iters)[0] - d0) > 1e-4


# ------------------------------------------------------------------------------ best checkpoint
@torch.no_grad()
def _auroc(model, ds):
    logits, labels = [], []
    for batch in make_loader(ds, 64):
        out, _ = model(batch)
        logits.append(out.reshape(-1).numpy())
        labels.append(batch["labels"].reshape(-1).numpy())
    return roc_auc_score(np.concatenate(labels), np.concatenate(logits))


def test_test_metrics_are_those_of_the_restored_best_checkpoint(runs):
    cfg, rec = runs.cfg["baseline"], runs.rec("baseline")
    dev_hist = [h["dev_auroc"] for h in rec["history"]]
    assert rec["best_epoch"] < rec["epochs_run"], f"choose a setting whose best epoch is not the last: {dev_hist}"
    assert rec["best_epoch"] == 1 + int(np.argmax(dev_hist))
    best = runs.store.run_dir(rec["key"]) / "best.pt"
    model, _ = _build(cfg)
    model.load_state_dict(torch.load(best, map_location="cpu", weights_only=True))
    model.eval()
    dev_auc = _auroc(model, PreparedDataset(cfg.data_dir, "dev"))
    test_auc = _auroc(model, PreparedDataset(cfg.data_dir, "test"))
    assert dev_auc == pytest.approx(max(dev_hist), abs=1e-9), "best.pt is not the best epoch's weights"
    assert rec["dev_metrics"]["auroc"] == pytest.approx(dev_auc, abs=1e-9)
    assert rec["metrics"]["normal"]["auroc"] == pytest.approx(test_auc, abs=1e-9)


# ------------------------------------------------------------------------------ shared perturbations
def test_every_method_and_seed_sees_the_same_perturbed_test_inputs(runs, hm_dir):
    recs = {name: runs.rec(name) for name in runs.cfg}
    seeds = {name: rec["config"]["seed"] for name, rec in recs.items()}
    assert len(set(seeds.values())) == 3, seeds
    digests = {name: rec["perturb_digest"] for name, rec in recs.items()}
    cases = set(digests["baseline"])
    assert cases == {"normal", "text_noise", "image_noise", "text_missing", "image_missing"}
    for name, d in digests.items():
        assert d == digests["baseline"], f"{name} (seed {seeds[name]}) was tested on other inputs than the baseline"
    # the digest does tell perturbations apart (another perturbation seed, another rate)
    n_test = len(PreparedDataset(hm_dir, "test"))
    h = M.TINY_CONFIG["hidden_size"]
    for kind in ("noise", "missing"):
        p = P.Perturbation(kind=kind, modality="text").for_split(n_test)
        assert R.perturbation_digest(p, n_test, h) == digests["baseline"][f"text_{kind}"]
        assert R.perturbation_digest(dataclasses.replace(p, seed=1), n_test, h) != digests["baseline"][f"text_{kind}"]
    assert digests["baseline"]["text_missing"] != R.perturbation_digest(
        P.Perturbation(kind="missing", modality="text", rate=0.25).for_split(n_test), n_test, h)


# ------------------------------------------------------------------------------ beta reaches the loss
def _final(rec, split):
    return [d for d in rec["d_trajectory"] if d["split"] == split][-1][PAIR]


def test_beta_reaches_the_loss(runs):
    wma, min_ot, base = runs.rec("wma"), runs.rec("min_ot"), runs.rec("baseline")
    d0 = wma["d0"][PAIR]
    d_train = _final(wma, "train")
    print(f"WMA beta=0.5: D0={d0:.4f} final train D={d_train:.4f}; min-OT final train D={_final(min_ot, 'train'):.4f}, "
          f"dev D={_final(min_ot, 'dev'):.4f}; baseline dev D={_final(base, 'dev'):.4f}")
    # WMA with beta = 0.5 trains D toward 0.5 * D0 (not D0)
    assert abs(d_train - 0.5 * d0) < 0.1 * d0
    assert abs(d_train - 0.5 * d0) < 0.5 * abs(d_train - d0)
    # minimise OT (beta = 0) drives D toward 0: far below its D0 and below the baseline's D
    assert _final(min_ot, "train") < 0.2 * min_ot["d0"][PAIR]
    assert _final(min_ot, "dev") < 0.5 * _final(base, "dev")
    assert min_ot["config"]["method"] == "min_ot" and min_ot["config"]["beta"] == 0.0


# ------------------------------------------------------------------------------ missing feature modality
# MOSEI's dimensions in the prepared manifest's (alphabetical) order, so that a row assigned by
# position would give audio the text row
FEATURE_DIMS = {"audio": 74, "text": 300, "video": 35}
TYPE_ROW = {"text": 0, "video": 1, "audio": 2}  # by name: pretrained text row, image row, a new row


def _layer_norm(x, ln):
    """LayerNorm written out: (x - mean) / sqrt(var + eps) * weight + bias over the last axis."""
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + ln.eps) * ln.weight + ln.bias


@pytest.mark.parametrize("missing", list(FEATURE_DIMS))
def test_missing_feature_modality_keeps_its_type_row(missing):
    B, Tn = 6, 5
    vilt = M.load_vilt("tiny", feature_dims=FEATURE_DIMS, feature_len=Tn, attn="eager", init_seed=0).eval()
    assert vilt.vilt.embeddings.token_type_embeddings.num_embeddings == 3
    g = torch.Generator().manual_seed(0)
    feats = {m: torch.randn(B, Tn, d, generator=g) for m, d in FEATURE_DIMS.items()}
    masks = {m: torch.ones(B, Tn, dtype=torch.long) for m in FEATURE_DIMS}
    ids = torch.arange(B)
    pert = P.Perturbation(kind="missing", modality=missing, rate=0.5).for_split(B)
    gone = P.missing_samples(pert, ids)
    assert 0 < int(gone.sum()) < B

    seen = {}
    hook = vilt.vilt.encoder.layer[0].register_forward_pre_hook(lambda mod, args: seen.setdefault("h", args[0].detach()))
    with torch.no_grad():
        vilt(features=feats, feature_masks=masks, perturbation=pert, sample_ids=ids)
    hook.remove()
    hidden_in = seen["h"]  # [B, 3 * (1 + T), h]

    types = vilt.vilt.embeddings.token_type_embeddings.weight.detach()
    start = 0
    with torch.no_grad():
        for m, d in FEATURE_DIMS.items():
            emb = vilt.features[m]
            W, b = emb.proj.weight, emb.proj.bias
            proj = feats[m] @ W.T + b  # [B, T, h]
            e = _layer_norm(torch.cat([emb.cls.expand(B, 1, -1), proj], dim=1) + emb.pos[:, : Tn + 1], emb.norm)
            if m == missing:
                e[gone, 1:] = 0.0  # the embedding features are gone; the CLS row stays
            e = e + types[TYPE_ROW[m]]  # then the modality-type row, for every token
            got = hidden_in[:, start : start + Tn + 1]
            torch.testing.assert_close(got, e, rtol=1e-5, atol=1e-5, msg=f"modality {m} (missing: {missing})")
            if m == missing:
                # a missing sample's tokens carry exactly the modality-type row
                torch.testing.assert_close(got[gone, 1:], types[TYPE_ROW[m]].expand(int(gone.sum()), Tn, -1), rtol=0, atol=1e-7)
            start += Tn + 1


# ------------------------------------------------------------------------------ exact resume with RNG
def test_resume_is_exact_when_training_draws_random_numbers(hm_dir, tmp_path, monkeypatch):
    # dropout in the tiny backbone and transformers' random patch order both consume the RNG
    monkeypatch.setitem(M.TINY_CONFIG, "hidden_dropout_prob", 0.1)
    monkeypatch.setitem(M.TINY_CONFIG, "attention_probs_dropout_prob", 0.1)
    cfg = _cfg(hm_dir, alpha=1.0, beta=0.8, epochs=2, patch_order="hf", max_train_samples=32)
    full = T.fit(cfg, tmp_path / "full")

    real_eval = T.evaluate
    calls = {"n": 0}

    def interrupt_in_epoch_2(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:  # the dev evaluation closing epoch 2: epoch 1 is checkpointed
            raise KeyboardInterrupt
        return real_eval(*a, **k)

    monkeypatch.setattr(T, "evaluate", interrupt_in_epoch_2)
    store = ResultsStore(tmp_path / "resumed")
    with pytest.raises(KeyboardInterrupt):
        T.fit(cfg, store)
    monkeypatch.setattr(T, "evaluate", real_eval)
    resumed = T.fit(cfg, store)
    assert resumed["epochs_run"] == full["epochs_run"] == 2
    assert resumed["history"] == full["history"]
    assert resumed["d_trajectory"] == full["d_trajectory"]
    assert resumed["metrics"] == full["metrics"]
    assert resumed["distances"] == full["distances"]


def test_run_key_follows_the_backbone_content_not_its_path(tmp_path):
    """A local backbone folder enters the run key by its content: a copy elsewhere keys the same,
    changed weights key differently."""
    import shutil

    from wma_core.record import model_identity

    a = tmp_path / "a"
    a.mkdir()
    (a / "config.json").write_text('{"hidden_size": 8}')
    (a / "model.safetensors").write_bytes(b"\x00" * 64)
    b = tmp_path / "elsewhere" / "b"
    shutil.copytree(a, b)
    assert model_identity(str(a)) == model_identity(str(b)) and model_identity(str(a)).startswith("folder:")
    from wma_core.record import _folder_digest

    hits = _folder_digest.cache_info().hits
    model_identity(str(a))
    assert _folder_digest.cache_info().hits == hits + 1  # unchanged files are not read again
    (b / "model.safetensors").write_bytes(b"\x01" * 64)
    assert model_identity(str(a)) != model_identity(str(b))
    # a file that claims an identity changes nothing: two folders claiming the same pretraining
    # key but holding different weights keep different identities
    ida, idb = model_identity(str(a)), model_identity(str(b))
    for f in (a, b):
        (f / "pretrain.json").write_text('{"key": "abc123"}')
    assert model_identity(str(a)) == ida != idb == model_identity(str(b))
    assert model_identity("tiny") == "tiny" and model_identity("dandelin/vilt-b32-mlm") == "dandelin/vilt-b32-mlm"
