"""Datasets and image files.

* :func:`load_dataset` — CIFAR-10, CIFAR-10.1, CIFAR-10-C and ImageFolder-layout
  folders or zips, as :class:`LabeledImages` (uint8 images, int64 labels);
* :func:`load_images` — arrays (``.npy``/``.npz``/``.pt``), image files and folders
  as float :class:`ImageSet` (what ``overinterp backselect --images`` reads).
"""

from overinterp.data.base import CIFAR10_CLASSES, LabeledImages, default_root, to_pixels
from overinterp.data.cifar10 import load_cifar10
from overinterp.data.cifar10c import CORRUPTIONS, SEVERITIES, iter_cifar10c, load_cifar10c, sis_sample_indices
from overinterp.data.cifar101 import load_cifar101
from overinterp.data.download import ChecksumError, DatasetNotFoundError, download_file, verify_file
from overinterp.data.files import IMAGE_SUFFIXES, ImageSet, load_images
from overinterp.data.folder import load_image_folder
from overinterp.data.registry import dataset_key, list_datasets, load_dataset, parse_dataset_spec
from overinterp.data.specs import open_dataset

__all__ = [
    "IMAGE_SUFFIXES",
    "ImageSet",
    "load_images",
    "LabeledImages",
    "CIFAR10_CLASSES",
    "CORRUPTIONS",
    "SEVERITIES",
    "default_root",
    "to_pixels",
    "load_dataset",
    "open_dataset",
    "list_datasets",
    "parse_dataset_spec",
    "dataset_key",
    "load_cifar10",
    "load_cifar101",
    "load_cifar10c",
    "iter_cifar10c",
    "sis_sample_indices",
    "load_image_folder",
    "DatasetNotFoundError",
    "ChecksumError",
    "download_file",
    "verify_file",
]
