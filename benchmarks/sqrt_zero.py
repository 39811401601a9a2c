"""Time ``torch.sqrt`` on a 256x256 float32 tensor of ones, 1e-30, zeros and denormals.

With and without flushing denormals to zero (which does not help with zeros).

    python benchmarks/sqrt_zero.py

Adam takes ``sqrt`` of its second moment, which is 0 at absent connections unless
something keeps it away from 0 (docs/benchmarks.md).
"""

from __future__ import annotations

import platform
import timeit

import torch


def main() -> None:
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, 1 thread, 256x256 float32")
    for flush in (False, True):
        torch.set_flush_denormal(flush)
        print(f"torch.set_flush_denormal({flush})")
        for label, value in [("ones", 1.0), ("1e-30", 1e-30), ("zeros", 0.0), ("denormal 1e-40", 1e-40)]:
            x = torch.full((256, 256), value)
            seconds = min(timeit.repeat(lambda x=x: torch.sqrt(x), number=200, repeat=5)) / 200
            print(f"  sqrt of {label:<16}{seconds * 1e6:8.1f} us")
    torch.set_flush_denormal(False)


if __name__ == "__main__":
    main()
