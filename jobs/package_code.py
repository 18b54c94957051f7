"""Zip the project's Python packages for spark-submit's --py-files (executors import transforms/, models/, ...).

    python -m jobs.package_code --out dist/recsys-code.zip
    spark-submit --master spark://host:7077 --py-files dist/recsys-code.zip jobs/ingest.py ...

Not needed on Kubernetes: the batch image has the project installed.
"""
from __future__ import annotations

import argparse
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("jobs", "flow", "lake", "transforms", "models", "validation", "serving")


def build_zip(out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for package in PACKAGES:
            for path in sorted((REPO / package).rglob("*.py")):
                zf.write(path, path.relative_to(REPO).as_posix())
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="dist/recsys-code.zip")
    args = parser.parse_args(argv)
    print(build_zip(Path(args.out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
