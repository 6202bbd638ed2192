"""File name endings of images, apart from the decoder: VOC reading needs them where Pillow is
absent (the scene benchmark runs on a Pi-like install with OpenCV only)."""

#: File name endings that are only a format hint (stripped from output names).
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm"}
)
