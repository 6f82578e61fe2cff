"""Vectorised patient-level bootstrap vs a Python loop of scikit-learn calls (same replicates).

    .venv/bin/python bench/bootstrap_speed.py [--stays 2000] [--replicates 1000]
"""

import argparse
import time

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from mmfair.core.evaluation.bootstrap import PatientBootstrap
from mmfair.core.evaluation.metrics import auprc, auroc


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stays", type=int, default=2000)
    parser.add_argument("--replicates", type=int, default=1000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    n = args.stays
    subjects = rng.integers(0, int(n * 0.8), n)
    y = (rng.random(n) < 0.13).astype(int)
    score = 1 / (1 + np.exp(-(1.5 * y + rng.normal(0, 1, n))))

    t0 = time.perf_counter()
    boot = PatientBootstrap(subjects, args.replicates, seed=0)
    t_draw = time.perf_counter() - t0
    t0 = time.perf_counter()
    vec_auroc = auroc(y, score, weights=boot.weights)
    t_auroc = time.perf_counter() - t0
    t0 = time.perf_counter()
    vec_auprc = auprc(y, score, weights=boot.weights)
    t_auprc = time.perf_counter() - t0

    t0 = time.perf_counter()
    loop_auroc = []
    loop_auprc = []
    for b in range(args.replicates):
        idx = boot.replicate_indices(b)
        loop_auroc.append(roc_auc_score(y[idx], score[idx]))
        loop_auprc.append(average_precision_score(y[idx], score[idx]))
    t_loop = time.perf_counter() - t0
    assert np.allclose(vec_auroc, loop_auroc) and np.allclose(vec_auprc, loop_auprc)

    print(f"{n} stays, {args.replicates} patient-level replicates (results identical to sklearn's)")
    print("| step | seconds |\n|---|---|")
    print(f"| draw replicates | {t_draw:.2f} |")
    print(f"| AUROC, all replicates (vectorised) | {t_auroc:.2f} |")
    print(f"| AUPRC, all replicates (vectorised) | {t_auprc:.2f} |")
    print(f"| AUROC + AUPRC, loop of sklearn calls | {t_loop:.2f} |")


if __name__ == "__main__":
    main()
