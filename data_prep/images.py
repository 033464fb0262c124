"""Image preparation: ViLT's resize rule, PIL bicubic resize, and a compact uint8 store.

The store of one split is three .npy files, all memory-mappable with np.load(mmap_mode="r"):
    images.npy        uint8 [total]   every image's CHW bytes, one after another
    image_shapes.npy  int32 [N, 2]    (H, W) of image i after resizing
    image_offsets.npy int64 [N]       where image i starts in images.npy
so image i is images[off:off + 3*H*W].reshape(3, H, W). No normalisation happens here: the model
turns uint8 into (x/255 - 0.5)/0.5 on its own device.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .checksums import sha256_bytes

# Images with more pixels than this are refused before decoding (PIL's own default limit; the real
# datasets' images have at most a few million pixels). A small file can declare a huge image: a
# 1-bit PNG of 10000 x 10000 pixels compresses to ~12 KB but decodes to 300 MB of RGB.
MAX_PIXELS = 89_478_485


def vilt_output_size(height: int, width: int, image_size: int, patch_size: int) -> tuple[int, int]:
    """(H, W) that ViLT's image processor resizes a height x width image to.

    Shorter side -> image_size, longer side capped at int(1333 / 800 * image_size), both rounded,
    then floored to multiples of patch_size (transformers' `get_resize_output_image_size`).
    """
    # transformers' ViLT module takes 3 s to import: only when an image is resized
    from transformers.models.vilt.image_processing_pil_vilt import (
        MAX_LONGER_EDGE,
        MAX_SHORTER_EDGE,
        get_resize_output_image_size,
    )

    longer = int(MAX_LONGER_EDGE / MAX_SHORTER_EDGE * image_size)
    shape_only = np.broadcast_to(np.zeros((), np.uint8), (height, width, 3))  # no allocation
    return get_resize_output_image_size(
        shape_only, shorter=image_size, longer=longer, size_divisor=patch_size,
        input_data_format="channels_last",
    )


@dataclass
class ImageResult:
    """Outcome of loading one raw image.

    pixels: uint8 [3, H, W] after resizing, or None when `problem` is set.
    sha256: digest of the raw file bytes (None when the file is missing).
    problem: None, or the skip reason ("missing image", "corrupt image", "degenerate image size",
        "image too large (decompression bomb)").
    detail: the underlying error text, for messages.
    """

    pixels: np.ndarray | None
    sha256: str | None
    problem: str | None = None
    detail: str = ""


def load_resized(path: str | Path, image_size: int, patch_size: int) -> ImageResult:
    """Read, decode, convert to RGB and bicubic-resize one image by ViLT's rule."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return ImageResult(None, None, "missing image", f"no file {path}")
    except OSError as e:
        return ImageResult(None, None, "missing image", str(e))
    digest = sha256_bytes(data)
    try:
        with warnings.catch_warnings():
            # PIL only warns between MAX_IMAGE_PIXELS and twice that; here a warning is an error
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                if img.width * img.height > MAX_PIXELS:  # the header alone says so: nothing decoded
                    return ImageResult(None, digest, "image too large (decompression bomb)",
                                       f"{img.width}x{img.height} pixels > {MAX_PIXELS}")
                img.load()
                rgb = img.convert("RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        return ImageResult(None, digest, "image too large (decompression bomb)", f"{type(e).__name__}: {e}")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        return ImageResult(None, digest, "corrupt image", f"{type(e).__name__}: {e}")
    h, w = vilt_output_size(rgb.height, rgb.width, image_size, patch_size)
    if h < patch_size or w < patch_size:
        return ImageResult(None, digest, "degenerate image size", f"{rgb.width}x{rgb.height} -> {w}x{h}")
    resized = rgb.resize((w, h), resample=Image.Resampling.BICUBIC)
    pixels = np.ascontiguousarray(np.asarray(resized, dtype=np.uint8).transpose(2, 0, 1))
    return ImageResult(pixels, digest)


class ImageStoreWriter:
    """Streams CHW uint8 images to disk and writes the three-file store of one split.

    Usage: w = ImageStoreWriter(split_dir); w.add(pixels) ...; w.close()
    Pixels are streamed to a temporary file, so memory stays flat at paper scale.
    """

    def __init__(self, split_dir: str | Path):
        self.split_dir = Path(split_dir)
        self.split_dir.mkdir(parents=True, exist_ok=True)
        fd, self._tmp_path = tempfile.mkstemp(prefix="images-", suffix=".bin", dir=self.split_dir)
        self._tmp = os.fdopen(fd, "wb")
        self._shapes: list[tuple[int, int]] = []
        self._offsets: list[int] = []
        self._total = 0

    def add(self, pixels: np.ndarray) -> None:
        """Append one image, uint8 [3, H, W]."""
        if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[0] != 3:
            raise ValueError(f"expected uint8 [3, H, W], got {pixels.dtype} {pixels.shape}")
        self._offsets.append(self._total)
        self._shapes.append(pixels.shape[1:])
        self._tmp.write(np.ascontiguousarray(pixels).tobytes())
        self._total += pixels.size

    def close(self) -> None:
        self._tmp.close()
        with open(self.split_dir / "images.npy", "wb") as out, open(self._tmp_path, "rb") as tmp:
            header = {"descr": "|u1", "fortran_order": False, "shape": (self._total,)}
            np.lib.format.write_array_header_1_0(out, header)
            shutil.copyfileobj(tmp, out, length=1 << 22)
        os.remove(self._tmp_path)
        shapes = np.asarray(self._shapes, dtype=np.int32).reshape(-1, 2)
        np.save(self.split_dir / "image_shapes.npy", shapes)
        np.save(self.split_dir / "image_offsets.npy", np.asarray(self._offsets, dtype=np.int64))


def read_image(images: np.ndarray, shapes: np.ndarray, offsets: np.ndarray, i: int) -> np.ndarray:
    """Image i of a store as uint8 [3, H, W] (a copy, so the mmap is not held)."""
    h, w = (int(x) for x in shapes[i])
    start = int(offsets[i])
    return np.array(images[start:start + 3 * h * w]).reshape(3, h, w)
