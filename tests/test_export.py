"""`python export.py ckpt_path=<file> [format=...]`: the file it writes computes what the
checkpoint computes, in onnxruntime or torch alone, at any batch size, and names its classes;
predict.py reads with it as with the checkpoint. The model: the tiny run's."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import draw_digit, mnist_like, run_script
from omegaconf import OmegaConf
from torch import nn

from mnist_cnn import export, predict
from mnist_cnn.classifier import load_classifier
from mnist_cnn.data import TEST_IMAGES, normalize, read_idx
from mnist_cnn.export import SUFFIXES, ExportError, from_checkpoint, load_model, write
from mnist_cnn.synthetic_photos import photo_of_number

onnxruntime = pytest.importorskip("onnxruntime")

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")]


@pytest.fixture(scope="module")
def checkpoint(finished_run, tmp_path_factory) -> Path:
    """The tiny run's best checkpoint, copied to a folder of its own: the exports land beside it."""
    folder = tmp_path_factory.mktemp("export")
    return Path(shutil.copy(finished_run[0] / "checkpoints" / "best.ckpt", folder / "best.ckpt"))


@pytest.fixture(scope="module")
def exported(checkpoint) -> dict[str, tuple[Path, subprocess.CompletedProcess]]:
    """format -> (the file, the `python export.py` process that wrote it), onnx by the default."""
    return {"onnx": (checkpoint.with_suffix(".onnx"), run_script("export.py", f"ckpt_path={checkpoint}")),
            "torchscript": (checkpoint.with_suffix(".pt"),
                            run_script("export.py", f"ckpt_path={checkpoint}", "format=torchscript"))}


@pytest.fixture(scope="module")
def tiny_test_images(tiny_data) -> torch.Tensor:
    return read_idx(tiny_data.data_dir / "MNIST" / "raw" / TEST_IMAGES)


def onnx_session(path: Path):
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def run_onnx(path: Path, pixels: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(onnx_session(path).run(None, {"pixels": pixels.numpy()})[0])


@torch.no_grad()
def run_torchscript(path: Path, pixels: torch.Tensor) -> torch.Tensor:
    return torch.jit.load(path)(pixels)


def metadata_of(format: str, path: Path) -> dict[str, str]:
    if format == "onnx":
        return onnx_session(path).get_modelmeta().custom_metadata_map
    extra_files = {"class_names": "", "preprocessing": ""}
    torch.jit.load(path, _extra_files=extra_files)
    return {name: value.decode() for name, value in extra_files.items()}


RUNNERS = {"onnx": run_onnx, "torchscript": run_torchscript}


def test_export_writes_one_file_beside_the_checkpoint_and_says_where(checkpoint, exported):
    for format, (path, result) in exported.items():
        assert result.returncode == 0, result.stderr[-3000:]
        assert result.stdout == f"{format} model: {path}\n"
        assert result.stderr == ""  # no exporter notes, no deprecation warnings
    # the weights inside the .onnx file, no .data file beside it, nothing half-written left
    assert sorted(path.name for path in checkpoint.parent.iterdir()) == ["best.ckpt", "best.onnx", "best.pt"]


@pytest.mark.parametrize("format", ["onnx", "torchscript"])
@pytest.mark.parametrize("batch_size", [1, 150])
def test_the_file_computes_the_checkpoints_logits_from_raw_pixels(format, batch_size, checkpoint, exported,
                                                                  tiny_test_images):
    pixels = tiny_test_images[:batch_size]  # uint8 (N, 28, 28), as MNIST's files hold them
    with torch.no_grad():
        expected = load_classifier(checkpoint).eval()(normalize(pixels))

    logits = RUNNERS[format](exported[format][0], pixels)

    assert logits.shape == expected.shape
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("format", ["onnx", "torchscript"])
def test_a_net_trained_with_model_compile_exports_as_the_same_function(format, checkpoint, tiny_test_images,
                                                                       tmp_path):
    saved = torch.load(checkpoint, weights_only=True)
    saved["hyper_parameters"]["model"]["compile"] = True
    compiled = tmp_path / "compiled.ckpt"
    torch.save(saved, compiled)
    path = compiled.with_suffix(SUFFIXES[format])

    write(from_checkpoint(compiled), format, path)

    with torch.no_grad():
        expected = load_classifier(checkpoint).eval()(normalize(tiny_test_images))
    torch.testing.assert_close(RUNNERS[format](path, tiny_test_images), expected, rtol=0, atol=1e-5)


def test_the_onnx_file_declares_its_input_and_refuses_pixels_that_are_not_uint8(exported, tiny_test_images):
    session = onnx_session(exported["onnx"][0])
    [pixels] = session.get_inputs()
    assert (pixels.name, pixels.type, pixels.shape) == ("pixels", "tensor(uint8)", ["batch", 28, 28])
    normalised = normalize(tiny_test_images[:4]).squeeze(1).numpy()
    with pytest.raises(Exception, match="Unexpected input data type"):
        session.run(None, {"pixels": normalised})


@pytest.mark.parametrize("format", ["onnx", "torchscript"])
def test_the_file_carries_the_class_names_and_how_an_image_is_prepared(format, checkpoint, exported):
    classifier = load_classifier(checkpoint)
    metadata = metadata_of(format, exported[format][0])
    assert json.loads(metadata["class_names"]) == classifier.class_names == [str(digit) for digit in range(10)]
    assert metadata["preprocessing"] == classifier.hparams.preprocessing == "digit"


@pytest.mark.parametrize("format", ["onnx", "torchscript"])
def test_predict_prints_with_the_exported_file_what_it_prints_with_the_checkpoint(format, checkpoint, exported,
                                                                                  tmp_path, capsys):
    draw_digit(tmp_path / "seven.png", 7)
    draw_digit(tmp_path / "one.jpg", 1, size=(64, 200))
    photo_of_number([mnist_like(digit) for digit in (2, 0, 4, 1)], np.random.default_rng(1),
                    ruled=True).image.save(tmp_path / "year.jpg")

    def printed(model_file: Path, as_json: bool) -> str:
        predict.run(OmegaConf.create({"ckpt_path": str(model_file), "inputs": str(tmp_path), "json": as_json,
                                      "figures_dir": None}))
        return capsys.readouterr().out

    assert printed(exported[format][0], as_json=False) == printed(checkpoint, as_json=False)
    records = [json.loads(line) for line in printed(exported[format][0], as_json=True).splitlines()]
    expected = [json.loads(line) for line in printed(checkpoint, as_json=True).splitlines()]
    assert len(records) == 1 + 1 + 4
    for record, wanted in zip(records, expected):  # probabilities rounded to 6 places: the last may differ
        assert [(entry["class"], entry["probability"]) for entry in record.pop("top3")] == [
            (entry["class"], pytest.approx(entry["probability"], abs=2e-6)) for entry in wanted.pop("top3")]
        assert record == wanted


@pytest.mark.parametrize("arguments, message", [
    ([], "Error: ckpt_path is missing: give it on the command line, ckpt_path=..."),
    (["ckpt_path={checkpoint}", "format=tflite"], "Error: format=tflite is not allowed: it must be one of onnx, "
                                                  "torchscript"),
    (["ckpt_path={missing}"], "error: checkpoint {missing} does not exist"),
    (["ckpt_path={text}"], "error: cannot load checkpoint {text}: it is not a checkpoint written by train.py"),
], ids=["no_checkpoint", "unknown_format", "missing_checkpoint", "text_file"])
def test_bad_input_is_one_clear_line_and_exit_code_1(arguments, message, checkpoint, tmp_path):
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint")
    names = {"checkpoint": checkpoint, "missing": tmp_path / "missing.ckpt", "text": text}
    result = run_script("export.py", *(argument.format(**names) for argument in arguments), cwd=tmp_path)
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(message.format(**names)), line
    assert not list(tmp_path.glob("*.onnx*"))


def test_without_the_export_extra_format_onnx_is_one_line_naming_it(checkpoint, tmp_path, monkeypatch):
    ckpt = Path(shutil.copy(checkpoint, tmp_path / "model.ckpt"))
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if not installed: importing it fails
    with pytest.raises(SystemExit) as stop:
        export.run(OmegaConf.create({"ckpt_path": str(ckpt), "format": "onnx"}))
    assert stop.value.code == ('error: format=onnx needs onnxscript, which is not installed: '
                               'pip install -e ".[export]"')
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model.ckpt"]


def test_reading_an_onnx_file_without_onnxruntime_is_one_line_naming_the_extra(exported, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ExportError, match=re.escape('needs onnxruntime, which is not installed: '
                                                    'pip install -e ".[export]"')):
        load_model(exported["onnx"][0])


def write_untagged_torchscript(path: Path) -> None:
    """A TorchScript file that export.py did not write: no class names with it."""
    with pytest.warns(FutureWarning):  # torch.jit is deprecated
        torch.jit.save(torch.jit.trace(nn.Flatten(), torch.zeros(2, 28, 28)), str(path))


@pytest.mark.parametrize("name, make, message", [
    ("missing.onnx", lambda path: None, "model file {path} does not exist"),
    ("notes.onnx", lambda path: path.write_text("not a model"),
     "cannot load {path}: it is not an ONNX file written by export.py (InvalidProtobuf)"),
    ("notes.pt", lambda path: path.write_text("not a model"),
     "cannot load {path}: it is not a TorchScript file written by export.py"),
    ("flatten.pt", write_untagged_torchscript, "{path} carries no class names or preprocessing in its metadata"),
], ids=["missing", "text_as_onnx", "text_as_torchscript", "torchscript_of_another_origin"])
def test_a_model_file_predict_cannot_use_is_one_clear_error(name, make, message, tmp_path):
    path = tmp_path / name
    make(path)
    with pytest.raises(ExportError) as error:
        load_model(path)
    assert str(error.value).startswith(message.format(path=path)), error.value


def test_the_export_benchmark_times_each_path_at_each_batch_size(checkpoint):
    result = run_script("scripts/benchmark_export.py", str(checkpoint), "--rounds", "1", "--seconds", "0.05",
                        "--batch-sizes", "1", "8")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line.strip(" |").split(" | ") for line in result.stdout.splitlines() if re.match(r"\| \d", line)]
    assert [(row[0], row[1]) for row in rows] == [(size, path) for size in ("1", "8")
                                                  for path in ("torch", "TorchScript", "onnxruntime")]
    assert all(float(row[3].replace(",", "")) > 0 for row in rows)
