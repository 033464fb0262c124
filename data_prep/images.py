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
from PIL import Image, ImageOps, UnidentifiedImageError

from .checksums import sha256_bytes
from .paths import FileTooLarge, NotRegularFile, PathEscape, open_regular, read_limited

# Images with more pixels than this are refused before decoding (the real datasets' images have at
# most a few million pixels). A small file can declare a huge image: a 1-bit PNG of 9000 x 9000
# pixels compresses to ~10 KB but decodes to 81 Mpx, about 2 GB of working memory in PIL (decoded,
# RGB(X) at 4 bytes a pixel, resize buffers). 36 Mpx (6000 x 6000) keeps a worker under ~600 MB.
MAX_PIXELS = 36_000_000
# Files larger than this are refused before they are read (from fstat; a sparse file may declare
# 64 GiB). The real datasets' images are at most a few MB.
MAX_IMAGE_BYTES = 64 << 20
# Decoded by Pillow's own code only: Image.open never picks a plugin outside this list, so an EPS,
# PDF or PSD renamed to .png never runs Ghostscript or any other external program, and no rarely
# used decoder (TIFF, FITS, ...) sees data from elsewhere.
FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP")
# Formats recognised by their first bytes, to say what a refused file is.
_SIGNATURES = ((b"%!PS", "EPS"), (b"\xc5\xd0\xd3\xc6", "EPS"), (b"%PDF", "PDF"), (b"II*\x00", "TIFF"),
               (b"MM\x00*", "TIFF"), (b"8BPS", "PSD"), (b"SIMPLE", "FITS"), (b"\x00\x00\x00\x0cjP", "JPEG 2000"),
               (b"\xff\x4f\xff\x51", "JPEG 2000"), (b"\x00\x00\x01\x00", "ICO"), (b"icns", "ICNS"))


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
        "image too large (decompression bomb)", "image file too large", "unsupported image format",
        "image is not a regular file (FIFO)", "image path outside the raw folder (...)").
    detail: the underlying error text, for messages.
    """

    pixels: np.ndarray | None
    sha256: str | None
    problem: str | None = None
    detail: str = ""


def to_rgb(img: Image.Image) -> Image.Image:
    """An 8-bit RGB copy of `img`, scaling high-bit-depth modes instead of clipping them.

    PIL's own `convert("RGB")` clips "I;16"/"I"/"F" values at 255, so a 16-bit greyscale PNG comes
    out almost white and a float image in [0, 1] black. Here: "I;16*" and "I" (16-bit sources) map
    0..65535 to 0..255 (v * 255 / 65535, rounded), "F" maps 0..1 to 0..255 (NaN -> 0), both clipped.
    Every other mode (RGB, RGBA, L, LA, P, PA, 1, CMYK, YCbCr) goes through convert("RGB") as before.
    """
    if img.mode.startswith("I;16") or img.mode == "I":
        a = np.asarray(img).astype(np.float64)
        grey = np.rint(np.clip(a, 0, 65535) * (255.0 / 65535.0))
    elif img.mode == "F":
        a = np.nan_to_num(np.asarray(img, dtype=np.float64), nan=0.0, posinf=1.0, neginf=0.0)
        grey = np.rint(np.clip(a, 0.0, 1.0) * 255.0)
    else:
        return img.convert("RGB")
    return Image.fromarray(grey.astype(np.uint8), mode="L").convert("RGB")


def _upright(img: Image.Image) -> Image.Image:
    """`img` turned as its EXIF Orientation tag (2-8) says; itself when there is none (or it is unreadable)."""
    try:
        orientation = img.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001 - broken EXIF: the pixels are still fine, keep them as stored
        return img
    return ImageOps.exif_transpose(img) if orientation in range(2, 9) else img


def _sniff(data: bytes) -> str | None:
    return next((name for magic, name in _SIGNATURES if data.startswith(magic)), None)


def read_image_file(path: str | Path, root: str | Path | None = None) -> tuple[bytes | None, ImageResult | None]:
    """(bytes, None) of a regular image file of at most MAX_IMAGE_BYTES, else (None, the skip)."""
    try:
        with open_regular(path, what="image", max_bytes=MAX_IMAGE_BYTES, root=root) as f:
            return read_limited(f, MAX_IMAGE_BYTES, "image"), None
    except FileNotFoundError:
        return None, ImageResult(None, None, "missing image", f"no file {path}")
    except NotRegularFile as e:
        return None, ImageResult(None, None, f"image is {e.reason}", str(e))
    except FileTooLarge as e:
        return None, ImageResult(None, None, "image file too large", f"{e}; expected at most {MAX_IMAGE_BYTES} bytes")
    except PathEscape as e:
        return None, ImageResult(None, None, f"image path outside the raw folder ({e.reason})", str(e))
    except OSError as e:
        return None, ImageResult(None, None, "missing image", str(e))


def load_resized(path: str | Path, image_size: int, patch_size: int, root: str | Path | None = None) -> ImageResult:
    """Read, decode, convert to RGB, apply the EXIF orientation and bicubic-resize one image by ViLT's rule.

    root: where given, the opened file must be inside it (paths.open_regular).
    Only FORMATS are decoded; files over MAX_IMAGE_BYTES and images over MAX_PIXELS are refused
    before decoding. Every failure is an ImageResult with `problem` set (a counted skip), never an
    exception.
    """
    data, refused = read_image_file(path, root)
    if refused is not None:
        return refused
    digest = sha256_bytes(data)
    try:
        with warnings.catch_warnings():
            # PIL only warns between MAX_IMAGE_PIXELS and twice that; here a warning is an error
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=FORMATS) as img:
                if img.width * img.height > MAX_PIXELS:  # the header alone says so: nothing decoded
                    return ImageResult(None, digest, "image too large (decompression bomb)",
                                       f"{img.width}x{img.height} pixels > {MAX_PIXELS}")
                img.load()
                rgb = to_rgb(_upright(img))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        return ImageResult(None, digest, "image too large (decompression bomb)", f"{type(e).__name__}: {e}")
    except UnidentifiedImageError as e:
        kind = _sniff(data)
        if kind is not None:
            return ImageResult(None, digest, "unsupported image format",
                               f"a {kind} file; expected {', '.join(FORMATS)} (nothing else is decoded)")
        return ImageResult(None, digest, "corrupt image", f"{type(e).__name__}: {e}")
    except MemoryError as e:
        return ImageResult(None, digest, "image too large (decompression bomb)", f"{type(e).__name__}: {e}")
    except Exception as e:  # noqa: BLE001 - any decoder failure on bad bytes is a corrupt image
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
