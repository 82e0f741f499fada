"""
### Lecture video → PDF notes

Drop a video (or an audio file) into **`airflow/data/input`**. This DAG waits for it,
claims it once it has finished copying, and for each claimed file runs:

```
extract_audio → transcribe → summarize ┐
                           → features  ├→ render_pdf → finalize
                           → outline   ┘
```

Results land in `output/<video name>/`: `report.{pdf,json}`, `transcript.{txt,srt,vtt,tsv,json}`,
`summary.json`, `outline.json`, `features.{csv,json}` and `manifest.json`. The original file is archived
in `processed/`; a file that cannot be processed goes to `failed/<name>/` with an
`error.json` that says why, and never stops the other videos.

Params below override the configured defaults for one run (e.g. a larger Whisper model).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Param, dag, get_current_context, task, task_group

from konspekt import registry
from konspekt_dags.factory import stage_task
from konspekt_dags.params import check_lecture_params, check_params_task
from konspekt_dags.sensors import InboxSensor
from konspekt_dags.settings import settings


@dag(
    dag_id="lecture_to_pdf",
    schedule=settings.schedule,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["konspekt", "inference"],
    default_args={"retries": settings.retries, "retry_delay": timedelta(seconds=20)},
    params={
        "whisper_model": Param(settings.whisper_model, type="string",
                               description="faster-whisper model name (tiny … large-v3) or a local CTranslate2 folder"),
        "language": Param(settings.language, type="string", description="auto, or an ISO code such as en or ru"),
        "device": Param(settings.device, enum=["auto", "cpu", "cuda"]),
        "asr_backend": Param(settings.asr_backend, enum=["auto", "faster-whisper", "whisperx"],
                             description="auto: whisperx where installed and a GPU is present, else faster-whisper"),
        "asr_batch_size": Param(settings.asr_batch_size, type="integer", minimum=1,
                                description="chunks decoded together; 1 = sequential decoding"),
        "asr_beam_size": Param(settings.asr_beam_size, type="integer", minimum=1),
        "diarize": Param(settings.diarize, type="boolean",
                         description="label who speaks (pyannote); its model must be in the cache: set HF_TOKEN "
                                     "and KONSPEKT_DIARIZE=true, then run make warm-cache"),
        "speakers": Param(0, type="integer", minimum=0, description="number of speakers if known; 0 = detect"),
        "summary_method": Param(settings.summary_method, enum=["auto", "abstractive", "extractive"],
                                description="auto: abstractive when the model is downloaded, else extractive"),
        "summary_model": Param(settings.summary_model, type="string", description="seq2seq model id or folder"),
        "summary_models": Param(settings.summary_models, type="object",
                                description='models for other languages, e.g. {"ru": "<id>"}; "*" = any other; '
                                            "a language without one gets the extractive summary"),
        "keep_byproducts": Param(settings.keep_byproducts, type="boolean", description="keep audio.wav in output"),
        "force": Param(False, type="boolean",
                       description="process a file again even if its bytes were published already, "
                                   "and redo stages whose results are up to date"),
    },
)
def lecture_to_pdf():
    wait_for_video = InboxSensor(
        task_id="wait_for_video",
        fs_conn_id=settings.fs_conn_id,
        filepath="input",  # see InboxSensor: it wakes only for what claim would take
        poke_interval=settings.poke_seconds,
        deferrable=settings.sensor_mode == "deferrable",
        mode="reschedule" if settings.sensor_mode == "reschedule" else "poke",
        timeout=settings.sensor_timeout_seconds,
        soft_fail=True,
        retries=0,
    )

    @task(retries=0, execution_timeout=timedelta(hours=1))
    def claim() -> list[str]:
        """Move complete files from input/ into their own processing/ folders."""
        from airflow.sdk.exceptions import AirflowSkipException

        from konspekt import inbox
        from konspekt.layout import printable

        claims = inbox.claim(settings.data_root, stable_seconds=settings.stable_seconds,
                             wait_seconds=settings.claim_wait_seconds, max_bytes=settings.max_file_bytes,
                             force=bool(get_current_context()["params"]["force"]))
        if not claims:
            raise AirflowSkipException("nothing to process: input/ holds only files still being copied, "
                                       "temp files, or files already processed (any other entry is in failed/)")
        for c in claims:
            print(f"claimed {printable(c.name)!r} ({c.size} bytes) -> {c.video_dir}")
        return [settings.to_container(c.video_dir) for c in claims]

    @task(trigger_rule="all_done", execution_timeout=timedelta(hours=1))
    def finalize(video_dir: str) -> dict:
        """Publish to output/; quarantine a bad file in failed/ with error.json; hold one that failed for
        another reason (a missing model) for a later run. Fails the task unless published."""
        from dataclasses import asdict

        from airflow.sdk.exceptions import AirflowFailException

        from konspekt import inbox
        from konspekt.layout import printable

        keep = bool(get_current_context()["params"]["keep_byproducts"])
        outcome = inbox.finalize(settings.data_root, settings.to_local(video_dir), keep_byproducts=keep,
                                 hold_seconds=settings.hold_minutes * 60)
        name = printable(outcome.name)
        if outcome.status == "held":
            raise AirflowFailException(f"{name}: {outcome.stage} failed: {outcome.reason}. {outcome.hint}")
        if outcome.status != "ok":
            raise AirflowFailException(f"{name}: {outcome.reason} ({outcome.stage}); the file was moved to "
                                       f"{outcome.destination}/: {outcome.hint}")
        print(f"{name} -> {outcome.destination}/report.pdf")
        return asdict(outcome)

    # Each stage's own options; every stage also takes --force. The wiring comes from konspekt.registry.
    options = {
        "extract_audio": ("--max-duration", str(round(settings.max_duration_hours * 3600))),
        "transcribe": ("--model", "{{ params.whisper_model }}", "--language", "{{ params.language }}",
                       "--device", "{{ params.device }}", "--backend", "{{ params.asr_backend }}",
                       "--batch-size", "{{ params.asr_batch_size }}", "--beam-size", "{{ params.asr_beam_size }}",
                       "--diarize", "{{ params.diarize }}", "--speakers", "{{ params.speakers }}",
                       "--diarization-model", settings.diarization_model),
        "summarize": ("--method", "{{ params.summary_method }}", "--model", "{{ params.summary_model }}",
                      "--models", "{{ params.summary_models | tojson }}", "--device", "{{ params.device }}"),
    }

    @task_group
    def process(video_dir: str):
        tasks = {stage.name: stage_task(stage.name, video_dir, *options.get(stage.name, ()),
                                        "--force", "{{ params.force }}") for stage in registry.LECTURE}
        for stage in registry.LECTURE:
            for upstream in stage.after:
                tasks[upstream] >> tasks[stage.name]
        leaves = [task for task in tasks.values() if not task.downstream_task_ids]
        leaves >> finalize(video_dir)

    videos = claim()
    check_params_task(check_lecture_params) >> wait_for_video >> videos
    process.expand(video_dir=videos)


lecture_to_pdf()
