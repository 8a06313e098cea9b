"""clickloop — the whole machine-learning production loop for web event data.

Stages are importable as subpackages (``clickloop.events``, ``clickloop.simulate``,
``clickloop.bus`` …); :class:`clickloop.project.Project` ties a project
directory's ``clickloop.yaml`` to its embedded state under ``.clickloop/``.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
