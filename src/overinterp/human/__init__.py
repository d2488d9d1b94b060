"""Human classification benchmark (paper §3.4, Table 2, Figures S4–S5).

* :mod:`.study` — build a study from backward-selection traces (:func:`build_study`);
* :mod:`.db` — the SQLAlchemy tables and answer storage;
* :mod:`.app` — the FastAPI web app (``create_app``);
* :mod:`.scoring` — Table 2, the R² fit and plot, the image sheets;
* :mod:`.cli` — ``overinterp human build|serve|export|score``.

Importing this package needs no web dependency; :mod:`.db` needs SQLAlchemy and
:mod:`.app` FastAPI (``pip install overinterp[web]``).
"""

from overinterp.human.scoring import (
    FractionSummary,
    LinearFit,
    ParticipantScore,
    linear_fit,
    participant_scores,
    read_answers,
    score_study,
    table2,
)
from overinterp.human.study import (
    DEFAULT_FRACTIONS,
    ModelSource,
    build_study,
    load_manifest,
    source_from_files,
    source_from_job,
)

__all__ = [
    "DEFAULT_FRACTIONS",
    "ModelSource",
    "build_study",
    "load_manifest",
    "source_from_files",
    "source_from_job",
    "ParticipantScore",
    "FractionSummary",
    "LinearFit",
    "read_answers",
    "participant_scores",
    "table2",
    "linear_fit",
    "score_study",
]
