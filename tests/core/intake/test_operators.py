"""Only known operators run: hostile TorchScript, torch.export and ONNX files are refused before
any forward (and, for every format but a TorchScript __setstate__, before loading), naming the
operator; real models pass. Plus a fuzz of the intake: random graphs and mutated files end in a
HardenError or a model, never another exception."""

from __future__ import annotations

import random
import re
import warnings
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import Tensor, nn

from core.errors import HardenError, UnsafeModelError, UnsupportedModelError
from core.intake.graph_ops import check_loaded_model, derive_allowed_aten
from core.intake.operators import SNAPSHOT, allowed_operators
from core.intake.sniff import sniff_format
from core.intake.upload import load_model
from tests.core.model_files import FORMATS, write_model


def _script(module: nn.Module, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(module), path)
    return path


def _rewrite_code(path: Path, old: str, new: str) -> Path:
    """The archive with ``old`` replaced by ``new`` in its code: what a hand-made file holds."""
    out = path.with_name("crafted-" + path.name)
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(out, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if "/code/" in item.filename and item.filename.endswith(".py"):
                data = data.decode().replace(old, new).encode()
            dst.writestr(item, data)
    return out


class ReadsAFile(nn.Module):
    def __init__(self, target: str) -> None:
        super().__init__()
        self.linear = nn.Linear(64, 10)
        self.target = target

    def forward(self, x: Tensor) -> Tensor:
        if bool(x.sum() > 1e30):  # never taken: the check is on the code, not on a run
            leaked = torch.from_file(self.target, True, 16, dtype=torch.uint8)
            x = x + leaked[:1].float()
        return self.linear(x.flatten(1))


class Forks(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(64, 10)

    def forward(self, x: Tensor) -> Tensor:
        future = torch.jit.fork(self.linear, x.flatten(1))
        return torch.jit.wait(future)


class Plain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(64, 10)

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.linear(x.flatten(1)))


def _refused(path: Path, operator: str) -> UnsafeModelError:
    with pytest.raises(UnsafeModelError) as caught:
        sniff_format(path)
    assert caught.value.fields["operator"] == operator
    assert operator in caught.value.message and caught.value.hint
    return caught.value


def test_the_snapshot_is_the_derivation_for_the_pinned_torch():
    listed = {line for line in SNAPSHOT.read_text().splitlines() if not line.startswith("#")}
    assert listed == derive_allowed_aten()
    for refused in ("aten::from_file", "aten::save", "aten::set_", "aten::wait"):
        assert refused not in allowed_operators()
    for kept in ("aten::linear", "aten::_convolution", "aten::batch_norm", "aten::gelu"):
        assert kept in allowed_operators()


@pytest.mark.parametrize("fmt", ["torchscript", "torch_export", "onnx"])
def test_ordinary_models_pass(fmt, tmp_path):
    assert sniff_format(write_model(fmt, tmp_path)) == fmt


def test_a_scripted_resnet_passes_both_checks(tmp_path):
    from torchvision.models import resnet18

    path = _script(resnet18(num_classes=10), tmp_path / "resnet.pt")
    assert sniff_format(path) == "torchscript"
    check_loaded_model(torch.jit.load(path), "torchscript")


def test_torchscript_reading_a_file_is_refused_unloaded(tmp_path):
    marker = tmp_path / "written-by-the-model"
    path = _script(ReadsAFile(str(marker)), tmp_path / "model.pt")
    _refused(path, "aten::from_file")
    with pytest.raises(UnsafeModelError):
        load_model(path)
    assert not marker.exists()


def test_the_loaded_graph_is_checked_too(tmp_path):
    # What the text check would miss is still in the loaded graph, every method inlined.
    module = torch.jit.load(_script(ReadsAFile("/etc/passwd"), tmp_path / "model.pt"))
    with pytest.raises(UnsafeModelError, match="aten::from_file"):
        check_loaded_model(module, "torchscript")


def test_fork_and_wait_are_refused(tmp_path):
    _refused(_script(Forks(), tmp_path / "model.pt"), "builtin::fork")


@pytest.mark.parametrize(
    ("call", "operator"),
    [
        ('torch.save(x, "/tmp/harden-marker")', "aten::save"),
        ("ops.evil.run(x)", "evil::run"),
        ("torch.ops.evil.run(x)", "evil::run"),
        ("torch.jit._fork(x)", "torch.jit._fork"),
        ('torch.set_(x, torch.from_file("f", True, 4))', "aten::set_"),
        ("x.set_(x)", "aten::set_"),
        ('open("/etc/passwd")', "builtin::open"),
    ],
)
def test_hand_written_archive_code_is_read_before_loading(tmp_path, call, operator):
    plain = _script(Plain(), tmp_path / "model.pt")
    crafted = _rewrite_code(plain, "return torch.relu(", f"_9 = {call}\n    return torch.relu(")
    _refused(crafted, operator)


def test_export_graph_targets_outside_the_allowlist_are_refused(tmp_path):
    path = write_model("torch_export", tmp_path)
    for target, operator in (
        ("torch.ops.evil.op.default", "evil::op"),
        ("builtins.exec", "python::builtins.exec"),
        ("torch.ops.aten.from_file.default", "aten::from_file"),
    ):
        crafted = tmp_path / f"crafted-{operator.replace(':', '_')}.pt2"
        with zipfile.ZipFile(path) as src, zipfile.ZipFile(crafted, "w") as dst:
            for item in src.infolist():
                data = src.read(item)
                if item.filename.endswith("models/model.json"):
                    data = re.sub(rb'"target": "torch\.ops\.aten\.linear\.default"',
                                  f'"target": "{target}"'.encode(), data)  # fmt: skip
                dst.writestr(item, data)
        _refused(crafted, operator)


def _onnx_model(nodes, initializers=(), *, functions=(), opset=17, inputs=None) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "g",
        inputs or [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=list(initializers),
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid("evil.ops", 1)],
        functions=list(functions),
    )
    return model


def _external(name: str, location: str = "var/artifacts/other-job/inputs/model") -> TensorProto:
    tensor = numpy_helper.from_array(np.zeros(4, np.float32), name)
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", location
    return tensor


def _save(model: onnx.ModelProto, path: Path) -> Path:
    path.write_bytes(model.SerializeToString())
    return path


def test_onnx_external_data_is_refused_on_every_tensor(tmp_path):
    constant = helper.make_node("Constant", [], ["c"], value=_external("c"))
    add = helper.make_node("Add", ["x", "c"], ["y"])
    cases = {
        "constant": _onnx_model([constant, add]),
        "initializer": _onnx_model([add], [_external("c")]),
        "constant_of_shape": _onnx_model(
            [
                helper.make_node("Shape", ["x"], ["s"]),
                helper.make_node("ConstantOfShape", ["s"], ["c"], value=_external("v")),
                add,
            ]
        ),
    }
    then_branch = helper.make_graph(
        [helper.make_node("Constant", [], ["t"], value=_external("t"))],
        "then",
        [],
        [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)],
    )
    cases["if_subgraph"] = _onnx_model(
        [
            helper.make_node("ReduceSum", ["x"], ["sum"], keepdims=0),
            helper.make_node("Cast", ["sum"], ["cond"], to=TensorProto.BOOL),
            helper.make_node(
                "If", ["cond"], ["y"], then_branch=then_branch, else_branch=then_branch
            ),
        ]
    )
    sparse = helper.make_sparse_tensor(_external("values"), _external("indices"), [4])
    cases["sparse_initializer"] = _onnx_model([add])
    cases["sparse_initializer"].graph.sparse_initializer.append(sparse)
    for name, model in cases.items():
        with pytest.raises(UnsafeModelError, match="external file") as caught:
            sniff_format(_save(model, tmp_path / f"{name}.onnx"))
        assert caught.value.fields["format"] == "onnx", name


def test_onnx_custom_domains_functions_and_unknown_ops_are_refused(tmp_path):
    custom = helper.make_node("Run", ["x"], ["y"], domain="evil.ops")
    _refused(_save(_onnx_model([custom]), tmp_path / "custom.onnx"), "evil.ops::Run")
    unknown = helper.make_node("ReadFile", ["x"], ["y"])
    _refused(_save(_onnx_model([unknown]), tmp_path / "unknown.onnx"), "ai.onnx::ReadFile")
    function = helper.make_function(
        "evil.ops", "Twice", ["a"], ["b"], [helper.make_node("Add", ["a", "a"], ["b"])],
        [helper.make_opsetid("", 17)],
    )  # fmt: skip
    call = helper.make_node("Twice", ["x"], ["y"], domain="evil.ops")
    _refused(
        _save(_onnx_model([call], functions=[function]), tmp_path / "function.onnx"),
        "function::Twice",
    )


class NoParameters(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(1)[:, :10] * 2


def test_a_model_with_nothing_to_train_is_a_clear_load_error(tmp_path):
    path = _script(NoParameters(), tmp_path / "model.pt")
    with pytest.raises(UnsupportedModelError, match="no trainable parameters") as caught:
        load_model(path)
    assert caught.value.code == "unsupported_model" and "nn.Parameter" in caught.value.hint


# --- fuzz ---------------------------------------------------------------------------------------
_ALLOWED_ONNX = ["Relu", "Sigmoid", "Neg", "Abs", "Tanh", "Exp"]
_REFUSED_ONNX = [("evil.ops", "Run"), ("", "ReadFile"), ("com.microsoft", "Gelu")]


def _random_onnx(rng: random.Random) -> tuple[onnx.ModelProto, bool]:
    names, nodes, refused = ["x"], [], False
    weight = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    nodes.append(helper.make_node("MatMul", ["x", "w"], ["h0"]))
    names.append("h0")
    for index in range(rng.randint(1, 6)):
        out = f"h{index + 1}"
        if rng.random() < 0.2:
            domain, op = rng.choice(_REFUSED_ONNX)
            refused = True
        else:
            domain, op = "", rng.choice(_ALLOWED_ONNX)
        nodes.append(helper.make_node(op, [names[-1]], [out], domain=domain))
        names.append(out)
    nodes.append(helper.make_node("Identity", [names[-1]], ["y"]))
    initializers = [weight]
    if rng.random() < 0.2:
        initializers.append(_external("spare", location=f"../{rng.randint(0, 9)}/model"))
        refused = True
    model = _onnx_model(nodes, initializers)
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return model, refused


def _mutated(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        kind = rng.random()
        at = rng.randrange(len(out))
        if kind < 0.5:
            out[at] = rng.randrange(256)
        elif kind < 0.75:
            del out[at : at + rng.randint(1, 64)]
        else:
            out[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    return bytes(out)


def _intake(path: Path) -> str:
    """'ok' or the HardenError's code; anything else escapes and fails the test."""
    try:
        loaded = load_model(path, num_classes=10, input_shape=(1, 8, 8))
    except HardenError as exc:
        assert exc.message and exc.hint, exc
        return exc.code
    assert loaded.module is not None
    return "ok"


def test_fuzz_the_intake_never_crashes(tmp_path):
    rng = random.Random(25)
    outcomes: dict[str, int] = {}
    for case in range(40):
        model, refused = _random_onnx(rng)
        path = _save(model, tmp_path / f"random-{case}.onnx")
        code = _intake(path)
        assert (code == "unsafe_model") == refused or code == "unsupported_model", (case, code)
        outcomes[code] = outcomes.get(code, 0) + 1
    sources = {fmt: write_model(fmt, tmp_path) for fmt in FORMATS if fmt != "safetensors"}
    for fmt, source in sources.items():
        data = source.read_bytes()
        for case in range(12):
            path = tmp_path / f"mutated-{fmt}-{case}{source.suffix}"
            path.write_bytes(_mutated(data, rng))
            code = _intake(path)
            assert code != "internal"
            outcomes[code] = outcomes.get(code, 0) + 1
    assert outcomes.get("unsafe_model", 0) > 0 and outcomes.get("ok", 0) > 0, outcomes


_SCRIPT_CALLS = {
    "torch.relu(x)": None,
    "torch.tanh(x)": None,
    "torch.neg(x)": None,
    "torch.mul(x, 2)": None,
    'torch.from_file("/etc/passwd", False, 4)': "aten::from_file",
    'torch.save(x, "/tmp/harden-fuzz")': "aten::save",
    "ops.evil.run(x)": "evil::run",
    "fork(x)": "builtin::fork",
    "x.set_(x)": "aten::set_",
}


def test_fuzz_random_torchscript_code_is_refused_by_name(tmp_path):
    # Random forward bodies of allowed and refused calls, written into a real archive as a
    # hand-made file would hold them: refused ones name their first refused operator, the
    # others load and pass the loaded-graph check.
    rng = random.Random(26)
    plain = _script(Plain(), tmp_path / "plain.pt")
    names = list(_SCRIPT_CALLS)
    for case in range(12):
        calls = [rng.choice(names) for _ in range(rng.randint(1, 4))]
        body = "".join(f"_f{index} = {call}\n    " for index, call in enumerate(calls))
        crafted = _rewrite_code(plain, "return torch.relu(", body + "return torch.relu(")
        crafted = crafted.rename(tmp_path / f"fuzz-{case}.pt")
        refused = [_SCRIPT_CALLS[call] for call in calls if _SCRIPT_CALLS[call]]
        if refused:
            with pytest.raises(UnsafeModelError) as caught:
                load_model(crafted)
            assert caught.value.fields["operator"] in refused, (calls, caught.value)
        else:
            assert load_model(crafted).format == "torchscript"
