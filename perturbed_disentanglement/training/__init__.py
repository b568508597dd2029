"""Training the model zoo: the networks (:mod:`.models`), loss terms (:mod:`.losses`) and model
table (:mod:`.zoo`); :func:`train` for one model (:mod:`.single`) and :func:`train_stacked` for K
models as one vmapped model (:mod:`.stacked`), both driven by one loop (:mod:`.loop`) with
checkpoints (:mod:`.checkpoint`, :mod:`.resume`, :mod:`.run_identity`); encoding with a trained
model (:mod:`.encoding`). The rest (:mod:`.batches`, :mod:`.precision`, :mod:`.optimizers`,
:mod:`.history`, :mod:`.inputs`) are the loop's parts.
"""

from .single import (
    AUTO_PRECISION,
    Optimizers,
    PrecisionPlan,
    TrainResult,
    as_image_array,
    data_fingerprint,
    encode,
    identity_of,
    load_model,
    make_optimizers,
    network_autocast,
    probe_threads,
    resolve_device,
    resolve_precision,
    train,
    training_step,
)
from .stacked import Run, encode_stacked, train_stacked
from .zoo import MODELS, hyperparameters

__all__ = [
    "AUTO_PRECISION",
    "MODELS",
    "Optimizers",
    "PrecisionPlan",
    "Run",
    "TrainResult",
    "as_image_array",
    "data_fingerprint",
    "encode",
    "encode_stacked",
    "hyperparameters",
    "identity_of",
    "load_model",
    "make_optimizers",
    "network_autocast",
    "probe_threads",
    "resolve_device",
    "resolve_precision",
    "train",
    "train_stacked",
    "training_step",
]
