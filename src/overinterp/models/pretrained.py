"""Pretrained weights a user can get: known public releases, by architecture name.

``create_model("resnet20", pretrained=True)`` (spec ``resnet20?pretrained=true``, command line
``--model resnet20 --pretrained``) finds the release's weights file, checks its sha256 and loads
it with the preprocessing the weights were trained with. The file is looked for, in order:

1. ``path=`` given explicitly (:func:`pretrained_file`);
2. the folder named by the environment variable ``OVERINTERP_PRETRAINED_DIR``, under the
   release's file name (``resnet20-12fca82f.th``) or ``ARCH-DATASET.th`` (``resnet20-cifar10.th``)
   — offline machines and tests use this;
3. the torch hub cache, ``$TORCH_HOME/hub/checkpoints/`` (where torch and torchvision keep
   their downloads), under the release's file name;
4. a download from the release URL into that cache (``torch.hub.download_url_to_file``), only
   when ``download=True`` (the default).

Every file, wherever it was found, must have the recorded sha256: another file is an
:class:`~overinterp.errors.IntegrityError` naming it, and a failed download leaves nothing in the
cache. Offline without a local copy the error names the URL and both places a copy may go.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from overinterp._atomic import file_sha256
from overinterp.errors import IntegrityError, UserInputError

__all__ = ["PretrainedWeights", "PRETRAINED", "PRETRAINED_DIR_ENV", "pretrained_file", "list_pretrained"]

#: environment variable: a folder holding local copies of release files
PRETRAINED_DIR_ENV = "OVERINTERP_PRETRAINED_DIR"


@dataclass(frozen=True)
class PretrainedWeights:
    """A public weights release: where it is, its sha256, and how its network takes images."""

    arch: str
    dataset: str
    url: str
    sha256: str
    preprocessing: str
    num_classes: int
    accuracy: str
    license: str

    @property
    def file_name(self) -> str:
        """The release's file name (the last part of the URL), as the hub cache stores it."""
        return self.url.rsplit("/", 1)[-1]

    @property
    def local_names(self) -> tuple[str, ...]:
        return (self.file_name, f"{self.arch}-{self.dataset}.th")


#: Known releases. ResNet20 on CIFAR-10: the widely used public CIFAR ResNet20 of the
#: pytorch_resnet_cifar10 repository (BSD-2-Clause), trained on ImageNet-normalised pixels.
PRETRAINED: dict[str, PretrainedWeights] = {
    "resnet20": PretrainedWeights(
        arch="resnet20",
        dataset="cifar10",
        url="https://github.com/akamaster/pytorch_resnet_cifar10/raw/master/pretrained_models/resnet20-12fca82f.th",
        sha256="12fca82f0bebc4135bf1f32f6e3710e61d5108578464b84fd6d7f5c1b04036c8",
        preprocessing="imagenet",
        num_classes=10,
        accuracy="91.73% on the CIFAR-10 test set (published)",
        license="BSD-2-Clause",
    ),
}


def list_pretrained() -> list[str]:
    """Architectures with known pretrained weights."""
    return sorted(PRETRAINED)


def _release(arch: str) -> PretrainedWeights:
    try:
        return PRETRAINED[arch]
    except KeyError:
        known = ", ".join(list_pretrained()) or "none"
        raise UserInputError(
            f"no pretrained weights are known for {arch!r} (known: {known}); give a checkpoint instead"
        ) from None


def _checked(path: Path, release: PretrainedWeights) -> Path:
    digest = file_sha256(path)
    if digest != release.sha256:
        raise IntegrityError(
            f"{path} is not the {release.arch} release {release.file_name}: sha256 {digest[:16]}…, expected "
            f"{release.sha256[:16]}… (a corrupt or different file; remove it, then download it again from "
            f"{release.url})"
        )
    return path


def _hub_dir() -> Path:
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def pretrained_file(
    arch: str,
    *,
    path: str | os.PathLike[str] | None = None,
    download: bool = True,
    progress: bool = False,
) -> Path:
    """The checked local weights file of ``arch``'s release (see the module doc for the search order).

    Raises:
        UserInputError: no release is known for ``arch``.
        FileNotFoundError: ``path`` does not exist, or no local copy and the download failed or
            was not allowed (the message names the URL, the cache file and the variable).
        IntegrityError: a file found or downloaded does not have the recorded sha256.
    """
    release = _release(arch)
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise FileNotFoundError(f"file not found: {p} (pretrained weights of {arch})")
        return _checked(p, release)
    folder = os.environ.get(PRETRAINED_DIR_ENV)
    if folder:
        for name in release.local_names:
            p = Path(folder).expanduser() / name
            if p.is_file():
                return _checked(p, release)
    cached = _hub_dir() / release.file_name
    if cached.is_file():
        return _checked(cached, release)
    hint = (
        f"copy {release.file_name} (from {release.url}) to {cached}, or into a folder named by "
        f"${PRETRAINED_DIR_ENV}, or pass the file as a checkpoint"
    )
    if not download:
        raise FileNotFoundError(f"no local copy of the {arch} pretrained weights; {hint}")
    import torch

    cached.parent.mkdir(parents=True, exist_ok=True)
    try:
        # the hub's own download: a temporary file renamed into place only when its hash prefix matches
        torch.hub.download_url_to_file(release.url, str(cached), hash_prefix=release.sha256, progress=progress)
    except Exception as exc:  # noqa: BLE001 - offline, proxy, HTTP and hash errors alike
        cached.unlink(missing_ok=True)
        detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise FileNotFoundError(f"cannot download the {arch} pretrained weights ({detail}); offline, {hint}") from exc
    try:
        return _checked(cached, release)
    except IntegrityError:
        cached.unlink(missing_ok=True)
        raise
