"""`python -m bench [--quick] [options of bench.stages]`: the per-stage table and the 1080p throughput, then how
to run the (long) U-Net benchmark. Every option is passed on to `python -m bench.stages` (see its --help)."""
from __future__ import annotations

import sys

from bench import stages

UNET_HOWTO = """\
The U-Net loop is not run here (real size: minutes per case). Measure it with
    python -m bench.unet_chunk --sizes 256 512 --dtypes fp32 bf16 --json unet.jsonl
(add --estimate-loops to compute the 20-step loops from one full and one cached step instead of running them),
then put its figure in the table with
    python -m bench --unet-results unet.jsonl"""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        stages.build_parser().print_help()
        print()
        print(UNET_HOWTO)
        return 0
    rc = stages.main(argv)
    print()
    print(UNET_HOWTO)
    return rc


if __name__ == "__main__":
    sys.exit(main())
