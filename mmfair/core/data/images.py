"""Decoding chest X-rays once, in parallel, into square uint8 arrays for the store.

Pillow's JPEG draft mode lets the decoder itself downscale by a power of two, so a 3000-px MIMIC image
is never fully decoded only to be shrunk to 256 px.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from mmfair.core.data.pools import process_pool
from mmfair.core.errors import InputFileError


def load_square_uint8(path: Path | str, size: int) -> np.ndarray:
    """Decode one image to a ``size × size`` uint8 array: grayscale, aspect kept, zero-padded, centred.

    Any bit depth Pillow reads (8-bit L, 16-bit I;16, RGB) is mapped to 8-bit grayscale with its full
    range stretched; the longest side becomes ``size``.
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            if im.format == "JPEG":
                im.draft("L", (size, size))
            im = _to_8bit_gray(im)
            w, h = im.size
            scale = size / max(w, h)
            new = (max(1, round(w * scale)), max(1, round(h * scale)))
            im = im.resize(new, Image.Resampling.BILINEAR)
            arr = np.asarray(im, dtype=np.uint8)
    except FileNotFoundError:
        raise InputFileError(f"{path}: image file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputFileError(f"{path}: cannot decode image ({exc})") from None
    out = np.zeros((size, size), dtype=np.uint8)
    top = (size - arr.shape[0]) // 2
    left = (size - arr.shape[1]) // 2
    out[top : top + arr.shape[0], left : left + arr.shape[1]] = arr
    return out


def _to_8bit_gray(im: Image.Image) -> Image.Image:
    if im.mode == "L":
        return im
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        a = (a - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(a)
        return Image.fromarray(a.round().astype(np.uint8), mode="L")
    return im.convert("L")


def _load_one(args: tuple[str, int]) -> np.ndarray:
    return load_square_uint8(args[0], args[1])


def load_images(paths: Sequence[Path | str], size: int, workers: int = 0) -> np.ndarray:
    """Decode many images into a ``[N, size, size]`` uint8 array, in parallel processes.

    ``workers=0`` uses one process per available core; they exit with this process, even when it is killed
    (:mod:`.pools`). The first undecodable file raises :class:`InputFileError` naming it.
    """
    n = len(paths)
    out = np.empty((n, size, size), dtype=np.uint8)
    if n == 0:
        return out
    if workers <= 0:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if workers == 1 or n < 64:
        for i, p in enumerate(paths):
            out[i] = load_square_uint8(p, size)
        return out
    chunksize = max(1, n // (workers * 8))
    with process_pool(workers) as pool:  # its workers die with this process, even on SIGKILL
        for i, arr in enumerate(pool.map(_load_one, [(str(p), size) for p in paths], chunksize=chunksize)):
            out[i] = arr
    return out
