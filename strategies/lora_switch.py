"""LoRA-Switch: token-wise top-2 routing over LoRA experts, decided once per token and shared by all layers.

Kong et al., "LoRA-Switch: Boosting the Efficiency of Dynamic LLM Adapters via System-Algorithm Co-design"
(arXiv 2405.17741; reference/strategies.md §6.4, kernels.md §1.6). No official code was found (searched the code,
docs and pages corpora); everything here follows the paper's description:

* N LoRA experts on every adapted linear (8 in the paper's experiments); a top-2 router per token, **pre-gated at
  the first layer** (it reads the first block's input) and the same two experts used by every layer of the token.
* The chosen experts are merged into the weights for that token's step (the paper's SGMM kernel does all layers in
  one call). ``merge=true`` does this at batch-1 decoding (one addmm per layer from the kept base weight:
  :meth:`AdapterLinear.switch_merge`); the default computes the same mixture unmerged, as one fused-op call per
  layer over just the two chosen experts' ranks (the layer drops zero-gated ranks for a single row). Both give the
  same output (tested); ``cl-suite bench decode`` times both.

Not in the paper's text (assumptions, each a knob): the expert rank (``rank=8``) and scale (``alpha=16``), the
weighting of the two chosen experts (softmax over their logits), the targets (q, k, v, o) and no load-balancing loss.
CL framing (strategies/expert_bank.py): ``experts_per_task`` new experts and router outputs per task, earlier ones
frozen, top-2 over the whole bank.
"""

from __future__ import annotations

from dataclasses import dataclass

from cl_suite.adapters.routing import SwitchBinding
from cl_suite.api import Context, TaskModel
from strategies.expert_bank import ExpertBankStrategy


@dataclass
class LoRASwitchConfig:
    experts_per_task: int = 8  # N (8 in the paper's experiments), added per task
    topk: int = 2  # experts per token (the paper's top-2)
    rank: int = 8  # rank of each expert (not stated in the paper)
    alpha: float = 16.0  # scale alpha / rank (not stated in the paper)
    targets: tuple[str, ...] = ("q", "k", "v", "o")
    merge: bool = False  # merge the chosen experts into W per token at batch-1 decoding (the paper's switch)


class LoRASwitch(ExpertBankStrategy):
    """Per-token top-2 over a growing bank of LoRA experts, routed once at the first block and shared by all layers."""

    supports = frozenset({"cil", "til", "dil", "fscil", "instr"})
    Config = LoRASwitchConfig

    def setup(self, model: TaskModel, ctx: Context) -> None:
        super().setup(model, ctx)
        c = self.config
        if min(c.experts_per_task, c.topk, c.rank) < 1:
            raise ValueError("strategy.experts_per_task, strategy.topk and strategy.rank must be >= 1")
        self.inject_experts(model, ctx)
        self.binding = SwitchBinding(model, model.blocks(), self.layers, topk=c.topk, merge=c.merge)
        self.routers = self.binding.gates
        self.grow()
        self.binding.attach()

    def _grow_task(self) -> None:
        c = self.config
        for layer in self.layers.values():
            for _ in range(c.experts_per_task):
                layer.add_group(c.rank, alpha=c.alpha)
        self.binding.grow(c.experts_per_task)

    def _reset_bank(self) -> None:
        super()._reset_bank()
        for gate in self.binding.gates:
            gate.router.parts = type(gate.router.parts)()

    def predict(self, batch, task_id):
        try:
            return self.model.predict(batch, task_id)
        finally:
            self.binding.unmerge()  # never leave a token's experts merged in W (checkpoints hold W)

    def strategy_stats(self) -> dict:
        layer = next(iter(self.layers.values()), None)
        return {
            "experts_per_layer": len(layer.groups) if layer else 0,
            "active_experts_per_token": min(self.config.topk, len(layer.groups)) if layer else 0,
            "routers": len(self.binding.gates),
            "adapted_layers": len(self.layers),
            "added_inference_params": self.added_inference_parameters(),
        }
