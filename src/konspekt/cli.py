"""``konspekt <command> [args]``: one entry point for every stage and tool.

    konspekt transcribe --video-dir DIR --model small     # same as python -m konspekt.stages.transcribe
    konspekt sample lecture.mp4                           # a spoken sample lecture
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import sys

import konspekt.stages

TOOLS = {"sample": "konspekt.sample", "doctor": "konspekt.doctor", "warm-cache": "konspekt.warm_cache"}


def commands() -> dict[str, str]:
    stages = {m.name.replace("_", "-"): f"konspekt.stages.{m.name}"
              for m in pkgutil.iter_modules(konspekt.stages.__path__) if not m.name.startswith("_")}
    tools = {name: module for name, module in TOOLS.items() if importlib.util.find_spec(module)}
    return {**stages, **tools}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    known = commands()
    if not argv or argv[0] in {"-h", "--help"} or argv[0].replace("_", "-") not in known:
        print(__doc__.strip() + "\n\ncommands: " + ", ".join(sorted(known)), file=sys.stderr)
        return 0 if argv and argv[0] in {"-h", "--help"} else 2
    module = importlib.import_module(known[argv[0].replace("_", "-")])
    return module.main(argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
