"""mcsa: a bit-exact simulator of mincut-aware sparse attention on Rust targets.

The package is layered (each layer imports only those below it; import-linter
checks it in CI):

- ``mcsa.core``: the simulator itself (targets, ``expf``, packets, masks,
  density, attention);
- ``firmware_model`` (a package of its own): heap, allocators, profiles, fit;
- ``mcsa.app``: traces, replay and its fleet, golden-vector verification, quality;
- ``mcsa.cli``: the ``mcsa`` command.

The names below are the core's public API, imported on first use so that
``import mcsa`` (and ``mcsa --help``) does not load NumPy kernels it does not need.
"""

from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {
    "mcsa.core.attention": ("MincutSparseAttention",),
    "mcsa.core.expf": ("expf",),
    "mcsa.core.fnv": ("fnv1a64",),
    "mcsa.core.mask": ("DEFAULT_POSITION_LIMIT", "MaskPlan", "MaskStats", "MaskTooLarge", "SparseMask"),
    "mcsa.core.packets": ("Adaptive", "GatePacket", "Linear", "SparsityConfig", "Threshold"),
    "mcsa.core.target": ("ExpF", "NAN_RULES", "PRESETS", "NanRules", "Overflow", "Target", "TargetPanic",
                          "resolve_target"),
}
_HOME = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_HOME)


def __getattr__(name: str):
    try:
        module = _HOME[name]
    except KeyError:
        raise AttributeError(f"module 'mcsa' has no attribute {name!r}") from None
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_HOME))
