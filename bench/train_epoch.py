"""Seconds per training epoch of each method on a prepared workspace (default: the demo's).

    .venv/bin/python bench/train_epoch.py [--workspace mmfair-workspace] [--device cpu] [--epochs 5]
                                          [--cxr-input embeddings|images] [--stays N] [--image-size 128]
                                          [--methods NAME ...]

Trains each method (default: every registered one) for a fixed number of epochs (no early stopping) on
fold 0, mortality, in a scratch copy of the workspace's data, and reports the median epoch time from
history.csv (the first epoch left out: warm-up) and the peak memory.

``--stays N`` keeps the first N stays of the cohort (a fixed subset; the store is sliced consistently and
given its own fingerprint). ``--cxr-input images`` fine-tunes the prep encoder's backbone end to end from
the uint8 store at ``--image-size``; a store written before mmfair saved the encoder's weights gets
random-init weights of the same model for the benchmark (timing does not depend on the weights' values).
"""

import argparse
import shutil
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from mmfair.core.config import TrainConfig
from mmfair.core.training import train_run
from mmfair.core.workspace import Workspace


def subset_workspace(source: Workspace, target: Workspace, n_stays: int | None) -> None:
    """Copy ``data/`` from ``source``, keeping the first ``n_stays`` stays (cohort.csv and features.h5 alike)."""
    shutil.copytree(source.data, target.data)
    if n_stays is None:
        return
    cohort = pd.read_csv(source.cohort_csv, keep_default_na=False, na_values=[""], low_memory=False)
    keep = np.arange(min(n_stays, len(cohort)))
    cohort.iloc[keep].to_csv(target.cohort_csv, index=False)
    with h5py.File(source.features_h5, "r") as src, h5py.File(target.features_h5, "w") as dst:
        for key, value in src.attrs.items():
            dst.attrs[key] = value
        dst.attrs["fingerprint"] = f"{src.attrs['fingerprint']}-first{len(keep)}"
        dst["stay_id"] = src["stay_id"][: len(keep)]
        for name in ("values", "feature_names", "feature_groups"):
            if f"ehr/{name}" in src:
                data = src[f"ehr/{name}"][()]
                dst[f"ehr/{name}"] = data[: len(keep)] if name == "values" else data
        rows = src["cxr/row"][: len(keep)]
        have = rows >= 0
        new_rows = np.full(len(keep), -1, dtype=np.int64)
        new_rows[have] = np.arange(int(have.sum()))
        dst["cxr/row"] = new_rows
        dst["cxr/images"] = src["cxr/images"][()][rows[have]]
        for encoder_id, ds in src["cxr/embeddings"].items():
            out = dst.create_dataset(f"cxr/embeddings/{encoder_id}", data=ds[()][rows[have]])
            for key, value in ds.attrs.items():
                out.attrs[key] = value
        if "cxr/encoder_weights" in src:
            src.copy(src["cxr/encoder_weights"], dst["cxr"], name="encoder_weights")


def ensure_encoder_weights(ws: Workspace) -> None:
    """Give every encoder without saved weights a random-init state of its timm model (timing only)."""
    import torch

    from mmfair.core.data.store import add_embeddings, embedding_attrs
    from mmfair.core.encoders.cxr import build_cxr_backbone

    with h5py.File(ws.features_h5, "r") as h5:
        saved = set(h5["cxr/encoder_weights"]) if "cxr/encoder_weights" in h5 else set()
        embeddings = {k: v[()] for k, v in h5["cxr/embeddings"].items()}
    for encoder_id, attrs in embedding_attrs(ws.features_h5).items():
        if encoder_id in saved:
            continue
        torch.manual_seed(0)
        backbone = build_cxr_backbone(str(attrs["model"]), None, int(attrs.get("image_size", 128)))
        weights = {k: v.numpy() for k, v in backbone.model.state_dict().items()}
        add_embeddings(ws.features_h5, encoder_id, embeddings[encoder_id], attrs, weights=weights)
        print(f"note: {encoder_id} had no saved weights; random-init {attrs['model']} weights used for timing")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workspace", default="mmfair-workspace")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--cxr-input", default="embeddings", choices=["embeddings", "images"])
    parser.add_argument("--image-size", type=int, default=None, help="images mode; default the prep encoder's")
    parser.add_argument("--stays", type=int, default=None, help="keep the first N stays (a fixed subset)")
    parser.add_argument("--methods", nargs="*", default=None, help="default: every registered method")
    args = parser.parse_args()
    if not args.methods:
        import mmfair.core.training  # noqa: F401  (registers the methods and presets)
        from mmfair.core.registry import FUSIONS

        args.methods = FUSIONS.names()
    source = Workspace.resolve(args.workspace)
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Workspace(Path(tmp))
        subset_workspace(source, scratch, args.stays)
        if args.cxr_input == "images":
            ensure_encoder_weights(scratch)
        rows = []
        for method in args.methods:
            cfg = TrainConfig(fusion=method, epochs=args.epochs, patience=args.epochs, device=args.device,
                              cxr_input=args.cxr_input, image_size=args.image_size)
            result = train_run(cfg, scratch)
            history = pd.read_csv(result.run_dir / "history.csv")
            rows.append((method, history["seconds"].iloc[1:].median(), history["peak_memory_mb"].max(), len(history)))
    n = pd.read_csv(source.cohort_csv, usecols=["stay_id"]).shape[0] if args.stays is None else args.stays
    print(f"workspace {source.root}, {n} stays, cxr input {args.cxr_input}, device {args.device}, fold 0, mortality")
    print("| method | s / epoch (median) | peak memory MB | epochs |\n|---|---|---|---|")
    for method, sec, mem, n_epochs in rows:
        print(f"| {method} | {sec:.3f} | {mem:.0f} | {n_epochs} |")


if __name__ == "__main__":
    main()
