"""The command line: bad input exits with code 2 and one line naming the file or flag,
writing nothing; component choices in the user's words (``--field.encoding voxel`` or
``field.encoding:voxel``), in any order, inheriting the preset's settings; the demo's
preset; the short help."""

import dataclasses
import shutil

import pytest

from sparsefield import cli as cli_module
from sparsefield.cli import parse_train, parse_train_args
from sparsefield.config import PRESETS, component_paths, get_path, preset_config
from sparsefield.errors import UsageError
from sparsefield.fields.simplex import SimplexGrid
from sparsefield.fields.voxel import VoxelGrid
from sparsefield.samplers.network import OccupancyNetConfig

@pytest.mark.parametrize(
    "damage, phrase",
    [
        (lambda root: (root / "transforms_train.json").write_text("{ not json"), "transforms_train.json"),
        (lambda root: (root / "train" / "r_3.png").unlink(), "r_3"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(scene, tmp_path, damage, phrase, cli):
    root = tmp_path / "broken"
    shutil.copytree(scene, root)
    damage(root)
    out = tmp_path / "run"
    proc = cli("train", "--data", root, "--steps", 5, "--out", out, check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and phrase in lines[0], proc.stderr
    assert not out.exists()


def test_unknown_view_id_exits_2(scene, tmp_path, cli):
    proc = cli("train", "--data", scene, "--view-ids", "1,2,99", "--out", tmp_path / "r", check=False)
    assert proc.returncode == 2 and "99" in proc.stderr and not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    "flags, phrase",
    [
        (["--protocol", "blender9"], "unknown protocol"),
        (["--protocol", "blender8"], "needs train view 26"),  # the tiny scene has 16 train frames
    ],
)
def test_bad_protocol_exits_2(scene, tmp_path, flags, phrase, cli):
    proc = cli("train", "--data", scene, "--out", tmp_path / "r", *flags, check=False)
    assert proc.returncode == 2 and phrase in proc.stderr, proc.stderr
    assert not (tmp_path / "r").exists()


def test_component_flags_work_in_any_order_and_without_their_token():
    # Every choice of every component parses to that choice, in both spellings.
    for path, choices in component_paths().items():
        for cls, name in choices:
            for args in ([f"{path}:{name}"], [f"--{path}", name], [f"--{path}={name}"]):
                value = get_path(parse_train_args(args), path)
                assert (value is None) if cls is None else isinstance(value, cls), (path, name, args)
    # Plain flags after a component's flags; a component's flags without its choice.
    config = parse_train_args(["--occupancy", "grid", "--occupancy.min-views", "2", "--steps", "5",
                               "--field.encoding.log2-table-size", "15", "--view-ids", "1", "2"])
    assert (config.occupancy.min_views, config.steps, config.field.encoding.log2_table_size) == (2, 5, 15)
    assert config.view_ids == (1, 2)
    assert parse_train_args(["--view-ids", "26,86,2"]).view_ids == (26, 86, 2)
    assert parse_train_args(["--preset", "fewshot", "--reg.occlusion.weight", "0.5"]).reg.occlusion.weight == 0.5
    # --sampler is the occupancy choice under the name users know.
    assert isinstance(parse_train_args(["--sampler", "occupancy-net"]).occupancy, OccupancyNetConfig)
    assert parse_train_args(["--sampler", "none"]).occupancy is None
    # A flag of a component that is off names the choice that turns it on.
    with pytest.raises(UsageError, match="--reg.entropy ray-entropy"):
        parse_train_args(["--reg.entropy.weight", "0.1"])
    with pytest.raises(UsageError, match="takes no dashes; write render.space:ndc"):
        parse_train_args(["--render.space:ndc"])


def test_a_wrong_flag_or_choice_names_the_nearest_right_ones():
    with pytest.raises(UsageError, match=r"--render\.num-sample: unknown flag; did you mean --render\.num-samples"):
        parse_train_args(["--render.num-sample", "64"])
    with pytest.raises(UsageError, match="choose from frequency, hash, simplex, voxel"):
        parse_train_args(["--field.encoding", "voxels"])
    with pytest.raises(UsageError, match="choose from"):
        parse_train_args(["--sampler", "octree"])


def test_a_chosen_component_inherits_the_presets_settings():
    """The default preset's hash grid has 2^17 rows (its class default is 2^19): a simplex
    grid chosen instead gets 2^17 too; its own flags still win; a voxel grid, which has no
    table size, keeps its defaults."""
    assert PRESETS["default"].field.encoding.log2_table_size == 17
    simplex = parse_train_args(["--field.encoding", "simplex"]).field.encoding
    assert isinstance(simplex, SimplexGrid) and simplex.log2_table_size == 17
    assert dataclasses.replace(simplex, log2_table_size=19) == SimplexGrid()  # nothing else changed
    assert parse_train_args(["field.encoding:simplex", "--field.encoding.log2-table-size", "15"]
                            ).field.encoding.log2_table_size == 15
    assert parse_train_args(["--field.encoding", "voxel"]).field.encoding == VoxelGrid()


def test_the_flags_a_user_gave_are_known():
    config, given = parse_train(["--steps", "5", "--field.encoding", "simplex", "--preset", "fewshot"])
    assert given == {"steps", "field.encoding"}
    assert parse_train(["--preset", "fewshot"])[1] == frozenset()


def test_train_help_is_short_and_points_to_the_rest(capsys):
    with pytest.raises(SystemExit) as exit_:
        parse_train_args(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert 20 < len(text.splitlines()) < 60
    assert "--field.encoding" in text and "hash | simplex | voxel | frequency" in text
    assert "sparsefield train --help-all" in text


def test_the_fewshot_preset_picks_its_method_by_the_views_and_takes_its_form(capsys):
    """--preset fewshot: Gaussians (700 steps, opacity decay 0.96; from 3 views, two
    co-trained scenes and DropGaussian) from 4 views or fewer, the radiance field from
    more (1300 steps, two SH bands, weight decay on the grid), with keypoint depth (3+
    view tracks, first 300 steps); --method overrides the pick, in either spelling, and
    gets its method's form for the views; a component of the form can be turned off by
    its flag."""
    config, given = parse_train(["--preset", "fewshot"])
    assert config.method == "nerf" and config.steps == 1300 and not given
    assert config.field.direction_encoding.degree == 2 and config.field.coarse_to_fine is not None
    assert config.reg.weight_decay.weight == 0.1
    assert config.reg.keypoint_depth.until == 300 and config.points.min_track == 3
    for args in (["--views", "3"], ["--views", "4"], ["--view-ids", "0,5,9"], ["--protocol", "llff3"]):
        config = parse_train_args(["--preset", "fewshot", *args])
        assert config.method == "splat" and config.steps == 700 and config.splat.opacity_decay is not None
        assert config.reg.keypoint_depth is None and config.points == PRESETS["fewshot"].points
        co, decay = config.splat.co_training, config.splat.opacity_decay.factor
        assert decay == 0.96
        if args == ["--views", "4"]:
            assert co is None and config.splat.drop is None
        else:
            assert co.until == 0.5 and co.coverage > 0 and config.splat.drop.rate == 0.1
    assert "--preset fewshot from 3 views: --method splat" in capsys.readouterr().out
    for args in (["--views", "6"], ["--protocol", "blender8"], ["--views", "3", "--method", "nerf"],
                 ["--views", "3", "--method=nerf"]):
        config = parse_train_args(["--preset", "fewshot", *args])
        assert config.method == "nerf" and config.reg.keypoint_depth is not None
    for args in (["--views", "6"], []):
        config = parse_train_args(["--preset", "fewshot", "--method", "splat", *args])
        assert config.method == "splat" and config.steps == 700 and config.splat.co_training is None
        assert config.splat.opacity_decay.factor == 0.98  # where the preset picks the radiance field
    assert parse_train_args(["--preset", "fewshot", "--method", "splat", "--views", "3"]).splat.co_training is not None
    config = parse_train_args(["--preset", "fewshot", "--method", "surfel"])
    assert config.method == "surfel" and config.reg.keypoint_depth is None and config.steps == 1000
    assert parse_train_args(["--views", "3"]).method == "nerf"  # other presets keep their method
    config, given = parse_train(["--preset", "fewshot", "--reg.keypoint-depth", "none"])
    assert config.reg.keypoint_depth is None and given == {"reg.keypoint-depth"}
    config, given = parse_train(["--preset", "fewshot", "--views", "3", "--steps", "900"])
    assert config.steps == 900 and given == {"views", "steps"}
    config, given = parse_train(["--preset", "fewshot", "--views", "3", "--splat.drop", "none"])
    assert config.splat.drop is None and config.splat.co_training is not None and given == {"views", "splat.drop"}
    config, given = parse_train(["--preset", "fewshot", "--views", "3", "--splat.co-training.until", "0.8"])
    assert config.splat.co_training.until == 0.8 and given == {"views", "splat.co-training.until"}
    with pytest.raises(UsageError, match="turn it on with --splat.co-training co-training"):
        parse_train(["--preset", "fewshot", "--views", "4", "--splat.co-training.until", "0.8"])


def test_demo_trains_the_fewshot_preset_unless_told(monkeypatch):
    seen = []
    monkeypatch.setenv("SPARSEFIELD_COMPILE_CACHE", "off")
    monkeypatch.setattr(cli_module, "train", lambda config, given: seen.append(config) or (_ for _ in ()).throw(
        SystemExit(0)))
    for args in (["--steps", "7"], ["--preset", "default"]):
        with pytest.raises(SystemExit):
            cli_module.main(["demo", *args])
    assert seen == [dataclasses.replace(preset_config("fewshot"), steps=7), PRESETS["default"]]


def test_unknown_command_exits_2_with_a_suggestion(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli_module.main(["trian"])
    assert exit_.value.code == 2 and "did you mean train?" in capsys.readouterr().err
