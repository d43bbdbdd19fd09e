"""core.intake.upload: every format loads to the same function, copies, re-inits, IO checks."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from core.errors import ModelDatasetMismatchError, UnsupportedModelError
from core.intake.upload import check_model_io, load_model
from core.intake.zoo import ZOO, build_zoo_model

SHAPE = (1, 8, 8)
CLASSES = 10


def _reference() -> nn.Module:
    torch.manual_seed(0)
    return build_zoo_model("papernot_mnist", num_classes=CLASSES, input_shape=SHAPE).eval()


def _with_batchnorm() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Flatten(),
        nn.Linear(4 * 8 * 8, CLASSES),
    )
    model.train()
    model(torch.rand(16, *SHAPE))  # non-trivial running statistics
    return model.eval()


def _save(kind: str, model: nn.Module, path: Path) -> Path:
    sample = torch.rand(4, *SHAPE)
    if kind == "torchscript":
        torch.jit.save(torch.jit.script(model), str(path))
    elif kind == "torch_export":
        batch = torch.export.Dim("batch")
        program = torch.export.export(model, (sample,), dynamic_shapes=({0: batch},))
        torch.export.save(program, str(path))
    elif kind == "torch_export_static":
        torch.export.save(torch.export.export(model, (sample,)), str(path))
    elif kind == "onnx":
        torch.onnx.export(
            model,
            (sample,),
            str(path),
            dynamo=True,  # opset 18+, allowzero Reshape: exercises the downgrade path
            external_data=False,
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            verbose=False,
        )
    elif kind == "safetensors":
        from safetensors.torch import save_file

        save_file(model.state_dict(), str(path))
    return path


KINDS = ["torchscript", "torch_export", "torch_export_static", "onnx", "safetensors"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("models")
    model = _reference()
    return {kind: _save(kind, model, folder / f"{kind}.weights") for kind in KINDS}


def _load(path: Path):
    return load_model(path, architecture="papernot_mnist", num_classes=CLASSES, input_shape=SHAPE)


@pytest.mark.parametrize("kind", KINDS)
def test_loaded_model_matches_original(saved: dict[str, Path], kind: str) -> None:
    reference = _reference()
    loaded = _load(saved[kind])
    assert loaded.format == kind.replace("_static", "")
    assert len(loaded.sha256) == 64
    inputs = torch.rand(7, *SHAPE)  # a batch size the export did not see
    with torch.no_grad():
        diff = (loaded.module(inputs) - reference(inputs)).abs().max()
    assert float(diff) <= 1e-5
    assert all(p.dtype == torch.float32 for p in loaded.module.parameters())
    check_model_io(loaded.module, inputs, CLASSES)


@pytest.mark.parametrize("kind", KINDS)
def test_fresh_copy(saved: dict[str, Path], kind: str) -> None:
    loaded = _load(saved[kind])
    original = [p.detach().clone() for p in loaded.module.parameters()]
    same = loaded.fresh_copy(reinitialise=False)
    inputs = torch.rand(5, *SHAPE)
    with torch.no_grad():
        assert torch.allclose(same(inputs), loaded.module(inputs), atol=1e-6)
    torch.manual_seed(1)
    fresh = loaded.fresh_copy(reinitialise=True)
    new = list(fresh.parameters())
    assert [p.shape for p in new] == [p.shape for p in original]
    assert all(not torch.equal(a, b) for a, b in zip(new, original, strict=True))
    assert fresh(inputs).shape == (5, CLASSES)
    # the copy is independent: training it leaves the loaded module alone
    fresh(inputs).sum().backward()
    assert all(p.grad is not None for p in new)
    assert all(torch.equal(a, b) for a, b in zip(loaded.module.parameters(), original, strict=True))


@pytest.mark.parametrize("kind", ["torchscript", "torch_export", "onnx"])
def test_reinitialise_matches_pytorch_default_scale(tmp_path: Path, kind: str) -> None:
    # A Linear(256, 200)-sized weight drawn by kaiming_uniform_(a=sqrt(5)) has bound
    # 1/sqrt(fan_in); a re-drawn copy must respect the same bound and fill most of it.
    loaded = _load(_save(kind, _reference(), tmp_path / "m.bin"))
    torch.manual_seed(2)
    fresh = loaded.fresh_copy(reinitialise=True)
    for param in fresh.parameters():
        if param.dim() >= 2:
            fan_in = param[0].numel()
            bound = 1 / fan_in**0.5
            assert float(param.abs().max()) <= bound + 1e-6
            assert float(param.abs().max()) >= 0.9 * bound


@pytest.mark.parametrize("kind", ["torchscript", "torch_export", "onnx"])
def test_batchnorm_models_train_and_eval(tmp_path: Path, kind: str) -> None:
    model = _with_batchnorm()
    loaded = load_model(_save(kind, model, tmp_path / "bn.bin"))
    inputs = torch.rand(6, *SHAPE)
    with torch.no_grad():
        assert float((loaded.module(inputs) - model(inputs)).abs().max()) <= 1e-5
    fresh = loaded.fresh_copy(reinitialise=True)
    buffers = dict(fresh.named_buffers())
    means = [b for n, b in buffers.items() if n.endswith("running_mean")]
    if kind != "onnx":  # the ONNX exporter folds eval-mode batch norm into the conv
        assert means and all(float(m.abs().max()) == 0 for m in means)
    fresh.train()
    out = fresh(inputs)
    out.sum().backward()
    if means:  # a training-mode forward updates the running statistics
        assert any(float(m.abs().max()) > 0 for m in means)
    fresh.eval()
    with torch.no_grad():
        assert torch.equal(fresh(inputs), fresh(inputs))  # dropout off in eval
    copied = copy.deepcopy(fresh)
    assert copied(inputs).shape == (6, CLASSES)


def test_safetensors_needs_the_right_architecture(saved: dict[str, Path]) -> None:
    with pytest.raises(UnsupportedModelError) as info:
        load_model(saved["safetensors"], num_classes=CLASSES, input_shape=SHAPE)
    assert "papernot_mnist" in info.value.hint
    with pytest.raises(UnsupportedModelError) as info:
        load_model(saved["safetensors"], architecture="mlp", num_classes=CLASSES, input_shape=SHAPE)
    assert "missing keys" in info.value.message and "classifier.0.weight" in info.value.message
    with pytest.raises(UnsupportedModelError, match="shape mismatch"):
        load_model(saved["safetensors"], architecture="papernot_mnist", num_classes=3,
                   input_shape=SHAPE)  # fmt: skip
    with pytest.raises(UnsupportedModelError, match="unknown architecture"):
        load_model(saved["safetensors"], architecture="vgg99", num_classes=10, input_shape=SHAPE)


ZOO_CASES = [
    (name, shape)
    for name in sorted(ZOO)
    for shape in [(1, 8, 8), (1, 28, 28), (3, 32, 32)]
    if name != "resnet18" or shape == (3, 32, 32)  # one resnet18 case keeps the test fast
] + [("resnet18", (1, 64, 64))]  # the ImageNet stem with a grey channel


@pytest.mark.parametrize(("name", "shape"), ZOO_CASES)
def test_zoo_models_fit_any_input_and_script(name: str, shape: tuple[int, int, int]) -> None:
    torch.manual_seed(0)
    model = build_zoo_model(name, num_classes=4, input_shape=shape).eval()
    inputs = torch.rand(2, *shape)
    scripted = torch.jit.script(model)
    with torch.no_grad():
        out = model(inputs)
        assert out.shape == (2, 4)
        assert torch.allclose(scripted(inputs), out, atol=1e-6)


def test_papernot_mnist_has_the_papers_layer_sizes() -> None:
    model = build_zoo_model("papernot_mnist", num_classes=10, input_shape=(1, 28, 28))
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 32, 64, 64]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (1024, 200),
        (200, 200),
        (200, 10),
    ]


def test_check_model_io_names_the_mismatch() -> None:
    model = _reference()
    with pytest.raises(ModelDatasetMismatchError, match=r"images are 3x8x8 \(N, 3, 8, 8;"):
        check_model_io(model, torch.rand(4, 3, 8, 8), CLASSES)
    with pytest.raises(ModelDatasetMismatchError, match="expected"):
        check_model_io(model, torch.rand(4, *SHAPE), 3)

    class NaNs(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.full((len(x), CLASSES), float("nan"))

    with pytest.raises(ModelDatasetMismatchError, match="NaN"):
        check_model_io(NaNs(), torch.rand(4, *SHAPE), CLASSES)
    check_model_io(model, torch.rand(4, *SHAPE), CLASSES)  # the matching case passes


class _Pwn:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # what an attacker's pickle does on load
        import os

        return (os.system, (f"touch {self.marker}",))


def test_pt2_with_hostile_sample_inputs_is_refused(saved: dict[str, Path], tmp_path: Path) -> None:
    # torch.export.load retries sample inputs with full unpickling when the safe loader fails.
    import io
    import zipfile

    from core.errors import UnsafeModelError

    marker = tmp_path / "pwned"
    buffer = io.BytesIO()
    torch.save(((_Pwn(marker),), {}), buffer)
    evil = tmp_path / "evil.pt2"
    with zipfile.ZipFile(saved["torch_export"]) as source, zipfile.ZipFile(evil, "w") as target:
        for name in source.namelist():
            data = source.read(name)
            target.writestr(name, buffer.getvalue() if "sample_inputs" in name else data)
    with pytest.raises(UnsafeModelError, match="sample inputs"):
        load_model(evil)
    assert not marker.exists()


def test_a_colour_model_on_grayscale_images_names_both_shapes_and_the_fix() -> None:
    # Was a truncated TorchScript trace and a generic hint that never said "3 channels".
    colour = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10)
    )
    scripted = torch.jit.script(colour)
    with pytest.raises(ModelDatasetMismatchError) as caught:
        check_model_io(scripted, torch.rand(4, 1, 28, 28), 10)
    assert "the model expects 3-channel inputs" in caught.value.message
    assert "the dataset's images are 1x28x28" in caught.value.message
    assert "10 classes" in caught.value.message
    assert "np.repeat(x, 3, axis=1)" in caught.value.hint
    assert "1x28x28 inputs with 10 outputs" in caught.value.hint
