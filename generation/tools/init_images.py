"""The init images of a batch from an image (img2img, upscale): read, checked, fitted to the size."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from generation.core.batch import Batch, ItemsRejected
from generation.core.errors import GenerationFailed

if TYPE_CHECKING:
    from PIL.Image import Image

__all__ = ["load_init_images"]

logger = logging.getLogger(__name__)


def load_init_images(batch: Batch, size: tuple[int, int] | None = None) -> list[Image]:
    """Each item's init image as RGB at ``size`` (default: the batch's); raises ItemsRejected for
    unusable ones. An image of another aspect ratio is centre-cropped to the size's before resizing.
    """
    from PIL import Image as PILImage
    from PIL import ImageOps

    images: list[Image] = []
    errors: dict[int, GenerationFailed] = {}
    for index, item in enumerate(batch.items):
        path = item.init_image
        try:
            if path is None:
                raise FileNotFoundError("no init_image")
            with PILImage.open(path) as opened:
                rgb = opened.convert("RGB")
        except FileNotFoundError:
            logger.info("init image %s of item %d is missing", path, index)
            errors[index] = GenerationFailed(
                "The image to make a variation of is no longer available (it may have been "
                "deleted); make a new image and try again."
            )
            continue
        except OSError as err:  # includes PIL.UnidentifiedImageError
            logger.warning("init image %s of item %d is unreadable: %s", path, index, err)
            errors[index] = GenerationFailed(
                "The image to make a variation of could not be read; make a new image and try again."
            )
            continue
        wanted = size or (batch.width, batch.height)
        images.append(rgb if rgb.size == wanted else ImageOps.fit(rgb, wanted, PILImage.Resampling.LANCZOS))
    if errors:
        raise ItemsRejected(errors)
    return images
