"""From a notebook's parameters to prepared data and run configurations.

Three scales (:data:`PROFILES`):

- ``smoke``: a few hundred samples, one epoch: what the test suite runs through every notebook.
- ``default``: the embedded default. Synthetic twins written in the real raw layouts, a tiny
  ViLT pretrained once the way ViLT was (:mod:`wma_core.pretrain`; ``model="tiny"`` keeps the
  random initialisation for comparison), CPU, minutes.
- ``paper``: the real datasets (``data_root`` = the raw folder as the dataset ships),
  ``dandelin/vilt-b32-mlm``, the paper's batch sizes, bf16 on a GPU.

Generated files live under ``_data/`` at the repository root (``WMA_DATA`` overrides it):
``raw/`` (twins), ``prepared/``, ``results/`` (the results store). Everything there is
rebuilt on demand and reused when present.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path

from .results import data_home, file_lock
from .train import TrainConfig, resolve_eval_amp

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ("hateful_memes", "mmimdb", "ur_funny", "mosei")


@dataclass(frozen=True)
class Profile:
    """Everything a scale fixes.

    Attributes:
        name: ``smoke``, ``default`` or ``paper``.
        model: ``"pretrained"`` (the miniature pretrained by :mod:`wma_core.pretrain`), ``"tiny"``
            (random initialisation) or a hub name / local folder of ViLT weights.
        twin_n: samples in a synthetic twin (``None``: real data from ``data_root``), split about
            70/10/20 into train/dev/test unless ``twin_splits`` is set.
        twin_splits: ``(train, dev, test)`` sizes of the twin (then ``twin_n`` is their sum):
            sized from the measured variance split (:func:`wma_core.stats.variance_split`).
        twin_steps: time steps of the MultiBench twins.
        image_size, patch_size: ViLT's image resize rule (shorter side, patch multiple).
            The tokenizer is the model's (:func:`prepare_data`): a WordPiece vocabulary fitted
            on the train text for ``"tiny"``, else the checkpoint's own.
        epochs: maximum epochs per dataset; patience: early-stopping patience.
        batch_size: per dataset.
        lr: per dataset (the paper searched [1e-2, 1e-3, 1e-4, 5e-5, 1e-5]).
        seeds: training seeds.
        amp: ``None`` or ``"bf16"``.
        eval_amp: the autocast of evaluation (``TrainConfig.eval_amp``); ``"auto"``: bf16 where
            the machine multiplies bf16 natively (:func:`wma_core.train.native_bf16`), else float32.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        max_train_samples: cap on training samples (``None``: all).
        alpha_grid, beta_grid: the α × β grid of the β-curve chapter (α = 0 adds the baseline).
            At the paper's scale, the paper's grid. In the embedded default, β·D0 stays <= 2 (the
            largest OT distance) and α is read through the ratio R/L of the regulariser to the
            task loss on the first training batch, which maps it onto the paper's α
            (:func:`wma_core.calibrate.alpha_mapping_frame`, recorded in the calibration file).
        grid_seeds: seeds of that grid.
        noise_mode, amplitude: the test-time noise (:mod:`wma_core.perturb`): the paper's absolute
            ``U(-3, 3)`` (``"symmetric"``, 3) unless ``noise_calibration`` is set.
        noise_calibration: a calibration file (:mod:`wma_core.calibrate`): relative noise with the
            amplitude it gives per dataset and modality.
        max_first_step_ratio: the largest first-step ratio R/L of the regulariser to the task
            loss a dataset chapter's default α may give (:func:`chapter_alpha`); ``None``: the
            paper's α as it is.
        head_bias: the start of the task head's output bias for the BCE tasks
            (:attr:`wma_core.train.TrainConfig.head_bias`): ``"zero"`` (ViLT's) or ``"prior"``
            (each label's log-odds in the training split).
    """

    name: str
    model: str
    twin_n: int | None
    twin_steps: int
    image_size: int
    patch_size: int
    epochs: dict
    patience: int
    batch_size: dict = field(default_factory=dict)
    lr: dict = field(default_factory=dict)
    seeds: tuple = (0,)
    amp: str | None = None
    eval_amp: str | None = "same"
    device: str = "auto"
    max_train_samples: int | None = None
    alpha_grid: tuple = (0.0, 1.0)
    beta_grid: tuple = (1.0,)
    grid_seeds: tuple = (0,)
    noise_mode: str = "symmetric"
    amplitude: float = 3.0
    twin_splits: tuple | None = None
    noise_calibration: str | None = None
    max_first_step_ratio: float | None = None
    head_bias: str = "zero"


#: The (α, β) the paper selected per dataset: the Table 3-6 cell equal to Table 1's WMA row
#: (found by matching every test case; MOSEI's best match differs by 0.044 in total because its
#: Table 6 swaps the text- and video-missing values of Table 1).
PAPER_SELECTED = {
    "hateful_memes": (1.0, 2.0),
    "mmimdb": (6.0, 0.2),
    "ur_funny": (5.0, 0.6),
    "mosei": (1.0, 1.2),
}


def chapter_alpha(dataset: str, scale: str, alpha: float | None = None) -> float:
    """The WMA α of a dataset chapter: ``alpha`` if given, else the paper's selected α, scaled
    down where the profile caps the first-step ratio of the regulariser to the task loss.

    With ``Profile.max_first_step_ratio`` = c and the profile's calibration file holding the
    dataset's first-step terms (:func:`wma_core.calibrate.first_step_ratio`: R/L is linear in
    α), the paper's α becomes ``α · min(1, c / ρ(α, β))``, two significant digits: on the
    miniature the paper's α = 6 on MM-IMDb once made the regulariser several times the task
    loss, and the tiny model collapsed to a constant predictor."""
    if alpha is not None:
        return float(alpha)
    a, b = PAPER_SELECTED[dataset]
    prof = get_profile(scale)
    if prof.max_first_step_ratio is None or not prof.noise_calibration:
        return float(a)
    from .calibrate import first_step_ratio, load_calibration

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


#: The paper's search grids (§4.1; Tables 4-5 also use α = 6 and 8).
PAPER_ALPHAS = (0.1, 0.2, 1.0, 5.0)
PAPER_BETAS = (0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6, 1.8, 2.0, 4.0, 6.0, 10.0)


#: The test-time noise of the smoke and default profiles (:mod:`wma_core.calibrate`).
NOISE_CALIBRATION = "book/data/noise_calibration.json"
#: ``Profile.model`` of the miniature pretrained by :mod:`wma_core.pretrain` (see :func:`resolve_model`).
PRETRAINED = "pretrained"

PROFILES = {
    "smoke": Profile(
        name="smoke", model=PRETRAINED, twin_n=160, twin_steps=8, image_size=32, patch_size=16,
        epochs={d: 1 for d in DATASETS}, patience=5, batch_size={d: 16 for d in DATASETS}, lr={d: 1e-3 for d in DATASETS}, seeds=(0, 1),
        eval_amp="auto", device="cpu", alpha_grid=(0.0, 1.0), beta_grid=(0.5, 2.0), grid_seeds=(0,),
        noise_calibration=NOISE_CALIBRATION, max_first_step_ratio=1.0, head_bias="prior",
    ),
    "default": Profile(
        name="default", model=PRETRAINED, twin_n=1000, twin_steps=20, image_size=64, patch_size=16,
        # many small steps on the 23-label MM-IMDb twin (chosen for a randomly initialised model)
        # patience 2: with 4-8 epochs the paper's patience of 5 never stops a run; the best dev
        # checkpoint is tested either way
        epochs={"hateful_memes": 4, "mmimdb": 8, "ur_funny": 4, "mosei": 4}, patience=2,
        batch_size={"hateful_memes": 32, "mmimdb": 8, "ur_funny": 32, "mosei": 32},
        # 8 paired seeds per method: the t critical value drops from 4.30 (3 seeds) to 2.36. Measured
        # on Hateful Memes (stats.variance_split, 200 test samples): one seed's paired AUROC gain has
        # a test-sampling variance of 4.3e-4 and a total of 7.9e-4, so seeds and test samples weigh
        # about equally; 8 seeds give a half-width of about 0.024 with 200 test samples, 0.019 with
        # 600 and 0.018 with 1000 (stats.ci_halfwidth). A larger test split (twin_splits) costs
        # evaluation time only: about 4 ms per sample and test case on one core.
        lr={d: 1e-3 for d in DATASETS}, seeds=tuple(range(8)),
        # evaluation in bf16 where the CPU has it natively: 1.7x the float32 forward on the
        # development CPU (AMX), so 3.6x the training throughput per sample instead of 2.1x
        # (benchmarks/bench_step.py --eval-dtype bf16); the head stays float32
        eval_amp="auto",
        # β·D0 stays at most 2, the largest OT distance, for D0 up to 1 (D0 measured on the twins:
        # book/data/noise_calibration.json "d0"; a cell above 2 is flagged, see losses.target_feasible).
        # α is scaled to the miniature by the first-step ratio R/L of the regulariser to the task
        # loss (wma_core.calibrate.alpha_mapping_frame): at α = 5 that ratio reaches ~13 on the
        # UR-FUNNY twin and the paper's MM-IMDb cell (6, 0.2) gives ~4.7, where the tiny model
        # collapses; the paper's α = 0.2 and 1 keep R/L <= ~0.55 and <= ~2.7 over every twin and β
        # of this grid (~1.2 on the image-text twins), and α = 1 is the paper's Fig. 2 row.
        device="cpu", alpha_grid=(0.0, 0.2, 1.0), beta_grid=(0.5, 1.0, 1.5, 2.0), grid_seeds=(0,),
        noise_calibration=NOISE_CALIBRATION, max_first_step_ratio=1.0,
        # the head's output bias starts at each label's log-odds: from zero, AdamW spends most of
        # MM-IMDb's 8 epochs learning 23 label priors (macro-F1 exactly 0 for 1-4 epochs). Measured
        # on the MM-IMDb twin, baseline, 3 seeds: dev macro-F1 0.363 against 0.309 from zero, test
        # 0.315 against 0.299. Every method gets the same head, so comparisons stay paired.
        head_bias="prior",
    ),
    "paper": Profile(
        name="paper", model="dandelin/vilt-b32-mlm", twin_n=None, twin_steps=50, image_size=384, patch_size=32,
        epochs={d: 20 for d in DATASETS}, patience=5,
        batch_size={"hateful_memes": 128, "mmimdb": 64, "ur_funny": 256, "mosei": 256},
        lr={d: 1e-4 for d in DATASETS}, seeds=(0, 1, 2, 3, 4), amp="bf16", device="auto",
        alpha_grid=(0.0,) + PAPER_ALPHAS, beta_grid=PAPER_BETAS, grid_seeds=(0,),
    ),
}


def resolve_model(model: str | None = None, scale: str = "default") -> str:
    """The model a run loads: ``None`` is the profile's; ``"pretrained"`` is the folder of the
    miniature pretrained the way ViLT was (:mod:`wma_core.pretrain`, its ``smoke`` configuration
    at smoke scale, else ``default``), built on first use and reused after (a file lock keeps two
    processes from pretraining it at once); anything else (``"tiny"``, a hub name, a folder) is
    returned as it is."""
    model = get_profile(scale).model if model is None else str(model)
    if model != PRETRAINED:
        return model
    from .pretrain import SCALES, pretrain

    return str(pretrain(SCALES["smoke" if scale == "smoke" else "default"], progress=False))


def get_profile(scale: str) -> Profile:
    if scale not in PROFILES:
        raise ValueError(f"scale must be one of {sorted(PROFILES)}, got {scale!r}")
    return PROFILES[scale]


def noise_settings(dataset: str, scale: str = "default") -> dict:
    """``{"noise_mode", "amplitude"}`` of the test-time noise for ``dataset`` at ``scale``.

    With a calibration file the noise is relative and the amplitude is ``{modality: a}`` from
    it (:func:`wma_core.calibrate.calibrated_amplitudes`); otherwise the profile's."""
    prof = get_profile(scale)
    if prof.noise_calibration:
        from .calibrate import calibrated_amplitudes

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
    from data_prep.config import PrepareConfig, SynthConfig
    from data_prep.prepare import prepare
    from data_prep.synth import synthesize
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
        splits = prof.twin_splits
        size = f"n{prof.twin_n}" if splits is None else "n" + "x".join(str(int(x)) for x in splits)
        tag = f"{dataset}-twin-{size}-t{prof.twin_steps}-s{seed}"
        raw = home / "raw" / tag
    out = home / "prepared" / f"{tag}-i{prof.image_size}p{prof.patch_size}{tok_tag}"
    with file_lock(home / "locks" / f"prepare-{tag}.lock"):
        if not data_root and not (raw / ".complete").exists():
            synthesize(dataset, raw, SynthConfig(n=prof.twin_n, seed=seed, steps=prof.twin_steps, splits=splits))
            (raw / ".complete").touch()
        if not (out / "manifest.json").exists():
            prepare(dataset, raw, out, pcfg)
    _check_vocabulary(out, model)
    return out


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
    **overrides,
) -> list[TrainConfig]:
    """One :class:`TrainConfig` per (α, β, seed); α = 0 gives one baseline per seed whatever β.

    ``lr``, ``epochs``, ``device``, ``max_train_samples``: ``None`` keeps the profile's."""
    from data_prep.checkpoints import local_folder

    prof = get_profile(scale)
    seeds = prof.seeds if seeds is None else tuple(seeds)
    model = resolve_model(overrides.pop("model", None), scale)
    if model != "tiny" and (folder := local_folder(model)) is not None:
        model = str(folder)  # trials may run in other processes, with another working directory
    noise = {} if {"noise_mode", "amplitude"} & set(overrides) else noise_settings(dataset, scale)
    base = TrainConfig(
        dataset=dataset,
        data_dir=str(data_dir),
        model=model,
        **noise,
        lr=prof.lr[dataset] if lr is None else lr,
        batch_size=prof.batch_size[dataset],
        epochs=prof.epochs[dataset] if epochs is None else epochs,
        patience=prof.patience,
        amp=prof.amp,
        eval_amp=resolve_eval_amp(prof.eval_amp, prof.device if device is None else device),
        device=prof.device if device is None else device,
        max_train_samples=prof.max_train_samples if max_train_samples is None else int(max_train_samples),
        target=target,
        head_bias=prof.head_bias,
        progress=False,
    )
    out, seen = [], set()
    for a in alphas:
        for b in betas:
            for s in seeds:
                cfg = replace(base, alpha=float(a), beta=float(b) if a > 0 else 1.0, seed=int(s), **overrides)
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
    model: str | None = None,
    **kw,
) -> list[TrainConfig]:
    """The runs a dataset chapter compares, per seed: the baseline, WMA at (α, β) and minimise-OT
    (α = ``min_ot_alpha``, β = 0, the paper's Table 2); with ``batch_target`` also WMA with the
    ``batch`` target. ``model=None`` keeps the profile's model; ``kw`` goes to :func:`run_configs`."""
    if model:
        kw["model"] = model
    out = run_configs(dataset, data_dir, scale, alphas=(0.0, alpha), betas=(beta,), **kw)
    out += run_configs(dataset, data_dir, scale, alphas=(min_ot_alpha,), betas=(0.0,), **kw)
    if batch_target:
        out += run_configs(dataset, data_dir, scale, alphas=(alpha,), betas=(beta,), target="batch", **kw)
    return out


def results_dir() -> Path:
    """The results store every notebook and sweep shares."""
    return data_home() / "results"
