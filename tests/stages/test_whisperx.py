"""The transcribe stage on the whisperx backend, for real, in whisperx's own venv.

whisperx pins torch~=2.8, so it cannot share the main venv: ``.ci/whisperx-env.sh``
makes a venv keyed by requirements/whisperx.txt and these tests run the stage with its
Python in a subprocess (``KONSPEKT_WHISPERX_PYTHON`` points at another interpreter).
They skip, saying so, where that venv does not exist.

What is real: whisperx's batched decoding of tiny.en over its bundled pyannote VAD, the
fallback to faster-whisper word timings, and whisperx's wav2vec2 alignment code run
window by window. What is a stand-in: no wav2vec2 CTC model can be downloaded here, so
the alignment test caches a *random-weight* tiny Wav2Vec2ForCTC under the default
model's id, and an empty-parameter NLTK punkt_tab: it checks the wiring and the
contract (timed words inside their segments), not alignment accuracy.
"""

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT, airflow_env, dags_test, new_video_dir
from transcript_checks import check_subtitles, check_transcript

from konspekt.sample import SCRIPT, word_error_rate
from konspekt.stages import extract_audio


def whisperx_python() -> Path | None:
    explicit = os.environ.get("KONSPEKT_WHISPERX_PYTHON")
    if explicit:
        return Path(explicit)
    venv = subprocess.run(["bash", str(ROOT / ".ci" / "whisperx-env.sh"), "--path"], capture_output=True,
                          text=True, check=True).stdout.strip()
    return Path(venv) / "bin" / "python" if (Path(venv) / ".installed").is_file() else None


PYTHON = whisperx_python()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(PYTHON is None or not PYTHON.exists(),
                       reason="no whisperx venv: create it with `.ci/whisperx-env.sh` (about 7.6 GB, 5 min)"),
]

MAKE_WAV2VEC2 = r"""
import json, sys
from pathlib import Path
import torch
from transformers import (Wav2Vec2Config, Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC,
                          Wav2Vec2Processor)
out = Path(sys.argv[1]); out.mkdir(parents=True)
vocab = {c: i for i, c in enumerate(["<pad>", "<s>", "</s>", "<unk>", "|", "'", *"abcdefghijklmnopqrstuvwxyz"])}
(out / "vocab.json").write_text(json.dumps(vocab))
tokenizer = Wav2Vec2CTCTokenizer(str(out / "vocab.json"), unk_token="<unk>", pad_token="<pad>", word_delimiter_token="|")
features = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True)
Wav2Vec2Processor(feature_extractor=features, tokenizer=tokenizer).save_pretrained(out)
config = Wav2Vec2Config(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, conv_dim=(32,) * 7, num_conv_pos_embeddings=16,
                        num_conv_pos_embedding_groups=2, pad_token_id=0)
torch.manual_seed(0)
Wav2Vec2ForCTC(config).save_pretrained(out)
"""


@pytest.fixture(scope="module")
def lecture_dir(tmp_path_factory, lecture_mp4):
    video_dir = new_video_dir(tmp_path_factory.mktemp("wx-lecture"), lecture_mp4)
    assert extract_audio.main(["--video-dir", str(video_dir)]) == 0
    return video_dir


def run_whisperx(video_dir: Path, *args: str, **env: str) -> tuple[dict, str]:
    environ = dict(os.environ, PYTHONPATH=str(ROOT / "src"), HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", **env)
    proc = subprocess.run([str(PYTHON), "-m", "konspekt.stages.transcribe", "--video-dir", str(video_dir),
                           "--backend", "whisperx", "--device", "cpu", *args],
                          env=environ, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def test_whisperx_batched_with_faster_whisper_word_times(lecture_dir, tiny_en_model, tmp_path):
    """No alignment model in the (empty) cache: words get faster-whisper's timings, and the transcript says so."""
    result, err = run_whisperx(lecture_dir, "--model", tiny_en_model, "--batch-size", "4",
                               HF_HOME=str(tmp_path / "empty-cache"))
    assert result["details"]["backend"] == "whisperx" and result["details"]["compute_type"] == "int8"
    assert "no wav2vec2 model for 'en' in the cache" in err
    t = check_transcript(lecture_dir / "transcript.json")
    assert (t.backend, t.word_timestamps, t.language, t.language_probability) == ("whisperx", "faster-whisper",
                                                                                  "en", 1.0)
    assert word_error_rate(SCRIPT, t.text) <= 0.15
    assert sum(len(s.words) for s in t.segments) > 50
    assert len(check_subtitles(lecture_dir, t)) >= 5


def test_whisperx_aligns_words_with_wav2vec2_in_windows(lecture_dir, tiny_en_model, tmp_path):
    # A stand-in, with random weights, cached where the default English aligner would be.
    snapshot = tmp_path / "hf" / "hub" / "models--facebook--wav2vec2-base-960h" / "snapshots" / ("0" * 40)
    subprocess.run([str(PYTHON), "-c", MAKE_WAV2VEC2, str(snapshot)], check=True, capture_output=True, timeout=300)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    punkt = tmp_path / "nltk" / "tokenizers" / "punkt_tab" / "english"
    punkt.mkdir(parents=True)
    for name in ("collocations.tab", "sent_starters.txt", "abbrev_types.txt", "ortho_context.tab"):
        (punkt / name).touch()  # Punkt with no learned parameters: it splits at every full stop

    _, err = run_whisperx(lecture_dir, "--model", tiny_en_model, "--align-window", "12",
                               HF_HOME=str(tmp_path / "hf"), NLTK_DATA=str(tmp_path / "nltk"))
    assert "aligning words with" in err and "models--facebook--wav2vec2-base-960h" in err
    assert re.search(r"in [2-9] windows of up to 12 s", err), err  # the 34 s lecture, 12 s at a time
    t = check_transcript(lecture_dir / "transcript.json")
    assert (t.backend, t.word_timestamps) == ("whisperx", "wav2vec2")
    assert word_error_rate(SCRIPT, t.text) <= 0.15  # alignment keeps the words it was given
    assert sum(len(s.words) for s in t.segments) > 50
    assert len(t.segments) >= 8  # whisperx splits aligned chunks into sentences
    check_subtitles(lecture_dir, t)


def test_warm_cache_in_the_whisperx_env_sees_the_cached_aligner(tmp_path, tiny_en_model):
    """Offline, a cache holding everything the whisperx stage needs reports ready."""
    snapshot = tmp_path / "hf" / "hub" / "models--facebook--wav2vec2-base-960h" / "snapshots" / ("1" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("1" * 40)
    (tmp_path / "nltk" / "tokenizers" / "punkt_tab" / "english").mkdir(parents=True)
    (tmp_path / "nltk" / "tokenizers" / "punkt_tab" / "english" / "sent_starters.txt").touch()
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"),
               NLTK_DATA=str(tmp_path / "nltk"))
    proc = subprocess.run([str(PYTHON), "-m", "konspekt.warm_cache", "--whisper-model", tiny_en_model,
                           "--align-language", "en"], env=env, capture_output=True, text=True, timeout=120)
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert proc.returncode == 0, proc.stderr
    assert [(m["kind"], m["status"]) for m in report["models"]] == [("whisper", "local"), ("align", "cached"),
                                                                      ("nltk", "cached")]


# -- speaker diarization ----------------------------------------------------------------------------
# pyannote's pipeline, for real, built offline in a local folder: the segmentation model is the trained
# pyannote/segmentation that ships in the whisperx wheel; the speaker-embedding network has random
# weights (the real one is gated on the hub) and the PLDA is an identity. With ``--speakers 2`` that is
# enough to tell espeak's male and female voices apart; it checks the wiring, not pyannote's accuracy.
MAKE_PIPELINE = r"""
import os, shutil, sys
os.environ["PYANNOTE_METRICS_ENABLED"] = "false"
from pathlib import Path
import lightning, numpy as np, torch, whisperx
from pyannote.audio import Model
from pyannote.audio.core.task import Problem, Resolution, Specifications
from pyannote.audio.models.embedding import WeSpeakerResNet34
out = Path(sys.argv[1])
(out / "segmentation").mkdir(parents=True)
shutil.copy(Path(whisperx.__file__).parent / "assets" / "pytorch_model.bin", out / "segmentation")
torch.manual_seed(0)
embedding = WeSpeakerResNet34()
embedding.specifications = Specifications(problem=Problem.REPRESENTATION, resolution=Resolution.CHUNK, duration=10.0)
checkpoint = {"state_dict": embedding.state_dict(), "hyper_parameters": dict(embedding.hparams),
              "pytorch-lightning_version": lightning.__version__}
embedding.on_save_checkpoint(checkpoint)
(out / "embedding").mkdir()
torch.save(checkpoint, out / "embedding" / "pytorch_model.bin")
dim, lda_dim = Model.from_pretrained(str(out / "embedding")).dimension, 128
lda, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((dim, lda_dim)))
(out / "plda").mkdir()
np.savez(out / "plda" / "xvec_transform.npz", mean1=np.zeros(dim), mean2=np.zeros(lda_dim), lda=lda)
np.savez(out / "plda" / "plda.npz", mu=np.zeros(lda_dim), tr=np.eye(lda_dim), psi=np.linspace(2.0, 0.1, lda_dim))
(out / "config.yaml").write_text('''pipeline:
  name: pyannote.audio.pipelines.SpeakerDiarization
  params: {segmentation: $model/segmentation, embedding: $model/embedding, plda: $model/plda,
           clustering: VBxClustering, embedding_exclude_overlap: true}
params:
  segmentation: {threshold: 0.5, min_duration_off: 0.0}
  clustering: {threshold: 0.6, Fa: 0.07, Fb: 0.8}
''')
"""
DIALOGUE = [("en-us", "Good morning. Today we talk about the water cycle and why rain falls."),
            ("en+f3", "Professor, does evaporation happen only over the oceans?"),
            ("en-us", "No. Water evaporates from lakes, rivers and even from plant leaves."),
            ("en+f3", "Thank you, that makes sense.")]
SECRET = "hf_TEST-not-a-real-token-must-never-be-logged"


@pytest.fixture(scope="module")
def dialogue_dir(tmp_path_factory) -> tuple[Path, list[float]]:
    """A lecturer (male voice) and a student (female voice) taking turns; returns the turns' start times."""
    from konspekt.sample import speak

    media = tmp_path_factory.mktemp("dialogue")
    parts = [speak(text, media / f"part{i}.wav", voice=voice, video=False) for i, (voice, text) in enumerate(DIALOGUE)]
    (media / "parts.txt").write_text("".join(f"file '{p}'\n" for p in parts))
    subprocess.run(["ffmpeg", "-loglevel", "error", "-f", "concat", "-safe", "0", "-i", str(media / "parts.txt"),
                    "-ar", "16000", "-ac", "1", str(media / "dialogue.wav")], check=True)
    starts, t = [], 0.0
    for part in parts:
        starts.append(t)
        t += float(subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0",
                                   str(part)], capture_output=True, text=True, check=True).stdout)
    video_dir = new_video_dir(media, media / "dialogue.wav", name="dialogue.wav")
    assert extract_audio.main(["--video-dir", str(video_dir)]) == 0
    return video_dir, starts


def written_text(video_dir: Path) -> str:
    return "".join(p.read_text(encoding="utf-8") for p in video_dir.rglob("*") if p.suffix in {
        ".json", ".txt", ".srt", ".vtt", ".tsv"})


def test_diarization_labels_each_turn_with_its_speaker(dialogue_dir, tiny_en_model, tmp_path):
    video_dir, starts = dialogue_dir
    subprocess.run([str(PYTHON), "-c", MAKE_PIPELINE, str(tmp_path / "pipeline")], check=True, capture_output=True,
                   timeout=300, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    result, err = run_whisperx(video_dir, "--model", tiny_en_model, "--diarize", "--speakers", "2",
                               "--diarization-model", str(tmp_path / "pipeline"),
                               HF_HOME=str(tmp_path / "empty-cache"), HF_TOKEN=SECRET)
    t = check_transcript(video_dir / "transcript.json")
    assert t.diarization.status == "ok" and len(t.diarization.speakers) == 2, err
    assert sorted(result["details"]["speakers"]) == sorted(t.diarization.speakers)
    words = [w for s in t.segments for w in s.words]
    assert words and all(w.speaker in t.diarization.speakers for w in words)
    assert all(w.speaker == s.speaker for s in t.segments for w in s.words)  # segments are cut at changes

    def speaker_of_turn(i: int) -> str:
        end = starts[i + 1] if i + 1 < len(starts) else t.duration + 1
        said = [w.speaker for w in words if starts[i] <= (w.start + w.end) / 2 < end]
        return max(set(said), key=said.count)

    lecturer, student = speaker_of_turn(0), speaker_of_turn(1)
    assert lecturer != student and [speaker_of_turn(2), speaker_of_turn(3)] == [lecturer, student]
    check_subtitles(video_dir, t)
    srt = (video_dir / "transcript.srt").read_text(encoding="utf-8")
    assert srt.count(f"[{student}]") == 2 and srt.count(f"[{lecturer}]") == 2  # a label at each change
    assert "diarized 100%" in err or "speakers in" in err
    assert SECRET not in err + json.dumps(result) + written_text(video_dir)


def test_diarization_model_missing_offline_keeps_the_transcript(dialogue_dir, tiny_en_model, tmp_path):
    video_dir, _ = dialogue_dir
    result, err = run_whisperx(video_dir, "--model", tiny_en_model, "--diarize", "true",
                               HF_HOME=str(tmp_path / "empty-cache"), HF_TOKEN=SECRET)
    t = check_transcript(video_dir / "transcript.json")
    assert t.diarization.status == "skipped" and "is not in the cache" in t.diarization.reason
    assert "konspekt.warm_cache --diarization-model pyannote/speaker-diarization-community-1" in t.diarization.reason
    assert all(s.speaker is None for s in t.segments) and word_error_rate(" ".join(x for _, x in DIALOGUE),
                                                                         t.text) <= 0.2
    assert SECRET not in err + json.dumps(result) + written_text(video_dir)


def test_local_runner_runs_transcribe_in_the_whisperx_venv(tmp_path, lecture_mp4, tiny_en_model):
    """The DAG in local mode with ``KONSPEKT_LOCAL_PYTHONS``: transcribe runs whisperx in its own venv,
    every other stage in the main one, and the lecture still becomes a PDF."""
    import shutil

    data = tmp_path / "data"
    (data / "input").mkdir(parents=True)
    shutil.copy(lecture_mp4, data / "input" / "lecture.mp4")
    env = airflow_env(tmp_path, data, KONSPEKT_WHISPER_MODEL=tiny_en_model, KONSPEKT_ASR_BACKEND="whisperx",
                      KONSPEKT_LOCAL_PYTHONS=json.dumps({"asr": str(PYTHON)}),
                      PYTHONPATH=str(ROOT / "src"))  # the whisperx venv's konspekt may point at another clone
    proc = dags_test(env)
    out = data / "output" / "lecture"
    assert (out / "report.pdf").is_file(), (proc.stdout + proc.stderr)[-4000:]
    t = check_transcript(out / "transcript.json")
    assert t.backend == "whisperx" and word_error_rate(SCRIPT, t.text) <= 0.15
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stages"]["transcribe"]["details"]["backend"] == "whisperx"
