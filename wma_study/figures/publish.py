"""Publishing figures: PNG bytes, the build folder, the book's glued figures and the figure cache.

:class:`Publisher` saves a notebook's figure as a PNG under ``<build>/figures/<notebook>/`` and
glues it for the book, where a ``{glue:figure}`` directive shows it as a numbered figure.
:func:`cached_png` keeps the PNG of a figure drawn from stored records, so that a rebuild from
the same records does not draw it again. :func:`placeholder` stands in for a figure that this
execution cannot draw.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import matplotlib.pyplot as plt

from .style import DPI


def _root() -> Path:
    return Path(__file__).resolve().parents[2]  # <repo>/wma_study/figures/publish.py


def build_dir() -> Path:
    """Where the build writes (``$WMA_BUILD_DIR``, set by ``book/build.py``; default ``<repo>/_build``)."""
    return Path(os.environ.get("WMA_BUILD_DIR", _root() / "_build")).resolve()


def figure_dir(notebook: str) -> Path:
    """``<build>/figures/<notebook>/`` (created)."""
    d = build_dir() / "figures" / notebook
    d.mkdir(parents=True, exist_ok=True)
    return d


class Publisher:
    """Saves a notebook's figures as PNG files and glues them for ``{glue:figure}``.

    ``pub = Publisher("02_hateful_memes"); pub(fig, "comparison")`` writes
    ``<build>/figures/02_hateful_memes/comparison.png``, glues the figure under the key
    ``comparison`` and shows it in the notebook (the book hides that copy with the cell tag
    ``remove-output`` and shows the numbered ``{glue:figure}`` instead).
    """

    def __init__(self, notebook: str):
        self.notebook = notebook
        self.paths: dict[str, Path] = {}

    def __call__(self, fig, key: str, *, show: bool = True) -> None:
        from IPython.display import Image
        from myst_nb import glue

        # drawn once: the PNG file and the glued output are the same bytes (gluing the figure
        # itself would have the inline backend draw it a second time)
        png = fig_to_png(fig, dpi=DPI)
        plt.close(fig)
        path = figure_dir(self.notebook) / f"{key}.png"
        path.write_bytes(png)
        self.paths[key] = path
        glue(key, Image(data=png, format="png"), display=show)


def fig_to_png(fig, dpi: int = 72) -> bytes:
    """The figure as PNG bytes (tight bounding box)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def cached_png(parts: dict, draw, *, dpi: int = 72, cache_dir: str | Path | None = None) -> bytes:
    """PNG bytes of ``draw()`` (a function returning a figure), kept under ``cache_dir``
    (default ``<data home>/results/figure_cache/``) by a key over ``parts`` (what the figure
    shows: record keys, settings), ``dpi``, the source of this package (every module that draws
    figures) and matplotlib's version, so a rebuild from the same records does not draw it again.
    A damaged cache file is drawn anew."""
    import hashlib

    import matplotlib

    from wma_core.store import atomic_write_bytes, config_key, data_home

    sources = sorted(Path(__file__).resolve().parent.glob("*.py"))
    code = hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()[:16]
    key = config_key({"parts": parts, "dpi": dpi, "code": code, "matplotlib": matplotlib.__version__})
    folder = Path(cache_dir) if cache_dir is not None else data_home() / "results" / "figure_cache"
    path = folder / f"{key}.png"
    if path.is_file():
        png = path.read_bytes()
        if png.startswith(b"\x89PNG\r\n\x1a\n"):
            return png
    fig = draw()
    png = fig_to_png(fig, dpi)
    plt.close(fig)
    atomic_write_bytes(path, png)
    return png


def placeholder(text: str):
    """A small figure that only says ``text`` (a dataset left out of this execution)."""
    fig, ax = plt.subplots(figsize=(6, 1.2))
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=12, color="#555")
    return fig
