"""`python bench/kv_without_mve.py ARGS`: kvserver as `python -m kvserver ARGS`, but without registering
its validated-update host (kvserver.mve_support.install is a no-op): the baseline of
bench/mve_throughput.py --instructions. Not for anything else."""

import kvserver.mve_support

kvserver.mve_support.install = lambda loop: None

from kvserver.cli import main  # noqa: E402

main()
