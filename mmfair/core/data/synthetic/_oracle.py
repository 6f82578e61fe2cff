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

from mmfair.core.data.synthetic import _model as model

MODALITY_SUBSETS = {"ehr": model.EHR_LATENTS, "cxr": model.CXR_LATENTS, "ehr+cxr": model.LATENTS}


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
    """One column ``oracle_<label>__<subset>`` per label and modality subset, rows aligned with ``latents``."""
    cov = model.latent_covariance()
    weights = {label: model.weight_vector(w) for label, (_, w) in model.LABEL_MODELS.items()}
    device_w = model.weight_vector(model.DEVICE_WEIGHTS)
    columns: dict[str, np.ndarray] = {}
    for subset, shown_names in MODALITY_SUBSETS.items():
        shown = np.array([model.L[n] for n in shown_names])
        hidden = np.array([k for k in range(len(model.LATENTS)) if k not in set(shown)])
        full = np.repeat(latents[:, None, :], 1, axis=1)
        if len(hidden):
            s_oo = cov[np.ix_(shown, shown)]
            s_ho = cov[np.ix_(hidden, shown)]
            gain = s_ho @ np.linalg.inv(s_oo)
            cond_cov = cov[np.ix_(hidden, hidden)] - gain @ s_ho.T
            cond_mean = latent_mean[:, hidden] + (latents[:, shown] - latent_mean[:, shown]) @ gain.T
            chol = np.linalg.cholesky(cond_cov + 1e-12 * np.eye(len(hidden)))
            z = rng.standard_normal((n_draws, len(hidden)))
            draws = cond_mean[:, None, :] + (z @ chol.T)[None, :, :]
            full = np.repeat(latents[:, None, :], n_draws, axis=1)
            full[:, :, hidden] = draws
            drives_device = bool(np.any(device_w[hidden] != 0))
            if drives_device:
                p_dev = model.sigmoid(model.DEVICE_INTERCEPT + full @ device_w)
                like = np.where(device[:, None].astype(bool), p_dev, 1.0 - p_dev)
                w = like / like.sum(axis=1, keepdims=True)
            else:
                w = np.full(full.shape[:2], 1.0 / n_draws)
        else:
            w = np.ones((len(latents), 1))
        for label, wv in weights.items():
            p_true = (model.sigmoid(intercepts[label] + full @ wv) * w).sum(axis=1)
            if label != model.MORTALITY:
                p_true = false_rate + (1.0 - miss_rate - false_rate) * p_true
            columns[f"oracle_{label}__{subset}"] = p_true
    ordered = {f"oracle_{label}__{subset}": columns[f"oracle_{label}__{subset}"]
               for label in model.LABEL_MODELS for subset in MODALITY_SUBSETS}
    return pd.DataFrame(ordered)
