"""The qualitative figure: one row per dataset, columns image, reference, each method's prediction."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmark import paths
from benchmark.config import Config
from benchmark.data.store import atomic_write, load_arrays

PALETTE = np.array([[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
                    [145, 30, 180], [70, 240, 240]], dtype=np.float32) / 255


def _display(image: np.ndarray) -> np.ndarray:
    """``(C, H, W)`` z-scored -> ``(H, W, 3)`` in [0, 1] for display."""
    img = image[:3] if image.shape[0] >= 3 else np.repeat(image[:1], 3, axis=0)
    lo, hi = np.percentile(img, [1, 99])
    return np.clip((img.transpose(1, 2, 0) - lo) / max(hi - lo, 1e-6), 0, 1)


def _overlay(rgb: np.ndarray, label: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    colours = PALETTE[np.clip(label, 0, len(PALETTE) - 1)]
    mask = (label > 0)[..., None]
    return np.where(mask, (1 - alpha) * rgb + alpha * colours, rgb)


def qualitative_figure(cfg: Config, out: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from benchmark.data.preprocess import load_split
    from benchmark.metrics.fusion import majority_vote

    rows = []
    for ds in cfg.datasets:
        try:
            manifest, cases = load_split(paths.processed(ds), "test")
        except ValueError:
            cases = []
        if not cases:
            rows.append((ds, None, None, None, {}))
            continue
        # The test slice with the most foreground in the reference: a readable example.
        refs = [majority_vote(c.label, manifest.dataset.num_classes) for c in cases]
        ci, zi = max(((i, z) for i, r in enumerate(refs) for z in range(r.shape[0])),
                     key=lambda iz: int((refs[iz[0]][iz[1]] > 0).sum()))
        case = cases[ci]
        preds = {}
        for m in cfg.methods:
            p = paths.predictions(ds, m) / f"{case.case_id}.npz"
            if p.is_file():
                preds[m] = majority_vote(load_arrays(p, ("samples",))["samples"], manifest.dataset.num_classes)[zi]
        rows.append((ds, case.case_id, _display(case.image[zi]), refs[ci][zi], preds))

    ncols = 2 + len(cfg.methods)
    fig, axes = plt.subplots(len(rows), ncols, figsize=(2.2 * ncols, 2.3 * len(rows)), squeeze=False)
    titles = ["image", "reference"] + list(cfg.methods)
    for r, (ds, case_id, rgb, ref, preds) in enumerate(rows):
        for c in range(ncols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(titles[c], fontsize=9)
            if rgb is None:
                ax.text(0.5, 0.5, "not run", ha="center", va="center", transform=ax.transAxes, color="red")
                if c == 0:
                    ax.set_ylabel(ds, fontsize=8)
                continue
            if c == 0:
                ax.imshow(rgb)
                ax.set_ylabel(f"{ds}\n{case_id}", fontsize=7)
            elif c == 1:
                ax.imshow(_overlay(rgb, ref))
            else:
                m = cfg.methods[c - 2]
                if m in preds:
                    ax.imshow(_overlay(rgb, preds[m]))
                else:
                    ax.text(0.5, 0.5, "not run", ha="center", va="center", transform=ax.transAxes, color="red")
    fig.suptitle(f"Test examples, profile '{cfg.profile}' (phantoms are synthetic; colin27 is one real subject)",
                 fontsize=9)
    fig.tight_layout()
    atomic_write(out, lambda t: fig.savefig(t, dpi=110, format="png"))
    plt.close(fig)
    return out
