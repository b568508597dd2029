"""The benchmark harness: the paper's sweep on the published datasets, and any encoder's scores.

- :func:`load_config`: a config of perturbed-dsprites / perturbed-shapes3d, read with
  ``datasets.load_dataset`` and decoded into a ground truth in memory (:mod:`.data`);
- :func:`evaluate_encoder`: a user's own model scored on the three configs, with how much of its
  score survives the perturbation against the noise (:mod:`.evaluation`);
- ``python -m perturbed_disentanglement.benchmark``: one run per (model, hyperparameters, config,
  seed), trained with the zoo in-process or on Ray, one JSON record each (:mod:`.plan`,
  :mod:`.execute`, :mod:`.ray_backend`, :mod:`.records`), and the report (:mod:`.report`).
"""

from importlib import import_module
from typing import Any

#: Public names and their modules, imported on first use (so ``benchmark.toy`` and
#: ``benchmark.report`` do not pay for datasets and scikit-learn).
_EXPORTS = {
    "ConfigData": "data",
    "load_config": "data",
    "EvaluationSizes": "evaluation",
    "evaluate_encoder": "evaluation",
    "evaluate_representation": "evaluation",
    "PRESETS": "plan",
    "RunSpec": "plan",
    "plan_runs": "plan",
    "iter_records": "records",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
