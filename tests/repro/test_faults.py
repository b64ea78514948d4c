"""Fault injection: signals, a full disk, a read-only output, corrupted and foreign run files.

Every case checks the exit code, the one-line message, that no process or temporary file is
left behind, and that the next invocation resumes to results byte-identical to those of an
uninterrupted run (``metrics.json``, ``metrics.csv``, ``claims.json``, ``tables/*.csv``: the
files that do not record timings). The sweeps are the ``spin`` dummies of
``test_framework.py``: many small CPU-bound units, no sleeping.
"""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from test_framework import QuadExperiment, calls, register_spin

import dynstab.cli as cli
import dynstab.io
from dynstab.cli import main
from dynstab_repro import registry, runner
from dynstab_repro.io import read_json

REPO = Path(__file__).resolve().parents[2]
RESULT_FILES = ("metrics.json", "metrics.csv", "claims.json", "tables/units.csv")
SPIN = ("spin__a", "spin__b")
WORK = "work=100000"  # ≈ 5-20 ms per unit: a sweep that a signal can hit anywhere

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="process checks read /proc (Linux)"
)


@pytest.fixture
def spin_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Registry with the spin and quad dummies only; commands: env + the harness plugin."""
    monkeypatch.setattr(registry, "EXPERIMENT_MODULES", ())
    monkeypatch.setattr(registry, "_EXPERIMENTS", {})
    monkeypatch.setattr(registry, "_GROUPS", {})
    monkeypatch.setattr(registry, "_LOADED", set())
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("dynstab.cli.env_cmd",))
    register_spin()
    registry.register(QuadExperiment())
    return tmp_path


def spin_args(out: Path, *extra: str) -> list[str]:
    return [
        "reproduce",
        "spin",
        "--quick",
        "--out",
        str(out),
        "--no-progress",
        "--set",
        WORK,
        *extra,
    ]


def result_bytes(out: Path) -> dict[str, bytes]:
    return {f"{d}/{f}": (out / d / f).read_bytes() for d in SPIN for f in RESULT_FILES}


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Results of one uninterrupted serial run (what every interrupted run must end with)."""
    out = tmp_path_factory.mktemp("reference")
    code = subprocess.run(
        [sys.executable, str(driver(out.parent)), *spin_args(out, "--executor", "serial")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert code.returncode == 0, code.stderr
    return result_bytes(out)


def driver(where: Path) -> Path:
    """A script equivalent to the ``dynstab`` command with the spin dummies registered."""
    path = where / "drive_dynstab.py"
    if not path.exists():
        path.write_text(
            textwrap.dedent(
                f"""
                import sys
                sys.path[:0] = [{str(REPO / "tests" / "repro")!r}, {str(REPO / "tests")!r}]
                from dynstab.cli import main
                from dynstab_repro import registry

                if __name__ == "__main__":
                    registry.EXPERIMENT_MODULES = ()
                    from test_framework import register_spin

                    register_spin()
                    sys.exit(main(sys.argv[1:]))
                """
            )
        )
    return path


# --------------------------------------------------------------------------- processes


def _ppid_and_state(pid: int) -> tuple[int, str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = stat[stat.rindex(")") + 2 :].split()
    return int(rest[1]), rest[0]


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (workers, multiprocessing's resource tracker)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (info := _ppid_and_state(int(entry))) is not None:
            children.setdefault(info[0], []).append(int(entry))
    out, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            out.append(child)
            stack.append(child)
    return out


def running(pids: list[int]) -> list[int]:
    """The pids still running (zombies waiting for a reaper do not count)."""
    return [p for p in pids if (info := _ppid_and_state(p)) is not None and info[1] != "Z"]


def n_finished(out: Path, dirs: tuple[str, ...] = SPIN) -> int:
    return sum(
        1
        for d in dirs
        if (out / d / "runs").is_dir()
        for f in (out / d / "runs").iterdir()
        if f.suffix == ".json" and not f.name.startswith(".")
    )


def temporaries(out: Path) -> list[Path]:
    return [p for p in out.rglob(".*.tmp")]


def kill_mid_sweep(
    out: Path, sig: int, rng: random.Random, *extra: str
) -> tuple[int, str, list[int]]:
    """Start the sweep, kill it with ``sig`` after a random number of finished units."""
    proc = subprocess.Popen(
        [sys.executable, str(driver(out.parent)), *spin_args(out, "--workers", "2", *extra)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    target = rng.randint(1, 20)
    dirs = tuple(f".{d}.staging" for d in SPIN) if "--force" in extra else SPIN
    deadline = time.monotonic() + 240
    while n_finished(out, dirs) < target and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    tree = descendants(proc.pid)
    assert proc.poll() is None, f"the sweep ended before the kill: {proc.communicate()}"
    assert tree, "no worker process was started"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    deadline = time.monotonic() + 20
    while running(tree) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not running(tree), f"processes left behind after {signal.Signals(sig).name}: {tree}"
    return proc.returncode, err, tree


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_killed_sweep_leaves_no_process_and_resumes_identically(spin_env, reference, sig):
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    out = spin_env / "out"
    code, err, _ = kill_mid_sweep(out, sig, rng)
    if sig == signal.SIGTERM:
        assert code == 143, (seed, err)
        assert "interrupted by SIGTERM" in err
        assert "Rerun the same command to resume" in err
        assert "Traceback" not in err
        assert not temporaries(out)
    else:
        assert code == -signal.SIGKILL
    kept = n_finished(out)
    assert 0 < kept < 64, seed
    # resume in this process (the same code version), serially
    assert main(spin_args(out, "--executor", "serial")) == 0
    assert result_bytes(out) == reference, seed
    assert not temporaries(out)


def test_sigint_to_the_process_group_stops_cleanly(spin_env, reference):
    """Ctrl-C in a terminal reaches the runner and its workers: only the runner acts on it."""
    out = spin_env / "out"
    proc = subprocess.Popen(
        [sys.executable, str(driver(spin_env)), *spin_args(out, "--workers", "2")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 240
    while n_finished(out) < 6 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    tree = descendants(proc.pid)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted by SIGINT" in err
    assert "Traceback" not in err  # workers ignore SIGINT: no KeyboardInterrupt spam
    deadline = time.monotonic() + 20
    while running(tree) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not running(tree)
    assert main(spin_args(out, "--executor", "serial")) == 0
    assert result_bytes(out) == reference


def test_workers_start_with_sigint_blocked_in_a_fresh_interpreter():
    """Every spawned worker inherits a blocked SIGINT, even the ones spawned after the pool's
    resource tracker started (its start-up unblocks SIGINT in the calling thread): a Ctrl-C
    while a worker is still importing must not print a ``KeyboardInterrupt`` traceback."""
    code = textwrap.dedent(
        """
        import functools, multiprocessing, signal
        from concurrent.futures import ProcessPoolExecutor
        from dynstab_repro.executors import _sigint_blocked

        if __name__ == "__main__":
            mask = functools.partial(signal.pthread_sigmask, signal.SIG_BLOCK, [])
            with _sigint_blocked():
                pool = ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn"))
                futures = [pool.submit(mask) for _ in range(2)]
                runner_blocked = signal.SIGINT in mask()
            print(runner_blocked, all(signal.SIGINT in f.result() for f in futures))
            print(signal.SIGINT in mask())  # the block ends with the region
            pool.shutdown()
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "True", "False"]


def test_interrupted_force_keeps_the_old_results_and_continues(spin_env, reference):
    out = spin_env / "out"
    assert main(spin_args(out, "--executor", "serial")) == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and "spin__" in str(p)}
    code, err, _ = kill_mid_sweep(out, signal.SIGTERM, random.Random(1), "--force")
    assert code == 143, err
    assert "previous results stay untouched" in err
    after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and "spin__" in str(p)}
    staged = {p for p in after if ".staging" in str(p)}
    assert staged
    assert {p: b for p, b in after.items() if p not in staged} == before  # old results intact
    assert main(spin_args(out, "--executor", "serial", "--force")) == 0
    assert not list(out.glob(".*staging*"))
    assert result_bytes(out) == reference


# --------------------------------------------------------------------------- file system


def test_full_disk_exits_3_keeps_finished_units_and_resumes(
    spin_env, reference, monkeypatch, capsys
):
    out = spin_env / "out"
    real = dynstab.io.atomic_write_bytes
    written: list[str] = []

    def full_disk(path, data):
        if str(path).endswith(".json") and "/runs/" in str(path):
            written.append(str(path))
            if len(written) > 7:
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, data)

    monkeypatch.setattr(dynstab.io, "atomic_write_bytes", full_disk)
    assert main(spin_args(out, "--executor", "serial")) == 3
    err = capsys.readouterr().err
    assert "no space left on device while writing" in err
    assert "rerun the same command to resume" in err
    assert "Traceback" not in err
    assert n_finished(out) == 7
    assert not temporaries(out)
    monkeypatch.setattr(dynstab.io, "atomic_write_bytes", real)
    assert main(spin_args(out, "--executor", "serial")) == 0
    assert result_bytes(out) == reference


def test_partial_write_failure_leaves_no_temporary(tmp_path, monkeypatch):
    """ENOSPC in the middle of writing: the old file stays, the temporary file goes."""
    target = tmp_path / "a.json"
    target.write_text("old")

    def failing_fsync(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="No space left") as info:
        dynstab.io.atomic_write_text(target, "new")
    assert info.value.filename == str(target)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_read_only_output_exits_3_before_any_work(spin_env, monkeypatch, capsys):
    marker = spin_env / "marker"
    marker.mkdir()
    out = spin_env / "ro"
    out.mkdir()
    if os.geteuid() != 0:  # root ignores permissions: simulate a read-only file system instead
        out.chmod(0o555)
    else:
        real_mkdir = Path.mkdir

        def read_only_mkdir(self, *args, **kwargs):
            if str(self).startswith(str(out)) and self != out:
                raise OSError(errno.EROFS, "Read-only file system", str(self))
            return real_mkdir(self, *args, **kwargs)

        monkeypatch.setattr(Path, "mkdir", read_only_mkdir)
    argv = ["run", "quad/a", "--quick", "--out", str(out), "--executor", "serial"]
    code = main([*argv, "--no-progress", "--set", f"marker_dir={marker}"])
    out.chmod(0o755)
    assert code == 3
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert ("read-only file system" in err) or ("permission denied" in err)
    assert "--out" in err
    assert calls(marker) == 0  # nothing was computed


def test_outputs_honour_the_umask(spin_env):
    old = os.umask(0o027)
    try:
        out = spin_env / "out"
        assert main(spin_args(out, "--executor", "serial", "--set", "n_units=2")) == 0
    finally:
        os.umask(old)
    modes = {oct(p.stat().st_mode & 0o777) for p in out.rglob("*") if p.is_file()}
    assert modes == {oct(0o640)}


def test_second_writer_is_refused_with_exit_3(spin_env, capsys):
    import fcntl

    out = spin_env / "out"
    out.mkdir()
    fd = os.open(out, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        assert main(spin_args(out, "--executor", "serial")) == 3
    finally:
        os.close(fd)
    assert "another dynstab process is writing" in capsys.readouterr().err


# --------------------------------------------------------------------------- stored files


def test_corrupted_run_files_are_quarantined_and_recomputed(spin_env, reference, capsys):
    out = spin_env / "out"
    assert main(spin_args(out, "--executor", "serial")) == 0
    runs = out / "spin__a" / "runs"
    files = sorted(runs.glob("u=*.json"))
    files[0].write_bytes(b"\x00\xffgarbage")  # unparseable
    files[1].write_text('{"key": "u=1_lr=0.9", "status": "ok"')  # truncated
    files[2].write_text("[1, 2, 3]")  # parseable, not a unit record
    wrong_key = read_json(files[3])
    wrong_key["key"] = "u=99_lr=0.3"  # parseable, another unit's record
    files[3].write_text(json.dumps(wrong_key))
    no_metrics = read_json(files[4])
    del no_metrics["metrics"]
    files[4].write_text(json.dumps(no_metrics))
    capsys.readouterr()
    assert main(spin_args(out, "--executor", "serial")) == 0
    err = capsys.readouterr().err
    assert err.count("quarantined as") == 5
    assert len(list(runs.glob("*.corrupt-*"))) == 5
    assert all(f.is_file() for f in files[:5])  # recomputed
    assert result_bytes(out) == reference
    report = (out / "spin__a" / "report.md").read_text()
    assert "quarantined as" in report


def test_foreign_files_are_ignored_with_a_warning(spin_env, reference, capsys):
    out = spin_env / "out"
    assert main(spin_args(out, "--executor", "serial")) == 0
    (out / "spin__a" / "runs" / "stray.json").write_text('{"not": "a unit"}')
    (out / "spin__a" / "runs" / "notes.txt").write_text("mine")
    (out / "spin__a" / "my_notes.md").write_text("mine too")
    capsys.readouterr()
    assert main(spin_args(out, "--executor", "serial")) == 0
    err = capsys.readouterr().err
    assert "ignoring 2 foreign file(s) in runs/" in err
    assert "stray.json" in err
    assert "ignoring foreign entries" in err
    assert "my_notes.md" in err
    assert (out / "spin__a" / "runs" / "stray.json").read_text() == '{"not": "a unit"}'
    assert result_bytes(out) == reference
    # --force replaces the directory but carries the user's files over
    assert main(spin_args(out, "--executor", "serial", "--force")) == 0
    assert (out / "spin__a" / "my_notes.md").read_text() == "mine too"
    assert (out / "spin__a" / "runs" / "notes.txt").read_text() == "mine"
    assert result_bytes(out) == reference


def test_units_of_another_code_version_are_recomputed_and_said_so(spin_env, monkeypatch, capsys):
    out = spin_env / "out"
    args = spin_args(out, "--executor", "serial", "--set", "n_units=3")
    assert main(args) == 0
    other = {"dynstab": "9.9", "commit": "f" * 40, "dirty": False, "diff": None}
    monkeypatch.setattr(runner, "code_version", lambda: other)
    capsys.readouterr()
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "recomputing 3 stored unit(s) computed by other code" in err
    assert "now dynstab 9.9, commit fffffff" in err
    unit = read_json(next((out / "spin__a" / "runs").glob("u=*.json")))
    assert unit["code"] == other
    summary = read_json(out / "summary.json")
    assert summary["provenance"]["commit"] == "f" * 40


# --------------------------------------------------------------------------- usage errors


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--set", "lrs="], "lrs would be empty"),
        (["--set", "n_units=0"], "has no unit to run"),
        (["--set", "nope=1"], "unknown config key 'nope'"),
        (["--set", "work=lots"], "work must be an int"),
        (["--set", "lrs=a"], "lrs[0] must be a number"),
        (["--workers", "0"], "must be a positive integer"),
    ],
)
def test_usage_errors_exit_2_before_any_work(spin_env, capsys, extra, message):
    out = spin_env / "out"
    assert main([*spin_args(out, "--executor", "serial"), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
    assert not out.exists()


def test_empty_out_is_a_usage_error(spin_env, capsys, monkeypatch):
    monkeypatch.chdir(spin_env)
    assert main(["reproduce", "spin", "--quick", "--out", "", "--executor", "serial"]) == 2
    assert "must name a directory" in capsys.readouterr().err
    assert os.listdir(spin_env) == []
    with pytest.raises(ValueError, match="non-empty path"):
        runner.reproduce("spin", out_dir="", executor="serial", progress=False)
