"""What frozen features carry: linear probes of every layer, pretrained weights against random ones.

For an image+text twin and a backbone whose weights stay fixed, the tokens after the embeddings
(layer 0) and after each encoder layer ``k = 1..K`` are mean-pooled over each modality's valid
tokens (text: [CLS] and [SEP] left out; image: the image CLS left out)::

    f_m^k(x) = (1 / |V_m(x)|) * sum_{t in V_m(x)} h^k_t(x)        [h]    ([N, h] over a split)

A logistic regression (scikit-learn, L2 penalty ``C``, features standardised on train) is fitted
on the train split's ``f_m^k`` for each label column and scored on dev by AUROC; the table holds
the mean AUROC over the columns that modality reveals (:data:`REVEALED`). The same is done for
the same architecture at its random initialisation (``"tiny"``, the fine-tuning comparison's
baseline start).

This reads what a linear head could take from features as they are, before any fine-tuning:
where the pretrained curve sits below the random one, pretraining has made the modality's own
cues harder to read off its tokens, and fine-tuning first has to undo that. It is a diagnostic
of the starting point, not a prediction of fine-tuned accuracy.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

def revealed(dataset: str, modality: str, label_names) -> list[int]:
    """Indices of the label columns ``modality`` reveals on ``dataset``'s twin: every column,
    except on MM-IMDb, whose genres are revealed by the text, by the poster or by both
    (:mod:`data_prep.synth.mmimdb`)."""
    if dataset != "mmimdb":
        return list(range(len(label_names)))
    from data_prep.synth.mmimdb import BOTH, IMAGE_ONLY, TEXT_ONLY

    shown = set(BOTH) | set(TEXT_ONLY if modality == "text" else IMAGE_ONLY)
    return [k for k, g in enumerate(label_names) if g in shown]


@torch.no_grad()
def layer_features(backbone, loader) -> tuple[dict, np.ndarray]:
    """``({(layer, modality): [N, h] float64}, labels [N, ...])``: each modality's mean valid
    token after the embeddings (layer 0) and after each encoder layer, over every batch of
    ``loader`` (image+text batches). Layer ``K`` is the last layer's output before the final
    LayerNorm, like every other layer. The layers' outputs are read with forward hooks on each
    transformers ``ViltLayer``'s output module, which both attention paths call."""
    from wma_core.model import split_modalities

    backbone.eval()
    layers = backbone.vilt.encoder.layer
    caught: dict = {}
    hooks = [layer.output.register_forward_hook(lambda mod, args, out, k=k: caught.__setitem__(k + 1, out))
             for k, layer in enumerate(layers)]
    feats: dict = {}
    labels = []
    try:
        for b in loader:
            emb, mask, spans = backbone.embed_image_text(b["input_ids"], b["attention_mask"], b["pixel_values"],
                                                         b.get("pixel_mask"), None, None)
            caught[0] = emb
            out = backbone(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                           pixel_values=b["pixel_values"], pixel_mask=b.get("pixel_mask"))
            for k in range(len(layers) + 1):
                view = split_modalities(type(out)(last_hidden_state=caught[k], attention_mask=mask, pooler_output=None), spans, drop_sep=True)
                for m in view.tokens:
                    w = view.token_masks[m].to(caught[k].dtype)[..., None]
                    pooled = (view.tokens[m] * w).sum(1) / w.sum(1).clamp_min(1.0)
                    feats.setdefault((k, m), []).append(pooled.double())
            labels.append(b["labels"])
    finally:
        for h in hooks:
            h.remove()
    return {k: torch.cat(v).numpy() for k, v in feats.items()}, torch.cat(labels).numpy()


def probe_auroc(x_train: np.ndarray, y_train: np.ndarray, x_dev: np.ndarray, y_dev: np.ndarray, columns,
                C: float = 0.1) -> float:
    """Mean dev AUROC over ``columns`` of one logistic regression per label column, fitted on
    ``x_train`` [N, h] standardised with the train mean and standard deviation. Columns with a
    single class in train or dev are left out (``nan`` if none is left)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    y_train, y_dev = y_train.reshape(len(y_train), -1), y_dev.reshape(len(y_dev), -1)
    mu, sd = x_train.mean(0), x_train.std(0) + 1e-8
    xt, xd = (x_train - mu) / sd, (x_dev - mu) / sd
    scores = []
    for j in columns:
        if len(np.unique(y_train[:, j])) < 2 or len(np.unique(y_dev[:, j])) < 2:
            continue
        clf = LogisticRegression(C=C, max_iter=2000).fit(xt, y_train[:, j])
        scores.append(roc_auc_score(y_dev[:, j], clf.decision_function(xd)))
    return float(np.mean(scores)) if scores else float("nan")


def probe_table(datasets=("hateful_memes", "mmimdb"), scale: str = "default", seed: int = 0,
                batch_size: int = 256) -> pd.DataFrame:
    """Rows ``dataset, weights, modality, layer, auroc``: dev AUROC of linear probes on every
    layer's frozen features, for every replicated backbone of the profile and for random
    initialisation (seed ``seed``), each on the twin prepared with its own tokenizer."""
    from data_prep.dataset import PreparedDataset, make_loader, task_info

    from .experiments import prepare_data, run_configs
    from .pretrain_study import _cached, backbone_folders
    from wma_core.record import run_config
    from wma_core.store import config_key
    from wma_core.train import build_model

    folders = backbone_folders(scale)
    plan = []  # (dataset, weights, data folder, run configuration)
    for ds in datasets:
        for name, model in [*((label, str(f)) for label, f in folders.items()), ("random init", "tiny")]:
            data_dir = prepare_data(ds, scale, model=model)
            plan.append((ds, name, data_dir, run_configs(ds, data_dir, scale, seeds=(seed,), model=model)[0]))

    def compute():
        rows = []
        for ds, name, data_dir, cfg in plan:
            splits = {s: PreparedDataset(data_dir, s) for s in ("train", "dev")}
            task = task_info(splits["train"].manifest)
            net = build_model(task, cfg)
            (f_tr, y_tr), (f_dv, y_dv) = (layer_features(net.backbone, make_loader(splits[s], batch_size)) for s in ("train", "dev"))
            names = splits["train"].manifest["task"].get("label_names") or ["label"]
            for (layer, m), x in f_tr.items():
                rows.append({"dataset": ds, "weights": name, "modality": m, "layer": layer,
                             "auroc": probe_auroc(x, y_tr, f_dv[(layer, m)], y_dv, revealed(ds, m, names))})
        return pd.DataFrame(rows)

    first = next(iter(folders.values()))
    params = {"runs": [config_key(run_config(cfg)) for *_, cfg in plan], "batch_size": batch_size}
    return _cached("probe_table", first, params, [p[2] for p in plan], compute)
