"""Exceptions raised on bad input: each says what was wrong and what was expected."""

from __future__ import annotations


class PerturbedDisentanglementError(Exception):
    """Base class of every error this package raises on purpose."""


class DataFormatError(PerturbedDisentanglementError, ValueError):
    """A file or array does not have the structure (keys, shapes, dtypes, ranges) we expect."""


class ChecksumError(PerturbedDisentanglementError, ValueError):
    """A file's sha256 differs from the published one."""


class InvalidArgumentError(PerturbedDisentanglementError, ValueError):
    """A parameter is out of range, of the wrong type or shape, or unknown."""


class TrainingDivergedError(PerturbedDisentanglementError, RuntimeError):
    """A loss became NaN or infinite; the last good checkpoint is kept."""


class CheckpointError(PerturbedDisentanglementError, ValueError):
    """A checkpoint is missing, corrupt, or does not match the requested model."""


class ArtifactError(PerturbedDisentanglementError, ValueError):
    """An artifact (reference, cache entry, shard) is corrupt, incomplete or belongs to other data."""
