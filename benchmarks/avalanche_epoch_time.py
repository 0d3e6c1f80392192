"""Time per training epoch: cl-suite's runner against Avalanche's own training loop, same model and data.

Model: digits-tiny's tiny ViT; data: all 10 digit classes as one task (1,347 training images), batch 32, plain
SGD. Rows: our runner with ``finetune``, our runner with ``avalanche-naive`` (the plugin adapter, no plugin),
and Avalanche 0.6's ``Naive.train()`` on the same initial weights. Our time is the runner's own train-loop
clock (``t_s`` in train.jsonl); Avalanche's is the sum of its epochs (before/after_training_epoch), so neither
counts evaluation or start-up. Prints the median over ``--repeats`` and the ratio ours / Avalanche's.

    .venv/bin/python benchmarks/avalanche_epoch_time.py --epochs 3 --repeats 3
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time

import cl_suite  # noqa: F401  (torchvision fix before Avalanche imports torchvision)


def ours(strategy: str, epochs: int, root: str, device: str) -> float:
    from cl_suite import config, runner

    cfg = config.resolve({"scenario": "digits-tiny", "strategy": strategy},
                         {"scenario.classes_per_task": "10", "train.epochs": str(epochs), "train.optimizer": "sgd",
                          "train.lr": "0.05", "train.log_every": "1000000", "device": device})  # fmt: skip
    store = runner.start(cfg, root, out=io.StringIO(), progress=False)
    last = [row for row in store.read_lines("train.jsonl") if "t_s" in row][-1]
    return last["t_s"] / epochs


def avalanche(epochs: int, device: str) -> float:
    import torch
    from avalanche.core import SupervisedPlugin
    from avalanche.training import Naive

    from cl_suite.avalanche_bridge import to_avalanche
    from cl_suite.runner import seed_everything
    from scenarios.digits import DigitsConfig, DigitsTiny
    from strategies.avalanche.adapter import LogitsView

    class EpochClock(SupervisedPlugin):
        def __init__(self) -> None:
            super().__init__()
            self.total, self.start = 0.0, 0.0

        def before_training_epoch(self, strategy, **kwargs):
            self.start = time.perf_counter()

        def after_training_epoch(self, strategy, **kwargs):
            self.total += time.perf_counter() - self.start

    scenario = DigitsTiny(DigitsConfig(classes_per_task=10))
    tasks = scenario.tasks()
    seed_everything(0)
    model = scenario.build_model(None)
    view, clock = LogitsView(model), EpochClock()
    strategy = Naive(model=view, optimizer=torch.optim.SGD(view.parameters(), lr=0.05, momentum=0.9),
                     criterion=torch.nn.CrossEntropyLoss(), train_mb_size=32, train_epochs=epochs,
                     evaluator=None, plugins=[clock], device=device)  # fmt: skip
    model.on_task_start(tasks[0])
    strategy.train(to_avalanche(tasks).train_stream[0])
    return clock.total / epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (both loops use it)")
    args = parser.parse_args()
    import warnings

    warnings.filterwarnings("ignore")
    times: dict[str, list[float]] = {"finetune (our runner)": [], "avalanche-naive (our runner)": [],
                                     "Naive.train (Avalanche loop)": []}  # fmt: skip
    with tempfile.TemporaryDirectory() as root:
        for _ in range(args.repeats):
            times["finetune (our runner)"].append(ours("finetune", args.epochs, root, args.device))
            times["avalanche-naive (our runner)"].append(ours("avalanche-naive", args.epochs, root, args.device))
            times["Naive.train (Avalanche loop)"].append(avalanche(args.epochs, args.device))
    median = {k: statistics.median(v) for k, v in times.items()}
    for name, value in median.items():
        print(f"{name:32s} {value * 1000:8.1f} ms/epoch  (runs: {', '.join(f'{v * 1000:.0f}' for v in times[name])})")
    print(f"device: {args.device}, epochs: {args.epochs}, repeats: {args.repeats}")
    ratio = median["finetune (our runner)"] / median["Naive.train (Avalanche loop)"]
    print(f"ratio ours/avalanche (finetune vs Naive.train): {ratio:.2f}")


if __name__ == "__main__":
    main()
