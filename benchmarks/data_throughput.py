"""Print how long fetch (download, checksum, extraction) and preprocess (conversion at the profile's size)
take per GB of archive, on synthetic archives in two real datasets' native layouts.

    python benchmarks/data_throughput.py [--acdc-patients 20] [--glas-images 120] [--size 256]

The archives are built here, then served from a local HTTP server on 127.0.0.1, so the download figure is
this machine's disk and CPU (SHA-256, write), not a network: a real download adds the link's time. The
converters are the real ones (:mod:`benchmark.data.real.acdc`, :mod:`benchmark.data.real.glas`):

- ACDC layout: NIfTI, per patient the 4D cine sequence (20 frames) and the ED/ES frames with their label
  maps, 10 slices of 256 x 216 (ACDC's typical matrix), int16 noise with labelled blocks. Noise
  compresses worse than MR images do, so the archive is larger per patient than the real one.
- GlaS layout: BMP images of 775 x 522 RGB with their instance maps, as the Warwick release.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmark.config import DataConfig  # noqa: E402
from benchmark.data.preprocess import preprocess  # noqa: E402
from benchmark.data.real import acdc, glas  # noqa: E402
from benchmark.data.sources import fetch  # noqa: E402
from tests.data.real.conftest import Server  # noqa: E402
from tests.data.real.helpers import fixture_source  # noqa: E402
from tests.data.real.test_acdc import make_acdc_zip  # noqa: E402


def glas_zip(path: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    folder = "Warwick QU Dataset (Released 2016_07_08)"
    rows = ["Name,Patient ID,Grade (GlaS),Grade (Sirinukunwattana et al. 2015)"]
    with zipfile.ZipFile(path, "w") as z, tempfile.TemporaryDirectory() as tmp:
        for i in range(n):
            name = f"train_{i + 1}" if i < 0.6 * n else f"testA_{i + 1}"
            inst = np.zeros((522, 775), np.uint8)
            inst[100:300, 100:400] = 1
            inst[350:500, 450:700] = 2
            rgb = rng.integers(0, 255, (522, 775, 3), dtype=np.uint8)
            for arr, suffix in ((rgb, ""), (inst, "_anno")):
                f = Path(tmp) / f"{name}{suffix}.bmp"
                Image.fromarray(arr).save(f)
                z.write(f, f"{folder}/{name}{suffix}.bmp")
            rows.append(f"{name},{i % 16 if i < 0.6 * n else 16 + i % 4},benign,adenomatosis")
        z.writestr(f"{folder}/Grade.csv", "\n".join(rows) + "\n")


def measure(module, archive: Path, work: Path, server: Server, cfg: DataConfig) -> None:
    gb = archive.stat().st_size / 1e9
    source = fixture_source(module, {archive.name: archive}, server, work)
    t0 = time.perf_counter()
    fetch(module.INFO.name, work / "fetched", cfg, source=source)
    t1 = time.perf_counter()
    manifest = preprocess(module.INFO.name, work / "fetched", work / "processed", cfg, source=source)
    t2 = time.perf_counter()
    out_gb = sum(p.stat().st_size for p in (work / "processed").rglob("*") if p.is_file()) / 1e9
    print(f"{module.INFO.name:6s} archive {gb:.2f} GB, {len(manifest.cases)} cases: fetch {t1 - t0:.1f} s "
          f"({(t1 - t0) / gb:.0f} s/GB), preprocess at {cfg.size} px {t2 - t1:.1f} s ({(t2 - t1) / gb:.0f} s/GB); "
          f"processed {out_gb:.2f} GB", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--acdc-patients", type=int, default=20)
    ap.add_argument("--glas-images", type=int, default=120)
    ap.add_argument("--size", type=int, default=256)
    args = ap.parse_args()
    cfg = DataConfig(size=args.size, split={"train": 0.7, "val": 0.1, "test": 0.2})
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        server = Server(tmp / "served")
        server.root.mkdir()
        server.thread.start()
        try:
            n = args.acdc_patients
            patients = {f"patient{i + 1:03d}": ("training" if i < 0.7 * n else "testing", (10, 256, 216),
                                                (1.4, 1.4, 10.0), 1, 12) for i in range(n)}
            t = time.perf_counter()
            make_acdc_zip(tmp / "database.zip", patients=patients)
            print(f"(built the ACDC-layout archive in {time.perf_counter() - t:.0f} s)", flush=True)
            measure(acdc, tmp / "database.zip", tmp / "acdc", server, cfg)
            shutil.rmtree(tmp / "acdc")
            t = time.perf_counter()
            glas_zip(tmp / glas.FILES[0].name, args.glas_images)
            print(f"(built the GlaS-layout archive in {time.perf_counter() - t:.0f} s)", flush=True)
            measure(glas, tmp / glas.FILES[0].name, tmp / "glas", server, cfg)
        finally:
            server.httpd.shutdown()


if __name__ == "__main__":
    main()
