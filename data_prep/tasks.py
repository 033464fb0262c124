"""What each dataset is: task kind, headline metric, modalities and feature dimensions."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TaskSpec:
    """Static description of one dataset.

    kind:            "binary" | "multilabel" | "regression".
    headline_metric: "auroc" | "f1_macro" | "mae".
    modalities:      ("text", "image") or ("text", "video", "audio").
    feature_dims:    feature size per modality for feature-sequence datasets, else None.
    raw_file:        the MultiBench pickle name (feature datasets).
    """

    kind: str
    headline_metric: str
    modalities: tuple[str, ...]
    feature_dims: dict | None = None
    raw_file: str | None = None

    @property
    def is_image_text(self) -> bool:
        return "image" in self.modalities


TASKS = {
    "hateful_memes": TaskSpec("binary", "auroc", ("text", "image")),
    "mmimdb": TaskSpec("multilabel", "f1_macro", ("text", "image")),
    "ur_funny": TaskSpec(
        "binary", "auroc", ("text", "video", "audio"),
        feature_dims={"text": 300, "video": 371, "audio": 81}, raw_file="humor.pkl",
    ),
    "mosei": TaskSpec(
        "regression", "mae", ("text", "video", "audio"),
        feature_dims={"text": 300, "video": 35, "audio": 74}, raw_file="mosei_senti_data.pkl",
    ),
}

# Our modality names -> MultiBench's pickle keys.
MULTIBENCH_KEYS = {"text": "text", "video": "vision", "audio": "audio"}


def task_spec(dataset: str) -> TaskSpec:
    """The TaskSpec of `dataset`; a clear error for unknown names."""
    if dataset not in TASKS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {sorted(TASKS)}")
    return TASKS[dataset]
