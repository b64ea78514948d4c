import argparse
import json
import sys

import pytest
import torch

from cases import cli_spec
from dynstab.cli import sharpness_cmd
from dynstab.cli.sharpness_cmd import TOYS, build_toy
from dynstab.curvature import dense_hessian
from dynstab.measures import sharpness
from dynstab.models import MLP, DiagonalLinearNet, TwoLayerReLU


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="dynstab")
    sub = parser.add_subparsers(dest="command")
    sharpness_cmd.register(sub)
    return parser.parse_args(["sharpness", *argv])


@pytest.mark.parametrize("toy", sorted(TOYS))
def test_toy_prints_table_and_writes_json(toy, tmp_path, capsys):
    out = tmp_path / "sub" / "report.json"
    args = parse(["--toy", toy, "--measures", "lambda_max,trace,frobenius", "--json", str(out)])
    assert args.func is sharpness_cmd.run
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert "lambda_max" in text
    assert "frobenius" in text
    assert "exact-dense" in text
    payload = json.loads(out.read_text())
    assert payload["source"] == {"toy": toy, "seed": 0, "device": "cpu", "dtype": None}
    model, loss_fn, data = build_toy(toy)
    H = dense_hessian(model, loss_fn, data)
    lam = float(torch.linalg.eigvalsh(H)[-1])
    assert payload["report"]["measures"]["lambda_max"]["value"] == pytest.approx(lam, rel=1e-8)
    assert payload["report"]["measures"]["trace"]["value"] == pytest.approx(
        float(H.trace()), rel=1e-8
    )
    assert not list(out.parent.glob("*.tmp"))  # atomic write leaves no temp file


def test_spec_and_options_reach_sharpness(capsys):
    args = parse(
        [
            *["--spec", "cases:cli_spec", "--measures", "lambda_max,top_k", "--k", "2"],
            *["--method", "lanczos", "--curvature", "gauss_newton", "--tol", "1e-10"],
        ]
    )
    assert sharpness_cmd.run(args) == 0
    text = capsys.readouterr().out
    assert "curvature=gauss_newton" in text
    assert "lanczos" in text
    model, loss_fn, data = cli_spec()
    ref = sharpness(model, loss_fn, data, "lambda_max", curvature="gauss_newton")
    value = float(text.split("lambda_max")[1].split()[0])
    assert value == pytest.approx(ref.lambda_max.value, rel=1e-8)


def test_checkpoint_is_loaded_into_model(tmp_path, capsys):
    model, _loss_fn, data = build_toy("linear")
    with torch.no_grad():
        model.layers[0].weight.mul_(0.0)  # another point: λ_max unchanged (H = XᵀX/n), loss not
    ckpt = tmp_path / "ckpt.pt"
    torch.save(model.state_dict(), ckpt)
    args = parse(["--toy", "linear", "--checkpoint", str(ckpt), "--json", str(tmp_path / "o.json")])
    assert sharpness_cmd.run(args) == 0
    payload = json.loads((tmp_path / "o.json").read_text())
    expected = float(0.5 * (data[1] ** 2).mean())
    assert payload["report"]["loss_value"] == pytest.approx(expected, rel=1e-12)
    assert payload["source"]["checkpoint"] == str(ckpt)


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--spec", "no_colon"], "package.module:function"),
        (["--spec", "no_such_module_xyz:f"], "cannot import module"),
        (["--spec", "cases:not_there"], "no callable"),
        (["--toy", "linear", "--checkpoint", "/nonexistent/file.pt"], "no such file"),
        (["--toy", "linear", "--measures", "lambda_max,bogus"], "unknown measure 'bogus'"),
        (["--toy", "linear", "--method", "exact", "--measures", "lambda_max"], None),
    ],
)
def test_errors_are_reported_with_status_2(argv, match, capsys):
    status = sharpness_cmd.run(parse(argv))
    err = capsys.readouterr().err
    if match is None:
        assert status == 0
    else:
        assert status == 2
        assert "dynstab sharpness: error:" in err
        assert match in err


def test_mismatched_checkpoint(tmp_path, capsys):
    torch.save({"weight": torch.zeros(3, 3)}, tmp_path / "bad.pt")
    status = sharpness_cmd.run(parse(["--toy", "linear", "--checkpoint", str(tmp_path / "bad.pt")]))
    assert status == 2
    assert "does not match the model" in capsys.readouterr().err


def test_source_is_required_and_exclusive():
    with pytest.raises(SystemExit):
        parse([])
    with pytest.raises(SystemExit):
        parse(["--toy", "linear", "--spec", "cases:cli_spec"])
    with pytest.raises(SystemExit):
        parse(["--toy", "nonexistent"])


@pytest.mark.parametrize(
    ("toy", "cls"),
    [("linear", MLP), ("diagonal", DiagonalLinearNet), ("mlp-tanh", MLP),
     ("two-layer-relu", TwoLayerReLU)],
)  # fmt: skip
def test_toys_are_the_library_models(toy, cls):
    model, _loss_fn, (X, y) = build_toy(toy, seed=3)
    assert type(model) is cls
    assert all(p.dtype == torch.float64 for p in model.parameters())
    assert model(X).shape == y.shape
    again, _, (X2, _) = build_toy(toy, seed=3)  # seeded: the same problem again
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), again.parameters()))
    assert torch.equal(X, X2)


def test_build_toy_unknown_name():
    with pytest.raises(ValueError, match="unknown toy 'x'; choose from"):
        build_toy("x")


# --------------------------------------------------------------------------- density


def parse_cmd(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="dynstab")
    sub = parser.add_subparsers(dest="command")
    sharpness_cmd.register(sub)
    return parser.parse_args(argv)


def _bin_masses(text: str) -> list[float]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("interval")) + 2
    return [float(line.split()[-1]) for line in lines[start:] if line.startswith("[")]


def test_density_command_prints_the_exact_histogram(capsys, tmp_path):
    out = tmp_path / "d.json"
    args = parse_cmd(["density", "--toy", "mlp-tanh", "--bins", "5", "--json", str(out)])
    assert args.func is sharpness_cmd.run_density
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert "spectral density: 465 nodes" in text
    model, loss_fn, data = build_toy("mlp-tanh")
    eig = torch.linalg.eigvalsh(dense_hessian(model, loss_fn, data)).double()
    lo, hi = float(eig.min()), float(eig.max())
    idx = ((eig - lo) / ((hi - lo) / 5)).floor().clamp(0, 4).long()
    expected = torch.bincount(idx, minlength=5).double() / eig.numel()
    assert _bin_masses(text) == pytest.approx(expected.tolist(), abs=1e-6)
    payload = json.loads(out.read_text())
    assert payload["command"] == "density"
    assert len(payload["report"]["density"]["nodes"]) == 465


def test_sharpness_with_density_measure_prints_both_tables(capsys):
    args = parse(["--toy", "linear", "--measures", "lambda_max,density", "--method", "lanczos"])
    assert sharpness_cmd.run(args) == 0
    text = capsys.readouterr().out
    assert "lambda_max" in text
    assert "spectral density:" in text
    assert sum(_bin_masses(text)) == pytest.approx(1.0, abs=1e-5)


def test_format_density_of_a_point_mass():
    from dynstab.linalg import SpectralDensity

    d = SpectralDensity(torch.zeros(3, dtype=torch.float64), torch.full((3,), 1 / 3), 0)
    text = sharpness_cmd.format_density(d, bins=4)
    assert "[0, 0]" in text
    assert _bin_masses(text) == pytest.approx([1.0])


# --------------------------------------------------------------------------- sources and placement


SPEC_FILE = """
import torch
from helper_mod_xyz import width
from dynstab.losses import half_mse

def make():
    g = torch.Generator().manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, width()), torch.nn.Tanh(),
                                torch.nn.Linear(width(), 1)).double()
    X = torch.randn(20, 3, generator=g, dtype=torch.float64)
    return model, half_mse, (X, torch.zeros(20, 1, dtype=torch.float64))

def broken():
    raise RuntimeError("inside the user's function")
"""


@pytest.fixture
def spec_file(tmp_path, monkeypatch):
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "helper_mod_xyz.py").write_text("def width():\n    return 4\n")
    path = tmp_path / "specs" / "my_model.py"
    path.write_text(SPEC_FILE)
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield path
    sys.modules.pop("helper_mod_xyz", None)


def test_spec_from_a_file_path_importing_its_neighbours(spec_file, capsys):
    assert sharpness_cmd.run(parse(["--spec", f"{spec_file}:make", "--measures", "trace"])) == 0
    assert "trace" in capsys.readouterr().out
    assert sharpness_cmd.run(parse(["--spec", f"{spec_file}:broken"])) == 2
    err = capsys.readouterr().err
    assert "raised RuntimeError: inside the user's function" in err
    assert sharpness_cmd.run(parse(["--spec", f"{spec_file.parent}/nope.py:make"])) == 2
    assert "no such file" in capsys.readouterr().err


@pytest.mark.parametrize(
    "layout",
    ["plain", "state_dict", "model_state_dict", "model", "module_prefix"],
)
def test_checkpoint_layouts(layout, tmp_path, capsys):
    model, _loss_fn, data = build_toy("linear")
    with torch.no_grad():
        model.layers[0].weight.fill_(0.25)
    state = model.state_dict()
    obj = {
        "plain": state,
        "state_dict": {"state_dict": state, "epoch": 3},
        "model_state_dict": {"model_state_dict": state, "optimizer": {"lr": 0.1}},
        "model": {"model": state, "step": 7},
        "module_prefix": {f"module.{k}": v for k, v in state.items()},
    }[layout]
    ckpt = tmp_path / "ckpt.pt"
    torch.save(obj, ckpt)
    out = tmp_path / "o.json"
    args = parse(["--toy", "linear", "--checkpoint", str(ckpt), "--json", str(out)])
    assert sharpness_cmd.run(args) == 0
    payload = json.loads(out.read_text())
    X, y = data
    expected = float(0.5 * ((X @ torch.full((10,), 0.25, dtype=torch.float64) - y) ** 2).mean())
    assert payload["report"]["loss_value"] == pytest.approx(expected, rel=1e-12)


def test_unloadable_checkpoints_give_one_line_errors(tmp_path, capsys):
    model, _, _ = build_toy("linear")
    torch.save(model, tmp_path / "pickled_module.pt")  # needs weights_only=False: refused
    torch.save({"epoch": 1, "opt": {"lr": 0.1}}, tmp_path / "no_state.pt")
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    cases = {
        "pickled_module.pt": "cannot be loaded with torch.load(weights_only=True)",
        "no_state.pt": "but no state_dict",
        "tensor.pt": "not a state_dict",
        "garbage.pt": "cannot be loaded with torch.load(weights_only=True)",
    }
    for name, message in cases.items():
        args = parse(["--toy", "linear", "--checkpoint", str(tmp_path / name)])
        assert sharpness_cmd.run(args) == 2, name
        err = capsys.readouterr().err
        assert message in err, (name, err)
        assert len(err.strip().splitlines()) == 1
        assert "Traceback" not in err


def test_dtype_device_and_max_dense(capsys, tmp_path):
    out = tmp_path / "o.json"
    args = parse(["--toy", "linear", "--dtype", "float32", "--json", str(out)])
    assert sharpness_cmd.run(args) == 0
    payload = json.loads(out.read_text())
    assert payload["report"]["dtype"] == "float32"
    assert payload["source"]["dtype"] == "float32"
    # p = 10 > --max-dense 5: the dense exact method is not allowed, the matrix-free one runs
    args = parse(["--toy", "linear", "--max-dense", "5", "--json", str(out)])
    assert sharpness_cmd.run(args) == 0
    assert json.loads(out.read_text())["report"]["method"] == "matrix-free"
    args = parse(["--toy", "linear", "--max-dense", "10", "--json", str(out)])
    assert sharpness_cmd.run(args) == 0
    assert json.loads(out.read_text())["report"]["method"] == "exact-dense"
    capsys.readouterr()
    if not torch.cuda.is_available():
        assert sharpness_cmd.run(parse(["--toy", "linear", "--device", "cuda"])) == 3
        assert "CUDA is not available here" in capsys.readouterr().err
    assert sharpness_cmd.run(parse(["--toy", "linear", "--device", "tpu9"])) == 2
    assert "unknown device" in capsys.readouterr().err


def test_params_selects_layers_by_prefix_and_regex(capsys):
    from dynstab.cli import main

    assert (
        main(["sharpness", "--toy", "mlp-tanh", "--params", "re:bias$", "--measures", "trace"]) == 0
    )
    out = capsys.readouterr().out
    assert "of 465 (3 tensors)" in out
    args = ["sharpness", "--toy", "mlp-tanh", "--params", "layers.1", "--measures", "trace"]
    assert main(args) == 0
    assert "p=272 of 465 (2 tensors)" in capsys.readouterr().out
    assert main(["sharpness", "--toy", "mlp-tanh", "--params", "re:(", "--measures", "trace"]) == 2
    assert "invalid regular expression" in capsys.readouterr().err
    assert main(["sharpness", "--toy", "mlp-tanh", "--params", "nope", "--measures", "trace"]) == 2
