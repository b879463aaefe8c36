"""Tools that work on images a user already has: img2img inputs, upscaling, zoom and pan.

    inputs.py    check an uploaded image (format, size, animation, decompression bombs), fit it
    upscale.py   2x: an upscaler network (spandrel) or Lanczos, then a tiled img2img pass
    outpaint.py  zoom out and pan: a larger or shifted canvas whose new border is inpainted
"""
