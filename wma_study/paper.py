"""The paper's published numbers (Tables 1-6 of Zhi et al., TMLR 2025) as a tidy table.

The transcription lives in ``book/data/paper_results.csv`` with one row per printed
cell: ``table,dataset,metric,method,alpha,beta,test_case,value``. Cells printed as
"-" have no row; ``alpha``/``beta`` are empty where the paper gives none.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

DEFAULT_PATH = Path(__file__).resolve().parents[1] / "book" / "data" / "paper_results.csv"

COLUMNS = ["table", "dataset", "metric", "method", "alpha", "beta", "test_case", "value"]
DATASETS = ["hateful_memes", "mmimdb", "ur_funny", "mosei"]
METRICS = {"hateful_memes": "auroc", "mmimdb": "f1_macro", "ur_funny": "auroc", "mosei": "mae"}
METHODS = ["baseline", "min_ot", "wma"]
TEST_CASES = [
    "normal",
    "text_noise", "image_noise", "video_noise", "audio_noise",
    "text_missing", "image_missing", "video_missing", "audio_missing",
]
KEY = ["table", "dataset", "method", "alpha", "beta", "test_case"]


def _bad(path, line: int, msg: str) -> ValueError:
    return ValueError(f"{path}: row {line} (line {line + 1} of the file): {msg}")


def load_paper_results(path=None) -> pd.DataFrame:
    """Read and validate the paper-results CSV.

    Returns a frame with ``table`` int, ``alpha``/``beta``/``value`` float (NaN where
    empty) and string columns otherwise. Raises ``ValueError`` naming the file and the
    1-based data row number of the first offending row.
    """
    path = Path(path) if path is not None else DEFAULT_PATH
    raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    if list(raw.columns) != COLUMNS:
        raise ValueError(f"{path}: columns {list(raw.columns)} != {COLUMNS}")
    for i, r in enumerate(raw.itertuples(index=False), start=1):
        if not r.table.isdigit() or not 1 <= int(r.table) <= 6:
            raise _bad(path, i, f"table {r.table!r} not in 1..6")
        if r.dataset not in DATASETS:
            raise _bad(path, i, f"dataset {r.dataset!r} not in {DATASETS}")
        if r.metric != METRICS[r.dataset]:
            raise _bad(path, i, f"metric {r.metric!r} is not {METRICS[r.dataset]!r} for {r.dataset}")
        if r.method not in METHODS:
            raise _bad(path, i, f"method {r.method!r} not in {METHODS}")
        if r.test_case not in TEST_CASES:
            raise _bad(path, i, f"test_case {r.test_case!r} not in {TEST_CASES}")
        for col in ("alpha", "beta", "value"):
            v = getattr(r, col)
            if v == "" and col != "value":
                continue
            try:
                float(v)
            except ValueError:
                raise _bad(path, i, f"{col} {v!r} is not a number") from None
    df = raw.astype({"table": int})
    for col in ("alpha", "beta", "value"):
        df[col] = pd.to_numeric(df[col].replace("", None), errors="raise").astype(float)
    dup = df.duplicated(KEY, keep="first")
    if dup.any():
        i = int(dup.to_numpy().nonzero()[0][0]) + 1
        raise _bad(path, i, f"duplicate key {df.loc[i - 1, KEY].tolist()}")
    return df


def paper_table(df: pd.DataFrame, table: int, dataset: str | None = None) -> pd.DataFrame:
    """One paper table as a wide frame for display.

    Rows are (dataset,) method, alpha, beta in the order they appear in ``df`` (the
    CSV's sorted order); columns are the test cases in the paper's order, limited
    to those the table has. Missing cells (printed "-" in the paper) are NaN.
    """
    sub = df[df["table"] == table]
    if dataset is not None:
        sub = sub[sub["dataset"] == dataset]
    index = (["dataset"] if dataset is None else []) + ["method", "alpha", "beta"]
    wide = sub.pivot_table(index=index, columns="test_case", values="value",
                           aggfunc="first", dropna=False, sort=False)
    cols = [c for c in TEST_CASES if c in wide.columns]
    wide = wide.reindex(columns=cols)
    wide.columns.name = None
    return wide.dropna(how="all")
