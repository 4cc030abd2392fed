"""Bad input, one row each: every command's flags and values, and damaged run folders.
Every row exits with code 2, prints one line that names the flag or file and the
problem, and leaves the file system as it was (a listing with sizes, times and modes
before and after). The run the rows read is a copy of the tiny format-1 nerf fixture,
whose config names its dataset ``scene`` (relative): the rows run in a folder where
``scene`` is the test scene."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from sparsefield import checkpoints, cli

FIXTURE = Path(__file__).parent / "fixtures" / "runs_v1" / "nerf"
TRAIN = "train --data scene --steps 1 --out new"


def edit_config(change):
    """A damage: ``change(payload)`` applied to the run's config.json."""
    def damage(run: Path):
        payload = json.loads((run / "config.json").read_text())
        change(payload)
        (run / "config.json").write_text(json.dumps(payload))
    return damage


def set_setting(name, value):
    return edit_config(lambda p: p["config"].__setitem__(name, value))


def replace_checkpoints(*contents):
    """A damage: the run's checkpoints replaced by files of these bytes (or none)."""
    def damage(run: Path):
        shutil.rmtree(run / "checkpoints")
        (run / "checkpoints").mkdir()
        for step, data in enumerate(contents, 1):
            checkpoints.path_for(run, step).write_bytes(data)
    return damage


def foreign_checkpoint(run: Path):
    checkpoints.write(run, 9, {"step": np.asarray(9)}, "splat")


def newer_checkpoint(run: Path):
    path = checkpoints.write(run, 9, {"step": np.asarray(9)}, "nerf")
    with np.load(path) as f:
        arrays = dict(f)
    np.savez(path, **(arrays | {"__format__": np.asarray(checkpoints.FORMAT + 1)}))


def write(path: str, text: str):
    return lambda run: (run.parent / path).write_text(text)


ROWS = [
    # train: types
    (f"{TRAIN} --steps abc", "--steps abc: must be an integer"),
    (f"{TRAIN} --steps", "--steps: needs a value"),
    (f"{TRAIN} --scale x", "--scale x: must be a number"),
    (f"{TRAIN} --seed 1.5", "--seed 1.5: must be an integer"),
    (f"{TRAIN} --rays-per-batch 100.5", "--rays-per-batch 100.5: must be an integer"),
    (f"{TRAIN} --method splat --pose-refine pose-refinement", "--method splat does not refine poses"),
    ("eval --run run --align-poses --align.steps x", "--align.steps x: must be an integer"),
    (f"{TRAIN} --view-ids a,b", "--view-ids a b: 'a' is not an integer"),
    (f"{TRAIN} --random-background yes", "--random-background yes: takes no value"),
    (f"{TRAIN} --render.num-samples 1 2", "--render.num-samples 1 2: takes one value"),
    (f"{TRAIN} --field.encoding.levels many", "--field.encoding.levels many: must be an integer"),
    (f"{TRAIN} stray", "--out new stray: takes one value, not 2"),
    ("train stray --data scene", "stray: unexpected argument"),
    # train: values of the run
    (f"{TRAIN} --steps 0", "--steps 0: must be at least 1"),
    (f"{TRAIN} --scale 0", "--scale 0.0: must be in (0, 1]"),
    (f"{TRAIN} --scale 1.5", "--scale 1.5: must be in (0, 1]"),
    (f"{TRAIN} --scale nan", "--scale nan: must be a finite number"),
    (f"{TRAIN} --views -3", "--views -3: must be at least 1"),
    (f"{TRAIN} --views 0", "--views 0: must be at least 1"),
    (f"{TRAIN} --views 99", "cannot select 99 views"),
    (f"{TRAIN} --view-ids 1,99", "99"),
    (f"{TRAIN} --view-ids 1,1", "1"),
    (f"{TRAIN} --eval-views -1", "--eval-views -1: must not be negative"),
    (f"{TRAIN} --eval-every 0", "--eval-every 0: must be at least 1"),
    (f"{TRAIN} --checkpoint-every -5", "--checkpoint-every -5: must be at least 1"),
    (f"{TRAIN} --rays-per-batch 0", "--rays-per-batch 0: must be at least 1"),
    (f"{TRAIN} --protocol blender9", "unknown protocol"),
    (f"{TRAIN} --method nope", "--method nope: unknown method"),
    (f"{TRAIN} --preset nope", "--preset nope: unknown preset"),
    # train: components' values (the tree's generic checks)
    (f"{TRAIN} --render.num-samples 0", "--render.num-samples 0: must be at least 1"),
    (f"{TRAIN} --render.sample-budget 0", "--render.sample-budget 0: must be at least 1"),
    (f"{TRAIN} --rays-per-batch 1024 --render.sample-budget 512", "--render.sample-budget 512: must be at least --ray"),
    (f"{TRAIN} --render.min-transmittance -0.1", "--render.min-transmittance -0.1: must not be negative"),
    (f"{TRAIN} --occupancy.resolution 0", "--occupancy.resolution 0: must be at least 1"),
    (f"{TRAIN} --occupancy.threshold -1", "--occupancy.threshold -1.0: must not be negative"),
    (f"{TRAIN} --sampler occupancy-net --occupancy.hidden 0", "--occupancy.hidden 0: must be at least 1"),
    (f"{TRAIN} --field.encoding.levels 0", "--field.encoding.levels 0: must be at least 1"),
    (f"{TRAIN} --field.encoding voxel --field.encoding.max-res 0", "--field.encoding.max-res 0: must be at least 1"),
    (f"{TRAIN} --field.hidden 0", "--field.hidden 0: must be at least 1"),
    (f"{TRAIN} --reg.distortion.weight -1", "--reg.distortion.weight -1.0: must not be negative"),
    (f"{TRAIN} --preset fewshot --reg.occlusion.weight -0.5", "--reg.occlusion.weight -0.5: must not be negative"),
    (f"{TRAIN} --optim.lr -1", "--optim.lr -1.0: must not be negative"),
    (f"{TRAIN} --optim.lr inf", "--optim.lr inf: must be a finite number"),
    (f"{TRAIN} --method splat --splat.crop -1", "--splat.crop -1: must not be negative"),
    (f"{TRAIN} --method splat --splat.densify.grad-threshold -1", "--splat.densify.grad-threshold -1.0: must not be"),
    (f"{TRAIN} --method splat --splat.gaussians.max-capacity 0", "--splat.gaussians.max-capacity 0: must be at least"),
    (f"{TRAIN} --dist.num-processes 0", "--dist.num-processes 0: must be at least 1"),
    # train: flags, choices, folders
    (f"{TRAIN} --render.num-sample 64", "--render.num-sample: unknown flag; did you mean --render.num-samples"),
    (f"{TRAIN} --sampler octree", "--sampler octree: choose from"),
    (f"{TRAIN} --field.encoding voxels", "choose from frequency, hash, simplex, voxel"),
    (f"{TRAIN} --reg.entropy.weight 0.1", "reg.entropy is off here"),
    ("train --data nothere --out new", "nothere: dataset path does not exist"),
    ("train --data scene --out afile", "--out afile: is a file"),
    ("train --data scene --out folder", "--out folder: folder is not empty and is not a sparsefield run"),
    ("train --data scene --out afile/new", "afile is a file, not a folder"),
    ("train --data scene --method splat --init-from nothere --out new", "nothere: no such run folder"),
    ("demo --steps abc", "--steps abc: must be an integer"),
    # render, eval, export
    ("render", "--run: required"),
    ("render --run nothere", "nothere: no such run folder"),
    ("render --run scene", "scene: not a sparsefield run"),
    ("render --run run --frames 0", "--frames 0: must be at least 1"),
    ("render --run run --frames -2", "--frames -2: must be at least 1"),
    ("render --run run --frames x", "--frames x: must be an integer"),
    ("render --run run --path foo", "--path foo: choose 'test' or 'orbit'"),
    ("render --run run --out afile", "--out afile: is a file"),
    ("render --run run --path test --data nothere", "nothere: dataset path does not exist"),
    ("render --run run --bogus 1", "--bogus: unknown flag"),
    ("eval", "--run: required"),
    ("eval --run scene", "scene: not a sparsefield run"),
    ("eval --run run --data nothere", "nothere: dataset path does not exist"),
    ("eval --run run extra", "--run run extra: takes one value, not 2"),
    ("eval extra --run run", "extra: unexpected argument"),
    ("export --run run --out m.ply --resolution 0", "--resolution 0: must be at least 2"),
    ("export --run run --out m.ply --resolution x", "--resolution x: must be an integer"),
    ("export --run run --out m.xyz", "m.xyz: unsupported format '.xyz'"),
    ("export --run run --out folder", "unsupported format ''"),
    ("export --run run --out m.ply --threshold nan", "--threshold nan: must be a finite number"),
    ("export --run run --out afile/m.ply", "afile is a file, not a folder"),
    ("export --run nothere --out m.ply", "nothere: no such run folder"),
    ("trian", "unknown command 'trian'; did you mean train?"),
]

DAMAGED = [  # (what, damage, phrase, also a resumed train): read by eval, render, export (and train)
    # training rebuilds a missing scene box, and starts afresh in a run without a checkpoint
    ("config not JSON", write("run/config.json", "{ not json"), "config.json: unreadable run config", True),
    ("config names an unknown class", set_setting("__class__", "Nope"), "unknown config class 'Nope'", True),
    ("config without its config", edit_config(lambda p: p.pop("config")), "config.json: unreadable run", True),
    ("config with text for a number", set_setting("steps", "abc"), "config.json: --steps 'abc': must be an int", True),
    ("config with a value out of range", set_setting("eval_views", -4), "config.json: --eval-views -4: must not",
     True),
    ("config without its scene box", edit_config(lambda p: p.pop("bbox")), "config.json: no scene box", False),
    ("no checkpoint", replace_checkpoints(), "checkpoints: the run has no checkpoint yet", False),
    ("every checkpoint unreadable", replace_checkpoints(b"not a zip", b"PK\x03\x04"), "none of the 2 checkpoints",
     True),
    ("a checkpoint of another method", foreign_checkpoint, "a checkpoint of method 'splat'", True),
    ("a checkpoint of a newer version", newer_checkpoint, "newer sparsefield", True),
]
COMMANDS = ["eval --run run --data scene", "render --run run --frames 1", "export --run run --out m.ply",
            "train --out run --steps 5"]


def listing(root: Path) -> dict:
    """``relative path -> (size, mtime, mode)`` of everything under ``root``."""
    return {str(p.relative_to(root)): (p.lstat().st_size, p.lstat().st_mtime_ns, p.lstat().st_mode)
            for p in sorted(root.rglob("*"))}


@pytest.fixture
def workspace(scene, tmp_path, monkeypatch):
    """A folder with the test scene (``scene``), a run (``run``), a file (``afile``) and
    a folder that is not a run (``folder``), as the working directory."""
    os.symlink(scene, tmp_path / "scene")
    shutil.copytree(FIXTURE, tmp_path / "run")
    (tmp_path / "afile").write_text("mine")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "notes.txt").write_text("mine")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SPARSEFIELD_COMPILE_CACHE", "off")
    return tmp_path


def assert_refused(argv: str, phrase: str, root: Path, capsys, code: int = 2):
    """``sparsefield ARGV`` exits with ``code``, one line on stderr holding ``phrase``,
    and nothing under ``root`` changes."""
    before = listing(root)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv.split())
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert exit_.value.code == code and len(lines) == 1 and lines[0].startswith("error: "), err
    assert phrase in lines[0], lines[0]
    assert listing(root) == before


@pytest.mark.parametrize("argv, phrase", ROWS, ids=[argv.replace(TRAIN, "train") for argv, _ in ROWS])
def test_a_bad_flag_is_one_line_and_writes_nothing(workspace, capsys, argv, phrase):
    assert_refused(argv, phrase, workspace, capsys)


@pytest.mark.parametrize("what, damage, phrase, train", DAMAGED, ids=[row[0] for row in DAMAGED])
def test_a_damaged_run_is_one_line_and_stays_as_it_was(workspace, capsys, what, damage, phrase, train):
    damage(workspace / "run")
    for argv in COMMANDS if train else COMMANDS[:-1]:
        assert_refused(argv, phrase, workspace, capsys)
