"""Instructions per cached-token Check, counted by valgrind's callgrind: repeatable to about 1 %
from run to run and day to day, where times on a shared VM are not (bench/RESULTS.md).

Runs bench/check_warm.py under callgrind twice, with N and 4N Checks in the loop, and divides
the difference by the 3 x 3N extra Checks, so start-up and imports cancel out. Keys live in
one directory for both runs (key generation costs a different amount each time).

    .venv/bin/python bench/check_instructions.py                  # no quota
    .venv/bin/python bench/check_instructions.py --quota batched  # embedded store, batched
    PYTHONPATH=/path/to/other/checkout/server .venv/bin/python bench/check_instructions.py

Needs valgrind (Debian: apt-get install valgrind); about two minutes.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

WARM = Path(__file__).parent / "check_warm.py"


def instructions(checks: int, quota: str, workdir: Path, out: Path) -> int:
    subprocess.run(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable,
         str(WARM), "--checks", str(checks), "--quota", quota, "--workdir", str(workdir)],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    match = re.search(r"^summary: (\d+)$", out.read_text(), re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no instruction total in {out}")
    return int(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checks", type=int, default=300, metavar="N")
    parser.add_argument("--quota", choices=["none", "exact", "batched"], default="none")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("valgrind not found: apt-get install valgrind")
    with tempfile.TemporaryDirectory(prefix="tg-instr-") as tmp:
        work = Path(tmp)
        subprocess.run([sys.executable, str(WARM), "--checks", "10", "--workdir", str(work)],
                       check=True, stdout=subprocess.DEVNULL)  # the keys, before either count
        small, large = args.checks, 4 * args.checks
        with ThreadPoolExecutor(2) as pool:  # the two runs are independent: one per core
            counts = list(pool.map(lambda n: instructions(n, args.quota, work,
                                                          work / f"callgrind.{n}"),
                                   (small, large)))
    # check_warm runs its loop three times (plus one first Check) for every count.
    per_check = (counts[1] - counts[0]) / (3 * (large - small))
    print(f"{per_check:,.0f} instructions per cached Check (quota: {args.quota})")


if __name__ == "__main__":
    main()
