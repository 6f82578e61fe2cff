"""Toy radiographs for the encoder tests (a helper module: conftest names clash across test folders)."""

import numpy as np

FINDINGS = ["Cardiomegaly", "Pleural Effusion", "Lung Opacity", "Support Devices"]


def make_toy_cxr(n: int, size: int = 64, seed: int = 0, noise: float = 0.15, images_per_subject: int = 2):
    """Toy radiographs: lungs, a heart disc (big = cardiomegaly), a bright basal band (effusion),
    blobs in the lungs (opacity), a thin vertical line (device). Returns images, CheXpert labels, subjects.

    Labels get CheXpert-like noise: some uncertain (-1), some blank (NaN) negatives.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    imgs = np.empty((n, size, size), dtype=np.uint8)
    truth = rng.random((n, 4)) < np.array([0.35, 0.3, 0.35, 0.3])
    for i in range(n):
        img = np.full((size, size), 0.55 + 0.1 * rng.standard_normal())
        for cx in (0.32, 0.68):  # lungs
            lung = ((xx - cx) / 0.17) ** 2 + ((yy - 0.5) / 0.32) ** 2 < 1
            img[lung] -= 0.35
        r = (0.17 if truth[i, 0] else 0.11) + 0.015 * rng.standard_normal()
        heart = ((xx - 0.55) / r) ** 2 + ((yy - 0.62) / (0.8 * r)) ** 2 < 1
        img[heart] += 0.3
        if truth[i, 1]:
            side = rng.choice([0.32, 0.68])
            band = (np.abs(xx - side) < 0.17) & (yy > 0.72 - 0.06 * rng.random())
            img[band] += 0.25
        if truth[i, 2]:
            for _ in range(rng.integers(1, 3)):
                bx, by, br = rng.uniform(0.2, 0.8), rng.uniform(0.25, 0.7), rng.uniform(0.05, 0.1)
                img[(xx - bx) ** 2 + (yy - by) ** 2 < br**2] += 0.3
        if truth[i, 3]:
            x0 = rng.uniform(0.4, 0.6)
            img[(np.abs(xx - x0 - 0.1 * (yy - 0.2)) < 0.025) & (yy > 0.05) & (yy < 0.7)] += 0.45
        img = img * rng.uniform(0.8, 1.2) + noise * rng.standard_normal((size, size))
        imgs[i] = np.clip(img * 255, 0, 255).astype(np.uint8)
    labels = truth.astype(np.float32)
    u = rng.random(labels.shape)
    labels[u < 0.05] = -1.0
    labels[(u > 0.05) & (u < 0.25) & (labels == 0)] = np.nan
    subjects = (np.arange(n) // images_per_subject + 10_000).astype(np.int64)
    return imgs, labels, subjects
