"""The public facade: ``from spec2fractal import Spec2Fractal``, as the product README reads.

``Spec2Fractal(...)`` renders locally, exactly as ``fractal.Spec2Fractal`` (it is that class,
subclassed only to take one more argument). ``Spec2Fractal(server="http://...")`` renders
the same calls through a Spec-2-Fractal server instead (see ``spec2fractal.client.remote``);
the library ``fractal`` itself never speaks HTTP.
"""

from typing import Any

import fractal
from fractal import *  # noqa: F403
from fractal import __all__ as __all__


class Spec2Fractal(fractal.Spec2Fractal):
    __doc__ = fractal.Spec2Fractal.__doc__

    def __new__(cls, model: str | None = None, *, server: str | None = None,
                **options: Any) -> Any:
        if server is not None:
            from spec2fractal.client.remote import RemoteSpec2Fractal

            return RemoteSpec2Fractal(model, server=server, **options)
        return super().__new__(cls)

    def __init__(self, model: str | None = None, *, server: str | None = None,
                 **options: Any) -> None:
        super().__init__(model, **options)  # reached only without a server
