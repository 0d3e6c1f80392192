"""LLM task sequences (instruction setting): llm-tiny, the 5-task and 15-task text benchmarks, and TRACE.

Every task is a list of ``{"prompt", "answer"}`` examples; the model (cl_suite.models.llm) learns the answers with
an answer-only loss and is scored on greedy generations. Per task, ``score`` is the protocol's metric (label
accuracy, exact match, ROUGE-L or edit similarity, in percent; see cl_suite.text_metrics), and ``em`` and
``rougeL`` are reported for every task too. The summaries are computed from the ``score`` matrix: ``last`` is the
average accuracy AA after the last task (O-LoRA's "average accuracy"; TRACE's OP_T has the same value),
``trace_bwt`` is TRACE's BWT (divided by T) and ``bwt`` Lopez-Paz's (divided by T-1); for both, **negative means
forgetting** (papers that print BWT as a positive magnitude with a down arrow report minus these values).

Backbone (``--set backbone=...``): ``auto`` (default) is ``smollm2-135m``, or ``tiny-llama`` under ``--tiny`` so
smoke tests take seconds; also ``tiny-llama`` and ``hf:<hub name or local folder>`` (cl_suite.models.llm_backbones).
Task orders are explicit lists (``--set scenario.task_order=dbpedia,amazon,agnews,yahoo``); the published orders
are the ORDERS tables below, numbered as in O-LoRA.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any

from torch.utils.data import Dataset

from cl_suite import text_metrics
from cl_suite.api import Batch, Context, Scenario, Task, TaskModel, to_device
from scenarios import llm_files, llm_tiny_data

TINY_TASKS, TINY_TRAIN, TINY_TEST = 2, 32, 16  # --tiny: at most 2 tasks, 32 train and 16 test examples each

TEXT5_ORDERS = {
    1: ("dbpedia", "amazon", "yahoo", "agnews"),
    2: ("dbpedia", "amazon", "agnews", "yahoo"),
    3: ("yahoo", "amazon", "agnews", "dbpedia"),
}  # O-LoRA's standard orders (4 of the 5 datasets: yelp shares amazon's labels; add it to task_order if wanted)
TEXT15_ORDERS = {
    4: ("mnli", "cb", "wic", "copa", "qqp", "boolq", "rte", "imdb", "yelp", "amazon", "sst2", "dbpedia", "agnews",
        "multirc", "yahoo"),
    5: ("multirc", "boolq", "wic", "mnli", "cb", "copa", "qqp", "rte", "imdb", "sst2", "dbpedia", "agnews", "yelp",
        "amazon", "yahoo"),
    6: ("yelp", "amazon", "mnli", "cb", "copa", "qqp", "rte", "imdb", "sst2", "dbpedia", "agnews", "yahoo", "multirc",
        "boolq", "wic"),
}  # fmt: skip  # O-LoRA's numbering (SAPT calls 6 and 4 "Order 4" and "Order 5")
TRACE_ORDER = ("C-STANCE", "FOMC", "MeetingBank", "Py150", "ScienceQA", "NumGLUE-cm", "NumGLUE-ds", "20Minuten")


class TextDataset(Dataset):
    """A list of ``{"prompt", "answer"}`` examples; every item also carries the task's generation budget."""

    def __init__(self, examples: list[dict[str, str]], max_new_tokens: int) -> None:
        self.examples, self.max_new_tokens = examples, max_new_tokens

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {**self.examples[i], "max_new_tokens": self.max_new_tokens}


@dataclass
class LLMTinyConfig:
    backbone: str = "auto"  # auto: smollm2-135m, or tiny-llama under --tiny; tiny-llama; hf:<name or folder>
    task_order: tuple[str, ...] = ("topic", "language", "arithmetic", "uppercase")
    train_per_task: int = 64
    test_per_task: int = 40
    split_seed: int = 0
    max_prompt_tokens: int = 256
    max_new_tokens: int = 16  # cap; each task also stops at its longest training answer (in bytes) + 4
    prompt_format: str = "auto"  # auto (the chat template when the tokenizer has one) | chat | plain


@dataclass
class TextConfig:
    data_dir: str = ""  # O-LoRA's CL_Benchmark folder
    task_order: tuple[str, ...] = TEXT5_ORDERS[1]
    backbone: str = "auto"
    train_per_task: int = 0  # 0 = every example in the files
    test_per_task: int = 0
    split_seed: int = 0  # seeds the subsampling when *_per_task > 0
    max_prompt_tokens: int = 512
    max_new_tokens: int = 16
    prompt_format: str = "auto"


@dataclass
class Text15Config(TextConfig):
    task_order: tuple[str, ...] = TEXT15_ORDERS[4]


@dataclass
class TraceConfig(TextConfig):
    data_dir: str = ""  # TRACE's LLM-CL_Benchmark folder (e.g. LLM-CL-Benchmark_5000)
    task_order: tuple[str, ...] = TRACE_ORDER
    max_prompt_tokens: int = 1024
    max_new_tokens: int = 256


class LLMSequence(Scenario):
    """Shared machinery: examples -> tasks, the LLM task model, generation-based evaluation."""

    setting = "instr"
    provides = frozenset({"linear_targets", "blocks"})
    metrics = {"score": "max", "em": "max", "rougeL": "max"}
    summary = ("last", "avg_inc", "bwt", "forgetting", "fwt", "trace_bwt")
    train_defaults = {"epochs": 1, "batch_size": 8, "eval_batch_size": 16, "lr": 1e-5}

    def __init__(self, config: Any = None, *, tiny: bool = False) -> None:
        super().__init__(config, tiny=tiny)
        if not self.config.task_order:
            raise ValueError("scenario.task_order is empty; give at least one task name")
        self._model = None

    @property
    def backbone(self) -> str:
        spec = self.config.backbone
        return ("tiny-llama" if self.tiny else "smollm2-135m") if spec == "auto" else spec

    def load_task(self, name: str) -> tuple[list[dict], list[dict], dict[str, Any]]:
        raise NotImplementedError

    def tasks(self) -> list[Task]:
        c = self.config
        order = c.task_order[:TINY_TASKS] if self.tiny else c.task_order
        n_train = min(c.train_per_task or TINY_TRAIN, TINY_TRAIN) if self.tiny else c.train_per_task
        n_test = min(c.test_per_task or TINY_TEST, TINY_TEST) if self.tiny else c.test_per_task
        tasks = []
        for i, name in enumerate(order):
            train, test, meta = self.load_task(name)
            rng = random.Random(f"{c.split_seed}-{name}")
            train, test = subsample(train, n_train, rng), subsample(test, n_test, rng)
            if not train or not test:
                raise ValueError(f"task {name!r} has {len(train)} train and {len(test)} test examples; need both")
            budget = min(c.max_new_tokens, max(len(e["answer"].encode()) for e in train) + 4)
            meta = {**meta, "max_new_tokens": budget}
            tasks.append(Task(index=i, name=name, train=TextDataset(train, budget), test=TextDataset(test, budget),
                              meta=meta))  # fmt: skip
        return tasks

    def build_model(self, ctx: Context) -> TaskModel:
        from cl_suite.models import llm_backbones
        from cl_suite.models.llm import LLMTaskModel

        loaded = llm_backbones.load(self.backbone, ctx.dtype)
        self._model = LLMTaskModel(loaded.model, loaded.tokenizer, loaded.name,
                                   max_prompt_tokens=self.config.max_prompt_tokens,
                                   prompt_format=self.config.prompt_format)  # fmt: skip
        return self._model

    def collate(self, items: list[dict[str, Any]]) -> Batch:
        return {"prompt": [x["prompt"] for x in items], "answer": [x["answer"] for x in items],
                "max_new_tokens": max(x["max_new_tokens"] for x in items)}  # fmt: skip

    def evaluate(self, predict, task: Task, ctx: Context) -> dict[str, float]:
        if self._model is None:
            raise RuntimeError("evaluate() needs the model from build_model() (its tokenizer decodes the answers)")
        totals = {"score": 0.0, "em": 0.0, "rougeL": 0.0}
        n = 0
        for batch in ctx.loader(task.test, batch_size=ctx.train.eval_batch_size):
            texts = self._model.decode(predict(to_device(batch, ctx.device)))
            for pred, gold in zip(texts, batch["answer"]):
                for name, value in score_example(pred, gold, task.meta).items():
                    totals[name] += value
                n += 1
        return {**{k: 100.0 * v / max(n, 1) for k, v in totals.items()}, "n": n}


def score_example(prediction: str, reference: str, meta: dict[str, Any]) -> dict[str, float]:
    """The task's own metric (``score``) plus exact match and ROUGE-L of one generation."""
    metric, labels = meta.get("metric", "em"), meta.get("labels") or ()
    pred, ref = prediction, reference
    if meta.get("extract"):
        found = [re.search(meta["extract"], s) for s in (prediction, reference)]
        pred, ref = (m.group(1) if m else "" for m in found)
        if not ref:
            ref = reference
    return {"score": text_metrics.score(metric, pred, ref, labels),
            "em": text_metrics.exact_match(prediction, reference),
            "rougeL": text_metrics.rouge_l(prediction, reference)}  # fmt: skip


def subsample(examples: list[dict], n: int, rng: random.Random) -> list[dict]:
    """``n`` examples drawn without replacement (all of them when n is 0 or more than there are)."""
    if not n or n >= len(examples):
        return list(examples)
    return [examples[i] for i in sorted(rng.sample(range(len(examples)), n))]


class LLMTiny(LLMSequence):
    """4 instruction tasks (topic, language, arithmetic, uppercase) on bundled/generated text; SmolLM2-135M.

    Minutes on a CPU with SmolLM2-135M-Instruct; seconds with --tiny (a random tiny Llama)."""

    setting = "instr"
    Config = LLMTinyConfig
    train_defaults = {"epochs": 1, "batch_size": 8, "eval_batch_size": 20, "lr": 5e-5}

    def load_task(self, name):
        if name not in llm_tiny_data.BUILDERS:
            raise ValueError(f"unknown llm-tiny task {name!r}; accepted: {', '.join(llm_tiny_data.BUILDERS)}")
        c = self.config
        n_train = min(c.train_per_task, TINY_TRAIN) if self.tiny else c.train_per_task
        n_test = min(c.test_per_task, TINY_TEST) if self.tiny else c.test_per_task
        return llm_tiny_data.BUILDERS[name](n_train, n_test, c.split_seed)


class Text5(LLMSequence):
    """Standard text-classification CL benchmark (O-LoRA orders over AG News, Amazon, Yelp, DBpedia, Yahoo); local files."""

    setting = "instr"
    Config = TextConfig

    def load_task(self, name):
        root = llm_files.check_root(self.config.data_dir, "text5", "O-LoRA CL_Benchmark layout: <root>/TC/agnews/"
                                    "{train,test}.json + labels.json", "github.com/cmnfriend/O-LoRA CL_Benchmark/")
        return llm_files.cl_benchmark_task(root, name)


class Text15(Text5):
    """The 15-task long sequence (Progressive Prompts / O-LoRA orders 4-6), from a local CL_Benchmark folder."""

    setting = "instr"
    Config = Text15Config


class Trace(LLMSequence):
    """TRACE's 8 tasks (Wang et al. 2023): OP and BWT, from a local LLM-CL_Benchmark folder."""

    setting = "instr"
    Config = TraceConfig
    summary = ("trace_op", "trace_bwt", "bwt", "forgetting", "fwt", "avg_inc")

    def load_task(self, name):
        root = llm_files.check_root(self.config.data_dir, "trace", "TRACE layout: <root>/FOMC/{train,test}.json",
                                    "github.com/BeyonderXX/TRACE, LLM-CL_Benchmark")  # fmt: skip
        return llm_files.trace_task(root, name)
