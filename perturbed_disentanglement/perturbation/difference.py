"""How a perturbation is shown (paper Fig. 3): the signed difference from the original image as
grey levels on the scale of ±ε, so that the pattern (every pixel moved by the full ±ε) and the
noise (uniform in [−ε, ε]) look as different as they are, and clipping is visible."""

from __future__ import annotations

import numpy as np

from ..errors import InvalidArgumentError


def signed_difference(
    changed: np.ndarray, original: np.ndarray, epsilon: float | None = None
) -> np.ndarray:
    """``changed - original`` as grey levels on the scale of ``±ε``: uint8 ``[..., H, W, 1]``.

    ``t = mean_c(changed - original) / (255·ε)`` over the channels (bytes; ``ε`` on the [0, 1]
    pixel scale), clipped to ``[-1, 1]``, is drawn as ``floor(128 + 127.5·t)``: no change is
    128, ``-ε`` is 0 (black) and ``+ε`` is 255 (white), monotone in between. ``ε = None`` takes
    the largest absolute difference (at least one byte) as the scale. The card's figure and the
    report's Fig. 3 both draw it.
    """
    changed, original = np.asarray(changed), np.asarray(original)
    if changed.shape != original.shape:
        raise InvalidArgumentError(f"shapes differ: {changed.shape} and {original.shape}")
    diff = (changed.astype(np.float64) - original.astype(np.float64)).mean(axis=-1, keepdims=True)
    if epsilon is None:
        bound = max(1.0, float(np.abs(diff).max(initial=0.0)))
    elif epsilon > 0:
        bound = 255.0 * float(epsilon)
    else:
        raise InvalidArgumentError(f"epsilon must be > 0, got {epsilon}")
    t = np.clip(diff / bound, -1.0, 1.0)
    return np.clip(np.floor(128.0 + 127.5 * t), 0, 255).astype(np.uint8)
