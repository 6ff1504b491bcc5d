"""Print the time each phantom generator takes for 40 subjects (best of 2), at 64, 96 and 128 px.

    python benchmarks/phantom_generation.py
"""
import time

from benchmark.data.phantoms import PhantomSource
from benchmark.data.registry import available_datasets, dataset_source


def best_time(generate, size: int, repeats: int = 2) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        generate(0, 40, size)
        times.append(time.perf_counter() - t0)
    return min(times)


if __name__ == "__main__":
    for size in (64, 96, 128):
        cells = [f"{name}: {best_time(s.generate, size):.2f} s" for name in available_datasets()
                 if isinstance(s := dataset_source(name), PhantomSource)]
        print(f"{size} px | " + " | ".join(cells))
