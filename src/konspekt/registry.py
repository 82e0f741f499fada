"""Every stage, declared once: what runs it, in which image, after what, and what it writes.

The DAGs wire their tasks from here, ``finalize`` judges a video by these stages and
publishes only what they write, the factory picks each task's image and pool from here,
and the image tools build and lock one image per family named here. Adding a stage is
one line below plus its module (see the README, "How it is built").

Stdlib only: the Airflow image installs this package without its extras.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    name: str  # the module: konspekt.stages.<name>, or konspekt.training.<step> for a training step
    image: str  # the image family that runs it: images/<image>/Dockerfile, konspekt-<image>:<tag>
    after: tuple[str, ...] = ()  # the stages whose files it reads: it runs once they are done
    writes: tuple[str, ...] = ()  # the files it writes in the video's folder, which finalize publishes
    gpu: bool = False  # asks for the GPU (when the deployment has one) and queues for its pool
    task_id: str | None = None  # the Airflow task id, when it is not the module's name
    # what a pod of it requests (the kubernetes runner): its peak on a long lecture or a training run, with room
    cpus: float = 1.0
    memory_gib: float = 2.0

    @property
    def module(self) -> str:
        return f"konspekt.{self.name}" if self.is_training else f"konspekt.stages.{self.name}"

    @property
    def is_training(self) -> bool:
        return self.name.startswith("training.")

    @property
    def step(self) -> str:
        """Its short name: the result file is ``stages/<step>.json`` in its work folder."""
        return self.name.rpartition(".")[2]

    @property
    def task(self) -> str:
        return self.task_id or self.step

    @property
    def work_flag(self) -> str:
        """The argument that names its work folder: one video's folder, or one training run's."""
        return "--run-dir" if self.is_training else "--video-dir"


# The lecture_to_pdf DAG's stages, in run order: each works on one video's folder (--video-dir).
# Memory: bench/results peaks on a 60-minute lecture (tiny.en: transcribe 1.3 GB, features 1.35 GB) with room
# for the larger Whisper and BART models.
LECTURE = (
    Stage("extract_audio", "audio", writes=("audio.wav",), cpus=0.5, memory_gib=0.5),
    Stage("transcribe", "asr", after=("extract_audio",), gpu=True, cpus=2, memory_gib=4,
          writes=("transcript.json", "transcript.txt", "transcript.srt", "transcript.vtt", "transcript.tsv")),
    # the voice needs only the audio, so it is measured beside transcription; render_pdf aligns it to the words
    Stage("features", "features", after=("extract_audio",), writes=("voice.npz", "voice.json")),
    Stage("summarize", "summarize", after=("transcribe",), gpu=True, writes=("summary.json",), memory_gib=3),
    Stage("outline", "summarize", after=("transcribe",), writes=("outline.json",)),  # sentence-transformers
    Stage("render_pdf", "report", after=("summarize", "features", "outline"), cpus=0.5, memory_gib=0.5,
          writes=("features.csv", "features.json", "report.pdf", "report.json")),
)

# The train_asr DAG's steps, in run order: each works on one training run's folder (--run-dir).
TRAINING = (
    Stage("training.read_data", "train"),
    Stage("training.batches", "train", after=("training.read_data",), task_id="make_batches"),
    Stage("training.train", "train", after=("training.batches",), gpu=True, cpus=2, memory_gib=8),
    Stage("training.evaluate", "train", after=("training.train",), gpu=True, cpus=2, memory_gib=4),
    Stage("training.export", "train", after=("training.evaluate",)),
)

BYPRODUCTS = frozenset({"audio.wav", "voice.npz", "voice.json"})  # published only when a run asks to keep them


def all_stages() -> tuple[Stage, ...]:
    return (*LECTURE, *TRAINING)


def get(name: str) -> Stage:
    """The stage called ``name`` (``transcribe``, ``training.train``)."""
    for stage in all_stages():
        if stage.name == name:
            return stage
    raise KeyError(f"no stage {name!r} in konspekt.registry")


def lecture_names() -> tuple[str, ...]:
    return tuple(stage.name for stage in LECTURE)


def deliverables() -> frozenset[str]:
    """Every file the lecture stages write: all that finalize may publish."""
    return frozenset(name for stage in LECTURE for name in stage.writes)


def images() -> dict[str, str]:
    """Stage name -> image family, for every stage."""
    return {stage.name: stage.image for stage in all_stages()}


def families() -> tuple[str, ...]:
    """The task image families, each once, in the order their first stage runs."""
    return tuple(dict.fromkeys(stage.image for stage in all_stages()))
