"""What ``GET /konspekt/lectures`` costs as uploads and outputs grow (issue 30, item 5):

    python bench/api_listing.py [--sizes 200x200 2000x2000]

For each ``UxO``: one key uploads U lectures, each claimed and published by the pipeline's own
functions (``inbox.claim``, ``inbox.finalize``), among O folders in ``output/`` and O in ``failed/``
(the others' lectures, made directly). Then, through the app under TestClient, it times the list a
page polls (the first page, or the whole list where the API has no pages) and every page of it.
Prints milliseconds; best of 3. Runs on any version of konspekt on the path (``PYTHONPATH=...``).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
import tempfile
import time
from pathlib import Path

from fastapi.testclient import TestClient

from konspekt import apikeys, inbox, registry, uploads, webapi
from konspekt.contracts import StageResult
from konspekt.layout import VideoDir, write_json

NEXT = re.compile(r'<([^>]+)>;\s*rel="next"')


def build(root: Path, n_uploads: int, n_outputs: int) -> str:
    for sub in ("input", "output", "processing", "processed", "failed"):
        (root / sub).mkdir(parents=True)
    key_id, key = apikeys.create(apikeys.default_store(root), "bench")
    old = time.time() - 60
    for i in range(n_uploads):
        upload = uploads.receive([f"lecture {i}".encode()], f"lecture {i}.mp4", root, key_id, 1 << 20)
        os.utime(root / "input" / upload.input_name, (old, old))  # ready to claim at once
    for c in inbox.claim(root, stable_seconds=0):
        video = VideoDir(c.video_dir)
        for stage in registry.lecture_names():
            write_json(video.result_path(stage), StageResult(stage, "ok"))
        inbox.finalize(root, c.video_dir)
    for i in range(max(n_outputs - n_uploads, 0)):  # other people's lectures
        digest = hashlib.sha256(f"other {i}".encode()).hexdigest()
        write_json(root / "output" / f"other {i}" / "manifest.json", {"video": {"name": f"other {i}.mp4",
                                                                                "sha256": digest}})
    for i in range(n_outputs):
        digest = hashlib.sha256(f"bad {i}".encode()).hexdigest()
        write_json(root / "failed" / f"bad {i}" / "error.json", {"file": f"bad {i}.mp4", "sha256": digest,
                                                                  "reason": "not a video"})
    return key


def best_ms(call, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return min(times)


def measure(n_uploads: int, n_outputs: int, repeat: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        start = time.perf_counter()
        key = build(root, n_uploads, n_outputs)
        made = time.perf_counter() - start
        client = TestClient(webapi.create_app(root))
        headers = {"X-API-Key": key}
        counts: dict[str, int] = {}

        def first_page() -> None:
            response = client.get("/lectures", headers=headers)
            assert response.status_code == 200, response.text
            counts["shown"] = len(response.json())

        def every_page() -> None:
            url, counts["total"] = "/lectures?limit=200", 0
            while url:
                response = client.get(url, headers=headers)
                assert response.status_code == 200, response.text
                counts["total"] += len(response.json())
                found = NEXT.search(response.headers.get("link", ""))
                url = found.group(1) if found else ""

        first_ms = best_ms(first_page, repeat)  # the first call counts: it is what a poll may meet
        every_ms = best_ms(every_page, 1)  # on a version without pages, the whole list once more
        assert counts["total"] == n_uploads, (counts, n_uploads)
        print(f"{n_uploads} uploads x {n_outputs} outputs (made in {made:.1f} s): first page "
              f"({counts['shown']} lectures) {first_ms:.1f} ms, all {n_uploads} {every_ms:.1f} ms", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["200x200", "2000x2000"], help="UPLOADSxOUTPUTS")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    print(f"konspekt from {Path(uploads.__file__).parent}", file=sys.stderr)
    for size in args.sizes:
        n_uploads, n_outputs = (int(x) for x in size.split("x"))
        measure(n_uploads, n_outputs, args.repeat)


if __name__ == "__main__":
    main()
