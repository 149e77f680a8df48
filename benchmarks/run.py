"""Run every benchmark module (``benchmarks/bench_*.py``) and write one Markdown report.

Each module offers ``run() -> dict`` and, optionally, ``to_markdown(result) -> str``
(a result may also carry its own ``'markdown'``).  A module that fails is reported
in the output with its error; the others still run.

Usage: ``python benchmarks/run.py --output BENCHMARKS.md [--only speed,conv] [--update]``.
With ``--update`` the sections of the benchmarks run replace their old sections in the
existing report and the others are kept; each section then records its own command,
machine and date, so that no figure is shown without the run that produced it.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import re
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return (
        f"CPU {cpu_model()}, {os.cpu_count()} logical cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}; GPU: {gpu}; load average at start: {load}"
    )


def load_module(path: Path):
    spec = importlib.util.spec_from_file_location(f"benchmarks.{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


FOOTER = re.compile(r"^_`(bench_\w+)\.py` took [^\n]*_\s*$", re.M)


def split_sections(text: str) -> tuple[str, dict[str, str]]:
    """A report's header and its sections by benchmark name (each ends with its "took" footer)."""
    sections: dict[str, str] = {}
    start, header = 0, None
    for match in FOOTER.finditer(text):
        body = text[start : match.end()]
        if header is None:  # the header ends where the first section's heading starts
            cut = body.find("\n### ")
            header, body = (body[: cut + 1], body[cut + 1 :]) if cut >= 0 else ("", body)
        sections[match.group(1)] = body.strip("\n")
        start = match.end()
    return header or text, sections


def section(path: Path, provenance: str = "") -> str:
    started = time.perf_counter()
    try:
        module = load_module(path)
        result = module.run()
        if isinstance(result, dict) and "markdown" in result:
            text = result["markdown"]
        elif hasattr(module, "to_markdown"):
            text = module.to_markdown(result)
        else:
            text = f"### {path.stem}\n\n```\n{json.dumps(result, indent=2, default=str)}\n```"
    except Exception:  # noqa: BLE001 - one broken benchmark must not hide the others
        text = f"### {path.stem}: FAILED\n\n```\n{traceback.format_exc()}```"
    took = f"{time.perf_counter() - started:.0f} s"
    return f"{text}\n\n_`{path.name}` took {took}{provenance}._"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="BENCHMARKS.md")
    parser.add_argument("--only", default="", help="comma-separated names, e.g. speed,conv (bench_ prefix optional)")
    parser.add_argument("--update", action="store_true", help="replace only these sections of an existing report")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(HERE.parent))
    paths = sorted(HERE.glob("bench_*.py"))
    if args.only:
        wanted = {n if n.startswith("bench_") else f"bench_{n}" for n in args.only.split(",")}
        paths = [p for p in paths if p.stem in wanted]
    command = " ".join([Path(sys.executable).name, "benchmarks/run.py", *(argv if argv is not None else sys.argv[1:])])
    header = [
        "# aekit benchmarks",
        "",
        f"Command: `{command}` (`make bench`).",
        "",
        f"Machine: {machine()}.",
        "",
        f"Date: {datetime.datetime.now().isoformat(timespec='minutes')}.",
        "",
    ]
    output = Path(args.output)
    old_header, old_sections = split_sections(output.read_text()) if args.update and output.exists() else ("", {})
    provenance = ""
    if args.update:
        stamp = datetime.datetime.now().isoformat(timespec="minutes")
        provenance = f" (run alone: `{command}`, {stamp}; {machine()})"
    parts = dict(old_sections)
    for path in paths:
        print(f"running {path.name} ...", flush=True)
        parts[path.stem] = section(path, provenance)
    if args.update and old_header:
        header = [old_header.rstrip("\n"), ""]
    text = "\n".join(header) + "\n" + "\n\n".join(parts[name] for name in sorted(parts)) + "\n"
    fd, tmp = tempfile.mkstemp(dir=output.resolve().parent, prefix=f".{output.name}.")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, output)  # atomic: a crash never leaves half a report
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
