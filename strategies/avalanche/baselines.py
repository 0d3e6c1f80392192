"""The ``avalanche-<name>`` baselines: Avalanche's classic strategies, their hyperparameters as our Config.

Each class names the Avalanche strategy class whose plugins it runs (adapter.py explains how) and exposes that
class's own hyperparameters, with Avalanche's names, as ``--set strategy.<name>=...``. The optimizer, learning
rate, epochs and batch size come from the run's ``train.*`` block like every other strategy's.

Sources: Avalanche 0.6 (ContinualAI/avalanche, ``avalanche/training/supervised/strategy_wrappers.py`` and
``avalanche/training/plugins/``); the methods are EWC (Kirkpatrick et al. 2017), SI (Zenke et al. 2017), LwF
(Li & Hoiem 2017), experience replay, GEM (Lopez-Paz & Ranzato 2017), A-GEM (Chaudhry et al. 2019), GDumb
(Prabhu et al. 2020) and MAS (Aljundi et al. 2018).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from strategies.avalanche.adapter import AvalancheStrategy


@dataclass
class NaiveConfig:
    """Naive has no knobs: the run's train.* block sets the optimizer."""


class AvalancheNaive(AvalancheStrategy):
    """Avalanche's Naive through the adapter: no plugin, so it must match finetune (the adapter's control)."""

    Config = NaiveConfig
    template = "Naive"


@dataclass
class EWCConfig:
    ewc_lambda: float = 100.0  # weight of the quadratic penalty
    mode: Literal["separate", "online"] = "separate"
    decay_factor: float | None = None  # online mode only


class AvalancheEWC(AvalancheStrategy):
    """Avalanche's EWC (EWCPlugin): a Fisher-weighted quadratic penalty towards past tasks' weights."""

    Config = EWCConfig
    template = "EWC"


@dataclass
class SIConfig:
    si_lambda: float = 1.0  # weight of the surrogate-loss penalty
    eps: float = 1e-7


class AvalancheSI(AvalancheStrategy):
    """Avalanche's Synaptic Intelligence (SynapticIntelligencePlugin): path-integral importances."""

    Config = SIConfig
    template = "SynapticIntelligence"


@dataclass
class LwFConfig:
    alpha: float = 1.0  # weight of the distillation loss
    temperature: float = 2.0


class AvalancheLwF(AvalancheStrategy):
    """Avalanche's Learning without Forgetting (LwFPlugin): distil the previous model on old classes."""

    Config = LwFConfig
    template = "LwF"
    needs_outputs = True


@dataclass
class ReplayConfig:
    mem_size: int = 200  # examples kept, balanced over experiences (ExperienceBalancedBuffer)


class AvalancheReplay(AvalancheStrategy):
    """Avalanche's experience replay (ReplayPlugin): train on the task plus an experience-balanced buffer."""

    Config = ReplayConfig
    template = "Replay"


@dataclass
class GEMConfig:
    patterns_per_exp: int = 50  # memory per past task
    memory_strength: float = 0.5  # gamma: margin of the projected gradient


class AvalancheGEM(AvalancheStrategy):
    """Avalanche's GEM (GEMPlugin): project the gradient so no past task's memory loss increases (QP)."""

    Config = GEMConfig
    template = "GEM"


@dataclass
class AGEMConfig:
    patterns_per_exp: int = 50  # memory per past task
    sample_size: int = 64  # memory examples per reference gradient


class AvalancheAGEM(AvalancheStrategy):
    """Avalanche's A-GEM (AGEMPlugin): project the gradient against one averaged memory gradient."""

    Config = AGEMConfig
    template = "AGEM"


@dataclass
class GDumbConfig:
    mem_size: int = 200  # class-balanced buffer; the model is re-initialised and trained on it per task


class AvalancheGDumb(AvalancheStrategy):
    """Avalanche's GDumb (GDumbPlugin): reset the model each task and train only on a class-balanced buffer."""

    Config = GDumbConfig
    template = "GDumb"


@dataclass
class MASConfig:
    lambda_reg: float = 1.0  # weight of the penalty
    alpha: float = 0.5  # moving-average weight of importances


class AvalancheMAS(AvalancheStrategy):
    """Avalanche's Memory Aware Synapses (MASPlugin): output-sensitivity importances, quadratic penalty."""

    Config = MASConfig
    template = "MAS"
    masked_view = False  # importances from the norm of the raw logits, as in Avalanche
