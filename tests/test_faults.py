"""Faults during a run: SIGTERM and Ctrl-C save a checkpoint and exit 143 / 130, and the
resumed run ends bit for bit where an uninterrupted one does; kill -9 (in the middle of a
checkpoint write, and at a random moment) always resumes from the newest complete
checkpoint and leaves no temporary file; Ctrl-C while loading or starting writes
nothing, a second Ctrl-C stops at once; a full disk or a read-only folder is one line
with exit code 1 and the run as it was; divergence is exit 3 with the last good
checkpoint kept; a damaged newest checkpoint or history.json is survived; files are
group-readable under umask 022 and every JSON file is strict.

The runs use `Flat`, a method of three parameters defined here, so a step costs
milliseconds and the loop, not a model, is under test. Run as a script, this file is the
command line with `Flat` registered (``python tests/test_faults.py train ...``), which
the subprocess tests start; ``FAULTS_*`` variables slow it down or make it hang where a
test needs to strike."""

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sparsefield import checkpoints, cli, files
from sparsefield.datasets.batches import sample_rays
from sparsefield.datasets.synthetic import generate_scene
from sparsefield.methods import METHODS, Method, register_method

STEPS = 120
FLAGS = ["--method", "flat", "--eval-views", "1", "--eval-every", "40", "--checkpoint-every", "10"]


class Flat(Method):
    """A scene of one colour: the smallest method that trains (3 parameters)."""

    name = "flat"

    def fresh(self) -> dict:
        params = {"color": jnp.zeros(3)}
        return {"step": jnp.zeros((), jnp.int32), "params": params, "optimizer": optax.adam(0.05).init(params)}

    def init(self, views) -> dict:
        if os.environ.get("FAULTS_CTRL_C_IN_INIT"):  # a Ctrl-C while training starts
            os.kill(os.getpid(), signal.SIGINT)
        return self.fresh()

    def template(self, arrays) -> dict:
        return self.fresh()

    def make_step(self, stage):
        nan_from = int(os.environ.get("FAULTS_NAN_FROM", 1 << 30))  # a loss that diverges from this step

        def step_fn(state, data, key):
            batch = sample_rays(data, key, 64, random_background=False)
            scale = jnp.where(state["step"] >= nan_from, jnp.nan, 1.0)
            loss = lambda p: scale * jnp.mean((jax.nn.sigmoid(p["color"]) - batch["rgb"]) ** 2)  # noqa: E731
            value, grads = jax.value_and_grad(loss)(state["params"])
            updates, opt = optax.adam(0.05).update(grads, state["optimizer"])
            new = {"step": state["step"] + 1, "params": optax.apply_updates(state["params"], updates), "optimizer": opt}
            return new, {"loss": value, "psnr": -10.0 * jnp.log10(value)}

        return jax.jit(step_fn)

    def after_step(self, state, done, views):
        time.sleep(float(os.environ.get("FAULTS_STEP_SECONDS", 0)))
        if str(done) == os.environ.get("FAULTS_CTRL_C_TWICE_AT"):  # an impatient user
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
        return state

    def render(self, state, camera, background) -> dict:
        shape = (int(camera.height), int(camera.width))
        color = np.asarray(jax.nn.sigmoid(state["params"]["color"]), np.float32)
        return {"rgb": np.broadcast_to(color, (*shape, 3)).copy(), "depth": np.ones(shape, np.float32),
                "opacity": np.ones(shape, np.float32)}


@pytest.fixture(scope="module", autouse=True)
def flat():
    register_method(Flat)
    yield Flat
    METHODS.pop(Flat.name)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """16x16 pixels, 8 train and 2 test views (LPIPS is NaN on images this small)."""
    root = tmp_path_factory.mktemp("data") / "tiny16"
    return generate_scene(root, name="tiny", resolution=16, n_train=8, n_val=1, n_test=2)


@pytest.fixture(autouse=True)
def no_compile_cache(monkeypatch):
    monkeypatch.setenv("SPARSEFIELD_COMPILE_CACHE", "off")


def train(scene, run, *flags, steps=STEPS):
    """``sparsefield train`` in this process; returns the exit code (0 when done)."""
    try:
        cli.main(["train", "--data", str(scene), "--out", str(run), "--steps", str(steps), *FLAGS, *flags])
    except SystemExit as exit_:
        return exit_.code
    return 0


def error_line(err: str) -> str:
    """The one line a failed command printed on stderr (besides the progress bar), or
    fails the test when it printed several or a traceback."""
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("train flat:")]
    assert len(lines) == 1 and lines[0].startswith("error: "), err[-3000:]
    return lines[0]


def strict_json(path: Path):
    """``path`` parsed as strict JSON (NaN and Infinity refused)."""
    return json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"{path} holds {c}"))


def listing(root: Path) -> dict:
    """``relative path -> (size, mtime, mode)`` of every file under ``root``, and ``(-1,
    0, mode)`` of every folder (whose time changes when a temporary file comes and goes)."""
    return {str(p.relative_to(root)): (-1, 0, p.stat().st_mode) if p.is_dir() else
            (p.stat().st_size, p.stat().st_mtime_ns, p.stat().st_mode) for p in sorted(root.rglob("*"))}


def assert_same_run(run: Path, reference: dict):
    """The run's history equals the reference at every step both logged, bit for bit, and
    it ended at the same step with the same test PSNR."""
    history = strict_json(run / "history.json")
    ours = {h["step"]: h for h in history["train"]}
    theirs = {h["step"]: h for h in reference["history"]["train"]}
    common = sorted(set(ours) & set(theirs))
    assert len(common) >= STEPS // 10 and common[-1] == STEPS
    for step in common:
        assert (ours[step]["loss"], ours[step]["psnr"]) == (theirs[step]["loss"], theirs[step]["psnr"]), step
    assert history["eval"] == reference["history"]["eval"]
    metrics = strict_json(run / "metrics.json")
    assert (metrics["steps"], metrics["psnr"]) == (STEPS, reference["metrics"]["psnr"])
    assert not list(run.rglob(f"{files.TEMP_PREFIX}*"))


@pytest.fixture(scope="module")
def reference(scene, tmp_path_factory):
    """An uninterrupted run under umask 022."""
    run = tmp_path_factory.mktemp("reference") / "run"
    old = os.umask(0o022)
    try:
        assert train(scene, run) == 0
    finally:
        os.umask(old)
    return {"run": run, "history": strict_json(run / "history.json"), "metrics": strict_json(run / "metrics.json")}


def test_files_are_group_readable_and_json_is_strict(reference):
    run = reference["run"]
    modes = {str(p.relative_to(run)): p.stat().st_mode & 0o777 for p in run.rglob("*")}
    assert modes and all(m == (0o755 if (run / p).is_dir() else 0o644) for p, m in modes.items()), modes
    assert reference["metrics"]["lpips"] is None  # NaN on 16 px images: null, not NaN
    strict_json(run / "config.json")
    _, _, history = checkpoints.read(checkpoints.list_checkpoints(run)[-1])
    assert history["train"][-1]["step"] == STEPS


# ---- signals and kills (subprocesses) ------------------------------------------------------


def start(scene, run, log: Path, *flags, **env) -> subprocess.Popen:
    """This file as the command line, training ``run`` in a subprocess (output to ``log``)."""
    env = dict(os.environ, SPARSEFIELD_COMPILE_CACHE="off", SPARSEFIELD_MALLOC="system", PYTHONUNBUFFERED="1",
               **{f"FAULTS_{k.upper()}": str(v) for k, v in env.items()})
    args = [sys.executable, __file__, "train", "--data", str(scene), "--out", str(run), "--steps", str(STEPS),
            *FLAGS, *flags]
    return subprocess.Popen(args, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)


def strike(plan: dict, timeout: float = 120.0):
    """For each ``name -> (proc, condition, signal)``: as soon as ``condition()`` holds,
    send the signal; fail if a process ends first."""
    deadline, waiting = time.monotonic() + timeout, dict(plan)
    while waiting:
        for name, (proc, condition, sig) in list(waiting.items()):
            if condition():
                proc.send_signal(sig)
                del waiting[name]
            else:
                assert proc.poll() is None, f"{name} ended (exit {proc.returncode}) before its signal"
        assert time.monotonic() < deadline, f"{sorted(waiting)}: no signal after {timeout} s"
        time.sleep(0.05)


def after_a_random_pause(run: Path):
    """A condition that holds a random 0 to 0.5 s after ``run``'s first checkpoint."""
    seen = []

    def condition():
        if not seen and checkpoints.list_checkpoints(run):
            seen.append(time.monotonic() + random.uniform(0.0, 0.5))
        return bool(seen) and time.monotonic() > seen[0]

    return condition


@pytest.fixture(scope="module")
def struck(scene, tmp_path_factory):
    """Four training subprocesses, started together (they spend most of their time
    loading) and each stopped once: SIGTERM and Ctrl-C after the first checkpoint, kill -9
    in the middle of the write of step 12, kill -9 at a random moment. Returns ``name ->
    (exit code, run folder, output)``."""
    root = tmp_path_factory.mktemp("struck")
    run, log = (lambda name: root / name), (lambda name: root / f"{name}.log")
    every_step = ("--checkpoint-every", "1")
    procs = {"SIGTERM": start(scene, run("SIGTERM"), log("SIGTERM"), step_seconds=0.05),
             "SIGINT": start(scene, run("SIGINT"), log("SIGINT"), step_seconds=0.05),
             "mid-write": start(scene, run("mid-write"), log("mid-write"), *every_step, hang_at="step_0000012"),
             "random": start(scene, run("random"), log("random"), *every_step, step_seconds=0.05)}
    try:
        strike({"SIGTERM": (procs["SIGTERM"], lambda: checkpoints.list_checkpoints(run("SIGTERM")), signal.SIGTERM),
                "SIGINT": (procs["SIGINT"], lambda: checkpoints.list_checkpoints(run("SIGINT")), signal.SIGINT),
                "mid-write": (procs["mid-write"], lambda: "hanging" in log("mid-write").read_text(), signal.SIGKILL),
                "random": (procs["random"], after_a_random_pause(run("random")), signal.SIGKILL)})
        yield {name: (proc.wait(60), run(name), log(name).read_text()) for name, proc in procs.items()}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.mark.parametrize("name, code", [("SIGTERM", 143), ("SIGINT", 130)])
def test_sigterm_and_ctrl_c_save_a_checkpoint_and_resume_to_the_same_result(scene, struck, reference, name, code):
    exit_code, run, output = struck[name]
    assert exit_code == code, output[-2000:]
    stopped = checkpoints.step_of(checkpoints.list_checkpoints(run)[-1])
    assert 10 <= stopped < STEPS and "resume with: sparsefield train --out" in output
    assert train(scene, run) == 0
    assert_same_run(run, reference)


def test_ctrl_c_while_starting_writes_nothing(scene, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FAULTS_CTRL_C_IN_INIT", "1")
    assert train(scene, tmp_path / "run") == 130
    assert "interrupted before training started" in capsys.readouterr().out
    assert not (tmp_path / "run").exists()


def test_a_second_ctrl_c_stops_at_once(scene, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FAULTS_CTRL_C_TWICE_AT", "13")
    assert train(scene, tmp_path / "run") == 130
    assert "interrupted again: stopping now, without a checkpoint" in capsys.readouterr().out
    assert checkpoints.step_of(checkpoints.read_latest(tmp_path / "run")[0]) == 10  # the last periodic one


HOLD_IMPORT = """\
import sys, time
from pathlib import Path


class HoldImport:
    \"\"\"Stop the CLI inside its imports: at ``tyro`` (the CLI's first), mark the moment and wait.\"\"\"

    def find_spec(self, name, path=None, target=None):
        if name == "tyro":
            Path({flag!r}).touch()
            time.sleep(60)


sys.meta_path.insert(0, HoldImport())
"""


def test_ctrl_c_while_loading_exits_130_in_one_line(tmp_path):
    """The CLI is held inside its imports (a ``sitecustomize`` on the path), so the signal
    lands while it loads however busy the machine is."""
    hold, flag = tmp_path / "hold", tmp_path / "loading"
    hold.mkdir()
    (hold / "sitecustomize.py").write_text(HOLD_IMPORT.format(flag=str(flag)))
    path = os.pathsep.join(filter(None, [str(hold), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, SPARSEFIELD_MALLOC="system", PYTHONPATH=path)
    args = ["train", "--out", str(tmp_path / "r"), "--steps", "abc"]  # fails at once if loading ended first
    proc = subprocess.Popen([sys.executable, "-m", "sparsefield.launch", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    strike({"loading": (proc, flag.exists, signal.SIGINT)})
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and err.strip() == "error: interrupted", err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("name", ["mid-write", "random"])
def test_kill_9_resumes_from_the_newest_complete_checkpoint(scene, struck, reference, capsys, name):
    exit_code, run, output = struck[name]
    assert exit_code == -signal.SIGKILL, output[-2000:]
    if name == "mid-write":
        assert list((run / "checkpoints").glob(f"{files.TEMP_PREFIX}step_0000012.*"))  # the write it cut short
    newest = checkpoints.list_checkpoints(run)[-1]
    assert checkpoints.read_latest(run)[0] == newest  # complete, whatever the kill interrupted
    capsys.readouterr()
    assert train(scene, run) == 0  # with --checkpoint-every 10: the run's own 1 wins, and is named
    out = capsys.readouterr().out
    assert f"from step {checkpoints.step_of(newest)}\n" in out and "ignored: --checkpoint-every" in out
    assert_same_run(run, reference)


# ---- a full disk, a read-only folder, damaged files (in this process) ----------------------


@pytest.mark.parametrize("code, phrase", [(errno.ENOSPC, "no space left on device"),
                                          (errno.EACCES, "permission denied"),
                                          (errno.EROFS, "read-only file system")])
def test_a_failed_write_mid_run_is_one_line_and_leaves_the_run_as_it_was(scene, tmp_path, monkeypatch, capsys,
                                                                           reference, code, phrase):
    run, seen = tmp_path / "run", {}
    fsync = os.fsync

    def failing_fsync(fd):
        if ".tmp-step_0000020" in os.readlink(f"/proc/self/fd/{fd}"):
            seen["before"] = listing(run)
            raise OSError(code, os.strerror(code))
        fsync(fd)

    monkeypatch.setattr(files.os, "fsync", failing_fsync)
    assert train(scene, run) == 1
    monkeypatch.setattr(files.os, "fsync", fsync)
    err = error_line(capsys.readouterr().err)
    assert "step_0000020.npz" in err and phrase in err, err
    after = listing(run)
    assert after == {k: v for k, v in seen["before"].items() if files.TEMP_PREFIX not in k}  # the run as it was
    assert checkpoints.step_of(checkpoints.read_latest(run)[0]) == 10
    if code == errno.ENOSPC:  # space freed: the same command finishes the run
        assert train(scene, run) == 0
        assert_same_run(run, reference)


def test_divergence_is_one_line_exit_3_and_keeps_the_last_good_checkpoint(scene, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FAULTS_NAN_FROM", "25")
    assert train(scene, tmp_path / "run") == 3
    assert "training diverged at step 30" in error_line(capsys.readouterr().err)
    path, _, arrays, history = checkpoints.read_latest(tmp_path / "run")
    assert checkpoints.step_of(path) == 20 and all(np.all(np.isfinite(a)) for a in arrays.values())
    assert strict_json(tmp_path / "run" / "history.json")["train"][-1]["step"] == 20


def test_a_folder_left_by_a_kill_during_the_first_write_is_used(scene, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / f"{files.TEMP_PREFIX}config.json.x1y2").write_text("{")
    assert train(scene, tmp_path / "run", steps=10) == 0
    assert not list((tmp_path / "run").glob(f"{files.TEMP_PREFIX}*"))


def chmod_works(tmp_path: Path) -> bool:
    """Whether a read-only folder stops this user (not for root)."""
    folder = tmp_path / "probe"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        (folder / "x").write_text("")
        return False
    except PermissionError:
        return True
    finally:
        folder.chmod(0o755)


def test_a_read_only_run_folder_is_one_line_and_unchanged(scene, tmp_path, capsys):
    if not chmod_works(tmp_path):
        pytest.skip("chmod does not stop this user (root)")
    run = tmp_path / "run"
    assert train(scene, run, steps=20) == 0
    capsys.readouterr()
    for path in (run, *[p for p in run.rglob("*") if p.is_dir()]):
        path.chmod(0o555)
    before = listing(run)
    try:
        assert train(scene, run, steps=30) == 1
    finally:
        for path in (run, *[p for p in run.rglob("*") if p.is_dir()]):
            path.chmod(0o755)
    assert "permission denied" in error_line(capsys.readouterr().err)
    assert listing(run) == {k: (s, t, m | (0o200 if s < 0 else 0)) for k, (s, t, m) in before.items()}


def test_a_damaged_newest_checkpoint_and_history_are_survived(scene, tmp_path, capsys, reference):
    run = tmp_path / "run"
    assert train(scene, run, steps=30) == 0
    newest = checkpoints.path_for(run, 30)
    newest.write_bytes(newest.read_bytes()[:100])
    (run / "history.json").write_text('{"train": [NaN')
    capsys.readouterr()
    assert train(scene, run) == 0
    out = capsys.readouterr().out
    assert "step_0000030.npz: unreadable checkpoint" in out and "from step 20" in out
    assert_same_run(run, reference)


# ---- this file as the command line ---------------------------------------------------------


def hang_in(name: str):
    """An ``os.fsync`` that hangs (after saying so) when it flushes the temporary file of
    ``name``: a kill then lands in the middle of that checkpoint's write."""
    fsync = os.fsync

    def hanging(fd):
        if f"{files.TEMP_PREFIX}{name}" in os.readlink(f"/proc/self/fd/{fd}"):
            print("hanging", flush=True)
            time.sleep(600)
        fsync(fd)

    return hanging


if __name__ == "__main__":
    from sparsefield import launch

    register_method(Flat)
    if os.environ.get("FAULTS_HANG_AT"):
        files.os.fsync = hang_in(os.environ["FAULTS_HANG_AT"])
    launch.main()
