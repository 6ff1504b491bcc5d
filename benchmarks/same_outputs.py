"""Do two revisions of the suite produce the same outputs? Runs a small profile of every registered method
through `dvc repro` at each revision and compares what the stages wrote.

    python3 benchmarks/same_outputs.py run REV OUT [--old-names]   # export REV to OUT, run the profile there
    python3 benchmarks/same_outputs.py compare OUT_A OUT_B

`--old-names` writes the method parameters under their names before the redesign (FlowSDF's `nfe`,
MedSegDiff's `ddim_steps`, flowseg-plain's `norm_num_groups`). `run` exports the revision with `git archive`
(the working tree when REV is `WORKTREE`), puts it first on PYTHONPATH (with its own entry points) so the
stages import that revision's code, and runs `dvc repro`. `compare` reports, per output:
model weights (every tensor, by position in the state dict, so renamed keys still compare), samples and
uncertainty maps (every array), evaluation records (every number, timings and revisions left out), the
per-case CSVs, the rendered tables and the claims report (text; the NFE sweep's seconds per case, a
timing, left out). It prints one line per difference and exits 1 if there is any.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import time
from io import BytesIO
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
TINY_MODEL = {"channels": [8, 16], "num_res_blocks": 1, "time_embed_dim": 16, "norm_groups": 4}
MEDFLOWSEG = {**TINY_MODEL, "fa_depth": 1, "fa_dim": 16, "fa_heads": 2, "steps": 2}


def profile(rev_params: dict) -> dict:
    """The small profile: two phantoms at 64 px, every method for a few steps. ``rev_params`` holds the
    method sections, which differ between revisions only by parameter names."""
    return {
        "profile": "same-outputs", "launcher": "segbench",
        "datasets": ["phantom-cardiac", "phantom-lesion"],
        "methods": ["unet", "flowseg-plain", "medflowseg"],
        "data": {"size": 64, "seed": 0, "n_subjects": 6, "split": {"train": 0.5, "val": 0.0, "test": 0.5}},
        "train": {"steps": 12, "batch_size": 4, "lr": 0.001, "warmup_steps": 3, "ema_decay": 0.9,
                  "checkpoint_every": 6, "threads": 1},
        "predict": {"n_samples": 2, "batch_size": 8},
        "evaluation": {"hd95_convention": "pooled", "fusion": "staple", "workers": 1},
        "method": rev_params,
        "baselines": {"datasets": ["phantom-cardiac", "phantom-lesion"],
                      "methods": ["flowsdf", "atfm", "medsegdiff", "nnunet", "unetr", "swin-unetr"]},
        "ablations": {"datasets": ["phantom-lesion"], "methods": ["medflowseg-backbone"]},
        "nfe_sweep": {"datasets": ["phantom-cardiac"], "method": "medflowseg"},
        "table4": {"datasets": ["phantom-lesion"],
                   "methods": ["flowseg-plain", "flowsdf", "atfm", "medsegdiff", "medflowseg", "medflowseg-backbone"]},
        "claims": {"tolerance": {"%": 1.0, "mm": 1.0, "x100": 2.0, "M params": 11.0, "GFLOPs": 79.0}},
    }


def method_sections(new_names: bool) -> dict:
    groups = "norm_groups" if new_names else "norm_num_groups"
    flowsdf_steps = "steps" if new_names else "nfe"
    ddim_steps = "steps" if new_names else "ddim_steps"
    return {
        "unet": {"model": {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 1}},
        "flowseg-plain": {"model": {"channels": [8, 16], groups: 4, "steps": 2}},
        "medflowseg": {"model": MEDFLOWSEG}, "medflowseg-backbone": {"model": MEDFLOWSEG},
        "flowsdf": {"model": {**TINY_MODEL, "rrdb_growth": 4, "delta": 4.0, flowsdf_steps: 2,
                              "noise_injection_steps": 2, "mmse_samples": 2}},
        "atfm": {"model": {"gtr_filters": [4, 8], "gtr_norm_groups": 4, "rank": 2, "mc_samples": 4, "gtr_steps": 6,
                           **TINY_MODEL, "attention_heads": 1, "attention_head_dim": 8, "steps": 2}},
        "medsegdiff": {"model": {"image_size": 64, **TINY_MODEL, "channels": [8, 16, 16], "cond_channels": [4, 8, 8],
                                 "time_embed_dim": 16, "num_timesteps": 20, ddim_steps: 3}},
        "nnunet": {"model": {"epochs": 1, "iterations_per_epoch": 3, "val_iterations": 1, "num_processes": 1},
                   "train": {"threads": 1}},
        "unetr": {"model": {"img_size": 64, "feature_size": 4, "hidden_size": 16, "mlp_dim": 32, "num_heads": 2}},
        "swin-unetr": {"model": {"feature_size": 12, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1],
                                 "window_size": 4}},
    }


def export(rev: str, out: Path) -> None:
    out.mkdir(parents=True)
    if rev == "WORKTREE":
        files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, check=True,
                               capture_output=True, text=True).stdout.split()
        for f in files:
            if (ROOT / f).is_file():
                (out / f).parent.mkdir(parents=True, exist_ok=True)
                (out / f).write_bytes((ROOT / f).read_bytes())
    else:
        tar = subprocess.run(["git", "archive", rev], cwd=ROOT, check=True, capture_output=True).stdout
        with tarfile.open(fileobj=BytesIO(tar)) as t:
            t.extractall(out, filter="data")
    for f in ("results", "paper/tables", "paper/figures"):
        (out / f).mkdir(parents=True, exist_ok=True)
    _shadow_entry_points(out)


def _shadow_entry_points(out: Path) -> None:
    """The revision's own entry points (methods, datasets), ahead of the installed package's on PYTHONPATH:
    importlib.metadata keeps the first distribution of a name it finds on sys.path."""
    import tomllib
    project = tomllib.loads((out / "pyproject.toml").read_text())["project"]
    info = out / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    groups = {**project.get("entry-points", {}), "console_scripts": project.get("scripts", {})}
    (info / "entry_points.txt").write_text("".join(
        f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()) + "\n" for group, eps in groups.items()))


def run(rev: str, out: Path, old_names: bool) -> None:
    out = out.resolve()
    export(rev, out)
    new_names = not old_names
    (out / "params.yaml").write_text(yaml.safe_dump(profile(method_sections(new_names)), sort_keys=False))
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run(git + ["init", "-q"], cwd=out, check=True)
    subprocess.run(git + ["add", "-A"], cwd=out, check=True)
    subprocess.run(git + ["commit", "-qm", "snapshot"], cwd=out, check=True)
    env = {**os.environ, "PYTHONPATH": str(out), "MLFLOW_TRACKING_URI": f"sqlite:///{out}/mlflow.db"}
    t0 = time.perf_counter()
    r = subprocess.run(["dvc", "repro"], cwd=out, env=env, capture_output=True, text=True)
    (out / "repro.log").write_text(r.stdout + r.stderr)
    print(f"dvc repro at {rev}: rc {r.returncode} in {time.perf_counter() - t0:.0f} s (log: {out}/repro.log)")
    sys.exit(r.returncode)


def _weights(path: Path) -> list[bytes]:
    import torch
    payload = torch.load(path, map_location="cpu", weights_only=True)
    return [v.detach().contiguous().numpy().tobytes() for v in payload["state_dict"].values()]


VOLATILE = {"seconds", "seconds_total", "seconds_per_case", "git_revision", "fingerprint", "model_params",
            "train", "predict", "created", "duration", "wall_seconds"}


def _numbers(obj, prefix=""):
    """Flatten a JSON record to (path, value) pairs, leaving out timings and revisions."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k not in VOLATILE:
                yield from _numbers(v, f"{prefix}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _numbers(v, f"{prefix}[{i}]")
    else:
        yield prefix, obj


def _text(path: Path) -> str:
    """A text output as compared: the NFE sweep's seconds per case (a timing) left out."""
    text = path.read_text()
    if path.name == "nfe_sweep.csv":
        return "\n".join(line.rsplit(",", 1)[0] for line in text.splitlines())
    if path.name == "nfe_sweep.md":
        return "\n".join(line.rsplit("|", 2)[0] if line.startswith("|") else line for line in text.splitlines())
    return text


def compare(a: Path, b: Path) -> int:
    diffs, checked = [], 0
    for pa in sorted(a.rglob("model.pt")):
        rel = pa.relative_to(a)
        wa, wb = _weights(pa), _weights(b / rel)
        checked += 1
        if wa != wb:
            diffs.append(f"{rel}: weights differ ({sum(x != y for x, y in zip(wa, wb))} of {len(wa)} tensors, "
                         f"{len(wa)} vs {len(wb)})")
    for pa in sorted(a.glob("runs/*/*/predictions/*.npz")):
        rel = pa.relative_to(a)
        with np.load(pa) as za, np.load(b / rel) as zb:
            checked += 1
            for k in za.files:
                if not np.array_equal(za[k], zb[k]):
                    diffs.append(f"{rel}: {k} differs")
    for pa in sorted(list(a.glob("results/**/*.json")) + list(a.glob("runs/*/*/predictions/meta.json"))
                     + list(a.glob("paper/metrics.json"))):
        rel = pa.relative_to(a)
        checked += 1
        na = dict(_numbers(json.loads(pa.read_text())))
        nb = dict(_numbers(json.loads((b / rel).read_text()))) if (b / rel).is_file() else {}
        for k in sorted(set(na) | set(nb)):
            if na.get(k) != nb.get(k) and not (isinstance(na.get(k), float) and np.isnan(na[k])
                                               and isinstance(nb.get(k), float) and np.isnan(nb[k])):
                diffs.append(f"{rel}{k}: {na.get(k)!r} vs {nb.get(k)!r}")
    for pa in sorted(list(a.glob("results/**/*.csv")) + list(a.glob("paper/tables/*"))
                     + list(a.glob("paper/claims_report.md"))):
        rel = pa.relative_to(a)
        checked += 1
        if not (b / rel).is_file():
            diffs.append(f"{rel}: missing in {b}")
        elif _text(pa) != _text(b / rel):
            diffs.append(f"{rel}: text differs")
    print("\n".join(diffs))
    print(f"{checked} outputs compared, {len(diffs)} differences")
    return 1 if diffs else 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["run"]:
        run(sys.argv[2], Path(sys.argv[3]), "--old-names" in sys.argv[4:])
    elif sys.argv[1:2] == ["compare"]:
        sys.exit(compare(Path(sys.argv[2]), Path(sys.argv[3])))
    else:
        sys.exit(__doc__)
