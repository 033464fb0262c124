"""From a notebook's parameters to prepared data and run configurations, at one of the
scales of :mod:`wma_study.profiles` (``smoke``, ``default``, ``paper``).

Generated files live under ``_data/`` at the repository root (``WMA_DATA`` overrides it):
``raw/`` (twins), ``prepared/``, ``results/`` (the results store). Everything there is
rebuilt on demand and reused when present.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import replace
from pathlib import Path

from wma_core.store import data_home, file_lock
from wma_core.device import resolve_eval_amp
from wma_core.train import TrainConfig

from .calibration import calibrated_amplitudes, first_step_ratio, load_calibration
from .profiles import (DATASETS, NOISE_CALIBRATION, PAPER_ALPHAS, PAPER_BETAS, PAPER_SELECTED, PRETRAINED,  # noqa: F401
                       PROFILES, ROOT, Profile, backbone_label, backbone_of, get_profile)


def chapter_alpha(dataset: str, scale: str, alpha: float | None = None) -> float:
    """The WMA α of a dataset chapter: ``alpha`` if given, else the paper's selected α, scaled
    down where the profile caps the first-step ratio of the regulariser to the task loss.

    With ``Profile.max_first_step_ratio`` = c and the profile's calibration file holding the
    dataset's first-step terms (:func:`wma_study.calibration.first_step_ratio`: R/L is linear in
    α), the paper's α becomes ``α · min(1, c / ρ(α, β))``, two significant digits: on the
    miniature the paper's α = 6 on MM-IMDb once made the regulariser several times the task
    loss, and the tiny model collapsed to a constant predictor."""
    if alpha is not None:
        return float(alpha)
    a, b = PAPER_SELECTED[dataset]
    prof = get_profile(scale)
    if prof.max_first_step_ratio is None or not prof.noise_calibration:
        return float(a)
    terms = load_calibration(ROOT / prof.noise_calibration).get("first_step", {}).get(dataset)
    if not terms:
        return float(a)
    rho = first_step_ratio(terms, a, b)
    if rho <= prof.max_first_step_ratio:
        return float(a)
    return float(f"{a * prof.max_first_step_ratio / rho:.2g}")


def chapter_selection(dataset: str, scale: str) -> tuple[float, float]:
    """``(α, β)`` of WMA in a dataset's chapter and wherever the book compares with it (the
    ablation, the summary): :func:`chapter_alpha` and the paper's β."""
    return chapter_alpha(dataset, scale), float(PAPER_SELECTED[dataset][1])


def pretrain_config(scale: str = "default", backbone: int = 0):
    """The :class:`wma_core.pretrain.PretrainConfig` of replicated backbone ``backbone`` at
    ``scale`` (its ``smoke`` configuration at smoke scale, else ``default``;
    :func:`wma_core.pretrain.replicate`)."""
    from wma_core.pretrain import SCALES, replicate

    return replicate(SCALES["smoke" if scale == "smoke" else "default"], backbone)


def resolve_model(model: str | None = None, scale: str = "default", backbone: int = 0) -> str:
    """The model a run loads: ``None`` is the profile's; ``"pretrained"`` is the folder of the
    miniature pretrained the way ViLT was (:mod:`wma_core.pretrain`; ``backbone``: which of its
    independent replicates, :func:`pretrain_config`), built on first use and reused after (a file
    lock keeps two processes from pretraining it at once); anything else (``"tiny"``, a hub name,
    a folder) is returned as it is."""
    model = get_profile(scale).model if model is None else str(model)
    if model != PRETRAINED:
        return model
    from wma_core.pretrain import pretrain

    return str(pretrain(pretrain_config(scale, backbone), progress=False))


def model_identities(model: str | None = None, scale: str = "default") -> list:
    """What the records of ``model`` at ``scale`` carry as their ``config["model"]``
    (:func:`wma_core.record.model_identity`): one identity per replicated backbone for the
    pretrained miniature (each built on first use), else the model's own. A summary that keeps
    these identities reads the runs of today's backbones only."""
    from wma_core.record import model_identity

    model = get_profile(scale).model if model is None else str(model)
    if model != PRETRAINED:
        return [model_identity(resolve_model(model, scale))]
    return [model_identity(resolve_model(PRETRAINED, scale, backbone=b)) for b in get_profile(scale).backbones]


def same_tokenizer(folder_a: str | Path, folder_b: str | Path) -> None:
    """Refuse two backbone folders whose tokenizers map words to different ids: the twins are
    prepared once, with backbone 0's tokenizer, for every backbone (ValueError naming both)."""
    import json

    def vocab(folder):
        p = Path(folder) / "tokenizer.json"
        try:
            return json.loads(p.read_text(encoding="utf-8"))["model"]["vocab"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{p}: no readable WordPiece vocabulary ({err})") from err

    if vocab(folder_a) != vocab(folder_b):
        raise ValueError(f"the backbones {folder_a} and {folder_b} have different tokenizers: the twins are "
                         "prepared with backbone 0's, so every replicated backbone must be tokenized with it "
                         "(wma_core.pretrain.replicate sets tokenizer_seed)")


def noise_settings(dataset: str, scale: str = "default") -> dict:
    """``{"noise_mode", "amplitude"}`` of the test-time noise for ``dataset`` at ``scale``.

    With a calibration file the noise is relative and the amplitude is ``{modality: a}`` from
    it (:func:`wma_study.calibration.calibrated_amplitudes`); otherwise the profile's."""
    prof = get_profile(scale)
    if prof.noise_calibration:
        return {"noise_mode": "relative", "amplitude": calibrated_amplitudes(dataset, ROOT / prof.noise_calibration)}
    return {"noise_mode": prof.noise_mode, "amplitude": prof.amplitude}


def prepare_data(
    dataset: str,
    scale: str = "default",
    data_root: str | None = None,
    *,
    model: str | None = None,
    seed: int = 0,
    progress: bool = False,
) -> Path:
    """The prepared folder for ``dataset`` at ``scale``: made once, then reused.

    With ``data_root`` (a raw folder in the dataset's own layout) that data is prepared;
    otherwise the profile's synthetic twin is written first (not at ``paper`` scale).

    ``model`` (``None``: the profile's) decides the tokenizer of the image+text datasets:
    ``"tiny"`` fits a WordPiece vocabulary on the train text; a local folder (written by
    ``save_pretrained``) or a hub name uses that checkpoint's tokenizer. A folder is read
    without network access; a hub name that is neither in the hub cache nor reachable fails at
    once (:mod:`data_prep.checkpoints`). The prepared folder's name carries a digest of the
    tokenizer (``-tok<digest>``; none for the fitted one), so each tokenizer gets its own.
    The feature datasets (UR-FUNNY, MOSEI) have no tokenizer: ``model`` does not matter there.
    """
    from data_prep import checkpoints
    from data_prep.config import PrepareConfig
    from data_prep.prepare import prepare
    from data_prep.tasks import task_spec

    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {DATASETS}")
    prof = get_profile(scale)
    model = resolve_model(model, scale)
    home = data_home()
    tokenizer, tok_tag = "train", ""
    if task_spec(dataset).is_image_text and model != "tiny":
        folder = checkpoints.local_folder(model)
        if folder is not None:
            checkpoints.require_tokenizer(folder)  # a clear error before any data is written
        tokenizer = str(folder) if folder is not None else model
        tok_tag = f"-tok{checkpoints.tokenizer_key(tokenizer)}"
    pcfg = PrepareConfig(image_size=prof.image_size, patch_size=prof.patch_size, tokenizer=tokenizer, progress=progress)
    if data_root:
        raw = Path(data_root).expanduser().resolve()
        if not raw.is_dir():
            raise FileNotFoundError(f"data_root {raw} is not a folder (give the raw {dataset} folder as it ships)")
        tag = f"{dataset}-{prof.name}-{hashlib.sha256(str(raw).encode()).hexdigest()[:8]}"
    else:
        if prof.twin_n is None:
            raise ValueError(f"scale={scale!r} runs on the real data: give data_root, the raw {dataset} folder")
        raw = write_twin(dataset, scale, seed)
        tag = raw.name
    out = home / "prepared" / f"{tag}-i{prof.image_size}p{prof.patch_size}{tok_tag}"
    with file_lock(home / "locks" / f"prepare-{tag}.lock"):
        if not (out / "manifest.json").exists():
            prepare(dataset, raw, out, pcfg)
    _check_vocabulary(out, model)
    return out


def write_twin(dataset: str, scale: str = "default", seed: int = 0) -> Path:
    """The raw folder of ``dataset``'s synthetic twin at ``scale`` (:func:`twin_raw_dir`),
    written once: under a lock, so parallel runs write it once, and marked ``.complete`` only
    when whole, so an interrupted write is redone."""
    from data_prep.config import SynthConfig
    from data_prep.synth import synthesize

    prof = get_profile(scale)
    raw = twin_raw_dir(dataset, scale, seed)
    with file_lock(data_home() / "locks" / f"twin-{raw.name}.lock"):
        if not (raw / ".complete").exists():
            if raw.exists():
                shutil.rmtree(raw)
            synthesize(dataset, raw, SynthConfig(n=prof.twin_n, seed=seed, steps=prof.twin_steps,
                                                 splits=prof.twin_splits))
            (raw / ".complete").touch()
    return raw


def twin_raw_dir(dataset: str, scale: str = "default", seed: int = 0) -> Path:
    """The raw folder of ``dataset``'s synthetic twin at ``scale`` (written by :func:`write_twin`).

    Its name holds the twin's size, steps and seed and a digest of the generators' code, so a
    twin made by other code is never reused."""
    from data_prep.synth import code_digest

    prof = get_profile(scale)
    if prof.twin_n is None:
        raise ValueError(f"scale={scale!r} runs on the real data: it has no twin")
    splits = prof.twin_splits
    size = f"n{prof.twin_n}" if splits is None else "n" + "x".join(str(int(x)) for x in splits)
    return data_home() / "raw" / f"{dataset}-twin-{size}-t{prof.twin_steps}-s{seed}-g{code_digest()}"


def _check_vocabulary(prepared: Path, model: str) -> None:
    """A local model folder must embed every token id of the prepared data."""
    from data_prep import checkpoints
    from data_prep.store import read_manifest

    n_model = checkpoints.model_vocab_size(model) if model != "tiny" else None
    n_data = read_manifest(prepared).get("vocab_size")
    if n_model is not None and n_data is not None and n_data > n_model:
        raise ValueError(
            f"the tokenizer of {prepared} has {n_data} tokens but the model {model} embeds only {n_model} "
            f"(config.json vocab_size): the model folder needs its own tokenizer saved beside its weights"
        )


def preregistration_digest() -> str:
    """The digest of ``book/data/preregistration.json`` (:mod:`wma_study.preregistration`)."""
    from .preregistration import digest

    return digest()


def run_configs(
    dataset: str,
    data_dir: str | Path,
    scale: str = "default",
    *,
    alphas=(0.0,),
    betas=(1.0,),
    seeds=None,
    target: str = "init",
    lr: float | None = None,
    epochs: int | None = None,
    device: str | None = None,
    max_train_samples: int | None = None,
    readout: str | None = None,
    **overrides,
) -> list[TrainConfig]:
    """One :class:`TrainConfig` per (α, β, seed); α = 0 gives one baseline per seed whatever β.

    ``lr``, ``epochs``, ``device``, ``max_train_samples``, ``readout``: ``None`` keeps the profile's."""
    from data_prep.checkpoints import local_folder

    prof = get_profile(scale)
    seeds = prof.seeds if seeds is None else tuple(seeds)
    asked = prof.model if overrides.get("model") is None else str(overrides["model"])
    model = resolve_model(overrides.pop("model", None), scale)
    if model != "tiny" and (folder := local_folder(model)) is not None:
        model = str(folder)  # trials may run in other processes, with another working directory
    # the pretrained miniature is replicated (Profile.backbones): each seed fine-tunes the
    # backbone its block of seeds is nested in (profiles.backbone_of)
    folders = {}  # backbone -> its folder, resolved (and checked) once
    per_seed = {}
    for s in seeds:
        if asked != PRETRAINED:
            per_seed[int(s)] = {"model": model, "backbone": ""}
            continue
        b = backbone_of(prof, s)
        if b not in folders:
            folders[b] = model if b == 0 else str(local_folder(resolve_model(PRETRAINED, scale, backbone=b)))
            if b != 0:
                same_tokenizer(model, folders[b])
        per_seed[int(s)] = {"model": folders[b], "backbone": backbone_label(b)}
    noise = {} if {"noise_mode", "amplitude"} & set(overrides) else noise_settings(dataset, scale)
    random_init = model == "tiny"  # its own learning rate, and one rate for every parameter
    if lr is None:
        lr = prof.random_init_lr.get(dataset, prof.lr[dataset]) if random_init else prof.lr[dataset]
    base = TrainConfig(
        dataset=dataset,
        data_dir=str(data_dir),
        model=model,
        **noise,
        lr=lr,
        head_lr_mult=1.0 if random_init else float(prof.head_lr_mult.get(dataset, 1.0)),
        batch_size=prof.batch_size[dataset],
        epochs=prof.epochs[dataset] if epochs is None else epochs,
        patience=prof.patience,
        amp=prof.amp,
        eval_amp=resolve_eval_amp(prof.eval_amp, prof.device if device is None else device),
        device=prof.device if device is None else device,
        max_train_samples=prof.max_train_samples if max_train_samples is None else int(max_train_samples),
        target=target,
        head_bias=prof.head_bias,
        readout=prof.readout.get(dataset, "pooler") if readout is None else str(readout),
        progress=False,
        preregistration=preregistration_digest(),
    )
    out, seen = [], set()
    for a in alphas:
        for b in betas:
            for s in seeds:
                cfg = replace(base, alpha=float(a), beta=float(b) if a > 0 else 1.0, seed=int(s),
                              **{**per_seed[int(s)], **overrides})
                key = (cfg.alpha, cfg.beta, cfg.seed)
                if key not in seen:
                    seen.add(key)
                    out.append(cfg)
    return out


def method_configs(
    dataset: str,
    data_dir: str | Path,
    scale: str = "default",
    *,
    alpha: float,
    beta: float,
    min_ot_alpha: float = 1.0,
    batch_target: bool = False,
    l2sp: float | None = None,
    model: str | None = None,
    **kw,
) -> list[TrainConfig]:
    """The runs a dataset chapter compares, per seed: the baseline, WMA at (α, β) and minimise-OT
    (α = ``min_ot_alpha``, β = 0, the paper's Table 2); with ``batch_target`` also WMA with the
    ``batch`` target; with ``l2sp`` (a strength λ) also the L2-SP control (:mod:`wma_study.l2sp`).
    ``model=None`` keeps the profile's model; ``kw`` goes to :func:`run_configs`."""
    if model:
        kw["model"] = model
    out = run_configs(dataset, data_dir, scale, alphas=(0.0, alpha), betas=(beta,), **kw)
    out += run_configs(dataset, data_dir, scale, alphas=(min_ot_alpha,), betas=(0.0,), **kw)
    if batch_target:
        out += run_configs(dataset, data_dir, scale, alphas=(alpha,), betas=(beta,), target="batch", **kw)
    if l2sp:
        out += run_configs(dataset, data_dir, scale, alphas=(0.0,), l2sp=float(l2sp), **kw)
    return out


def results_dir() -> Path:
    """The results store every notebook and sweep shares."""
    return data_home() / "results"
