"""The card's figure (the paper's Fig. 3): original, perturbed, noise and their 20× differences.

Drawn with Pillow and encoded with the package's PNG encoder, so the same images give the same
bytes (no timestamps or software tags, unlike a matplotlib PNG).
"""

from __future__ import annotations

import numpy as np

from perturbed_disentanglement.util.png import PngEncoder

GAIN = 20  # the differences are shown 20× larger, around mid-grey
SCALE = 3  # each 64×64 image is drawn 192×192 (nearest neighbour)
GAP = 6


def difference_image(changed: np.ndarray, original: np.ndarray, gain: int = GAIN) -> np.ndarray:
    """``clip(128 + gain·(changed − original), 0, 255)`` per pixel and channel (uint8)."""
    diff = changed.astype(np.int32) - original.astype(np.int32)
    return np.clip(128 + gain * diff, 0, 255).astype(np.uint8)


def comparison_figure(
    original: np.ndarray,
    perturbed: np.ndarray,
    noise: np.ndarray,
    *,
    titles: tuple[str, ...] = (),
    row_labels: tuple[str, ...] = (),
) -> bytes:
    """One row per image (uint8 ``[n, 64, 64, C]`` each), five columns: original, perturbed,
    noise, 20× (perturbed − original), 20× (noise − original); PNG bytes (RGB)."""
    from PIL import Image, ImageDraw, ImageFont

    columns = [
        original,
        perturbed,
        noise,
        difference_image(perturbed, original),
        difference_image(noise, original),
    ]
    titles = titles or (
        "original",
        "perturbed",
        "noise",
        f"{GAIN}x (perturbed - original)",
        f"{GAIN}x (noise - original)",
    )
    n, h, w, _ = original.shape
    tile_h, tile_w = h * SCALE, w * SCALE
    try:
        font = ImageFont.load_default(size=13)
    except (TypeError, OSError):  # Pillow without FreeType: the bitmap font
        font = ImageFont.load_default()
    header, left = 24, 110 if row_labels else GAP
    width = left + len(columns) * (tile_w + GAP)
    height = header + n * (tile_h + GAP)
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for c, title in enumerate(titles):
        draw.text((left + c * (tile_w + GAP), 5), title, fill=(0, 0, 0), font=font)
    for r in range(n):
        y = header + r * (tile_h + GAP)
        if row_labels:
            draw.text((GAP, y + tile_h // 2 - 8), row_labels[r], fill=(0, 0, 0), font=font)
        for c, images in enumerate(columns):
            tile = images[r]
            tile = np.repeat(tile, 3, axis=2) if tile.shape[2] == 1 else tile
            tile = np.repeat(np.repeat(tile, SCALE, axis=0), SCALE, axis=1)
            canvas.paste(Image.fromarray(tile, "RGB"), (left + c * (tile_w + GAP), y))
    pixels = np.asarray(canvas, dtype=np.uint8)[None]
    return PngEncoder("sub", 9, "default").encode(pixels)[0]
