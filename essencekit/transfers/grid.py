"""``--grid``: one contact sheet per input, a row per face: the aligned crop, its inversion
(the reconstruction at strength 0) and the edit at each strength, with a label row on top."""

from __future__ import annotations

TILE = 256
HEADER = 20


def contact_sheet(labels: list[str], rows: list[list], tile: int = TILE):
    """A PIL image: ``labels`` across the top, then one row of tiles per entry of ``rows``
    (PIL images, resized to ``tile`` px squares; ``None`` leaves a tile blank)."""
    from PIL import Image, ImageDraw

    sheet = Image.new("RGB", (len(labels) * tile, HEADER + len(rows) * tile), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for c, label in enumerate(labels):
        draw.text((c * tile + 4, 4), label, fill=(0, 0, 0))
    for r, row in enumerate(rows):
        for c, picture in enumerate(row):
            if picture is None:
                continue
            if picture.size != (tile, tile):
                picture = picture.resize((tile, tile), Image.Resampling.LANCZOS)
            sheet.paste(picture, (c * tile, HEADER + r * tile))
    return sheet
