"""cl-suite: a continual-learning benchmark suite and leaderboard.

Plugins import :mod:`cl_suite.api`; this module only re-exports it. The one thing done at import is installing
a lazy import hook that makes the registry's CUDA-built torchvision importable on CPU torch (see
:mod:`cl_suite._torchvision_fix`); it imports nothing until torchvision itself is imported.
"""

from cl_suite import _torchvision_fix

__version__ = "0.1.0"

_torchvision_fix.install()
