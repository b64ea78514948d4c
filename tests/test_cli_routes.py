"""``dynstab stability --route/--max-memory`` and the exit status of a memory-budget refusal."""

import argparse
import json
import math
import textwrap

import numpy as np
import pytest

from dynstab import MemoryBudgetError, StabilityProblem
from dynstab.cli import main
from dynstab.cli.common import describe_memory_error, exit_status, parse_size

SPEC = """
import torch
from dynstab.losses import half_mse
from dynstab.models import MLP

def make():
    g = torch.Generator().manual_seed(0)
    model = MLP([3, 5, 1], activation="tanh", generator=g, dtype=torch.float64)
    X = torch.randn(7, 3, generator=g, dtype=torch.float64)
    return model, half_mse, (X, model(X).detach())  # interpolating: residuals 0

def large():
    # p = n = 1500: J (n×p) or K (n×n) takes well over 64 MB, the smallest size checked.
    g = torch.Generator().manual_seed(0)
    model = MLP([1500, 1], bias=False, generator=g, dtype=torch.float64)
    X = torch.randn(1500, 1500, generator=g, dtype=torch.float64)
    return model, half_mse, (X, model(X).detach())
"""


@pytest.fixture
def spec(tmp_path):
    path = tmp_path / "route_spec.py"
    path.write_text(textwrap.dedent(SPEC))
    return path


def _verdict(spec, tmp_path, *extra):
    out = tmp_path / f"v{len(list(tmp_path.glob('v*.json')))}.json"
    argv = ["stability", "--spec", f"{spec}:make", "--lr", "0.1", "--batch-size", "2"]
    assert main([*argv, *extra, "--json", str(out)]) == 0
    return json.loads(out.read_text())


def test_route_reaches_the_problem_and_both_routes_agree(spec, tmp_path, capsys):
    gram = _verdict(spec, tmp_path, "--route", "gram")
    param = _verdict(spec, tmp_path, "--route", "parameter")
    auto = _verdict(spec, tmp_path)
    assert gram["eta_star_route"] == "gram"
    assert param["eta_star_route"] == "parameter"
    assert "requested" in gram["route_reason"]
    assert "requested" in param["route_reason"]
    assert auto["eta_star_route"] in ("gram", "parameter")
    # The same exact η* along either route (the coordinates agree up to rotation); compare with
    # the library called directly.
    assert param["eta_star"] == pytest.approx(gram["eta_star"], rel=1e-9)
    ns: dict[str, object] = {}
    exec(compile(textwrap.dedent(SPEC), "spec", "exec"), ns)
    model, _loss, (X, y) = ns["make"]()
    prob = StabilityProblem.from_model(model, (X, y), route="gram")
    ref = prob.eta_star(prob.sampling(2, "with")).eta_star
    assert gram["eta_star"] == pytest.approx(ref, rel=1e-9)
    assert "η* route: parameter" in capsys.readouterr().out


def test_max_memory_inf_and_a_generous_size_change_nothing(spec, tmp_path):
    base = _verdict(spec, tmp_path)
    for size in ("inf", "8GB", "512MiB"):
        assert _verdict(spec, tmp_path, "--max-memory", size)["eta_star"] == base["eta_star"]


def test_parameter_route_with_a_gram_file_is_a_usage_error_before_any_work(tmp_path, capsys):
    # The file does not exist: the route is refused before anything is loaded.
    argv = ["stability", "--gram", str(tmp_path / "none.npy"), "--lr", "0.1", "--batch-size", "1"]
    assert main([*argv, "--route", "parameter"]) == 2
    err = capsys.readouterr().err
    assert "--route parameter" in err
    assert "pass --spec" in err
    assert "does not exist" not in err
    np.save(tmp_path / "K.npy", np.eye(3))
    argv[2] = str(tmp_path / "K.npy")
    assert main([*argv, "--route", "gram", "--max-memory", "1GB"]) == 0


@pytest.mark.parametrize("bad", ["8XB", "-1GB", "0", "GB", "", "1e9e9"])
def test_bad_max_memory_is_a_usage_error(bad, spec, capsys):
    argv = ["stability", "--spec", f"{spec}:make", "--lr", "0.1", "--batch-size", "1"]
    assert main([*argv, "--max-memory", bad]) == 2
    assert "--max-memory" in capsys.readouterr().err


def test_bad_route_and_bad_lr_are_usage_errors(spec, capsys):
    argv = ["stability", "--spec", f"{spec}:make", "--batch-size", "1"]
    assert main([*argv, "--lr", "0.1", "--route", "dense"]) == 2
    assert main([*argv, "--lr", "-0.1"]) == 2
    assert "lr" in capsys.readouterr().err
    assert main([*argv, "--lr", "0.1", "--batch-size", "0"]) == 2
    assert "--batch-size must be >= 1" in capsys.readouterr().err


def test_parse_size_units():
    assert parse_size("8GB") == 8e9
    assert parse_size("8gb") == 8e9
    assert parse_size("3 MiB") == 3 * 2**20
    assert parse_size("2K") == 2000.0
    assert parse_size("123") == 123.0
    assert parse_size("unlimited") == math.inf
    for bad in ("8 XB", "-5", "0MB", "inf GB", "1,5GB"):
        with pytest.raises(argparse.ArgumentTypeError, match="got"):
            parse_size(bad)


def test_memory_budget_error_exits_3_with_one_line_cause_and_fix(spec, capsys):
    argv = ["stability", "--spec", f"{spec}:large", "--lr", "0.1", "--batch-size", "1"]
    # --method exact: the default (auto) would take the sampled route instead of failing
    assert main([*argv, "--method", "exact", "--max-memory", "10MB"]) == 3
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("dynstab stability: error: memory budget exceeded:")
    assert "above the budget of 10 MB" in err
    assert "--method sampled" in err
    # The fix names a budget at least as large as the estimate the message gives.
    needs = err.split("needs about ")[1].split(", above")[0]
    fix = err.split("Fix: --max-memory ")[1].split()[0]
    assert parse_size(fix) >= parse_size(needs) >= 64 * 2**20


def test_exit_status_maps_memory_budget_error_to_3(capsys):
    exc = MemoryBudgetError(
        "long library message",
        what="the Gram matrix K of shape (90000, 90000)",
        required_bytes=64_800_000_000,
        budget_bytes=8_000_000_000,
        alternatives=(
            "route='parameter' needs 2 GB",
            "the sampled route dynstab.stability(..., method='sampled') for large n",
            "a larger max_memory (bytes; math.inf disables the check) if the memory is there",
        ),
    )
    assert isinstance(exc, ValueError)  # would be a usage error (2) without the special case
    assert exit_status("stability", exc) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "64.8 GB" in err
    assert "8 GB" in err
    assert "--max-memory 65GB" in err
    assert "route='parameter' needs 2 GB" in err
    assert "larger max_memory" not in err  # Python-API advice is not CLI advice
    assert "method='sampled'" not in err  # the library's Python advice
    assert "--method sampled" in err  # its CLI form
    bare = describe_memory_error(MemoryBudgetError("no details"))
    assert bare == "memory budget exceeded: no details"


def test_method_and_momentum_usage_errors_before_any_work(spec, tmp_path, capsys):
    gram = ["stability", "--gram", str(tmp_path / "none.npy"), "--lr", "0.1", "--batch-size", "1"]
    assert main([*gram, "--method", "sampled"]) == 2  # K has no per-batch products
    assert "--method sampled" in capsys.readouterr().err
    model = ["stability", "--spec", f"{spec}:make", "--lr", "0.1", "--batch-size", "2"]
    assert main([*model, "--nesterov"]) == 2
    assert "--momentum" in capsys.readouterr().err
    assert main([*model, "--momentum", "1.0"]) == 2
    assert "[0, 1)" in capsys.readouterr().err


def test_momentum_reaches_the_exact_criteria(spec, tmp_path):
    plain = _verdict(spec, tmp_path)
    heavy = _verdict(spec, tmp_path, "--momentum", "0.5")
    nesterov = _verdict(spec, tmp_path, "--momentum", "0.5", "--nesterov")
    lam = plain["lambda_max"]
    assert heavy["lambda_max"] == pytest.approx(lam, rel=1e-12)
    assert (heavy["momentum"], heavy["nesterov"], nesterov["nesterov"]) == (0.5, False, True)
    # GD thresholds by hand: 2/λ, 2(1 + β)/λ (heavy ball), (2 + 2β)/((1 + 2β)λ) (Nesterov)
    assert plain["eta_gd"] == pytest.approx(2.0 / lam, rel=1e-9)
    assert heavy["eta_gd"] == pytest.approx(3.0 / lam, rel=1e-9)
    assert nesterov["eta_gd"] == pytest.approx(3.0 / (2.0 * lam), rel=1e-9)
    assert heavy["eta_star"] != pytest.approx(plain["eta_star"], rel=1e-6)
