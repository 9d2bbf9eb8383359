"""The public facade: ``from spec2fractal import Spec2Fractal``, as the product README reads."""

from fractal import *  # noqa: F403
from fractal import __all__ as __all__
