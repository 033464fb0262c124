"""Tile images: a grid of coloured tiles with pixel noise, which a patch model reads easily."""

from __future__ import annotations

import numpy as np


def tile_image(rng: np.random.Generator, height: int, width: int, colours: np.ndarray, noise: float = 12.0) -> np.ndarray:
    """colours: uint8-range [rows, cols, 3] tile colours -> uint8 [height, width, 3].

    Tile (r, c) covers rows r*height//rows .. (r+1)*height//rows (likewise for columns).
    """
    rows, cols, _ = colours.shape
    r_idx = np.minimum(np.arange(height) * rows // height, rows - 1)
    c_idx = np.minimum(np.arange(width) * cols // width, cols - 1)
    img = colours[r_idx][:, c_idx].astype(np.float32)
    img += rng.normal(0.0, noise, img.shape).astype(np.float32)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)
