"""The command line: ``sparsefield train | demo | render | eval | export``.

Train flags are the `RunConfig` tree (``--render.num-samples 256``). A choice between
components is made with ``--PATH NAME`` (``--field.encoding voxel``) or the token
``PATH:NAME`` (``field.encoding:voxel``); a component's own flags need no choice when the
preset already uses that component; flags and choices go in any order. A chosen
component inherits the settings the preset changed in the one it replaces (`inherit`).

Whatever a user types gets one line, never a traceback or tyro's box: an unknown flag
names the nearest right ones; a value of the wrong type (`check_flags`) or one that makes
no sense (`sparsefield.config.check_config`) names the flag and the value. Exit codes:

    0    done
    1    the system failed the command (disk full, permission denied): the run is as it
         was before the failed write; the same command resumes it
    2    bad input: a flag, a value, a dataset or run folder (nothing is written)
    3    training diverged (the newest checkpoint holds the last good state)
    130  Ctrl-C, 143 SIGTERM (a checkpoint is saved when training had started)
"""

from __future__ import annotations

import dataclasses
import difflib
import errno
import sys
import typing
from pathlib import Path

import tyro

from .alignment import PoseAlignment
from .cache import use_compile_cache
from .config import (PRESET_METHODS, PRESETS, RunConfig, component_paths, config_classes, expected, get_path,
                     inherit, preset_config, replace_path, strip_annotated, train_view_count, union_members)
from .datasets import DatasetError
from .datasets.sfm import SfmConfig, estimate_poses
from .errors import UsageError
from .evaluate import evaluate_run
from .methods import METHODS
from .outputs import ExportArgs, RenderArgs, export_mesh, render_path
from .train import Diverged, train
from .viewer import ViewArgs, start, view

ALIASES = {"--sampler": ("occupancy", {"grid": "grid", "occupancy-net": "net", "net": "net", "none": "none"})}
"""Flags that name a component choice under another name: ``--sampler occupancy-net`` is
``--occupancy net``."""

COMMON_FLAGS = (
    ("--data DIR", "dataset folder (any supported format); default: the built-in demo scene"),
    ("--views N", "train on N views of the train split (8: the standard few-shot list)"),
    ("--view-ids 26,86,2", "train on these views of the train split"),
    ("--protocol NAME", "a published few-shot setting: blender8, llff3|6|9, dtu3|6|9"),
    ("--steps S", "training steps (default 1000)"),
    ("--out RUN", "run folder (an existing run resumes)"),
    ("--scale F", "image scale in (0, 1] (0.5 halves the resolution)"),
    ("--bbox X0 Y0 Z0 X1 Y1 Z1", "the scene box instead of the dataset's"),
    ("--method NAME", "what holds the scene: " + ", ".join(METHODS)),
    ("--preset NAME", "base settings the other flags change: " + ", ".join(PRESETS)),
    ("--seed N", "random seed"),
    ("--view [PORT]", "show the run live in the browser while it trains (sparsefield view shows one after)"),
)


# ---- train flags -------------------------------------------------------------------------


def flag_types(cls: type = RunConfig, prefix: str = "") -> dict[str, list]:
    """``--flag -> [type hints]`` for every value flag of a config tree (over all
    component choices; a flag several choices share has several hints), with tyro's
    ``--no-`` forms of booleans. A component choice ``--PATH`` maps to ``[]`` (its name
    is checked by `split_choices`)."""
    types_, hints = {}, typing.get_type_hints(cls, include_extras=True)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if tyro.conf.Suppress in getattr(hint, "__metadata__", ()) or not f.init:
            continue
        path, tp = prefix + f.name.replace("_", "-"), strip_annotated(hint)
        members = [strip_annotated(m) for m in union_members(tp)]
        nested = [m for m in members if dataclasses.is_dataclass(m)] or ([tp] if dataclasses.is_dataclass(tp) else [])
        if nested:
            for member in nested:
                for flag, member_hints in flag_types(member, path + ".").items():
                    types_.setdefault(flag, []).extend(member_hints)
            if members:
                types_[f"--{path}"] = []  # --PATH NAME
            continue
        types_.setdefault(f"--{path}", []).append(hint)
        if tp is bool:
            types_[f"--{prefix}no-{f.name.replace('_', '-')}"] = [bool]
    return types_


def flag_names(cls: type = RunConfig) -> set[str]:
    """Every ``--flag`` of the config tree (`flag_types`)."""
    return set(flag_types(cls))


def nearest(flag: str, names, prog: str = "sparsefield train") -> str:
    """A hint naming the flags closest to ``flag``."""
    close = difflib.get_close_matches(flag, sorted(names), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    every = "sparsefield train --help-all" if prog == "sparsefield train" else f"{prog} --help"
    return f"{flag}: unknown flag{hint} ({every} lists every flag)"


# ---- flag values -------------------------------------------------------------------------


def check_flags(cls: type, args: list[str], prog: str) -> None:
    """Every argument is a known flag of ``cls`` (or a value after one), every value
    parses as its flag's type, and every required flag is given; checked here so that a
    mistake gets one line instead of tyro's box.

    Raises:
        UsageError: naming the flag (or the stray argument) and the problem.
    """
    types_ = flag_types(cls)
    groups, i = [], 0
    while i < len(args):
        if not args[i].startswith("--"):
            raise UsageError(f"{args[i]}: unexpected argument; flags start with -- ({prog} --help)")
        flag, eq, value = args[i].partition("=")
        j = i + 1
        while j < len(args) and not args[j].startswith("--"):
            j += 1
        groups.append((flag, ([value] if eq else []) + args[i + 1:j]))
        i = j
    for flag, values in groups:
        if flag not in types_:
            raise UsageError(nearest(flag, types_, prog))
        hints = types_[flag]
        problems = [value_problem(h, values) for h in hints]
        if hints and all(problems):
            raise UsageError(f"{' '.join([flag, *values])}: {problems[0]}")
    given = {flag for flag, _ in groups}
    for f in dataclasses.fields(cls):
        flag = f"--{f.name.replace('_', '-')}"
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and flag not in given:
            raise UsageError(f"{flag}: required ({prog} {flag} {f.name.upper()})")


def value_problem(hint, values: list[str]) -> str | None:
    """What is wrong with ``values`` given to a flag of type ``hint``; None if nothing."""
    tp = strip_annotated(hint)
    if union_members(tp):
        members = [m for m in union_members(tp) if strip_annotated(m) not in (None, type(None))]
        if values == ["None"] and len(members) < len(union_members(tp)):
            return None
        problems = [value_problem(m, values) for m in members]
        return None if not all(problems) else problems[0]
    if tp is bool:
        return None if not values else "takes no value (write the flag alone, or its --no- form)"
    if typing.get_origin(tp) is tuple:
        item = typing.get_args(tp)[0]
        bad = [v for v in values if value_problem(item, [v])]
        return "needs a value" if not values else (f"{bad[0]!r} is not {expected(item)}" if bad else None)
    if len(values) != 1:
        return "needs a value" if not values else f"takes one value, not {len(values)}"
    if typing.get_origin(tp) is typing.Literal:
        choices = [str(a) for a in typing.get_args(tp)]
        return None if values[0] in choices else f"choose from {', '.join(choices)}"
    try:
        {int: int, float: float}.get(tp, str)(values[0])
    except ValueError:
        return f"must be {expected(tp)}"
    return None


def parse_flags(cls: type, args: list[str], prog: str, default=None, checked: bool = False):
    """``tyro.cli(cls)`` of ``args`` after `check_flags` (unless ``checked``); help is
    printed as tyro does, and any parse error tyro still finds is one line."""
    wants_help = "-h" in args or "--help" in args
    if not (wants_help or checked):
        check_flags(cls, args, prog)
    kwargs = {} if default is None else {"default": default}
    try:
        return tyro.cli(cls, args=args, prog=prog, console_outputs=wants_help, **kwargs)
    except SystemExit as exit_:
        if exit_.code in (0, None):
            raise
        raise UsageError(f"{prog} {' '.join(args)}: the flags do not parse ({prog} --help)") from None


def split_choices(args: list[str]) -> tuple[list[str], dict[str, str]]:
    """Take the component choices out of ``args``: tokens ``PATH:NAME``, ``--PATH NAME``
    and the `ALIASES`. Returns the other arguments and ``path -> name``."""
    paths = component_paths()
    choices = {path: {n for _, n in members} for path, members in paths.items()}
    rest, chosen, i = [], {}, 0
    while i < len(args):
        arg, width = args[i], 1
        flag = arg.split("=", 1)[0]
        if ":" in arg and not arg.startswith("-") and arg.split(":", 1)[0] in paths:
            path, value = arg.split(":", 1)
            if value not in choices[path]:
                raise UsageError(f"{arg}: unknown choice for {path}; choose from {', '.join(sorted(choices[path]))}")
            chosen[path] = value
        elif arg.startswith("--") and ":" in arg and arg[2:].split(":", 1)[0] in paths:
            raise UsageError(f"{arg}: a component token takes no dashes; write {arg[2:]}")
        elif flag in ALIASES or flag[2:] in paths:
            path, names = ALIASES[flag] if flag in ALIASES else (flag[2:], {n: n for n in choices[flag[2:]]})
            raw, width = (arg.split("=", 1)[1], 1) if "=" in arg else ((args + [""])[i + 1], 2)
            if raw not in names:
                raise UsageError(f"{flag} {raw}: choose from {', '.join(sorted(names))}")
            chosen[path] = names[raw]
        else:
            rest.append(arg)
        i += width
    return rest, chosen


def with_choices(base: RunConfig, chosen: dict[str, str]) -> RunConfig:
    """``base`` with each chosen component in place, inheriting what ``base`` changed."""
    paths = component_paths()
    for path, name in chosen.items():
        cls = next(c for c, n in paths[path] if n == name)
        base = replace_path(base, path, inherit(get_path(base, path), cls))
    return base


def component_args(args: list[str], default: RunConfig) -> list[str]:
    """Put plain flags first, then each component's token followed by its own flags, as
    tyro needs. A component's flags get the token of the component ``default`` has there;
    where that is None (the component is off) they are an error naming the choice that
    turns it on."""
    paths = component_paths()
    plain, flags = split_components(args, paths)
    out = list(plain)
    for path, members in paths.items():
        value = get_path(default, path)
        name = next(n for c, n in members if (value is None and c is None) or (c is not None and type(value) is c))
        if flags[path] and value is None:
            on = " or ".join(f"--{path} {n}" for c, n in members if c is not None)
            raise UsageError(f"{flags[path][0]}: {path} is off here; turn it on with {on}")
        out += [f"{path}:{name}", *flags[path]]
    return out


def split_components(args: list[str], paths) -> tuple[list[str], dict[str, list[str]]]:
    """``(plain flags, {component path: its flags})``: each flag with the values after it."""
    owner = lambda flag: max((p for p in paths if flag.startswith(f"--{p}.")), key=len, default=None)  # noqa: E731
    plain, flags, current = [], {p: [] for p in paths}, None
    for arg in args:
        if arg.startswith("--"):
            path = owner(arg.split("=", 1)[0])
            current = plain if path is None else flags[path]
        (current if current is not None else plain).append(arg)
    return plain, flags


def parse_train_args(args: list[str], preset: str = "default") -> RunConfig:
    """``--preset NAME`` picks the base config (else ``preset``); every other flag
    changes it (see the module docstring)."""
    return parse_train(args, preset)[0]


def parse_train(args: list[str], preset: str = "default") -> tuple[RunConfig, frozenset[str]]:
    """`parse_train_args`, and the flag paths whose values the user changed."""
    args = list(args)
    if "--preset" in args:
        i = args.index("--preset")
        preset = args[i + 1] if i + 1 < len(args) else ""
        del args[i:i + 2]
    if preset not in PRESETS:
        raise UsageError(f"--preset {preset}: unknown preset; choose from {', '.join(PRESETS)}")
    args = [part for a in args for part in (a.split("=", 1) if a.startswith("--view-ids=") else [a])]
    if "--view-ids" in args:  # accept "26,86,2" as well as "26 86 2"
        i = args.index("--view-ids") + 1
        if i < len(args) and "," in args[i]:
            args[i:i + 1] = [v for v in args[i].split(",") if v]
    if "--help-all" in args:
        args = [a if a != "--help-all" else "--help" for a in args]
    elif "-h" in args or "--help" in args:
        print(train_help())
        raise SystemExit(0)
    rest, chosen = split_choices(args)
    if "--help" not in rest:
        check_flags(RunConfig, rest, "sparsefield train")
    method, views = flag_value(args, "--method"), None
    if preset in PRESET_METHODS:  # the preset picks its method and form by the views the flags give
        plain = split_components(rest, component_paths())[0]  # components' flags may need the form
        base = PRESETS[preset]
        views = train_view_count(parse_flags(RunConfig, component_args(plain, base), "sparsefield train",
                                             default=base, checked=True))
    preset_base = preset_config(preset, method, views)
    if method is None and preset_base.method != PRESETS[preset].method:
        print(f"--preset {preset} from {views} views: --method {preset_base.method} (give --method to choose another)")
    base = with_choices(preset_base, chosen)
    config = parse_flags(RunConfig, component_args(rest, base), "sparsefield train", default=base, checked=True)
    return config, frozenset(changed_paths(preset_base, config))


def flag_value(args: list[str], flag: str) -> str | None:
    """The value given to ``flag`` (``--flag V`` or ``--flag=V``), else None."""
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


def changed_paths(a, b, prefix: str = "") -> list[str]:
    """Dotted paths (flag spelling) where two config trees differ."""
    if dataclasses.is_dataclass(a) and type(a) is type(b):
        out = []
        for f in dataclasses.fields(a):
            out += changed_paths(getattr(a, f.name), getattr(b, f.name), f"{prefix}{f.name.replace('_', '-')}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


def train_help() -> str:
    """``sparsefield train --help``: the common flags and the component choices."""
    common = "\n".join(f"  {flag:20s} {text}" for flag, text in COMMON_FLAGS)
    choices = "\n".join(f"  --{path:26s} {' | '.join(n for _, n in members)}"
                        for path, members in component_paths().items())
    return f"""usage: sparsefield train [flags]

Train a scene from posed images, then evaluate it on the test views.

Common flags:
{common}
  --sampler NAME       empty-space skipping: grid | occupancy-net | none

Component choices (--PATH NAME, or the token PATH:NAME); the chosen component's own
flags follow as --PATH.FLAG (e.g. --field.encoding simplex --field.encoding.levels 12):
{choices}

Every flag with its default and meaning: sparsefield train --help-all"""


# ---- commands ----------------------------------------------------------------------------


def run_train(args: list[str]) -> None:
    """``train``; with ``--view [PORT]`` the run is shown live in the browser while it
    trains, and stays there afterwards until Ctrl-C."""
    port = None
    if "--view" in args:
        i = args.index("--view")
        has_port = i + 1 < len(args) and args[i + 1].isdigit()
        port = int(args[i + 1]) if has_port else ViewArgs.__dataclass_fields__["port"].default
        args = args[:i] + args[i + 1 + has_port:]
    if port is None:
        train(*parse_train(args))
        return
    viewers = []

    def watch(loaded, scene):
        viewers.append(start(ViewArgs(run=loaded.run, port=port), loaded, scene))
        print(f"viewer: {viewers[0].url}")
        return viewers[0].publish

    train(*parse_train(args), watch=watch)
    if viewers:
        print(f"training done; the viewer stays at {viewers[0].url} until Ctrl-C")
        viewers[0].serve()


def run_demo(args: list[str]) -> None:
    """Train (``--preset fewshot`` unless given; the demo scene unless ``--data``),
    evaluate, render an orbit video, export a mesh."""
    config, given = parse_train(args, preset="fewshot")
    run = train(config, given)
    render_path(RenderArgs(run=run, path="orbit", frames=24))
    export_mesh(ExportArgs(run=run, out=run / "mesh.ply"))
    print(f"done: open {run}/report.html")


@dataclasses.dataclass(frozen=True)
class EvalArgs:
    run: Path
    """Run folder."""
    data: Path | None = None
    """Dataset folder (default: the run's)."""
    align_poses: bool = False
    """Align each test camera to its image before scoring (the scene frozen), as methods
    that recover poses are scored: for poses from structure from motion (`sparsefield
    poses`), whose test poses carry the same error as the training poses."""
    align: PoseAlignment = PoseAlignment()
    """How the test cameras are aligned (with --align-poses)."""


def run_eval(args: list[str]) -> None:
    parsed = parse_flags(EvalArgs, args, "sparsefield eval")
    evaluate_run(parsed.run, data=parsed.data, align=parsed.align if parsed.align_poses else None)


@dataclasses.dataclass(frozen=True, kw_only=True)
class PosesArgs(SfmConfig):
    """``sparsefield poses IMAGES --out DATA``: the two folders, then the options of
    structure from motion (`sparsefield.datasets.sfm.SfmConfig`)."""

    images: Path
    """Folder of photos without poses (may be given first, without the flag)."""
    out: Path
    """New dataset folder: ``images/`` and ``sparse/0/``, the COLMAP layout ``train --data`` reads."""


def run_poses(args: list[str]) -> None:
    """``poses IMAGES --out DATA [SfM flags]``: camera poses for photos that have none."""
    if args and not args[0].startswith("-"):
        args = ["--images", *args]
    parsed = parse_flags(PosesArgs, args, "sparsefield poses")
    sfm = SfmConfig(**{f.name: getattr(parsed, f.name) for f in dataclasses.fields(SfmConfig)})
    result = estimate_poses(parsed.images, parsed.out, sfm)
    print(f"train on it: sparsefield train --data {result.root} --pose-refine pose-refinement")


COMMANDS = {
    "train": ("train a scene (and evaluate it on the test split)", run_train),
    "render": ("render test views or an orbit to PNG frames and a video",
               lambda a: render_path(parse_flags(RenderArgs, a, "sparsefield render"))),
    "eval": ("render the test split and write RUN/metrics.json", run_eval),
    "export": ("export a mesh (.ply, .obj, .glb) or a splat run's Gaussians (.splat.ply)",
               lambda a: export_mesh(parse_flags(ExportArgs, a, "sparsefield export"))),
    "demo": ("train on the built-in demo scene (--preset fewshot unless another is given), evaluate, "
             "render an orbit, export a mesh", run_demo),
    "poses": ("camera poses for photos that have none (structure from motion): a dataset train reads",
              run_poses),
    "view": ("look at a run in the browser (a live viewer on viser)",
             lambda a: view(parse_flags(ViewArgs, a, "sparsefield view"))),
}


def usage() -> str:
    lines = "\n".join(f"  {name:8s} {text}" for name, (text, _) in COMMANDS.items())
    return f"usage: sparsefield COMMAND [flags]   (COMMAND --help for its flags)\n\n{lines}"


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        raise SystemExit(0)
    if argv[0] not in COMMANDS:
        close = difflib.get_close_matches(argv[0], COMMANDS, n=1)
        hint = f"; did you mean {close[0]}?" if close else f"; choose from {', '.join(COMMANDS)}"
        fail(f"unknown command {argv[0]!r}{hint} (sparsefield --help)", 2)
    use_compile_cache()
    try:
        COMMANDS[argv[0]][1](argv[1:])
    except (DatasetError, UsageError) as err:
        fail(str(err), 2)
    except Diverged as err:
        fail(str(err), 3)
    except OSError as err:
        fail(os_error(err), 1)
    except KeyboardInterrupt:
        fail("interrupted", 130)


def fail(message: str, code: int) -> None:
    """Print ``error: message`` (one line) and exit with ``code``."""
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    raise SystemExit(code) from None


def os_error(err: OSError) -> str:
    """One line for a failed read or write: the file and what happened (``no space left
    on device``, ``permission denied``), and what to do."""
    what = (err.strerror or str(err)).lower()
    where = f"{err.filename}: " if err.filename else ""
    full = "; free some space, then run the same command again (a run resumes)"
    hints = {errno.ENOSPC: full, errno.EDQUOT: full, errno.EACCES: "; check the folder's permissions",
             errno.EROFS: "; choose a writable folder"}
    return f"{where}{what}{hints.get(err.errno, '')}"


__all__ = ["COMMANDS", "config_classes", "main", "parse_train_args"]
