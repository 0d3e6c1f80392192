"""A two-layer MLP TaskModel and a minimal Context, for strategy unit tests that drive the hooks by hand (float64,
CPU, seeded): small enough that exact claims (orthogonality, budgets, equalities) can be checked to tolerance."""

from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from cl_suite.api import LinearTarget, Task, TaskModel


class DictDataset(Dataset):
    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"x": self.x[i], "y": self.y[i]}


def collate(items: list[dict]) -> dict:
    return {"x": torch.stack([i["x"] for i in items]), "y": torch.stack([i["y"] for i in items])}


class ToyMLP(TaskModel):
    """``head(relu(fc2(relu(fc1(x)))))`` with fc1/fc2 exposed as adapter targets; ``head_trains=False`` keeps the
    head out of training, so any change of the loss comes from the adapters."""

    def __init__(self, d: int = 16, classes: int = 4, head_trains: bool = False, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.fc1, self.fc2, self.head = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, classes)
        self.head_trains = head_trains
        self.double()

    def features(self, batch: dict) -> torch.Tensor:
        return F.relu(self.fc2(F.relu(self.fc1(batch["x"]))))

    def logits(self, batch: dict) -> torch.Tensor:
        return self.head(self.features(batch))

    def loss(self, batch: dict, task: Task) -> torch.Tensor:
        return F.cross_entropy(self.logits(batch), batch["y"])

    def predict(self, batch: dict, task_id: int | None) -> torch.Tensor:
        return self.logits(batch)

    def head_parameters(self) -> list[nn.Parameter]:
        return list(self.head.parameters()) if self.head_trains else []

    def linear_targets(self) -> list[LinearTarget]:
        return [LinearTarget("fc1", "fc1", self.fc1), LinearTarget("fc2", "fc2", self.fc2)]


def make_task(index: int, x: torch.Tensor, y: torch.Tensor, classes: tuple[int, ...] = ()) -> Task:
    data = DictDataset(x, y)
    return Task(index=index, name=f"t{index}", train=data, test=data, classes=classes)


def context(num_tasks: int = 2, batch_size: int = 8, seed: int = 0) -> SimpleNamespace:
    def loader(dataset, *, shuffle: bool = False, batch_size: int | None = None):
        g = torch.Generator().manual_seed(seed)
        return DataLoader(dataset, batch_size=batch_size or default, shuffle=shuffle, generator=g, collate_fn=collate)

    default = batch_size
    return SimpleNamespace(device=torch.device("cpu"), kernel_backend="torch", num_tasks=num_tasks, seed=seed,
                           loader=loader, log=lambda **kw: None,
                           train=SimpleNamespace(max_steps=0, epochs=1, batch_size=batch_size))  # fmt: skip


def train_steps(strategy, task: Task, steps: int, lr: float = 1e-2) -> list[float]:
    """The runner's inner loop for ``steps`` steps (Adam), calling the strategy's hooks; returns the losses."""
    opt = torch.optim.Adam(list(strategy.trainable_parameters()), lr=lr)
    losses = []
    batches = list(strategy.ctx.loader(task.train, shuffle=True))
    for step in range(steps):
        loss = strategy.training_step(batches[step % len(batches)], task)
        opt.zero_grad()
        loss.backward()
        strategy.after_backward()
        opt.step()
        strategy.after_step()
        losses.append(float(loss.detach()))
    return losses
