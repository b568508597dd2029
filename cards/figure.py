"""The card's figure (the paper's Fig. 3): original, perturbed, noise and their signed differences.

The differences are drawn on the scale of the perturbation's bound: mid-grey is no change, black
is ``-ε`` and white ``+ε`` (RGB: the mean over the channels), so that the perturbation, which
moves every pixel by the full ``±ε`` (up to the clip at 0 and 255), reads as black and white
dots, and the noise, uniform on ``[-ε, ε]``, as greys. A magnified difference (the old 20×)
saturated both into the same snow.

Drawn with Pillow and encoded with the package's PNG encoder, so the same images give the same
bytes (no timestamps or software tags, unlike a matplotlib PNG). The text is ASCII only: the
default font has no ``ε`` or ``−`` glyphs.
"""

from __future__ import annotations

import numpy as np

from perturbed_disentanglement.perturbation.difference import signed_difference
from perturbed_disentanglement.util.png import PngEncoder

SCALE = 3  # each 64×64 image is drawn 192×192 (nearest neighbour)
GAP = 6
BAR_HEIGHT = 10  # the grey scale bar above each difference column


def _epsilon_text(epsilon: float) -> str:
    return f"{epsilon:g}"


#: The card's difference map is the package's (the report's Fig. 3 draws the same).
difference_image = signed_difference


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the bitmap font
        return ImageFont.load_default()


def _legend(original: np.ndarray, epsilon: float | None, noise_epsilon: float | None) -> str:
    """The figure's legend: how the difference columns are drawn, and what clipping leaves."""
    if epsilon is None:
        scale = " (eps: the largest difference shown; the configs' eps was not given)"
    elif noise_epsilon != epsilon:
        scale = f" (eps = {_epsilon_text(epsilon)}, noise eps = {_epsilon_text(noise_epsilon)})"
    else:
        scale = f" (eps = {_epsilon_text(epsilon)})"
    mean = "the mean over the RGB channels of " if original.shape[-1] > 1 else ""
    text = (
        f"Differences: {mean}(config - original), mid-grey = 0, black = -eps, white = +eps{scale}."
        " The perturbation moves every pixel by the full +/-eps (the sign of a fixed random +/-1"
        " pattern that shifts with s); the noise by an amount uniform in [-eps, +eps]."
    )
    if np.all((original == 0) | (original == 255)):
        return text + (
            " Clipping at 0 and 255 keeps only the inward half of +/-eps: the black background"
            " can only brighten (grey or white) and the white shape only darken (grey or black)."
        )
    if np.any((original == 0) | (original == 255)):
        return text + (
            " Clipping at 0 and 255 keeps only the inward half of +/-eps where a channel is 0"
            " (it can only brighten) or 255 (it can only darken)."
        )
    return text


def _wrap(text: str, length, width: float) -> list[str]:
    """``text`` in lines no wider than ``width`` (``length(line)`` in pixels), at spaces."""
    lines: list[str] = []
    for word in text.split(" "):
        if lines and length(lines[-1] + " " + word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines


def comparison_figure(
    original: np.ndarray,
    perturbed: np.ndarray,
    noise: np.ndarray,
    *,
    titles: tuple[str, ...] = (),
    row_labels: tuple[str, ...] = (),
    epsilon: float | None = None,
    noise_epsilon: float | None = None,
) -> bytes:
    """One row per image (uint8 ``[n, 64, 64, C]`` each), five columns: original, perturbed,
    noise, perturbed - original and noise - original; PNG bytes (RGB).

    The differences are :func:`difference_image` with ``epsilon`` (the perturbed config's ε)
    and ``noise_epsilon`` (the noise config's; default ``epsilon``): mid-grey 0, black ``-ε``,
    white ``+ε``, each column under a grey bar labelled with its ε. Without ``epsilon`` the
    largest difference is the scale (and the labels say so). A legend under the rows says how to
    read them.
    """
    from PIL import Image, ImageDraw

    if noise_epsilon is None:
        noise_epsilon = epsilon
    columns = [
        original,
        perturbed,
        noise,
        difference_image(perturbed, original, epsilon),
        difference_image(noise, original, noise_epsilon),
    ]
    titles = titles or (
        "original",
        "perturbed",
        "noise",
        "perturbed - original",
        "noise - original",
    )
    n, h, w, _ = original.shape
    tile_h, tile_w = h * SCALE, w * SCALE
    font, small = _font(13), _font(11)
    header, left = 68, 110 if row_labels else GAP
    width = left + len(columns) * (tile_w + GAP)

    legend = _legend(original, epsilon, noise_epsilon)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    lines = _wrap(legend, lambda text: measure.textlength(text, font=small), width - 2 * GAP)
    footer = 8 + 16 * len(lines)
    height = header + n * (tile_h + GAP) + footer
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    bar = np.floor(np.linspace(0.0, 255.0, tile_w)).astype(np.uint8)
    bar_image = Image.fromarray(np.repeat(np.repeat(bar[None, :, None], BAR_HEIGHT, 0), 3, 2))
    for c, title in enumerate(titles):
        x = left + c * (tile_w + GAP)
        draw.text((x, 4), title, fill=(0, 0, 0), font=font)
        if c < 3:
            continue
        eps = epsilon if c == 3 else noise_epsilon
        scale = f"eps = {_epsilon_text(eps)}" if eps is not None else "eps = largest difference"
        draw.text((x, 21), f"signed difference, {scale}", fill=(0, 0, 0), font=small)
        canvas.paste(bar_image, (x, 37))
        draw.rectangle((x, 37, x + tile_w - 1, 37 + BAR_HEIGHT - 1), outline=(0, 0, 0))
        y = 37 + BAR_HEIGHT + 2
        draw.text((x, y), "-eps", fill=(0, 0, 0), font=small)
        middle = x + (tile_w - draw.textlength("0", font=small)) / 2
        draw.text((round(middle), y), "0", fill=(0, 0, 0), font=small)
        right = x + tile_w - draw.textlength("+eps", font=small)
        draw.text((round(right), y), "+eps", fill=(0, 0, 0), font=small)
    for r in range(n):
        y = header + r * (tile_h + GAP)
        if row_labels:
            draw.text((GAP, y + tile_h // 2 - 8), row_labels[r], fill=(0, 0, 0), font=font)
        for c, images in enumerate(columns):
            tile = images[r]
            tile = np.repeat(tile, 3, axis=2) if tile.shape[2] == 1 else tile
            tile = np.repeat(np.repeat(tile, SCALE, axis=0), SCALE, axis=1)
            canvas.paste(Image.fromarray(tile, "RGB"), (left + c * (tile_w + GAP), y))
    y = header + n * (tile_h + GAP) + 2
    for line in lines:
        draw.text((GAP, y), line, fill=(0, 0, 0), font=small)
        y += 16
    pixels = np.asarray(canvas, dtype=np.uint8)[None]
    return PngEncoder("sub", 9, "default").encode(pixels)[0]
