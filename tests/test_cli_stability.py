import argparse
import json
import sys
import textwrap

import numpy as np
import pytest
import torch

from dynstab.cli import stability_cmd

J_REG = np.array([[1.0, 0, 1, 0], [0, 2, 0, 1], [1, 1, 0, 0]])
K_REG = J_REG @ J_REG.T / 3


def parse(argv):
    parser = argparse.ArgumentParser(prog="dynstab")
    sub = parser.add_subparsers(dest="command", required=True)
    stability_cmd.register(sub)
    return parser.parse_args(argv)


def test_gram_npy_prints_table_and_writes_json(tmp_path, capsys):
    np.save(tmp_path / "K.npy", K_REG)
    out = tmp_path / "sub" / "verdict.json"
    args = parse(
        [
            "stability",
            "--gram",
            str(tmp_path / "K.npy"),
            "--lr",
            "0.5",
            "--batch-size",
            "2",
            "--sampling",
            "without",
            "--json",
            str(out),
        ]
    )
    assert args.func is stability_cmd.run
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert "SGD mean-square stable (η ≤ η*):     yes" in text
    assert "exact η* = 0.7775166986" in text
    data = json.loads(out.read_text())
    assert abs(data["eta_star"] - 0.7775166986) < 1e-9
    names = [r["name"] for r in data["rows"]]
    assert names[:2] == ["gd", "sgd_exact"]
    assert "trace" in names
    assert "wme18" in names
    assert list(tmp_path.joinpath("sub").iterdir()) == [out]  # no temp file left behind


def test_gram_pt_with_residuals_and_infinite_bound(tmp_path, capsys):
    torch.save(torch.tensor(K_REG), tmp_path / "K.pt")
    torch.save(torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64), tmp_path / "r.pt")
    out = tmp_path / "v.json"
    args = parse(
        [
            "stability",
            "--gram",
            str(tmp_path / "K.pt"),
            "--residuals",
            str(tmp_path / "r.pt"),
            "--lr",
            "0.9",
            "--batch-size",
            "3",
            "--sampling",
            "without",
            "--no-rank-one",
            "--json",
            str(out),
        ]
    )
    with pytest.warns(Warning, match="not an interpolating point"):
        assert stability_cmd.run(args) == 0
    text = capsys.readouterr().out
    assert "interpolating: NO" in text
    data = json.loads(out.read_text())
    alignment = next(r for r in data["rows"] if r["name"] == "alignment")
    assert alignment["eta_threshold"] == "inf"  # GD: p = 0, strict JSON
    assert all(r["name"] != "rank_one" for r in data["rows"])


def test_spec_with_checkpoint(tmp_path, capsys, monkeypatch):
    mod = tmp_path / "my_stab_spec.py"
    mod.write_text(
        textwrap.dedent(
            """
            import torch
            from dynstab.losses import half_mse

            def make():
                torch.manual_seed(0)
                model = torch.nn.Linear(3, 1, bias=False).double()
                X = torch.eye(3, dtype=torch.float64)
                y = torch.tensor([[2.0], [0.0], [0.0]], dtype=torch.float64)
                return model, half_mse, (X, y)
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    ckpt = tmp_path / "w.pt"
    torch.save({"weight": torch.tensor([[2.0, 0.0, 0.0]], dtype=torch.float64)}, ckpt)
    args = parse(
        [
            "stability",
            "--spec",
            "my_stab_spec:make",
            "--checkpoint",
            str(ckpt),
            "--lr",
            "0.5",
            "--batch-size",
            "1",
        ]
    )
    assert stability_cmd.run(args) == 0
    text = capsys.readouterr().out
    # K = I/3: orthogonal equal-norm samples, B = 1 → η* = 2/Tr = 2
    assert "exact η* = 2 " in text
    assert "interpolating: yes" in text
    sys.modules.pop("my_stab_spec", None)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--gram", "missing.npy"], "does not exist"),
        (["--spec", "nocolon"], "must look like"),
        (["--spec", "json:nothing_here"], "has no callable"),
    ],
)
def test_bad_inputs_return_2(argv, message, capsys):
    args = parse(["stability", *argv, "--lr", "0.1", "--batch-size", "1"])
    assert stability_cmd.run(args) == 2
    assert message in capsys.readouterr().err


def test_bad_suffix_and_bad_values(tmp_path, capsys):
    (tmp_path / "K.txt").write_text("1")
    args = parse(
        ["stability", "--gram", str(tmp_path / "K.txt"), "--lr", "0.1", "--batch-size", "1"]
    )
    assert stability_cmd.run(args) == 2
    assert ".npy or .pt" in capsys.readouterr().err
    np.save(tmp_path / "K.npy", K_REG)
    args = parse(
        ["stability", "--gram", str(tmp_path / "K.npy"), "--lr", "-1", "--batch-size", "1"]
    )
    assert stability_cmd.run(args) == 2
    assert "lr must be finite and > 0" in capsys.readouterr().err


def test_source_is_required():
    with pytest.raises(SystemExit):
        parse(["stability", "--lr", "0.1", "--batch-size", "1"])


def test_gram_refuses_options_that_need_a_model(tmp_path, capsys):
    np.save(tmp_path / "K.npy", K_REG)
    torch.save({}, tmp_path / "w.pt")
    base = ["stability", "--gram", str(tmp_path / "K.npy"), "--lr", "0.1", "--batch-size", "1"]
    assert stability_cmd.run(parse([*base, "--checkpoint", str(tmp_path / "w.pt")])) == 2
    assert "--checkpoint applies to --spec models" in capsys.readouterr().err
    assert stability_cmd.run(parse([*base, "--dtype", "float32"])) == 2
    assert "--dtype applies to --spec models" in capsys.readouterr().err


def test_max_dense_chooses_the_eta_star_solver(tmp_path, capsys):
    np.save(tmp_path / "K.npy", K_REG)  # nC = 3: the dense problem has at most 6 rows
    out = tmp_path / "v.json"
    base = ["stability", "--gram", str(tmp_path / "K.npy"), "--lr", "0.5", "--batch-size", "2"]
    methods, values = {}, {}
    for cap in ("6", "5"):
        assert stability_cmd.run(parse([*base, "--max-dense", cap, "--json", str(out)])) == 0
        data = json.loads(out.read_text())
        methods[cap], values[cap] = data["eta_star_method"], data["eta_star"]
    assert methods == {"6": "dense", "5": "matrix_free"}
    assert values["5"] == pytest.approx(values["6"], rel=1e-8)
    capsys.readouterr()
    assert stability_cmd.run(parse([*base, "--max-dense", "5", "--method", "dense"])) == 2
    assert "--max-dense chooses between" in capsys.readouterr().err


def test_spec_file_with_training_checkpoint(tmp_path, capsys):
    path = tmp_path / "stab_spec_file.py"
    path.write_text(
        textwrap.dedent(
            """
            import torch
            from dynstab.losses import half_mse

            def make():
                model = torch.nn.Linear(3, 1, bias=False).double()
                X = torch.eye(3, dtype=torch.float64)
                y = torch.tensor([[2.0], [0.0], [0.0]], dtype=torch.float64)
                return model, half_mse, (X, y)
            """
        )
    )
    ckpt = tmp_path / "train.pt"
    weight = torch.tensor([[2.0, 0.0, 0.0]], dtype=torch.float64)
    torch.save({"model": {"weight": weight}, "epoch": 10}, ckpt)
    source = ["--spec", f"{path}:make", "--checkpoint", str(ckpt)]
    args = parse(["stability", *source, "--lr", "0.5", "--batch-size", "1", "--max-dense", "100"])
    assert stability_cmd.run(args) == 0
    text = capsys.readouterr().out
    assert "exact η* = 2 " in text
    assert "interpolating: yes" in text
