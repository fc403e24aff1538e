"""The paper checklist's ablations: ``sb3-vlm ablate`` (kept here for the benchmark scripts' habit). Usage::

    python benchmarks/ablations.py --quick
    python benchmarks/ablations.py --barn-dir /path/BARN --timesteps 20000 --seeds 0 1 2 --worlds 50 --out ablation

See :mod:`sb3_vlm.workflows.ablation`.
"""

import sys

from sb3_vlm.cli import main

if __name__ == "__main__":
    sys.exit(main(["ablate", *sys.argv[1:]]))
