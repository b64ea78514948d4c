"""Tests of the ``dynstab`` command line through ``main([...])`` (exit codes, files, output)."""

from __future__ import annotations

import importlib.metadata
import json
import uuid
from pathlib import Path

import pytest
from test_framework import NoSeedExperiment, QuadExperiment, QuadExperimentB, calls

import dynstab.cli as cli
from dynstab.cli import build_parser, main
from dynstab_repro import registry
from dynstab_repro.io import read_json


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Registry holding only the dummies; the env command and the harness's commands (plugin)."""
    monkeypatch.setattr(registry, "EXPERIMENT_MODULES", ())
    monkeypatch.setattr(registry, "_EXPERIMENTS", {})
    monkeypatch.setattr(registry, "_GROUPS", {})
    monkeypatch.setattr(registry, "_LOADED", set())
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("dynstab.cli.env_cmd",))
    registry.register(QuadExperiment())
    registry.register(QuadExperimentB())
    registry.register(NoSeedExperiment())
    registry.register_group("quad", ["quad/a", "quad/b"])
    marker = tmp_path / "marker"
    marker.mkdir()
    return tmp_path, marker


def base_args(tmp_path: Path, marker: Path) -> list[str]:
    return [
        "--quick",
        "--out",
        str(tmp_path / "out"),
        "--executor",
        "serial",
        "--no-progress",
        "--set",
        f"marker_dir={marker}",
    ]


def test_list_shows_experiments_and_groups(cli_env, capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "quad/a" in out
    assert "GD on a 1-D quadratic  [Cauchy (1847), gradient descent on a quadratic]" in out
    assert "quad: quad/a, quad/b" in out
    assert "all: every experiment" in out


def test_run_passes_writes_files_and_resumes(cli_env, capsys):
    tmp_path, marker = cli_env
    assert main(["run", "quad/a", *base_args(tmp_path, marker)]) == 0
    out = capsys.readouterr().out
    assert "REPRODUCED  quad/a" in out
    assert "REPRODUCED  Q1" in out
    run_dir = tmp_path / "out" / "quad__a"
    assert (run_dir / "report.html").is_file()
    assert read_json(run_dir / "config.json")["config"]["steps"] == 50  # quick profile
    assert calls(marker) == 4
    assert main(["run", "quad/a", *base_args(tmp_path, marker)]) == 0
    assert calls(marker) == 4  # resumed: nothing recomputed


def test_run_exit_code_one_when_a_claim_fails(cli_env, capsys):
    tmp_path, marker = cli_env
    args = ["run", "quad/a", *base_args(tmp_path, marker), "--set", "expected_threshold=0.4"]
    assert main(args) == 1
    assert "FAILED  Q1" in capsys.readouterr().out


def test_run_profile_seed_config_file_and_force(cli_env, capsys):
    tmp_path, marker = cli_env
    cfg_file = tmp_path / "c.json"
    cfg_file.write_text(json.dumps({"steps": 40, "x0": 0.5}))
    args = ["run", "quad/a", "--out", str(tmp_path / "out"), "--executor", "serial"]
    args += ["--no-progress", "--set", f"marker_dir={marker}", "--config", str(cfg_file)]
    assert main([*args, "--seed", "7", "--set", "steps=45"]) == 0
    stored = read_json(tmp_path / "out" / "quad__a" / "config.json")
    assert stored["profile"] == "full"
    assert stored["seed"] == 7
    assert (stored["config"]["steps"], stored["config"]["x0"], stored["config"]["seed"]) == (
        45,
        0.5,
        7,
    )
    # a saved config.json reproduces the same configuration, so nothing is recomputed
    saved = tmp_path / "out" / "quad__a" / "config.json"
    rerun = ["run", "quad/a", "--out", str(tmp_path / "out"), "--executor", "serial"]
    assert main([*rerun, "--no-progress", "--config", str(saved)]) == 0
    assert calls(marker) == 4
    # a different config is refused (usage error) unless --force
    assert main([*args, "--seed", "8"]) == 2
    err = capsys.readouterr().err
    assert "different configuration" in err
    assert "--force" in err
    assert main([*args, "--seed", "8", "--force"]) == 0
    assert calls(marker) == 8


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "nope"], "unknown experiment 'nope'"),
        (["run", "quad/a", "--set", "steps"], "must look like key=value"),
        (["run", "quad/a", "--set", "stepz=3"], "unknown config key"),
        (["run", "quad/a", "--set", "steps=many"], "steps must be an int"),
        (["run", "quad/a", "--profile", "huge"], "unknown profile 'huge'"),
        (["run", "quad/noseed", "--seed", "1"], "no 'seed' or 'seeds' field"),
        (["run", "quad/a", "--config", "/nonexistent/c.json"], "does not exist"),
        (["run", "quad", "--executor", "serial"], "is a group of 2 experiments"),
        (["report", "."], "not a run directory"),
    ],
)
def test_usage_errors_exit_two_with_message(cli_env, capsys, monkeypatch, argv, message):
    tmp_path, _ = cli_env
    monkeypatch.chdir(tmp_path)
    assert main([*argv, *(["--no-progress"] if argv[0] == "run" else [])]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["bogus"],
        ["run"],
        ["run", "quad/a", "--quick", "--profile", "full"],
        ["run", "quad/a", "--workers", "0"],
        ["run", "quad/a", "--executor", "dask"],
    ],
)
def test_argparse_errors_exit_two(cli_env, capsys, monkeypatch, argv):
    monkeypatch.chdir(cli_env[0])
    assert (
        main([*argv, "--executor", "serial"] if argv[:1] == ["run"] and len(argv) > 3 else argv)
        == 2
    )
    assert not (cli_env[0] / "dynstab-runs").exists()


def test_help_and_version_exit_zero(cli_env, capsys):
    assert main(["--help"]) == 0
    assert "reproduce" in capsys.readouterr().out
    assert main(["--version"]) == 0
    assert "dynstab 0." in capsys.readouterr().out


def test_reproduce_group_and_report(cli_env, capsys):
    tmp_path, marker = cli_env
    assert main(["reproduce", "quad", *base_args(tmp_path, marker)]) == 0
    out = capsys.readouterr().out
    assert "2/2 experiments without a failure (2 reproduced)" in out
    assert (tmp_path / "out" / "summary.md").is_file()
    (tmp_path / "out" / "quad__b" / "report.md").unlink()
    assert main(["report", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "quad__b" / "report.md").is_file()
    assert main(["plot", str(tmp_path / "out" / "quad__a")]) == 0
    assert calls(marker, "quad/a") == 4
    assert calls(marker, "quad/b") == 4


def test_env_command(cli_env, capsys):
    assert main(["env"]) == 0
    out = capsys.readouterr().out
    assert "torch" in out
    assert "torch_threads" in out
    assert main(["env", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["cpu_count"] >= 1


def test_plugins_add_commands_and_a_broken_plugin_raises(monkeypatch, tmp_path):
    (tmp_path / "plugin_cmd_xyz.py").write_text(
        "def register(subparsers):\n"
        "    p = subparsers.add_parser('hello-xyz')\n"
        "    p.set_defaults(func=lambda args: 7)\n"
    )
    (tmp_path / "broken_cmd_module_xyz.py").write_text("import missing_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    group = cli.ENTRY_POINT_GROUP

    def fake(value: str):
        ep = importlib.metadata.EntryPoint(name="xyz", value=value, group=group)
        return lambda group: [ep] if group == cli.ENTRY_POINT_GROUP else []

    monkeypatch.setattr(cli.importlib.metadata, "entry_points", fake("plugin_cmd_xyz"))
    assert main(["hello-xyz"]) == 7
    monkeypatch.setattr(cli.importlib.metadata, "entry_points", fake("broken_cmd_module_xyz"))
    with pytest.raises(ModuleNotFoundError, match="missing_dependency_xyz"):
        build_parser()


def test_the_harness_registers_its_commands_through_the_entry_point():
    names = {ep.value for ep in importlib.metadata.entry_points(group=cli.ENTRY_POINT_GROUP)}
    assert "dynstab_repro.cli" in names
    choices = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert {"sharpness", "stability", "env", "list", "run", "reproduce", "report"} <= set(choices)


def test_keyboard_interrupt_exit_code(cli_env, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("dynstab_repro.runner.run_experiment", interrupted)
    assert main(["run", "quad/a", "--no-progress"]) == 130
    assert "rerun the same command to resume" in capsys.readouterr().err


def test_default_command_modules_are_importable_or_absent():
    parser = build_parser()  # the real module list: missing modules are skipped
    assert parser.prog == "dynstab"


def test_sigterm_during_a_run_exits_143_keeps_units_and_resumes(cli_env, capsys):
    tmp_path, marker = cli_env
    (marker / "sigterm_lr=0.5").touch()  # the second unit (serial order) gets SIGTERM
    assert main(["run", "quad/a", *base_args(tmp_path, marker)]) == 143
    err = capsys.readouterr().err
    assert "interrupted by SIGTERM" in err
    assert "Kept 1 of 4 units (quad/a 1/4)" in err
    assert "Rerun the same command to resume" in err
    assert not list((tmp_path / "out").rglob(".*.tmp"))
    (marker / "sigterm_lr=0.5").unlink()
    assert main(["run", "quad/a", *base_args(tmp_path, marker)]) == 0
    assert calls(marker, key="lr=0.1") == 1  # kept, not recomputed
    assert calls(marker, key="lr=0.5") == 2


def _plugin(monkeypatch, tmp_path, body: str) -> None:
    module = f"plugin_cmd_{uuid.uuid4().hex}"
    (tmp_path / f"{module}.py").write_text(
        "import os, signal, time\n"
        "def register(subparsers):\n"
        "    p = subparsers.add_parser('boom-abc')\n"
        "    p.set_defaults(func=run)\n"
        f"def run(args):\n    {body}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    ep = importlib.metadata.EntryPoint(name="abc", value=module, group=cli.ENTRY_POINT_GROUP)
    monkeypatch.setattr(
        cli.importlib.metadata,
        "entry_points",
        lambda group: [ep] if group == cli.ENTRY_POINT_GROUP else [],
    )


def test_internal_errors_exit_4_and_debug_shows_the_traceback(monkeypatch, tmp_path, capsys):
    _plugin(monkeypatch, tmp_path, "raise KeyError('oops')")
    assert main(["boom-abc"]) == 4
    err = capsys.readouterr().err
    assert "internal error KeyError" in err
    assert "--debug" in err
    assert "Traceback" not in err
    assert main(["--debug", "boom-abc"]) == 4
    assert "Traceback" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("body", "code", "message"),
    [
        ("raise OSError(28, 'No space left on device', 'x/y.json')", 3, "no space left on device"),
        ("raise PermissionError(13, 'Permission denied', '/ro')", 3, "permission denied: /ro"),
        ("raise ImportError('install it with: pip install thing')", 3, "pip install thing"),
        ("raise ValueError('bad value; use a good one')", 2, "bad value; use a good one"),
        ("os.kill(os.getpid(), signal.SIGTERM); time.sleep(5)", 143, "interrupted by SIGTERM"),
    ],
)
def test_exit_codes_of_error_classes(monkeypatch, tmp_path, capsys, body, code, message):
    _plugin(monkeypatch, tmp_path, body)
    assert main(["boom-abc"]) == code
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1
