"""Datasets and image files."""

from .files import IMAGE_SUFFIXES, ImageSet, load_images

__all__ = ["IMAGE_SUFFIXES", "ImageSet", "load_images"]
