"""Checks of the Params a person types when triggering a run: they are input too.

A run checks its Params first (``train_asr``'s ``check_params`` task; ``lecture_to_pdf``'s
``claim``, one task start sooner) and stops with a plain message before it touches any file.
The rules: a model is a name or hub id (``small``, ``openai/whisper-small``), or a folder
under the data root's ``models/`` or the model cache
(``whisper_model`` may also be ``latest-finetuned``, while a fine-tuned model beat its base);
a dataset is one folder name under ``train/``; no value may start with ``-`` (it would read
as an option) or climb out of its folder with ``..``. The configured defaults (settings) are
the operator's own choice and always pass (``latest-finetuned`` only while it means a model).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import PurePosixPath
from typing import Any

from airflow.sdk import get_current_context, task

from konspekt import finetuned
from konspekt_dags.settings import CONTAINER_CACHE, CONTAINER_DATA, settings

HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}(/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?")
FOLDER = re.compile(r"[\w][\w .()+-]{0,127}")  # one folder name: letters (any script), digits, spaces
LANGUAGE = re.compile(r"auto|[a-z]{2,3}")


class BadParam(ValueError):
    """A Param that cannot be used; the message says which and why, in plain words."""


def model_roots() -> list[PurePosixPath]:
    """Where a model given as a path may live, as the task containers and this process see them."""
    return [PurePosixPath(p) for p in (f"{CONTAINER_DATA}/models", CONTAINER_CACHE,
                                       f"{settings.data_root}/models", str(settings.cache_dir))]


def check_model(param: str, value: Any, default: str = "") -> None:
    if not isinstance(value, str) or not value:
        raise BadParam(f"{param} must be a model name or folder, not {value!r}")
    if value == default:
        return
    if value.startswith("/"):
        path = PurePosixPath(value)
        if ".." not in path.parts and any(path.is_relative_to(root) and path != root for root in model_roots()):
            return
        raise BadParam(f"{param}={value!r}: a model folder must be under {CONTAINER_DATA}/models/ or the "
                       f"model cache ({CONTAINER_CACHE}/)")
    if not HUB_ID.fullmatch(value) or ".." in value:
        raise BadParam(f"{param}={value!r} is not a model name (such as small, large-v3 or org/model) or a folder")


def check_language(param: str, value: Any) -> None:
    if not isinstance(value, str) or not LANGUAGE.fullmatch(value):
        raise BadParam(f"{param}={value!r}: use auto or a language code such as en or ru")


def check_whisper_model(value: Any) -> None:
    """``whisper_model``: a model (:func:`check_model`), or ``latest-finetuned`` while a fine-tuned model
    may be used (its WER beat its base's; see :mod:`konspekt.finetuned`)."""
    if value == finetuned.LATEST:
        try:
            finetuned.resolve(settings.data_root)
        except finetuned.RegistryError as exc:
            raise BadParam(str(exc)) from None
        return
    check_model("whisper_model", value, settings.whisper_model)


def check_text(param: str, value: Any) -> None:
    """Free text handed to a stage as one argument (a prompt, hotwords): no NUL or other control characters."""
    if value is None:
        return
    if not isinstance(value, str) or any(ord(ch) < 32 and ch not in "\t\n" for ch in value):
        raise BadParam(f"{param} must be plain text (no control characters), not {value!r}")


def check_lecture_params(params: Mapping[str, Any]) -> None:
    """The Params of ``lecture_to_pdf``; raises :class:`BadParam`."""
    check_whisper_model(params.get("whisper_model"))
    for name in ("initial_prompt", "hotwords"):
        check_text(name, params.get(name))
    onset, offset = params.get("vad_onset"), params.get("vad_offset")
    if isinstance(onset, int | float) and isinstance(offset, int | float) and offset > onset:
        raise BadParam(f"vad_offset={offset} is above vad_onset={onset}: speech would end before it starts")
    low, high = params.get("min_speakers") or 0, params.get("max_speakers") or 0
    if isinstance(low, int) and isinstance(high, int) and low and high and low > high:
        raise BadParam(f"min_speakers={low} is above max_speakers={high}")
    check_model("summary_model", params.get("summary_model"), settings.summary_model)
    check_language("language", params.get("language"))
    model, language = params.get("whisper_model"), params.get("language")
    if isinstance(model, str) and model.endswith(".en") and language not in (None, "", "auto", "en"):
        raise BadParam(f"whisper_model={model!r} is English-only: it cannot transcribe language={language!r}; "
                       "choose a multilingual model (base, small, medium, large-v3)")
    models = params.get("summary_models") or {}
    if not isinstance(models, Mapping):
        raise BadParam(f'summary_models must map languages to models, such as {{"ru": "org/model"}}, not {models!r}')
    for language, model in models.items():
        if language != "*":
            check_language("a summary_models key", language)
        check_model(f"summary_models[{language!r}]", model, settings.summary_models.get(language, ""))


def check_train_params(params: Mapping[str, Any]) -> None:
    """The Params of ``train_asr``; raises :class:`BadParam`."""
    dataset = params.get("dataset")
    if not isinstance(dataset, str) or not FOLDER.fullmatch(dataset) or dataset.strip(".") == "":
        raise BadParam(f"dataset={dataset!r} must be the name of one folder under data/train/ "
                       "(letters, digits, spaces, . _ - ( ) +; not starting with - or .)")
    check_model("base_model", params.get("base_model"), settings.train_base_model)
    check_language("language", params.get("language"))


def enforce(check: Callable[[Mapping[str, Any]], None], params: Mapping[str, Any]) -> None:
    """``check`` a run's Params inside a task: a :class:`BadParam` fails it, unretried, with its message."""
    from airflow.sdk.exceptions import AirflowFailException

    try:
        check(params)
    except BadParam as exc:
        raise AirflowFailException(str(exc)) from None


def check_params_task(check: Callable[[Mapping[str, Any]], None]):
    """A run's first task, ``check_params``: ``check`` its Params; a :class:`BadParam` fails the run with
    its message, before any file is touched."""

    @task(retries=0, execution_timeout=timedelta(minutes=5))
    def check_params() -> None:
        """Stop a run whose Params cannot be used (a model or dataset outside its folder, an option), first."""
        enforce(check, get_current_context()["params"])

    return check_params()
