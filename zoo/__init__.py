"""separation-zoo: train, evaluate and compare audio source separators.

Nothing heavy happens at import time: sub-packages are imported where they are used.
"""

__version__ = "0.1.0"
