"""The loss terms a run turns on besides the colour loss: one optional field per term
(``--reg.NAME`` flags; ``reg.NAME:TERM`` turns one on). Adding a term: its class in a
file of its own under ``losses/``, and a field here."""

from __future__ import annotations

import dataclasses

from .consistency import BinocularConsistency, CrossViewConsistency
from .distortion import Distortion
from .entropy import RayEntropy
from .keypoints import KeypointDepth
from .occlusion import Occlusion
from .opacity import MaskLoss, OpacityPrior
from .smoothness import ColorSmoothness, DepthSmoothness
from .sparsity import DensitySparsity
from .total_variation import TotalVariation
from .weight_decay import GridWeightDecay


@dataclasses.dataclass(frozen=True)
class Regularizers:
    """The loss terms of a run besides the colour loss; each is off when None."""

    distortion: Distortion | None = None
    """mip-NeRF 360 distortion loss on the ray weights."""
    tv: TotalVariation | None = None
    """Total variation of a dense grid's tables (voxel grid)."""
    occlusion: Occlusion | None = None
    """FreeNeRF's occlusion regularisation (density in the first samples of each ray)."""
    entropy: RayEntropy | None = None
    """InfoNeRF's ray entropy (concentrate each hitting ray's density)."""
    opacity: OpacityPrior | None = None
    """Opacity prior: binary entropy (0 or 1) or L1 sparsity."""
    mask: MaskLoss | None = None
    """BCE of the ray opacity against the alpha mask (data with masks only)."""
    depth_smoothness: DepthSmoothness | None = None
    """RegNeRF's depth smoothness on patches from unseen poses."""
    color_smoothness: ColorSmoothness | None = None
    """The same smoothness on the colour of those patches (streaks and speckle)."""
    consistency: CrossViewConsistency | None = None
    """Photometric consistency of each ray's surface point across the training views."""
    keypoint_depth: KeypointDepth | None = None
    """Depth at the training views' triangulated keypoints (DS-NeRF)."""
    binocular: BinocularConsistency | None = None
    """Binocular self-consistency with a render from a camera shifted sideways (Binocular3DGS)."""
    sparsity: DensitySparsity | None = None
    """Empty space by default: alpha of random points of the box pushed towards 0."""
    weight_decay: GridWeightDecay | None = None
    """Zip-NeRF's weight decay on the grid tables (seldom-read entries towards 0)."""

    def terms(self) -> dict:
        """``name -> term`` for the terms that are on."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}
