"""Wall time of a fusion experiment after a full `dvc repro`, against the full repro, on the demo set.

Copies the working tree into a temporary git repository, times `dvc repro` from scratch, then
times `dvc exp run -S <fusion change>` (which must re-run only the fusion stage and its dependants)
``--repeats`` times, restoring the baseline in between: this machine's speed drifts by a third
from one minute to the next, so the targets apply to the median and every time is printed, with
the CPU seconds it took. Also records what a user then reads: `dvc metrics diff`,
`dvc exp show --only-changed` and the number of metric columns of `dvc exp show`. Targets:
experiment <= 1/20 of the full repro and <= 20 s. Prints JSON.

    python benchmarks/fusion_experiment.py [--set fusion.modality_dropout=0.1] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


GIT = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost"]


def copy_repository(dest: Path, message: str = "bench") -> None:
    """Copy the working tree (tracked and not-ignored files, less reports/ and dvc.lock: a pipeline never run)
    into ``dest`` as a fresh git repository with one commit."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split()
    for rel in files:
        if (REPO / rel).is_file() and not rel.startswith(("reports/", "dvc.lock")):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dest / rel)
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    subprocess.run([*GIT, "add", "-A"], cwd=dest, check=True)
    subprocess.run([*GIT, "commit", "-qm", message], cwd=dest, check=True)


def sh(cwd: Path, *args: str) -> tuple[float, str]:
    # PYTHONPATH: the copy's stages import the copy's emocare, not the editable install's (this working tree)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "TQDM_DISABLE": "1",
           "PYTHONPATH": str(cwd)}
    start = time.perf_counter()
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"{' '.join(args)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return time.perf_counter() - start, proc.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", default="fusion.modality_dropout=0.1", help="the -S value of the experiment")
    ap.add_argument("--repeats", type=int, default=5, help="experiments timed, from the same baseline")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        dest = Path(tmp)
        copy_repository(dest)
        full, _ = sh(dest, sys.executable, "-m", "dvc", "repro")
        sh(dest, *GIT, "add", "-A")
        sh(dest, *GIT, "commit", "-qm", "baseline")
        times, cpu, stages = [], [], []
        for i in range(a.repeats):
            if i:  # back to the baseline: the same experiment runs again (no run-cache hit: the check below)
                sh(dest, *GIT, "checkout", "-q", "--", ".")
                sh(dest, sys.executable, "-m", "dvc", "checkout", "-q")
            before = _cpu_s()
            t, out = sh(dest, sys.executable, "-m", "dvc", "exp", "run", "-S", a.set)
            times.append(round(t, 1))
            cpu.append(round(_cpu_s() - before, 1))
            stages.append(sorted(set(re.findall(r"Running stage '([^']+)'", out))))
        _, diff = sh(dest, sys.executable, "-m", "dvc", "metrics", "diff")
        _, changed = sh(dest, sys.executable, "-m", "dvc", "exp", "show", "--only-changed", "--no-pager")
        _, shown = sh(dest, sys.executable, "-m", "dvc", "metrics", "show", "--json")
    metric_columns = [k for v in json.loads(shown).values() for f, d in v["data"].items() for k in _flat(d["data"])]
    exp = statistics.median(times)
    print(json.dumps({"full_repro_s": round(full, 1), "experiment": f"dvc exp run -S {a.set}",
                      "experiment_s": round(exp, 1), "experiment_s_each": times,
                      "experiment_cpu_s_each": cpu, "ratio": round(exp / full, 4),
                      "stages_rerun": stages[0] if all(s == stages[0] for s in stages) else stages,
                      "metric_columns": len(metric_columns), "metrics_diff": diff.splitlines(),
                      "exp_show_only_changed": changed.splitlines(),
                      "targets": {"ratio_max": 0.05, "experiment_s_max": 20, "metric_columns_max": 25}}, indent=2))


def _cpu_s() -> float:
    """CPU seconds (user + system) of the finished child processes and all their descendants."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _flat(d: dict, prefix: str = "") -> list[str]:
    return [k for key, v in d.items() for k in (_flat(v, f"{prefix}{key}.") if isinstance(v, dict) else [prefix + key])]


if __name__ == "__main__":
    main()
