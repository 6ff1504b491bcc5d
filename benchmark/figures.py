"""The paper's figures: test examples (qualitative), the samples' uncertainty, training loss curves.

Each figure is a function of the tables stage's :class:`benchmark.evidence.Evidence`; the first two also read
the test images and the predicted samples they show.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmark import paths
from benchmark.data.case import Case
from benchmark.data.store import atomic_write, load_arrays
from benchmark.evidence import Evidence

PALETTE = np.array([[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
                    [145, 30, 180], [70, 240, 240]], dtype=np.float32) / 255


def display_rgb(image: np.ndarray) -> np.ndarray:
    """``(C, H, W)`` z-scored -> ``(H, W, 3)`` in [0, 1] for display."""
    img = image[:3] if image.shape[0] >= 3 else np.repeat(image[:1], 3, axis=0)
    lo, hi = np.percentile(img, [1, 99])
    return np.clip((img.transpose(1, 2, 0) - lo) / max(hi - lo, 1e-6), 0, 1)


def overlay(rgb: np.ndarray, label: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    colours = PALETTE[np.clip(label, 0, len(PALETTE) - 1)]
    mask = (label > 0)[..., None]
    return np.where(mask, (1 - alpha) * rgb + alpha * colours, rgb)


def example_slice(ds: str) -> tuple[int, Case, int, np.ndarray] | None:
    """The test slice of ``ds`` with the most foreground in the raters' majority reference (a readable
    example): ``(num_classes, case, slice index z, reference (H, W))``, or None if ``ds`` is not processed."""
    from benchmark.data.manifest import MANIFEST, load_manifest
    from benchmark.data.preprocess import load_split
    from benchmark.metrics.fusion import majority_vote
    from benchmark.records import Status

    processed = paths.processed(ds)
    if not (processed / MANIFEST).is_file() or load_manifest(processed).status is not Status.OK:
        return None
    manifest, cases = load_split(processed, "test")
    k = manifest.dataset.num_classes
    refs = [majority_vote(c.label, k) for c in cases]
    ci, zi = max(((i, z) for i, r in enumerate(refs) for z in range(r.shape[0])),
                 key=lambda iz: int((refs[iz[0]][iz[1]] > 0).sum()))
    return k, cases[ci], zi, refs[ci][zi]


def load_samples(ds: str, method: str, case_id: str) -> np.ndarray | None:
    """The method's samples of one test case, ``(K, Z, H, W)`` uint8, or None if it has none on disk."""
    p = paths.predictions(ds, method) / f"{case_id}.npz"
    return load_arrays(p, ("samples",))["samples"] if p.is_file() else None


def _not_run(ax) -> None:
    ax.text(0.5, 0.5, "not run", ha="center", va="center", transform=ax.transAxes, color="red")


def qualitative_figure(ev: Evidence, out: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from benchmark.metrics.fusion import majority_vote

    cfg = ev.cfg
    methods = list(cfg.compared_methods)
    rows = []
    for ds in cfg.datasets:
        ex = example_slice(ds)
        if ex is None:
            rows.append((ds, None, None, None, {}))
            continue
        k, case, zi, ref = ex
        preds = {m: majority_vote(s, k)[zi] for m in methods
                 if cfg.evaluated(ds, m) and (s := load_samples(ds, m, case.case_id)) is not None}
        rows.append((ds, case.case_id, display_rgb(case.image[zi]), ref, preds))

    ncols = 2 + len(methods)
    fig, axes = plt.subplots(len(rows), ncols, figsize=(2.2 * ncols, 2.3 * len(rows)), squeeze=False)
    titles = ["image", "reference"] + methods
    for r, (ds, case_id, rgb, ref, preds) in enumerate(rows):
        for c in range(ncols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(titles[c], fontsize=9)
            if rgb is None:
                _not_run(ax)
                if c == 0:
                    ax.set_ylabel(ds, fontsize=8)
                continue
            if c == 0:
                ax.imshow(rgb)
                ax.set_ylabel(f"{ds}\n{case_id}", fontsize=7)
            elif c == 1:
                ax.imshow(overlay(rgb, ref))
            else:
                m = methods[c - 2]
                if m in preds:
                    ax.imshow(overlay(rgb, preds[m]))
                else:
                    _not_run(ax)
    fig.suptitle(f"Test examples, profile '{cfg.profile}' (phantoms are synthetic; colin27 is one real subject)",
                 fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.25 / fig.get_figheight()))   # room for the title above the columns
    atomic_write(out, lambda t: fig.savefig(t, dpi=110, format="png"))
    plt.close(fig)
    return out


def _raters(ax, rgb: np.ndarray, label: np.ndarray) -> None:
    """Raters' labels ``(R, H, W)`` on the image: filled if one rater, else one foreground outline each."""
    if label.shape[0] == 1:
        ax.imshow(overlay(rgb, label[0]))
        return
    ax.imshow(rgb)
    for r, mask in enumerate(label > 0):
        if mask.any():
            ax.contour(mask.astype(float), levels=[0.5], colors=[PALETTE[1 + r % (len(PALETTE) - 1)]],
                       linewidths=1.2)


def uncertainty_figure(ev: Evidence, out: Path) -> Path:
    """One row per (dataset, method) of ``table4`` (the generative methods on the multi-rater data):
    image, raters, foreground probability and entropy of the method's K unfused samples on one test slice."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    from benchmark.metrics.fusion import sample_entropy

    cfg = ev.cfg
    datasets = cfg.table4.datasets or cfg.datasets
    examples = {ds: example_slice(ds) for ds in datasets}
    rows = [(ds, m, load_samples(ds, m, ex[1].case_id) if ex else None)
            for ds, ex in examples.items() for m in cfg.table4.methods]
    if not rows:   # a profile whose table4 lists no method: the figure says so
        fig, ax = plt.subplots(figsize=(6, 1.5))
        ax.axis("off")
        ax.text(0.5, 0.5, f"profile '{cfg.profile}': table4 lists no method, so no samples to show",
                ha="center", va="center", fontsize=9)
        atomic_write(out, lambda t: fig.savefig(t, dpi=110, format="png", bbox_inches="tight"))
        plt.close(fig)
        return out
    vmax = max([1.0] + [np.log2(min(s.shape[0], examples[ds][0])) for ds, _, s in rows if s is not None])
    cmaps = {2: ("viridis", 1.0, "P(foreground): fraction of the K samples"), 3: ("magma", vmax, "entropy (bits)")}

    fig, axes = plt.subplots(len(rows), 4, figsize=(8.5, 2.05 * len(rows) + 0.8), squeeze=False, layout="constrained")
    titles = ["image", "raters' labels", "P(foreground) over samples", "entropy of the samples' labels"]
    for r, (ds, m, samples) in enumerate(rows):
        ex = examples[ds]
        k_text = f"K = {samples.shape[0]}" if samples is not None else "no samples"
        axes[r, 0].set_ylabel(f"{ds}\n{m}\n{k_text}", fontsize=8)
        for c, ax in enumerate(axes[r]):
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(titles[c], fontsize=9)
        if ex is None:
            for ax in axes[r]:
                _not_run(ax)
            continue
        k, case, zi, _ = ex
        rgb = display_rgb(case.image[zi])
        axes[r, 0].imshow(rgb)
        _raters(axes[r, 1], rgb, case.label[:, zi])
        if samples is None:
            _not_run(axes[r, 2])
            _not_run(axes[r, 3])
            continue
        maps = ((samples[:, zi] > 0).mean(axis=0), sample_entropy(samples[:, zi], k))  # P(foreground), bits
        for c, image in zip((2, 3), maps):
            axes[r, c].imshow(image, cmap=cmaps[c][0], vmin=0, vmax=cmaps[c][1], interpolation="nearest")
    for c, (cmap, top, label) in cmaps.items():
        fig.colorbar(ScalarMappable(Normalize(0, top), cmap), ax=axes[:, c], location="bottom", shrink=0.9,
                     aspect=12).set_label(label, fontsize=8)
    cases = "; ".join(f"{ds}: case {ex[1].case_id}, slice {ex[2]}, {ex[1].label.shape[0]} rater(s), "
                      f"{int((ex[1].label[:, ex[2]] > 0).any(axis=(1, 2)).sum())} marking foreground"
                      for ds, ex in examples.items() if ex)
    fig.suptitle(f"Per-pixel uncertainty of K unfused samples per method, profile '{cfg.profile}'\n{cases}\n"
                 "raters: one outline colour per rater", fontsize=9)
    atomic_write(out, lambda t: fig.savefig(t, dpi=110, format="png", bbox_inches="tight"))
    plt.close(fig)
    return out


SMOOTHING = 10  # steps of the rolling mean drawn for each loss curve


def training_curves_figure(ev: Evidence, out: Path) -> Path:
    """One panel per dataset (``datasets``, then any other ``ablations.datasets``), a line per method with a
    ``loss.csv`` (``ev.losses``): the training loss divided by its value at step 1 (Dice + CE and velocity losses have
    different scales), rolling mean over :data:`SMOOTHING` steps, log y axis; ablation variants dashed. A loss that
    reaches 0 or below (nnU-Net's CE - soft Dice) is named in the legend's title instead of drawn."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

    cfg = ev.cfg
    datasets = list(dict.fromkeys(d for d, _ in cfg.pairs()))
    # a row scored from another method's training (the condition head) has no curve of its own
    trained = [(d, m) for d, m in cfg.pairs() if cfg.trained_as(m) == m]
    methods = list(dict.fromkeys(m for _, m in trained))
    palette = plt.get_cmap("tab20").colors
    colours = {m: palette[i % len(palette)] for i, m in enumerate(methods)}
    ncols = min(4, len(datasets))
    nrows = -(-len(datasets) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 2.9 * nrows + 1.0), squeeze=False, sharey=True,
                             layout="constrained")
    handles, unplotted = {}, set()
    for ax, ds in zip(axes.flat, datasets):
        drawn = [m for d, m in trained if d == ds]
        n_lines = 0
        for m in drawn:
            df = ev.losses[(ds, m)]
            if df.empty:
                continue
            if (df["loss"] <= 0).any():      # nnU-Net's CE - soft Dice: no place on a log axis of ratios
                unplotted.add(m)
                continue
            curve = df["loss"].rolling(SMOOTHING, min_periods=1).mean() / df["loss"].iloc[0]
            handles[m], = ax.plot(df["step"], curve, color=colours[m], lw=1.3 if m in cfg.compared_methods else 1.0,
                                  ls="-" if m in cfg.compared_methods else "--")
            n_lines += 1
        if not n_lines:
            _not_run(ax)
        ax.set_title(ds, fontsize=9)
        ax.set_xlabel("training step", fontsize=8)
        ax.grid(alpha=0.3, which="both")
        ax.tick_params(labelsize=7)
    axes[0, 0].set_yscale("log")  # shared by every panel, as are the ticks
    axes[0, 0].yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axes[0, 0].yaxis.set_major_formatter(FormatStrFormatter("%g"))
    axes[0, 0].yaxis.set_minor_formatter(NullFormatter())
    for ax in axes[:, 0]:
        ax.set_ylabel("loss / loss at step 1 (log scale)", fontsize=8)
    for ax in axes.flat[len(datasets):]:
        ax.set_visible(False)
    if handles:
        title = "method (dashed: MedFlowSeg ablation variant)" + (
            f"; not drawn, a loss that reaches 0 or below: {', '.join(sorted(unplotted))}" if unplotted else "")
        fig.legend(handles.values(), handles.keys(), loc="outside lower center", ncols=min(4, len(handles)),
                   fontsize=8, title=title, title_fontsize=8)
    fig.suptitle(f"Training loss, profile '{cfg.profile}' (each curve: rolling mean over {SMOOTHING} steps, "
                 "divided by its loss at step 1)", fontsize=9)
    atomic_write(out, lambda t: fig.savefig(t, dpi=110, format="png"))
    plt.close(fig)
    return out
