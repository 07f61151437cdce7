"""The export entry point: a checkpoint's model as one file that runs without this project,
`python export.py ckpt_path=<file> [format=onnx|torchscript]`, and how predict.py reads it back.

The file goes beside the checkpoint (best.ckpt -> best.onnx for onnxruntime, best.pt for
torch.jit.load). It takes what MNIST's files hold and predict.py's reading of an image gives:
uint8 pixels 0-255 of shape (N, 28, 28), any N, ink bright on dark. It applies the training's
normalisation itself and returns (N, classes) logits. Its metadata holds the class names and
how an image file is prepared for it, so predict.py takes it in place of the checkpoint."""

import importlib
import json
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

from mnist_cnn.classifier import CheckpointError, load_classifier
from mnist_cnn.data import normalize
from mnist_cnn.model import IMAGE_SIZE

SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt"}  # by format
INPUT, OUTPUT = "pixels", "logits"  # the names in the ONNX graph
INPUT_CONTRACT = ("pixels: uint8 (N, 28, 28), 0-255, ink bright on dark as in MNIST's files; "
                  "logits: float32 (N, classes), in the order of class_names")
EXPORT_EXTRA = 'pip install -e ".[export]"'
# torch 2.14 calls every torch.jit function deprecated; format=torchscript asks for it by name.
JIT_DEPRECATED = r"`torch\.jit\.\w+` is deprecated"


class ExportError(RuntimeError):
    """A model file that cannot be written or read; the message names the file and the fix."""


class PixelsToLogits(nn.Module):
    """The net behind the normalisation it was trained with, so that its input cannot be
    normalised twice, or not at all: uint8 (N, 28, 28) pixels 0-255 -> (N, classes) logits."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.net(normalize(pixels))


@dataclass(frozen=True)
class PixelModel:
    """A trained model as predict.py uses it, from a checkpoint or from a file export.py wrote."""
    logits: Callable[[torch.Tensor], torch.Tensor]  # uint8 (N, 28, 28) pixels -> (N, classes) logits
    class_names: list[str]
    preprocessing: str  # how an image file becomes 28x28 items: mnist_cnn.digit_images.read_image

    @torch.no_grad()
    def probabilities(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.logits(pixels).softmax(dim=1)

    def metadata(self) -> dict[str, str]:
        """What an exported file carries besides the net, as text."""
        return {"class_names": json.dumps(self.class_names), "preprocessing": self.preprocessing,
                "input": INPUT_CONTRACT}


def from_checkpoint(ckpt_path: str | Path) -> PixelModel:
    """The model a checkpoint holds, as PixelsToLogits; a CheckpointError when it holds none."""
    classifier = load_classifier(ckpt_path)
    # Rebuilt uncompiled (model.compile changes how the net runs, not what it computes):
    # torch.jit.trace refuses a compiled net, and predict.py would wait for a compilation.
    net = instantiate({**classifier.hparams.model, "compile": False})
    net.load_state_dict(classifier.net.state_dict())
    return PixelModel(PixelsToLogits(net).eval(), classifier.class_names, classifier.hparams.preprocessing)


def write(model: PixelModel, format: str, path: Path) -> None:
    """`model` (from a checkpoint) as a `format` file at `path`. Written aside and renamed: an
    export that fails leaves no half-written file for predict.py to trip on."""
    partial = path.with_name(path.name + ".partial")
    example = torch.zeros(2, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.uint8)  # traced with it; any batch size runs
    try:
        with torch.no_grad():
            if format == "onnx":
                _write_onnx(model, example, partial)
            else:
                _write_torchscript(model, example, partial)
        partial.replace(path)
    except OSError as error:
        raise ExportError(f"cannot write {path} ({error.strerror}): export a checkpoint in a folder you can "
                          "write to") from None
    finally:
        partial.unlink(missing_ok=True)


def _write_onnx(model: PixelModel, example: torch.Tensor, path: Path) -> None:
    _require("onnxscript", "format=onnx")
    # torch.export's exporter (dynamo=True, torch's default): the TorchScript-based one is
    # deprecated and warns that it will be removed. The batch dimension is declared dynamic: a
    # symbol in the graph, not the example's 2.
    program = torch.onnx.export(model.logits, (example,), dynamo=True, input_names=[INPUT], output_names=[OUTPUT],
                                dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False)
    program.model.metadata_props.update(model.metadata())
    program.save(path, external_data=False)  # one file: the weights inside, not in a .data file beside it


def _write_torchscript(model: PixelModel, example: torch.Tensor, path: Path) -> None:
    # Traced, not scripted: torch.jit.script cannot type CNN's memory_format attribute. The net
    # never branches on the batch size, so the trace serves every batch size.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=JIT_DEPRECATED, category=FutureWarning)
        torch.jit.save(torch.jit.trace(model.logits, example), str(path), _extra_files=model.metadata())


def load_model(path: str | Path) -> PixelModel:
    """The model in a checkpoint, or in a file export.py wrote (told apart by its suffix)."""
    path = Path(path)
    if path.suffix not in SUFFIXES.values():
        return from_checkpoint(path)
    if not path.is_file():
        raise ExportError(f"model file {path} does not exist: give the path of a checkpoint or of a file "
                          "export.py wrote, e.g. ckpt_path=logs/runs/<run>/checkpoints/best.onnx")
    return _read_onnx(path) if path.suffix == SUFFIXES["onnx"] else _read_torchscript(path)


def _read_onnx(path: Path) -> PixelModel:
    onnxruntime = _require("onnxruntime", f"reading {path}")
    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime reports a file it cannot load in several exception types
        raise ExportError(f"cannot load {path}: it is not an ONNX file written by export.py "
                          f"({type(error).__name__})") from None

    def logits(pixels: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run([OUTPUT], {INPUT: pixels.contiguous().numpy()})[0])

    return _with_metadata(logits, session.get_modelmeta().custom_metadata_map, path)


def _read_torchscript(path: Path) -> PixelModel:
    extra_files = {"class_names": "", "preprocessing": ""}  # torch.jit.load fills in their bytes
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=JIT_DEPRECATED, category=FutureWarning)
            module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra_files)
    except Exception as error:  # not a TorchScript archive: torch says so in several exception types
        raise ExportError(f"cannot load {path}: it is not a TorchScript file written by export.py "
                          f"({type(error).__name__})") from None
    return _with_metadata(module.eval(), {name: value.decode() for name, value in extra_files.items()}, path)


def _with_metadata(logits: Callable[[torch.Tensor], torch.Tensor], metadata: dict[str, str], path: Path
                   ) -> PixelModel:
    if not metadata.get("class_names") or not metadata.get("preprocessing"):
        raise ExportError(f"{path} carries no class names or preprocessing in its metadata: export the "
                          "checkpoint again with python export.py")
    return PixelModel(logits, json.loads(metadata["class_names"]), metadata["preprocessing"])


def _require(module: str, purpose: str) -> ModuleType:
    """The optional module, or one line naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ExportError(f"{purpose} needs {module}, which is not installed: {EXPORT_EXTRA}") from None


def run(cfg: DictConfig) -> None:
    path = Path(cfg.ckpt_path).with_suffix(SUFFIXES[cfg.format])
    try:
        write(from_checkpoint(cfg.ckpt_path), cfg.format, path)
    except (CheckpointError, ExportError) as error:
        sys.exit(f"error: {error}")
    print(f"{cfg.format} model: {path}")
