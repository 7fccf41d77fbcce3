"""separation-zoo: train, evaluate and compare audio source separators.

Nothing heavy happens at import time: sub-packages are imported where they are used.
"""

__version__ = "0.1.0"


def load(name_or_path, download: bool = False, cache_dir=None, trust: bool = False):
    """A ready separator: see :func:`zoo.hub.api.load` (imports torch on first call)."""
    from .hub.api import load as _load

    return _load(name_or_path, download=download, cache_dir=cache_dir, trust=trust)


def stream(model, channels=None, download: bool = False):
    """A streaming separator of a causal model: see :func:`zoo.streaming.stream`."""
    from .streaming import stream as _stream

    return _stream(model, channels=channels, download=download)
