"""Old module paths of the flat layout (before 0.2): importing one fails with a
message that names the new place, instead of a bare ``ModuleNotFoundError``."""

from __future__ import annotations

import importlib.abc
import sys

#: old module (under ``overinterp.``) → new module
MOVED: dict[str, str] = {
    "backselect": "overinterp.sis.backselect",
    "trace": "overinterp.sis.trace",
    "features": "overinterp.sis.features",
    "superpixels": "overinterp.sis.superpixels",
    "scoring": "overinterp.sis.scoring",
    "relative": "overinterp.sis.relative",
    "inputs": "overinterp.sis (private: overinterp.sis._inputs)",
    "methods": "overinterp.sis.methods",
    "methods.engine": "overinterp.sis.methods (private engine: overinterp.sis.methods._engine)",
    "classifier": "overinterp.models.classifier",
    "blackbox": "overinterp.models.blackbox",
    "models.preact_resnet": "overinterp.models.archs.preact_resnet",
    "models.resnet_cifar": "overinterp.models.archs.resnet_cifar",
    "models.small_cnn": "overinterp.models.archs.small_cnn",
    "models.vgg": "overinterp.models.archs.vgg",
    "models.wideresnet": "overinterp.models.archs.wideresnet",
    "synthetic": "overinterp.data.synthetic",
    "trainer": "overinterp.training (train_classifier, TrainConfig, RECIPES)",
    "train": "overinterp.training (the demo's loop was merged into train_classifier)",
    "evaluation": "overinterp.training.evaluation",
    "jobs.replicates": "overinterp.training.replicates",
    "imagenet_sis": "overinterp.experiments.imagenet",
    "robust_sis": "overinterp.experiments.robust",
    "demo": "overinterp.experiments.demo",
    "cli_experiments": "overinterp.cli.experiments",
    "cli_imagenet": "overinterp.cli.imagenet",
    "cli_jobs": "overinterp.cli.jobs",
    "cli_report": "overinterp.cli.report",
    "human.cli": "overinterp.cli.human",
    "atomic": "overinterp (private: overinterp._atomic)",
}


class _MovedFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):  # noqa: ANN001
        if not fullname.startswith("overinterp."):
            return None
        old = fullname[len("overinterp.") :]
        if old in MOVED:
            raise ModuleNotFoundError(f"{fullname} moved in overinterp 0.2: import it from {MOVED[old]}", name=fullname)
        return None


def install() -> None:
    """Append the finder (after the normal ones, so it only sees modules that no longer exist)."""
    if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
        sys.meta_path.append(_MovedFinder())
