"""`bench` in a child process with the tests' tiny encoder registered: ``python -m tests._bench_child ARGS``.

For tests with real processes sharing a store. ``STBENCH_TEST_EXTRACT_LOG=FILE`` appends ``<pid> <sample>``
for every sample this process embeds; ``STBENCH_TEST_SLOW_FIT=SECONDS`` makes every reducer fit sleep first;
``STBENCH_TEST_PAUSE_FIT=FILE`` makes the first fit create ``FILE.reached`` and wait until ``FILE`` exists.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path


def main() -> None:
    from stbench import extract, runner
    from stbench.encoders import encoders
    from tests._tiny import tiny_encoder

    if "test-tiny-cnn" not in encoders:
        encoders.register(tiny_encoder(), origin="tests")
    log = os.environ.get("STBENCH_TEST_EXTRACT_LOG")
    if log:
        real = extract.write_sample_embeddings

        def logged(pipeline, sample, path, **kw):  # noqa: ANN001, ANN202
            with Path(log).open("a") as fh:
                fh.write(f"{os.getpid()} {sample.id}\n")
            return real(pipeline, sample, path, **kw)

        extract.write_sample_embeddings = logged
    slow = float(os.environ.get("STBENCH_TEST_SLOW_FIT") or 0)
    if slow:
        real_fit = runner.fit_fold

        def slow_fit(*a, **kw):  # noqa: ANN002, ANN003, ANN202
            time.sleep(slow)
            return real_fit(*a, **kw)

        runner.fit_fold = slow_fit
    pause = os.environ.get("STBENCH_TEST_PAUSE_FIT")
    if pause:
        real_fit2 = runner.fit_fold

        def paused_fit(*a, **kw):  # noqa: ANN002, ANN003, ANN202
            Path(pause + ".reached").touch()
            while not Path(pause).exists():
                time.sleep(0.05)
            return real_fit2(*a, **kw)

        runner.fit_fold = paused_fit
    from stbench.cli import cli

    cli.main(args=sys.argv[1:], prog_name="bench")


if __name__ == "__main__":
    main()
