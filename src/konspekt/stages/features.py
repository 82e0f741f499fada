"""features: ``audio.wav`` -> ``voice.npz`` and ``voice.json``: the voice measured by openSMILE.

It needs only the audio, so it runs beside transcription; render_pdf cuts the frames by the
transcript (:mod:`konspekt.prosody`) into ``features.csv`` and ``features.json`` (prosody, pace, pauses).
openSMILE (eGeMAPSv02) runs once over the audio, streamed to it in 10 s pieces: the
stage peaks at 1.35 GB on a 60-minute lecture, where openSMILE's stock input level, which
holds the whole signal, took it to 1.97 GB (bench/results/2026-11-22.md). One engine with two sinks gives
both the low-level descriptors (10 ms frames) and the 88 whole-lecture functionals,
where ``opensmile.Smile`` would decode and analyse the file twice (measured on a
9-minute lecture: 34 s for one pass against 31 s + 28 s, identical numbers). Of the frames,
``voice.npz`` keeps time, pitch and loudness. Every file is replaced whole on a rerun.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
import wave
from pathlib import Path

import numpy as np

from konspekt.contracts import log
from konspekt.layout import VideoDir, write_json
from konspekt.media import wav_duration
from konspekt.progress import Progress
from konspekt.prosody import Frames, num
from konspekt.stage import main_for

FEATURE_SET = "eGeMAPSv02"
PITCH_LLD = "F0semitoneFrom27.5Hz_sma3nz"  # semitones above 27.5 Hz; 0 when unvoiced
LOUDNESS_LLD = "Loudness_sma3"
CHUNK_SECONDS = 10.0  # audio handed to openSMILE at a time
# openSMILE's external wave input (shared/standard_external_wave_input.conf.inc) as a ring buffer
# of {ring} samples, where the stock file grows a level that holds the whole lecture.
RING_SOURCE = """
[componentInstances:cComponentManager]
instance[extsource].type=cExternalAudioSource

[extsource:cExternalAudioSource]
writer.dmLevel=wave
writer.levelconf.growDyn=0
writer.levelconf.isRb=1
writer.levelconf.nT={ring}
sampleRate=\\cm[sampleRate{{16000}}:sample rate]
nBits=\\cm[nBits{{16}}:sample bits]
channels=\\cm[channels{{1}}:channel size]
"""


def analyse(wav: Path, chunk_seconds: float = CHUNK_SECONDS) -> tuple[Frames, dict[str, float | None]]:
    """One openSMILE run with an LLD sink and a functionals sink: the frame table and the functionals.

    The audio is streamed in ``chunk_seconds`` pieces into a ring-buffer input level, while
    the engine runs in a thread: openSMILE's stock external source keeps the whole signal
    (about 230 MB an hour of audio, and more while it grows). Of each LLD frame only the
    time, pitch and loudness are kept.
    """
    import opensmile  # slow import (pandas, audformat): only when the stage runs
    from opensmile.core.lib import OpenSMILE

    conf = Path(opensmile.__file__).parent / "core" / "config"
    with tempfile.TemporaryDirectory(prefix="konspekt-smile-") as tmp, wave.open(str(wav)) as w:
        rate = w.getframerate()  # extract_audio wrote 16-bit mono PCM, which openSMILE takes as is
        step = max(1, int(rate * chunk_seconds))
        source = Path(tmp) / "ring_wave_input.conf.inc"
        source.write_text(RING_SOURCE.format(ring=2 * step))
        options = {
            "source": source,
            "sink": conf / "shared/standard_external_data_output_multi.conf.inc",
            "sinkLevelLLD": "lld", "sinkLevelFunc": "func", "sampleRate": rate, "nBits": 16,
            "bufferModeRbConf": conf / "shared/BufferModeRb.conf.inc",
            "frameModeFunctionalsConf": conf / "shared/FrameModeFunctionals.conf.inc",
        }
        engine = OpenSMILE()
        engine.initialize(config_file=str(conf / "egemaps/v02/eGeMAPSv02.conf"),
                          options={k: str(v) for k, v in options.items()}, loglevel=1)
        try:
            names = {sink: [engine.external_sink_get_element_name(sink, i)
                            for i in range(engine.external_sink_get_num_elements(sink))]
                     for sink in ("extsinklld", "extsinkfunc")}
            keep = [names["extsinklld"].index(PITCH_LLD), names["extsinklld"].index(LOUDNESS_LLD)]
            lld: list[tuple[float, float, float]] = []
            func: list[np.ndarray] = []
            engine.external_sink_set_callback_ex("extsinklld", lambda data, meta: lld.append(
                (meta.time + meta.lengthSec / 2, *np.ravel(data)[keep].tolist())))
            engine.external_sink_set_callback_ex("extsinkfunc", lambda data, meta: func.append(np.ravel(data).copy()))
            _stream(engine, w, step)
        finally:
            engine.free()

    table = np.array(lld, dtype=float).reshape(-1, 3)
    order = np.argsort(table[:, 0], kind="stable")  # searchsorted needs sorted times
    time_, semitones, loudness = table[order].T
    frames = Frames(time_, np.where(semitones > 0, semitones, np.nan), loudness)
    row = func[0] if func else [None] * len(names["extsinkfunc"])
    return frames, {name: num(v, digits=None) for name, v in zip(names["extsinkfunc"], row)}


def _stream(engine, w: wave.Wave_read, step: int) -> None:
    """Run ``engine`` in a thread and feed it the WAV ``step`` frames at a time, then end of input."""
    failure: list[BaseException] = []

    def run() -> None:
        try:
            engine.run()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            failure.append(exc)

    runner = threading.Thread(target=run, name="opensmile", daemon=True)
    runner.start()
    rate = w.getframerate()
    progress = Progress("measured", w.getnframes() / rate)
    while pcm := w.readframes(step):
        progress.update(w.tell() / rate)
        while not engine.external_audio_source_write_data("extsource", pcm):  # the ring is full: wait
            if not runner.is_alive():
                break
            time.sleep(0.005)
        if not runner.is_alive():
            break
    engine.external_audio_source_set_eoi("extsource")
    runner.join()
    if failure:
        raise failure[0]
    progress.finish()


def run(video: VideoDir, args: argparse.Namespace):
    if not video.audio.is_file():  # an earlier stage did not run: our bug, not the user's file
        raise FileNotFoundError(f"{video.audio} is missing; run extract_audio first")
    duration = wav_duration(video.audio)
    started = time.perf_counter()
    frames, funcs = analyse(video.audio)
    smile_s = time.perf_counter() - started
    log(f"openSMILE: {len(frames.time)} frames and {len(funcs)} functionals from {duration:.1f} s "
        f"of audio in {smile_s:.2f} s (one pass)")
    frames.save(video.voice_npz)
    write_json(video.voice_json, {"feature_set": FEATURE_SET, "duration": num(duration), "functionals": funcs})
    return [video.voice_npz, video.voice_json], {
        "model": f"openSMILE {FEATURE_SET}", "duration": num(duration), "frames": int(len(frames.time)),
        "opensmile_seconds": round(smile_s, 3),
    }


main = main_for("features", __doc__.splitlines()[0], None, run,
                reads=lambda video: [video.audio], packages=["opensmile", "numpy"])

if __name__ == "__main__":
    raise SystemExit(main())
