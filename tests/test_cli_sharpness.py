import argparse
import json

import pytest
import torch

from cases import cli_spec
from dynstab.cli import sharpness_cmd
from dynstab.cli.sharpness_cmd import TOYS, build_toy
from dynstab.curvature import dense_hessian
from dynstab.measures import sharpness


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
        model.weight.mul_(0.0)  # different point: λ_max unchanged (H = XᵀX/n) but the loss changes
    ckpt = tmp_path / "ckpt.pt"
    torch.save(model.state_dict(), ckpt)
    args = parse(["--toy", "linear", "--checkpoint", str(ckpt), "--json", str(tmp_path / "o.json")])
    assert sharpness_cmd.run(args) == 0
    payload = json.loads((tmp_path / "o.json").read_text())
    expected = float(0.5 * (data[1] ** 2).sum(1).mean())
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


def test_build_toy_unknown_name():
    with pytest.raises(ValueError, match="unknown toy 'x'; choose from"):
        build_toy("x")
