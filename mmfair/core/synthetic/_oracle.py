"""Oracle probabilities: the best prediction any method could make from one modality subset.

For a subset of modalities, the oracle of a label is P(recorded label = 1 | the latents that subset shows,
the stay's demographics), computed from the generating model: the hidden latents are drawn from their
Gaussian conditional given the shown ones (the stay's own mean, known covariance); where the subset shows
the device flag but not the latents that drive it (CXR alone), draws are weighted by the flag's
likelihood (self-normalised importance sampling). Recorded phenotype labels pass through the coding
noise, so their oracle is ``false_rate + (1 - miss_rate - false_rate) * P(true label)``.

The oracle treats a modality as revealing its latents exactly: an upper bound that a model of finite
images and noisy vitals approaches but does not reach.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mmfair.core.synthetic import _model as model

MODALITY_SUBSETS = {"ehr": model.EHR_LATENTS, "cxr": model.CXR_LATENTS, "ehr+cxr": model.LATENTS}


BLOCK_STAYS = 4096  # stays whose draws are held at once: (stays, n_draws, latents) float64, ~100 MB


def oracle_probabilities(
    latents: np.ndarray,
    latent_mean: np.ndarray,
    device: np.ndarray,
    intercepts: dict[str, float],
    miss_rate: np.ndarray,
    false_rate: np.ndarray,
    rng: np.random.Generator,
    n_draws: int = 400,
) -> pd.DataFrame:
    """One column ``oracle_<label>__<subset>`` per label and modality subset, rows aligned with ``latents``.

    The standard-normal draws of a subset are shared by all stays (drawn once); the stays are then worked
    through ``BLOCK_STAYS`` at a time, so memory does not grow with the population (the same values as at once).
    """
    cov = model.latent_covariance()
    weights = {label: model.weight_vector(w) for label, (_, w) in model.LABEL_MODELS.items()}
    device_w = model.weight_vector(model.DEVICE_WEIGHTS)
    n = len(latents)
    columns: dict[str, np.ndarray] = {}
    for subset, shown_names in MODALITY_SUBSETS.items():
        shown = np.array([model.L[n] for n in shown_names])
        hidden = np.array([k for k in range(len(model.LATENTS)) if k not in set(shown)])
        if len(hidden):
            s_oo = cov[np.ix_(shown, shown)]
            s_ho = cov[np.ix_(hidden, shown)]
            gain = s_ho @ np.linalg.inv(s_oo)
            cond_cov = cov[np.ix_(hidden, hidden)] - gain @ s_ho.T
            chol = np.linalg.cholesky(cond_cov + 1e-12 * np.eye(len(hidden)))
            z = rng.standard_normal((n_draws, len(hidden)))
            drives_device = bool(np.any(device_w[hidden] != 0))
        for label in weights:
            columns[f"oracle_{label}__{subset}"] = np.empty(n)
        for start in range(0, n, BLOCK_STAYS):
            rows = slice(start, start + BLOCK_STAYS)
            block = latents[rows]
            if len(hidden):
                cond_mean = latent_mean[rows][:, hidden] + (block[:, shown] - latent_mean[rows][:, shown]) @ gain.T
                full = np.repeat(block[:, None, :], n_draws, axis=1)
                full[:, :, hidden] = cond_mean[:, None, :] + (z @ chol.T)[None, :, :]
                if drives_device:
                    p_dev = model.sigmoid(model.DEVICE_INTERCEPT + full @ device_w)
                    like = np.where(device[rows][:, None].astype(bool), p_dev, 1.0 - p_dev)
                    w = like / like.sum(axis=1, keepdims=True)
                else:
                    w = np.full(full.shape[:2], 1.0 / n_draws)
            else:
                full, w = block[:, None, :], np.ones((len(block), 1))
            for label, wv in weights.items():
                p_true = (model.sigmoid(intercepts[label] + full @ wv) * w).sum(axis=1)
                if label != model.MORTALITY:
                    p_true = false_rate[rows] + (1.0 - miss_rate[rows] - false_rate[rows]) * p_true
                columns[f"oracle_{label}__{subset}"][rows] = p_true
    ordered = {f"oracle_{label}__{subset}": columns[f"oracle_{label}__{subset}"]
               for label in model.LABEL_MODELS for subset in MODALITY_SUBSETS}
    return pd.DataFrame(ordered)
