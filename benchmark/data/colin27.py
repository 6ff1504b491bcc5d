"""Colin27 T1 MRI with the AAL parcellation, from Debian's ``mricron-data``.

The only real-image source that needs no registration or licence click-through:
``mricron-data`` (Debian main) ships ``ch2.nii.gz`` (Colin27: the average of 27
T1 scans of ONE person) and ``aal.nii.gz`` (the 116-region manual AAL
parcellation drawn on it), both on the same 181 x 217 x 181, 1 mm grid, plus
the region names in ``aal.nii.txt`` (lines ``"<id> <Name> <code>"``, CRLF).

Pipeline (:func:`load`): reorient both volumes to LPS, take AXIAL slices,
keep the slices carrying labels, crop all of them with one square box around
the labelled brain, resize to ``size x size``, and cut consecutive slices
into blocks of ``block`` slices with ``gap`` slices left out between blocks.
Every block is one :class:`Case` and its own pseudo-subject; all blocks come
from the same person, so results show real-image behaviour but support no
generalisation claim (see ``INFO.note``).

Slice orientation (after reorienting to LPS): array ``(z, y, x)`` with ``z``
inferior -> superior, rows anterior -> posterior (anterior is UP when plotted
with ``imshow``), columns patient right -> left (radiological convention:
the patient's left is on the image's right).

AAL leaves white matter, CSF, brainstem and everything outside the brain
unlabelled, so ``background`` includes them: the task is lobar parcellation of
grey matter, not tissue segmentation.

Coarse classes (:data:`COARSE_CLASSES`), matched on AAL region names with the
``_L``/``_R`` suffix stripped (full regex match; every name must match exactly
one class, else ``ValueError``):

===  ================  ==========================================================
id   class             AAL regions
===  ================  ==========================================================
0    background        unlabelled voxels
1    frontal           Frontal_* (Sup, Sup_Orb, Mid, Mid_Orb, Inf_Oper/Tri/Orb,
                       Sup_Medial, Med_Orb), Supp_Motor_Area, Rectus, Olfactory,
                       Cingulum_Ant, Cingulum_Mid
2    parietal_central  Precentral, Postcentral, Rolandic_Oper, Paracentral_Lobule,
                       Parietal_Sup, Parietal_Inf, SupraMarginal, Angular,
                       Precuneus, Cingulum_Post
3    temporal          Temporal_* (Sup, Pole_Sup, Mid, Pole_Mid, Inf), Heschl,
                       Insula, Hippocampus, ParaHippocampal, Amygdala, Fusiform
4    occipital         Occipital_* (Sup, Mid, Inf), Calcarine, Cuneus, Lingual
5    subcortical       Caudate, Putamen, Pallidum, Thalamus
6    cerebellum        Cerebelum_* (AAL's spelling; Crus1 .. 10), Vermis_*
===  ================  ==========================================================

Judgement calls, chosen so each class stays one spatially compact territory:
Olfactory sits on the orbitofrontal surface (AAL's own code puts it with the
frontal group, 25xx). Rolandic_Oper is the central operculum, the inferior end
of the pre/postcentral gyri, so it joins them. Cingulate: the anterior and
middle parts lie under the medial frontal gyrus and SMA (Cingulum_Mid's
centroid, y = -15 mm MNI, is anterior to the paracentral lobule's, -25 mm),
the posterior part borders the precuneus. Insula: buried in the Sylvian
fissure at the axial levels of Heschl's gyrus and the superior temporal
gyrus, so temporal (it borders the frontal operculum too; any choice is a
convention). Hippocampus, parahippocampal gyrus and amygdala form the mesial
temporal lobe. Fusiform: AAL codes it occipital (5401), but its centroid lies
at y = -40 mm MNI, beside Temporal_Inf (-28 mm) and far from Occipital_Inf
(-78 mm), so temporal. Lingual (medial occipital, below the calcarine) is
occipital.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from benchmark.config import DataConfig
from benchmark.data.case import Case, DatasetInfo
from benchmark.data.imaging import nearest_index, resize_matrix
from benchmark.data.interface import DataFormatError, DataUnavailable
from benchmark.data.manifest import file_sha256
from benchmark.data.store import json_text, staged_folder
from benchmark.errors import SegbenchError

__all__ = ["INFO", "COARSE_CLASSES", "FetchError", "Colin27Source", "fetch", "load", "split",
           "parse_region_names", "coarse_mapping"]

PACKAGE = "mricron-data"
SYSTEM_DIR = Path("/usr/share/mricron/templates")  # where `apt-get install mricron-data` puts the files
PACKAGE_DIR = "usr/share/mricron/templates"         # the same folder inside the .deb
FILES = ("ch2.nii.gz", "aal.nii.gz", "aal.nii.txt")
APT_TIMEOUT_S = 600
MARGIN = 2  # voxels added around the labelled brain's bounding box

COARSE_CLASSES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("frontal", (r"Frontal_.*", r"Supp_Motor_Area", r"Rectus", r"Olfactory",
                 r"Cingulum_Ant", r"Cingulum_Mid")),
    ("parietal_central", (r"Precentral", r"Postcentral", r"Rolandic_Oper", r"Paracentral_Lobule",
                          r"Parietal_Sup", r"Parietal_Inf", r"SupraMarginal", r"Angular",
                          r"Precuneus", r"Cingulum_Post")),
    ("temporal", (r"Temporal_.*", r"Heschl", r"Insula", r"Hippocampus", r"ParaHippocampal",
                  r"Amygdala", r"Fusiform")),
    ("occipital", (r"Occipital_.*", r"Calcarine", r"Cuneus", r"Lingual")),
    ("subcortical", (r"Caudate", r"Putamen", r"Pallidum", r"Thalamus")),
    ("cerebellum", (r"Cerebelum_.*", r"Vermis_.*")),
)
"""``(class name, regexes on the side-stripped AAL name)``; class id = position + 1."""

INFO = DatasetInfo(
    name="colin27",
    modality="MRI",
    channels=1,
    class_names=("background",) + tuple(name for name, _ in COARSE_CLASSES),
    n_annotators=1,
    stands_for="real MRI with manual labels (one subject)",
    phantom=False,
    note=("Colin27 + AAL: ONE subject (Colin27 T1, AAL parcellation merged to 6 lobar classes); "
          "axial slices cut into blocks with gaps, each block a pseudo-subject. Shows real-image "
          "behaviour; supports no claim of generalisation across subjects."),
)


class FetchError(SegbenchError, RuntimeError):
    """The Colin27/AAL files could not be obtained; the message says what was tried."""


# --------------------------------------------------------------------------- fetch

def fetch(dest: Path) -> dict:
    """Put ``ch2.nii.gz``, ``aal.nii.gz``, ``aal.nii.txt`` and ``provenance.json`` in ``dest``.

    Tries, in order: (1) copy from :data:`SYSTEM_DIR` (package installed);
    (2) ``apt-get download mricron-data`` + ``dpkg-deb -x`` in a temp folder;
    (3) if that failed for lack of package lists and we are root,
    ``apt-get update -qq`` once and download again. The folder is built aside
    and swapped in only when complete (:func:`~benchmark.data.store.staged_folder`;
    the download and unpacking happen in a scratch folder inside the folder being built); a complete
    ``dest`` is returned as is. Returns the provenance: method, source, package
    version, sha256 of each file. Raises :class:`FetchError` when every route fails.
    """
    dest = Path(dest)
    if (dest / "provenance.json").is_file() and all((dest / f).is_file() for f in FILES):
        return json.loads((dest / "provenance.json").read_text())
    with staged_folder(dest) as out:
        # scratch space inside the staged folder: a killed fetch leaves it where the next write's clean-up of
        # dead temporaries removes it with the folder
        work = out / ".work"
        work.mkdir()
        tried: list[str] = []
        prov = _from_system(out, tried) or _from_apt(out, work, tried)
        shutil.rmtree(work)
        if prov is None:
            raise FetchError(_help(dest, tried))
        prov["sha256"] = {f: file_sha256(out / f) for f in FILES}
        prov["fetched_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        (out / "provenance.json").write_text(json_text(prov, indent=2) + "\n")
    return prov


def _from_system(out: Path, tried: list[str]) -> dict | None:
    missing = [f for f in FILES if not (SYSTEM_DIR / f).is_file()]
    if missing:
        tried.append(f"copy from {SYSTEM_DIR}: not there ({', '.join(missing)} missing; "
                     f"package {PACKAGE} not installed)")
        return None
    for f in FILES:
        shutil.copyfile(SYSTEM_DIR / f, out / f)
    rc, text = _run(["dpkg-query", "-W", "-f=${Version}", PACKAGE]) if shutil.which("dpkg-query") else (1, "")
    return {"method": "copy", "source": str(SYSTEM_DIR), "package": PACKAGE,
            "version": text.strip() if rc == 0 else None}


def _from_apt(out: Path, work: Path, tried: list[str]) -> dict | None:
    apt, dpkg_deb = shutil.which("apt-get"), shutil.which("dpkg-deb")
    if apt is None or dpkg_deb is None:
        tried.append("apt-get download: " + " and ".join(
            f"{tool} not found on PATH" for tool, p in (("apt-get", apt), ("dpkg-deb", dpkg_deb)) if p is None))
        return None
    rc, text = _run([apt, "download", PACKAGE], cwd=work)
    if rc != 0 and os.geteuid() == 0 and _lists_missing(text):
        tried.append(f"`apt-get download {PACKAGE}` failed (no package lists): {_last_line(text)}")
        rc_u, text_u = _run([apt, "update", "-qq"])
        if rc_u != 0:
            tried.append(f"`apt-get update -qq` failed ({_rc(rc_u)}): {_last_line(text_u)}")
            return None
        rc, text = _run([apt, "download", PACKAGE], cwd=work)
    debs = sorted(work.glob(f"{PACKAGE}_*.deb"))
    if rc != 0 or not debs:
        hint = " (no package lists, and not root: run `apt-get update` as root)" \
            if rc != 0 and os.geteuid() != 0 and _lists_missing(text) else ""
        tried.append(f"`apt-get download {PACKAGE}` failed ({_rc(rc)}){hint}: {_last_line(text)}")
        return None
    deb = debs[-1]
    rc_v, version = _run([dpkg_deb, "-f", str(deb), "Version"])
    rc_x, text_x = _run([dpkg_deb, "-x", str(deb), str(work / "x")])
    src = work / "x" / PACKAGE_DIR
    missing = [f for f in FILES if not (src / f).is_file()]
    if rc_x != 0 or missing:
        tried.append(f"`dpkg-deb -x {deb.name}` ({_rc(rc_x)}): {_last_line(text_x)}; missing {missing}")
        return None
    for f in FILES:
        shutil.copyfile(src / f, out / f)
    return {"method": "apt-get download", "source": deb.name, "package": PACKAGE,
            "version": version.strip() if rc_v == 0 else None}


def _run(cmd: list[str], cwd: Path | None = None) -> tuple[int | None, str]:
    """Run ``cmd``; return (exit code or None on timeout, stdout+stderr)."""
    try:
        r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=APT_TIMEOUT_S,
                           env={**os.environ, "LC_ALL": "C"})
    except subprocess.TimeoutExpired:
        return None, f"timed out after {APT_TIMEOUT_S} s"
    except OSError as e:
        return 127, str(e)
    return r.returncode, r.stdout + r.stderr


def _lists_missing(text: str) -> bool:
    no_lists = not any(Path("/var/lib/apt/lists").glob("*_Packages*"))
    return no_lists or "Unable to locate package" in text or "has no installation candidate" in text


def _rc(rc: int | None) -> str:
    return "timed out" if rc is None else f"exit {rc}"


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else "(no output)"


def _help(dest: Path, tried: list[str]) -> str:
    steps = "\n".join(f"  {i}. {t}" for i, t in enumerate(tried, 1))
    return (f"could not obtain Colin27/AAL (Debian package {PACKAGE}). Tried:\n{steps}\n"
            f"To get it by hand, either `apt-get install {PACKAGE}` (as root; fetch() then copies "
            f"from {SYSTEM_DIR}), or `apt-get download {PACKAGE} && dpkg -x {PACKAGE}_*.deb <dir>` "
            f"and copy {', '.join(FILES)} from <dir>/{PACKAGE_DIR} into {dest}.")


# --------------------------------------------------------------------------- class mapping

def parse_region_names(text: str) -> dict[int, str]:
    """Parse ``aal.nii.txt``: lines ``"<id> <Name> [code]"`` (CRLF allowed, blanks skipped)."""
    names: dict[int, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 2 or not parts[0].isdigit():
            raise DataFormatError(f"aal.nii.txt line {n}: expected '<id> <Name> [code]', got {line!r}")
        if int(parts[0]) in names:
            raise DataFormatError(f"aal.nii.txt line {n}: duplicate id {parts[0]}")
        names[int(parts[0])] = parts[1]
    if not names:
        raise DataFormatError("aal.nii.txt: no regions")
    return names


def coarse_mapping(names: dict[int, str] | str) -> dict[int, int]:
    """AAL id -> coarse class id (1..6) from region names; ``ValueError`` if a name is unmatched.

    ``names`` is the parsed table or the text of ``aal.nii.txt``.
    """
    if isinstance(names, str):
        names = parse_region_names(names)
    mapping, bad = {}, []
    for rid, name in names.items():
        base = re.sub(r"_[LR]$", "", name)
        hits = [k + 1 for k, (_, pats) in enumerate(COARSE_CLASSES)
                if any(re.fullmatch(p, base) for p in pats)]
        if len(hits) != 1:
            bad.append(f"{rid} {name} ({'no class' if not hits else 'classes %s' % hits})")
        else:
            mapping[rid] = hits[0]
    if bad:
        raise DataFormatError("AAL regions not matched to exactly one coarse class: " + "; ".join(bad))
    return mapping


# --------------------------------------------------------------------------- load

def load(src: Path, size: int, block: int = 8, gap: int = 4) -> list[Case]:
    """Blocks of axial slices from the files :func:`fetch` put in ``src``.

    Returns one :class:`Case` per block, in inferior -> superior order:
    ``image`` float32 ``(block, 1, size, size)``, raw intensities (no
    normalisation); ``label`` uint8 ``(1, block, size, size)`` with coarse
    class ids; ``spacing`` ``(z, y, x)`` mm = ``(sz, sy * side / size,
    sx * side / size)`` where ``side`` is the square crop in voxels;
    ``case_id = subject_id = f"colin27-block{k:02d}"`` (every block is a
    pseudo-subject of the same person); ``extra["slices"]`` the source axial
    slice indices (LPS ``z`` index, inferior -> superior), ``extra["crop"]``
    ``(row0, col0, side)``. A block is ``block`` consecutive labelled slices;
    ``gap`` slices are left out after each block, so no two blocks are
    neighbours. A trailing partial block is dropped.
    """
    if size < 1 or block < 1 or gap < 0:
        raise ValueError(f"need size >= 1, block >= 1, gap >= 0; got {size}, {block}, {gap}")
    src = Path(src)
    img = sitk.ReadImage(str(src / "ch2.nii.gz"))
    lab = sitk.ReadImage(str(src / "aal.nii.gz"))
    _check_same_grid(img, lab)
    img, lab = sitk.DICOMOrient(img, "LPS"), sitk.DICOMOrient(lab, "LPS")
    sx, sy, sz = img.GetSpacing()                      # SimpleITK gives (x, y, z)
    vol = sitk.GetArrayFromImage(img).astype(np.float32)  # (z, y, x): z I->S, y A->P, x R->L
    ids = sitk.GetArrayFromImage(lab).astype(np.int64)
    if vol.ndim != 3:
        raise DataFormatError(f"expected a scalar 3D image, got array shape {vol.shape}")

    mapping = coarse_mapping((src / "aal.nii.txt").read_text())
    unknown = sorted(set(np.unique(ids).tolist()) - set(mapping) - {0})
    if unknown:
        raise DataFormatError(f"label ids without a name in aal.nii.txt: {unknown[:10]}")
    lut = np.zeros(max(max(mapping), int(ids.max())) + 1, dtype=np.uint8)
    for rid, cls in mapping.items():
        lut[rid] = cls
    coarse = lut[ids]

    labelled = coarse.reshape(coarse.shape[0], -1).any(axis=1)
    blocks = _blocks(labelled, block, gap)
    if not blocks:
        raise DataFormatError(f"no run of {block} consecutive labelled axial slices")

    rows = np.flatnonzero(coarse.any(axis=(0, 2)))
    cols = np.flatnonzero(coarse.any(axis=(0, 1)))
    side = max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 + 2 * MARGIN
    r0 = (rows[0] + rows[-1] + 1 - side) // 2
    c0 = (cols[0] + cols[-1] + 1 - side) // 2
    a_row, a_col = resize_matrix(side, size), resize_matrix(side, size)
    near = nearest_index(side, size)
    fill = float(vol.min())

    cases = []
    for k, zs in enumerate(blocks):
        im = _crop(vol[zs], r0, c0, side, fill)
        lb = _crop(coarse[zs], r0, c0, side, 0)
        im = (a_row @ im @ a_col.T).astype(np.float32)
        lb = lb[:, near][:, :, near]
        cid = f"colin27-block{k:02d}"
        cases.append(Case(case_id=cid, subject_id=cid,
                          image=np.ascontiguousarray(im[:, None]),
                          label=np.ascontiguousarray(lb[None], dtype=np.uint8),
                          spacing=(float(sz), float(sy * side / size), float(sx * side / size)),
                          extra={"slices": tuple(int(z) for z in zs), "crop": (int(r0), int(c0), int(side))}))
    return cases


def _check_same_grid(a: sitk.Image, b: sitk.Image) -> None:
    checks = {"size": (a.GetSize(), b.GetSize()), "spacing": (a.GetSpacing(), b.GetSpacing()),
              "origin": (a.GetOrigin(), b.GetOrigin()), "direction": (a.GetDirection(), b.GetDirection())}
    for what, (u, v) in checks.items():
        if len(u) != len(v) or not np.allclose(u, v, atol=1e-4):
            raise DataFormatError(f"ch2 and aal are not on the same grid: {what} {u} vs {v}")


def _blocks(labelled: np.ndarray, block: int, gap: int) -> list[list[int]]:
    """Runs of ``block`` consecutive labelled indices, ``gap`` indices skipped after each."""
    out, z, n = [], 0, len(labelled)
    while z + block <= n:
        if labelled[z:z + block].all():
            out.append(list(range(z, z + block)))
            z += block + gap
        else:
            z += 1
    return out


def _crop(a: np.ndarray, r0: int, c0: int, side: int, fill) -> np.ndarray:
    """``a[:, r0:r0+side, c0:c0+side]`` of a ``(Z, H, W)`` stack, padding with ``fill`` outside."""
    _, h, w = a.shape
    pad = ((0, 0), (max(0, -r0), max(0, r0 + side - h)), (max(0, -c0), max(0, c0 + side - w)))
    a = np.pad(a, pad, constant_values=fill)
    r, c = r0 + pad[1][0], c0 + pad[2][0]
    return a[:, r:r + side, c:c + side]


# --------------------------------------------------------------------------- split

def split(cases: list[Case], seed: int) -> dict[str, str]:
    """``subject_id -> "train" | "val" | "test"``, spread along the inferior-superior axis.

    Blocks are ordered by their first source slice (``extra["slices"]``, else
    list order). ``n_test = round(0.25 n)`` test blocks: the ordered blocks are
    cut into ``n_test`` contiguous strata and one block is drawn from each, so
    the test set covers every brain level. ``n_val = round(0.15 n)`` val blocks
    are drawn the same way from the rest; the others train (~60/15/25, each
    split at least one block). Deterministic in ``seed``. Needs >= 3 subjects.
    """
    order = sorted(range(len(cases)), key=lambda i: (cases[i].extra.get("slices", (i,))[0], i))
    subjects = list(dict.fromkeys(cases[i].subject_id for i in order))
    n = len(subjects)
    if n < 3:
        raise DataFormatError(f"need at least 3 blocks to split, got {n}")
    n_test = max(1, round(0.25 * n))
    n_val = max(1, min(round(0.15 * n), n - n_test - 1))
    rng = np.random.default_rng(seed)
    test = _stratified_pick(subjects, n_test, rng)
    rest = [s for s in subjects if s not in test]
    val = _stratified_pick(rest, n_val, rng)
    return {s: "test" if s in test else "val" if s in val else "train" for s in subjects}


def _stratified_pick(items: list[str], k: int, rng: np.random.Generator) -> set[str]:
    """One item drawn from each of ``k`` contiguous, near-equal strata of ``items``."""
    return {str(stratum[rng.integers(len(stratum))]) for stratum in np.array_split(np.array(items), k)}


# --------------------------------------------------------------------------- registration

class Colin27Source:
    """Colin27 as a dataset (the ``segbench.datasets`` entry point names this class): a machine
    that cannot obtain the package gets :class:`~benchmark.data.interface.DataUnavailable`, so
    the dataset is marked "not run" rather than stopping the pipeline."""

    info = INFO

    def fetch(self, dest: Path, cfg: DataConfig) -> dict:
        try:
            return fetch(dest)
        except FetchError as e:
            raise DataUnavailable(str(e)) from e

    def load(self, src: Path, cfg: DataConfig) -> list[Case]:
        return load(src, cfg.size)

    def split(self, cases: list[Case], cfg: DataConfig) -> dict[str, str]:
        return split(cases, cfg.seed)
