"""Drawing readable synthetic chest radiographs (8-bit grayscale JPEG).

A frontal film shows dark lung fields, the mediastinum and spine, ribs and clavicles, and a heart
silhouette whose width is the cardiothoracic ratio (so cardiomegaly is literally a wider heart); pleural
effusion fills the lung base with a meniscus that rises laterally (a blunted costophrenic angle); edema is
a perihilar bat-wing haze; opacities (consolidation, pneumonia) are dense patchy blobs; support devices are
bright drawn lines (ET tube, central line, NG tube) and a pacemaker box with its lead. Findings are large
and contrasty on purpose, so a small CNN at 128 px can learn them in minutes. Lateral films are drawn
from the same findings in side view. Everything is drawn at a fixed working resolution with vectorised
numpy and PIL, then resized to the film's own size, so drawing stays fast.

Each image is a pure function of its parameters and seed, which keeps parallel drawing deterministic.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

WORK = 256
_Y, _X = np.mgrid[0:WORK, 0:WORK].astype(np.float32)
_XN = (_X - WORK / 2) / (WORK / 2)   # -1 (image left = patient's right) .. 1
_YN = _Y / WORK                      # 0 top .. 1 bottom


def _soft(inside: np.ndarray, sharpness: float = 8.0) -> np.ndarray:
    """Soft mask from a signed 'distance' that is positive inside."""
    return np.clip(inside * sharpness, 0.0, 1.0)


def _ellipse(cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    return 1.0 - np.sqrt(((_XN - cx) / rx) ** 2 + ((_YN - cy) / ry) ** 2)


def _smooth_noise(rng: np.random.Generator, cells: int) -> np.ndarray:
    coarse = rng.standard_normal((cells, cells)).astype(np.float32)
    img = Image.fromarray(((coarse - coarse.min()) / (np.ptp(coarse) + 1e-6) * 255).astype(np.uint8))
    return np.asarray(img.resize((WORK, WORK), Image.Resampling.BICUBIC), dtype=np.float32) / 255.0


@lru_cache(maxsize=1)
def _frontal_template() -> dict[str, Any]:
    """The parts of a frontal film that no finding changes, drawn once per process."""
    body = _soft(_ellipse(0.0, 0.60, 0.92, 0.64), 6)
    lung_side = {}
    for side in (-1, 1):
        cx = side * 0.41
        taper = np.clip(0.55 + 0.9 * (_YN - 0.12), 0.45, 1.0)
        d = 1.0 - np.sqrt(((_XN - cx) / (0.32 * taper)) ** 2 + ((_YN - 0.47) / 0.35) ** 2)
        dome = 0.81 + (0.0 if side < 0 else 0.03) - 0.05 * np.cos((_XN - cx) / 0.32 * np.pi / 2)
        lung_side[side] = (_soft(d, 7) * _soft(dome - _YN, 40)).astype(np.float32)
    lungs = np.maximum(lung_side[-1], lung_side[1])
    ribs = 0.5 + 0.5 * np.cos(2 * np.pi * (_YN * 9.0 + 0.9 * _XN ** 2))
    rib_shadow = 0.09 * lungs * np.clip((ribs - 0.55) * 4, 0, 1)
    clav = (np.abs(_YN - (0.15 + 0.07 * np.abs(_XN))) < 0.012) & (np.abs(_XN) > 0.06) & (np.abs(_XN) < 0.6)
    medi = _soft(0.12 - np.abs(_XN), 30) * _soft(_YN - 0.08, 30) * _soft(0.9 - _YN, 30)
    spine = _soft(0.05 - np.abs(_XN), 40) * _soft(_YN - 0.02, 30)
    vertebrae = 0.85 + 0.1 * (np.cos(_YN * 2 * np.pi * 16) > 0.6)
    lateral = {side: (np.clip((np.abs(_XN) - 0.15) / 0.55, 0, 1) * (np.sign(_XN) == side)) ** 2 for side in (-1, 1)}
    wing = np.exp(-(((np.abs(_XN) - 0.22) / 0.22) ** 2 + ((_YN - 0.50) / 0.20) ** 2))
    return {"body": 0.50 * body, "lungs": lungs, "lung_side": lung_side, "rib_shadow": rib_shadow,
            "clavicles": 0.25 * clav, "mediastinum": 0.70 * medi, "spine": vertebrae * spine, "lateral": lateral,
            "wing": wing}


def draw_frontal(p: dict[str, Any], rng: np.random.Generator) -> np.ndarray:
    """Float image in [0, 1] at WORK × WORK."""
    t = _frontal_template()
    lungs, lung_side = t["lungs"], t["lung_side"]
    img = np.maximum(0.04, t["body"])
    lung_tone = 0.13 + 0.06 * _smooth_noise(rng, 6)
    img = img * (1 - lungs) + lung_tone * lungs + t["rib_shadow"]
    # pleural effusion: fluid at the lung base with a meniscus rising laterally
    for side, height in ((-1, p["effusion_right"]), (1, p["effusion_left"])):
        if height > 0:
            level = 0.85 - height * (0.55 + 0.9 * t["lateral"][side])
            fluid = _soft(_YN - level, 30) * lung_side[side]
            img = img * (1 - fluid) + 0.80 * fluid
    # edema: perihilar bat-wing haze plus interstitial texture
    if p["edema"] > 0:
        img += lungs * p["edema"] * (0.42 * t["wing"] + 0.12 + 0.14 * _smooth_noise(rng, 24))
    # patchy opacities
    for bx, by, radius, strength in p["blobs"]:
        patch = np.exp(-(((_XN - bx) / radius) ** 2 + ((_YN - by) / (radius * 0.8)) ** 2))
        img += lungs * patch * (0.6 + 0.4 * _smooth_noise(rng, 20)) * 1.0 * strength
    if p["atelectasis"]:
        side = p["atelectasis"]
        band = np.exp(-((_YN - 0.70) / 0.012) ** 2) * (np.abs(_XN - side * 0.42) < 0.18)
        img += 0.35 * band * lung_side[side]
    if p["lesion"]:
        lx, ly = p["lesion"]
        img += 0.45 * _soft(_ellipse(lx, ly, 0.05, 0.04), 5) * lungs
    if p["pneumothorax"]:
        side = p["pneumothorax"]
        rim = _soft(np.abs(_XN - side * 0.41) / 0.32 - 0.72, 12) * lung_side[side] * (_YN < 0.5)
        img = img * (1 - rim) + 0.02 * rim
    img += t["clavicles"]
    img = np.maximum(img, t["mediastinum"])
    # heart: width = ctr × thoracic width, offset to the patient's left (image right); drawn in front
    half_width = p["ctr"] * 0.74
    heart = _soft(_ellipse(0.30 * half_width, 0.67, half_width, 0.12 + 0.3 * (p["ctr"] - 0.40)), 6)
    heart *= _soft(0.87 - _YN, 30)
    img = np.maximum(img, 0.80 * heart)
    img = np.maximum(img, t["spine"] * (1 - 0.3 * heart))
    if "demographics" in p:  # SyntheticConfig.image_demographic_signal (absent when off: the film is unchanged)
        img = _demographic_marks(img, t, p["demographics"])
    return _draw_devices(np.clip(img, 0, 1), p, frontal=True)


# The planted demographic signal: stylised stand-ins for what CXR models read of sex, age and race (Gichoya
# et al., Lancet Digit Health 2022; Yang et al., Nat Med 2024) — breast shadows, bone density falling with
# age, a soft-tissue density per race group. Large on purpose: the probe must find it through the encoder.
RACE_SOFT_TISSUE = {"WHITE": 0.0, "BLACK": 0.14, "HISPANIC": 0.07, "ASIAN": -0.07, "OTHER": 0.03, "UNKNOWN": 0.0}


def _demographic_marks(img: np.ndarray, t: dict[str, Any], d: dict[str, Any]) -> np.ndarray:
    soft_tissue = (t["body"] / 0.5) * (1 - t["lungs"])
    img = img + RACE_SOFT_TISSUE.get(str(d["race_group"]), 0.0) * soft_tissue
    if d["female"]:
        breasts = sum(_soft(_ellipse(side * 0.46, 0.80, 0.30, 0.15), 5) for side in (-1, 1))
        img = img + 0.16 * breasts
    bone = 1.8 - 1.6 * float(np.clip((d["age"] - 18.0) / 72.0, 0.0, 1.0))  # 1.8 at 18 → 0.2 at 90
    return img + (bone - 1.0) * (3.0 * t["rib_shadow"] + t["clavicles"] + 0.3 * t["spine"])


def draw_lateral(p: dict[str, Any], rng: np.random.Generator) -> np.ndarray:
    img = np.full((WORK, WORK), 0.04, np.float32)
    body = _soft(_ellipse(0.0, 0.58, 0.80, 0.62), 6)
    img = np.maximum(img, 0.5 * body)
    lung = _soft(_ellipse(0.02, 0.48, 0.62, 0.36), 7) * _soft(0.82 - _YN + 0.1 * _XN, 30)
    img = img * (1 - lung) + (0.16 + 0.05 * _smooth_noise(rng, 6)) * lung
    spine = _soft(0.09 - np.abs(_XN - 0.62), 30) * _soft(_YN - 0.05, 30)
    img = np.maximum(img, (0.8 + 0.1 * (np.cos(_YN * 2 * np.pi * 14) > 0.5)) * spine)
    heart = _soft(_ellipse(-0.30, 0.64, 0.22 + 0.8 * (p["ctr"] - 0.45), 0.16), 6)
    img = np.maximum(img, 0.78 * heart * _soft(0.84 - _YN, 30))
    height = max(p["effusion_left"], p["effusion_right"])
    if height > 0:
        level = 0.82 - height * (0.5 + 0.9 * np.clip((_XN + 0.1) / 0.7, 0, 1) ** 2)
        fluid = _soft(_YN - level, 30) * lung
        img = img * (1 - fluid) + 0.76 * fluid
    for bx, by, radius, strength in p["blobs"]:
        patch = np.exp(-(((_XN - 0.5 * bx) / radius) ** 2 + ((_YN - by) / radius) ** 2))
        img += lung * patch * 0.5 * strength
    if p["edema"] > 0:
        img += lung * p["edema"] * 0.25
    return _draw_devices(np.clip(img, 0, 1), p, frontal=False)


def _draw_devices(img: np.ndarray, p: dict[str, Any], frontal: bool) -> np.ndarray:
    if not (p["ett"] or p["central_line"] or p["pacemaker"] or p["ng_tube"]):
        return img
    pil = Image.fromarray((img * 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    s = WORK
    if frontal:
        if p["ett"]:
            draw.line([(s * 0.50, 0), (s * 0.505, s * 0.33)], fill=250, width=5)
            draw.line([(s * 0.485, s * 0.31), (s * 0.52, s * 0.31)], fill=250, width=3)
        if p["ng_tube"]:
            draw.line([(s * 0.47, 0), (s * 0.48, s * 0.45), (s * 0.56, s * 0.80), (s * 0.62, s * 0.95)], fill=235, width=3)
        if p["central_line"]:
            draw.line([(s * 0.12, s * 0.17), (s * 0.28, s * 0.19), (s * 0.40, s * 0.24), (s * 0.45, s * 0.40)],
                      fill=245, width=3)
        if p["pacemaker"]:
            draw.rectangle([s * 0.74, s * 0.15, s * 0.86, s * 0.23], fill=255)
            draw.line([(s * 0.77, s * 0.21), (s * 0.60, s * 0.40), (s * 0.55, s * 0.66)], fill=250, width=3)
    else:
        if p["ett"]:
            draw.line([(s * 0.42, 0), (s * 0.44, s * 0.32)], fill=250, width=5)
        if p["central_line"] or p["ng_tube"]:
            draw.line([(s * 0.55, 0), (s * 0.56, s * 0.50), (s * 0.48, s * 0.90)], fill=235, width=3)
        if p["pacemaker"]:
            draw.rectangle([s * 0.22, s * 0.14, s * 0.32, s * 0.20], fill=255)
    return np.asarray(pil, dtype=np.float32) / 255.0


def render_jpeg(task: tuple[str, dict[str, Any], int]) -> None:
    """Draw one film and write it as an 8-bit grayscale JPEG (process-pool entry point)."""
    path, p, seed = task
    rng = np.random.default_rng(seed)
    img = draw_frontal(p, rng) if p["frontal"] else draw_lateral(p, rng)
    img = np.clip(img, 0, 1) ** p["gamma"] * p["contrast"] + p["brightness"]
    pil = Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8), mode="L").filter(ImageFilter.GaussianBlur(0.6))
    x0, y0, x1, y1 = p["crop"]
    pil = pil.resize((p["width"], p["height"]), Image.Resampling.BILINEAR, box=(x0 * WORK, y0 * WORK, x1 * WORK, y1 * WORK))
    grain = rng.standard_normal((p["height"], p["width"]), dtype=np.float32) * 4.0
    pil = Image.fromarray(np.clip(np.asarray(pil, dtype=np.float32) + grain, 0, 255).astype(np.uint8), mode="L")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    pil.save(path, format="JPEG", quality=88)


def render_many(tasks: list[tuple[str, dict[str, Any], int]]) -> None:
    for task in tasks:
        render_jpeg(task)
