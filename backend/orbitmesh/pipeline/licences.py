"""The licences of the models one job uses, and the ``commercial_only`` check (before anything loads).

A job uses a reconstruction model always, SV3D when its mode has the orbit stage (quality) and a
text-to-image model when its source is a prompt (the mode table says which,
:func:`orbitmesh.pipeline.modes.stage_names`). :func:`job_licences` names each one with its licence
and, under ``Settings.commercial_only``, refuses one whose licence does not allow commercial use (or is
unknown) with a ModelError naming models that do, and returns a warning that states the condition of
each "conditional" one. job.json and the result record the licences under ``licences``. Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from orbitmesh.models import catalogue
from orbitmesh.pipeline import modes
from orbitmesh.pipeline.request import GenerateRequest
from orbitmesh.settings import Settings


@dataclass
class JobLicences:
    """``licences``: {kind: {name, licence, commercial, condition}} for each model the job uses (kinds of
    :data:`orbitmesh.models.catalogue.KINDS`); ``warnings``: the conditions of conditional models (commercial
    jobs only)."""

    licences: dict[str, dict[str, Any]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def job_models(request: GenerateRequest, settings: Settings, source) -> dict[str, tuple[str, Any]]:
    """{kind: (model name, catalogue entry or None)} of every model ``request`` uses; ``source`` is its
    resolved :class:`orbitmesh.models.registry.LRMSource`."""
    used = {"lrm": (source.name, source.info)}
    stages = modes.stage_names(request.mode, prompt=request.prompt is not None)
    if modes.ORBIT in stages:
        name = catalogue.DEFAULTS["video"]  # what OrbitConfig().model runs
        used["video"] = (name, catalogue.identify("video", name, settings.model_dir))
    if modes.TEXT_TO_IMAGE in stages:
        name = request.text_to_image_model or catalogue.DEFAULTS["text_to_image"]
        used["text_to_image"] = (name, catalogue.identify("text_to_image", name, settings.model_dir))
    return used


def job_licences(request: GenerateRequest, settings: Settings, source, *,
                 commercial_only: bool | None = None) -> JobLicences:
    """The licences of the models ``request`` uses; under ``commercial_only`` (default: the settings') a
    ModelError for a model that may not be used commercially, warnings for conditional ones."""
    strict = settings.commercial_only if commercial_only is None else commercial_only
    out = JobLicences()
    for kind, (name, entry) in job_models(request, settings, source).items():
        out.licences[kind] = entry.licence_record() if entry is not None else catalogue.unknown_licence(name)
        if strict:
            warning = catalogue.check_commercial_use(kind, name, entry)
            if warning:
                out.warnings.append(warning)
    return out
