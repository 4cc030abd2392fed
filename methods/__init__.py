"""Methods: the ways sparsefield can hold a scene, behind one protocol (`base.Method`),
and the registry that maps a ``--method`` name to one.

Built in: ``nerf`` (`nerf.RadianceFieldMethod`), ``splat`` (`splat.SplatMethod`) and
``surfel`` (`surfel.SurfelMethod`).
Another package adds a method with `register_method`, or by naming its class in the
``sparsefield.methods`` entry-point group (``name = "package.module:Class"``), which
`find_method` loads on first use.
"""

from __future__ import annotations

from importlib.metadata import entry_points

from ..errors import UsageError
from .base import Method, SurfaceField, TrainViews
from .nerf import RadianceFieldMethod
from .splat import SplatMethod
from .surfel import SurfelMethod

METHODS: dict[str, type[Method]] = {cls.name: cls for cls in (RadianceFieldMethod, SplatMethod, SurfelMethod)}
"""``--method`` name -> class."""

ENTRY_POINTS = "sparsefield.methods"


def register_method(cls: type[Method]) -> type[Method]:
    """Make ``cls`` available as ``--method cls.name`` (usable as a class decorator)."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} needs a name")
    METHODS[cls.name] = cls
    return cls


def find_method(name: str) -> type[Method]:
    """The method class of ``name``, from the registry or the entry points.

    Raises:
        UsageError: no method has that name.
    """
    if name not in METHODS:
        for point in entry_points(group=ENTRY_POINTS):
            if point.name == name:
                register_method(point.load())
    if name not in METHODS:
        raise UsageError(f"--method {name}: unknown method; choose from {', '.join(sorted(METHODS))}")
    return METHODS[name]


__all__ = ["METHODS", "Method", "SurfaceField", "TrainViews", "find_method", "register_method"]
