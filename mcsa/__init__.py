"""mcsa: a bit-exact simulator of mincut-aware sparse attention on Rust targets."""

from .attention import MincutSparseAttention
from .expf import ExpF, expf
from .fnv import fnv1a64
from .mask import DEFAULT_POSITION_LIMIT, MaskPlan, MaskStats, MaskTooLarge, SparseMask
from .packets import Adaptive, GatePacket, Linear, SparsityConfig, Threshold
from .target import NAN_RULES, PRESETS, NanRules, Overflow, Target, TargetPanic, resolve_target

__version__ = "0.1.0"

__all__ = [
    "Adaptive",
    "DEFAULT_POSITION_LIMIT",
    "ExpF",
    "GatePacket",
    "Linear",
    "MaskPlan",
    "MaskStats",
    "MaskTooLarge",
    "MincutSparseAttention",
    "NAN_RULES",
    "NanRules",
    "Overflow",
    "PRESETS",
    "SparseMask",
    "SparsityConfig",
    "Target",
    "TargetPanic",
    "Threshold",
    "expf",
    "fnv1a64",
    "resolve_target",
]
