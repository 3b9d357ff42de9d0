"""`make demo`: a real pipeline on the embedded store, with live progress.

load data -> split -> three model fits, run concurrently, each its own subprocess and task
-> pick the best. Every step is a task in ``$PIPEKIT_HOME`` with its parameters, log and
return values (artifacts); the run itself is a ``controller`` task.

Pure Python on purpose (no NumPy needed): the "models" are polynomials fitted by least
squares to noisy samples of a cubic.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pipekit import PipelineController, configure
from pipekit.progress import watch


def load_data(n: int, seed: int) -> list[tuple[float, float]]:
    import random

    rng = random.Random(seed)
    points = []
    for _ in range(n):
        x = rng.uniform(-2, 2)
        points.append((x, 0.5 * x**3 - x + 1 + rng.gauss(0, 0.3)))
    print(f"generated {len(points)} points")
    return points


def split(points: list[tuple[float, float]], holdout: float
          ) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    cut = int(len(points) * (1 - holdout))
    print(f"train {cut} / validation {len(points) - cut}")
    return points[:cut], points[cut:]


def solve(a: list[list[float]], b: list[float]) -> list[float]:
    """Gaussian elimination with partial pivoting (a helper function of the fit step)."""
    n = len(b)
    m = [row[:] + [b[i]] for i, row in enumerate(a)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(m[r][col]))
        m[col], m[pivot] = m[pivot], m[col]
        for r in range(col + 1, n):
            f = m[r][col] / m[col][col]
            for c in range(col, n + 1):
                m[r][c] -= f * m[col][c]
    x = [0.0] * n
    for r in range(n - 1, -1, -1):
        x[r] = (m[r][n] - sum(m[r][c] * x[c] for c in range(r + 1, n))) / m[r][r]
    return x


def fit(train: list[tuple[float, float]], validation: list[tuple[float, float]],
        degree: int) -> dict[str, float | list[float]]:
    from pipekit import Logger

    k = degree + 1
    ata = [[sum(x ** (i + j) for x, _ in train) for j in range(k)] for i in range(k)]
    aty = [sum(y * x**i for x, y in train) for i in range(k)]
    coef = solve(ata, aty)
    mse = sum((sum(c * x**i for i, c in enumerate(coef)) - y) ** 2
              for x, y in validation) / len(validation)
    Logger.current_logger().report_scalar("validation", "mse", mse, iteration=degree)
    print(f"degree {degree}: validation mse {mse:.4f}")
    return {"degree": degree, "mse": mse, "coef": coef}


def pick_best(a: dict, b: dict, c: dict) -> dict:
    best = min((a, b, c), key=lambda m: m["mse"])
    print(f"best: degree {best['degree']} (mse {best['mse']:.4f})")
    return best


def build() -> PipelineController:
    pipe = PipelineController(name="polyfit", project="examples", version="1.0.0")
    pipe.add_parameter("n", 400, "how many samples to generate")
    pipe.add_parameter("seed", 7)
    pipe.add_function_step("load", load_data, {"n": "${pipeline.n}", "seed": "${pipeline.seed}"},
                           ["points"])
    pipe.add_function_step("split", split, {"points": "${load.points}", "holdout": 0.25},
                           ["train", "validation"])
    for degree in (1, 3, 7):
        pipe.add_function_step(f"fit_degree_{degree}", fit,
                               {"train": "${split.train}", "validation": "${split.validation}",
                                "degree": degree}, ["model"], helper_functions=[solve])
    pipe.add_function_step("pick_best", pick_best,
                           {"a": "${fit_degree_1.model}", "b": "${fit_degree_3.model}",
                            "c": "${fit_degree_7.model}"}, ["best"])
    return pipe


def main() -> int:
    settings = configure()  # PIPEKIT_HOME from the environment (the Makefile sets it)
    print(f"store: {settings.home}\n")
    pipe = build()
    pipe.start_locally(run_pipeline_steps_locally=True, wait=False)  # runs in the background
    assert pipe.id is not None
    status = watch(pipe.id)
    pipe.wait()
    best = pipe.get_pipeline_dag()["pick_best"]
    print(f"\nrun {pipe.id} {status} in {pipe.elapsed():.1f} s")
    if status != "completed":
        failed = [n.name for n in pipe.get_processed_nodes() if n.status == "failed"]
        print(f"failed steps: {failed}", file=sys.stderr)
        return 1
    from pipekit import Task

    model = Task(best.executed).artifacts["best"].get()
    print(f"best model: degree {model['degree']}, validation mse {model['mse']:.4f}")
    pipekit = Path(sys.executable).with_name("pipekit")
    print(f"""
Look at it with the CLI:
  export PIPEKIT_HOME={os.environ.get('PIPEKIT_HOME', settings.home)}
  {pipekit} runs show {pipe.id[:12]}
  {pipekit} export {pipe.id[:12]} --format html -o demo.html
  {pipekit} rerun {pipe.id[:12]} --param n=200
  {pipekit} logs {best.executed[:12]}""")
    return 0


if __name__ == "__main__":
    sys.exit(main())
