"""
### Lecture video → PDF notes

Drop a video (or an audio file) into **`airflow/data/input`**. The `lecture_inbox` DAG waits
for it to finish copying, claims it and starts one run of this DAG for it; runs overlap, so a
new lecture never waits for a batch. Triggered by hand (with other Params), a run claims
whatever `input/` holds (waiting up to a minute for a file still being copied). Each video runs:

```
extract_audio → transcribe → summarize ┐
              │            → outline   ├→ render_pdf → finalize
              → features ──────────────┘   (the voice, measured beside transcription)
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
from konspekt_dags.assets import whisper_model
from konspekt_dags.claims import claim_videos
from konspekt_dags.factory import stage_task
from konspekt_dags.labels import video_label
from konspekt_dags.params import check_lecture_params, enforce
from konspekt_dags.settings import settings


@dag(
    dag_id="lecture_to_pdf",
    schedule=None,  # lecture_inbox starts a run per video; or trigger one by hand
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=settings.max_active_videos,  # they overlap: claims are exclusive, pools bound the stages
    doc_md=__doc__,
    tags=["konspekt", "inference"],
    user_defined_filters={"video_label": video_label, "whisper_model": whisper_model},
    default_args={"retries": settings.retries, "retry_delay": timedelta(seconds=20)},
    params={
        "whisper_model": Param(settings.whisper_model, type="string",
                               description="faster-whisper model name (tiny … large-v3), a local CTranslate2 folder, "
                                           "or latest-finetuned (the newest train_asr model that beat its base)"),
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
        "min_speakers": Param(0, type="integer", minimum=0, description="diarization: at least this many; 0 = any"),
        "max_speakers": Param(0, type="integer", minimum=0, description="diarization: at most this many; 0 = any"),
        # Decoding and subtitles, named as in the WhisperX CLI (README: Decoding options)
        "task": Param(settings.asr_task, enum=["transcribe", "translate"],
                      description="translate: Whisper's English translation of the lecture"),
        # null-able: the UI's form requires a value for any other type, and these are usually empty
        "initial_prompt": Param(settings.initial_prompt or None, type=["null", "string"], maxLength=2000,
                                description="text the first window is conditioned on: names, terms, spelling"),
        "hotwords": Param(settings.hotwords or None, type=["null", "string"], maxLength=1000,
                          description="lecture jargon and names to favour in every window"),
        "compute_type": Param(settings.compute_type, enum=["auto", "int8", "int8_float16", "float16", "float32"],
                              description="auto: float16 on a GPU, int8 on the CPU"),
        "vad_filter": Param(settings.vad_filter, type="boolean", description="skip what VAD calls silence"),
        "vad_onset": Param(settings.vad_onset, type=["null", "number"], minimum=0, maximum=1,
                           description="speech starts above this probability; empty: the backend's default"),
        "vad_offset": Param(settings.vad_offset, type=["null", "number"], minimum=0, maximum=1,
                            description="speech ends below this probability; empty: the backend's default"),
        "max_line_width": Param(settings.max_line_width, type=["null", "integer"], minimum=10,
                                description="subtitles: characters per line at most; empty: about 42"),
        "max_line_count": Param(settings.max_line_count, type=["null", "integer"], minimum=1,
                                description="subtitles: lines per cue at most; empty: 2"),
        "max_cue_seconds": Param(settings.max_cue_seconds, type=["null", "number"], minimum=0.5,
                                 description="subtitles: seconds per cue at most; empty: about 6"),
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
    @task(retries=0, execution_timeout=timedelta(hours=1))
    def claim() -> list[str]:
        """Check the Params first (a bad one fails the run before any file is touched); then take the video
        lecture_inbox started this run for or, triggered by hand, what input/ holds now."""
        from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

        from konspekt import inbox

        context = get_current_context()
        enforce(check_lecture_params, context["params"])  # here, not in a task of its own: one start sooner
        run_id, folder = context["run_id"], (context["dag_run"].conf or {}).get("claimed")
        if folder is not None:  # conf is anyone's to write: only a claim this run owns is taken
            try:
                claims = [inbox.owned_claim(settings.data_root, folder, run_id)]
            except (OSError, ValueError) as exc:
                raise AirflowFailException(f"conf 'claimed': {exc}") from None
        else:
            claims = claim_videos(context["ti"], lambda video_dir, attempt: run_id,
                                  force=bool(context["params"]["force"]), wait=True)
        if not claims:
            raise AirflowSkipException("nothing to process: input/ holds only files still being copied, "
                                       "temp files, or files already processed (any other entry is in failed/)")
        return [settings.to_container(c.video_dir) for c in claims]

    # Mapped tasks are listed by the video's file name, not 0, 1, 2 (finalize names it before moving it).
    @task(trigger_rule="all_done", execution_timeout=timedelta(hours=1), map_index_template="{{ video }}")
    def finalize(video_dir: str) -> dict:
        """Publish to output/; quarantine a bad file in failed/ with error.json; hold one that failed for
        another reason (a missing model) for a later run. Fails the task unless published."""
        from dataclasses import asdict

        from airflow.sdk.exceptions import AirflowFailException

        from konspekt import inbox
        from konspekt.layout import printable
        from konspekt_dags import notify

        context = get_current_context()
        label = context["video"] = video_label(video_dir)  # type: ignore[typeddict-unknown-key]
        keep = bool(context["params"]["keep_byproducts"])
        local = settings.to_local(video_dir)
        claimed = notify.claimed_at(local)  # read before finalize moves the claim's record
        outcome = inbox.finalize(settings.data_root, local, keep_byproducts=keep,
                                 hold_seconds=settings.hold_minutes * 60)
        # Tell the user (only with KONSPEKT_NOTIFY_URLS) before a held or quarantined video fails this task.
        # Called here, not from a callback: the outcome is at hand, and a failure is only a warning.
        notify.send(outcome, notify.elapsed_seconds(claimed), urls=settings.notify_urls,
                    events=settings.notify_on, context=context)
        name = printable(outcome.name)
        if outcome.status != "held":  # the UI lists this task as "<file name> → output/<folder>/"
            context["video"] = f"{label} → {outcome.destination}/"  # type: ignore[typeddict-unknown-key]
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
        "transcribe": ("--model", "{{ params.whisper_model | whisper_model }}", "--language", "{{ params.language }}",
                       "--device", "{{ params.device }}", "--backend", "{{ params.asr_backend }}",
                       "--batch-size", "{{ params.asr_batch_size }}", "--beam-size", "{{ params.asr_beam_size }}",
                       "--diarize", "{{ params.diarize }}", "--speakers", "{{ params.speakers }}",
                       "--min-speakers", "{{ params.min_speakers }}", "--max-speakers", "{{ params.max_speakers }}",
                       "--diarization-model", settings.diarization_model,
                       "--task", "{{ params.task }}", "--compute-type", "{{ params.compute_type }}",
                       "--vad-filter", "{{ params.vad_filter }}",
                       # --flag=value: a prompt starting with "-" is still a value, never an option;
                       # an empty (null) one is the stage's own default
                       *(f"--{flag.replace('_', '-')}={{{{ params.{flag} | default('', true) }}}}"
                         for flag in ("initial_prompt", "hotwords", "vad_onset", "vad_offset", "max_line_width",
                                      "max_line_count", "max_cue_seconds"))),
        "summarize": ("--method", "{{ params.summary_method }}", "--model", "{{ params.summary_model }}",
                      "--models", "{{ params.summary_models | tojson }}", "--device", "{{ params.device }}"),
    }

    @task_group
    def process(video_dir: str):
        tasks = {stage.name: stage_task(stage.name, video_dir, *options.get(stage.name, ()),
                                        "--force", "{{ params.force }}",
                                        map_index_template="{{ task.work_dir | video_label }}")
                 for stage in registry.LECTURE}
        for stage in registry.LECTURE:
            for upstream in stage.after:
                tasks[upstream] >> tasks[stage.name]
        leaves = [task for task in tasks.values() if not task.downstream_task_ids]
        leaves >> finalize(video_dir)

    process.expand(video_dir=claim())


lecture_to_pdf()
