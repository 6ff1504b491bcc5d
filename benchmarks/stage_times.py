"""Summarise the stage times of a `dvc repro` log.

    dvc repro 2>&1 | tee repro.log ; python benchmarks/stage_times.py repro.log

Each `segbench` command prints "[<command> took N s]" (time inside the command, without the
Python start-up and imports); this pairs them with DVC's "Running stage" lines and prints
every stage and the total per kind of stage.
"""
import re
import sys
from collections import defaultdict


def stage_times(text: str) -> list[tuple[str, float]]:
    out, stage = [], None
    for line in text.splitlines():
        m = re.match(r"Running stage '([^']+)'", line)
        if m:
            stage = m.group(1)
        m = re.search(r"\[\S+ took ([0-9.]+) s\]", line)
        if m and stage:
            out.append((stage, float(m.group(1))))
            stage = None
    return out


if __name__ == "__main__":
    times = stage_times(open(sys.argv[1], errors="replace").read())
    per_kind = defaultdict(float)
    for stage, s in times:
        print(f"{stage:45s} {s:7.1f} s")
        per_kind[stage.split("@")[0]] += s
    print("-" * 55)
    for kind, s in per_kind.items():
        print(f"{kind:45s} {s:7.1f} s")
    print(f"{'all stages (inside the commands)':45s} {sum(per_kind.values()):7.1f} s")
