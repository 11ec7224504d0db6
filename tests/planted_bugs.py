"""The eight plausible bugs of issue 16, planted one at a time: each must make the fast suite fail.

    python tests/planted_bugs.py            # all eight; prints caught/MISSED per bug and the failing test
    python tests/planted_bugs.py 3 7        # some of them

Each bug is a one-line edit of a copy of the package (staged in the import layout, as tests/mutation.py does)
that the fast suite (`-m "not slow and not realdata"`, but test_packaging, which builds a wheel from the
repository) then runs against, the tests of the edited module first and with `-x`, so a caught bug stops at
its first failing test. Exit status 1 if any bug is missed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mutation import REPO, stage  # noqa: E402 - tests/mutation.py, beside this file

# (where, the code as it is, the bug, the tests to run first)
BUGS = [
    ("stbench/metrics.py", "return (d**2).mean(axis=0)", "return (d**2).sum(axis=0)",
     "MSE summed over spots instead of averaged", "tests/test_metrics.py"),
    ("stbench/metrics.py", "pcc_std=float(finite.std())", "pcc_std=float(finite.std(ddof=1))",
     "a fold's pcc_std with ddof=1 instead of the population std", "tests/test_metrics.py"),
    ("stbench/reducers/pca.py", "return self.pca_.transform(self.scaler_.transform(X)).astype(np.float32)",
     "return self.pca_.transform(type(self.scaler_)().fit_transform(X)).astype(np.float32)",
     "the scaler re-fitted on the data being transformed", "tests/test_pca.py"),
    ("stbench/expression.py", "return np.log1p(dense.astype(np.float64)).astype(np.float32)",
     "return dense.astype(np.float64).astype(np.float32)", "log1p dropped (raw counts regressed)",
     "tests/test_expression.py"),
    ("stbench/expression.py", "min_frac: float = 0.1", "min_frac: float = 0.01",
     "HEST's gene rule with a 1% instead of 10% expression threshold", "tests/test_expression.py"),
    ("stbench/tasks.py", "        if overlap:\n", "        if False:\n", "the train/test sample-overlap check disabled",
     "tests/test_tasks.py"),
    ("stbench/stores/catalog.py", "stddev_pop(f.pcc_mean) AS pcc_std", "stddev_samp(f.pcc_mean) AS pcc_std",
     "the summary's std with stddev_samp instead of stddev_pop", "tests/test_store.py"),
    ("stbench/stores/catalog.py", '"pcc_mean": s.pcc_mean,', '"pcc_mean": s.pcc_top.get(10, s.pcc_mean),',
     "a fold's stored pcc_mean taken from PCC-10", "tests/test_store.py"),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bugs", nargs="*", type=int, help="1-based numbers of the bugs to plant (default: all)")
    args = ap.parse_args()
    chosen = args.bugs or list(range(1, len(BUGS) + 1))
    missed = 0
    for number in chosen:
        where, good, bad, what, first = BUGS[number - 1]
        with tempfile.TemporaryDirectory(prefix="stbench-planted-") as tmp:
            root = Path(tmp)
            stage(root)
            path = root / where
            text = path.read_text()
            if text.count(good) != 1:
                sys.exit(f"bug {number}: the code to change was not found exactly once in {where}; update BUGS")
            path.write_text(text.replace(good, bad))
            env = {**os.environ, "PYTHONPATH": str(root), "PYTHONDONTWRITEBYTECODE": "1",
                   "STBENCH_SHARED_DATA": os.environ.get("STBENCH_SHARED_DATA", str(REPO.parent / "shared" / "data"))}
            for where_tests in (first, "tests"):  # the edited module's own tests, then the rest of the fast suite
                done = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-m",
                                       "not slow and not realdata", "--ignore", "tests/test_packaging.py", where_tests],
                                      cwd=root, env=env, capture_output=True, text=True, check=False)
                if done.returncode != 0:
                    break
            check = subprocess.run([sys.executable, "-c", "import stbench; print(stbench.__file__)"], cwd=root, env=env,
                                   capture_output=True, text=True, check=False).stdout.strip()
            if not check.startswith(str(root)):
                sys.exit(f"the staged copy was not imported (got {check}); is stbench installed non-editable?")
            failed = [line for line in done.stdout.splitlines() if line.startswith("FAILED")]
            caught = done.returncode != 0 and failed
            missed += not caught
            print(f"{number}. {what}: {'caught by ' + failed[0].split()[1] if caught else 'MISSED'}", flush=True)
            if not caught:
                print("\n".join(done.stdout.splitlines()[-15:]), flush=True)
            shutil.rmtree(root, ignore_errors=True)
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
