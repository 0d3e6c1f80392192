"""LLM task sequences (instruction setting): llm-tiny, the 5-task and 15-task text benchmarks, and TRACE.

Every task is a list of ``{"prompt", "answer"}`` examples; the model (cl_suite.models.llm) learns the answers with
an answer-only loss and is scored on greedy generations. Per task, ``score`` is the protocol's own metric (O-LoRA's
exact match for text5/text15; TRACE's accuracy, ROUGE-L, Py150 similarity or SARI per dataset; in percent; see
cl_suite.text_metrics), and the lenient ``em`` and ``rougeL`` are reported for every task too. The summaries are
computed from the ``score`` matrix: ``last`` is the average accuracy AA after the last task (O-LoRA's "average
accuracy"; TRACE's OP_T has the same value), ``trace_bwt`` is TRACE's BWT (divided by T) and ``bwt`` Lopez-Paz's
(divided by T-1); for both, **negative means forgetting** (papers that print BWT as a positive magnitude with a down
arrow report minus these values).

Inputs (``scenario.prompt_format``): ``o-lora`` (text5/text15 default) feeds O-LoRA's raw input with its
``Task:``/``Dataset:`` prefix, ``trace`` (trace default) TRACE's raw prompt, both after the tokenizer's BOS token as
the official collators do; ``chat`` wraps the same text in the tokenizer's chat template. Orders: ``scenario.order``
1-3 (text5) or 4-6 (text15) are O-LoRA's numbered orders; ``scenario.task_order`` takes any list of names.
Generation stops at the task's longest tokenized training answer (+ EOS), capped by ``scenario.max_new_tokens``.

Backbone (``--set backbone=...``): ``auto`` (default) is ``smollm2-135m``, or ``tiny-llama`` under ``--tiny`` so
smoke tests take seconds; also ``tiny-llama`` and ``hf:<hub name or local folder>`` (cl_suite.models.llm_backbones).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from torch.utils.data import Dataset

from cl_suite import text_metrics
from cl_suite.api import Batch, Context, Scenario, Task, TaskModel, to_device
from cl_suite.config import ConfigError
from scenarios import llm_files, llm_tiny_data

TINY_TASKS, TINY_TRAIN, TINY_TEST = 2, 32, 16  # --tiny: at most 2 tasks, 32 train and 16 test examples each

# O-LoRA's orders, numbered as in its paper (Table 7); orders 1-3 are scripts/order_{1,2,3}.sh and order 6 is
# scripts/long.sh (cmnfriend/O-LoRA @ 07117e1). SAPT calls 6 and 4 "Order 4" and "Order 5".
TEXT5_ORDERS = {
    1: ("dbpedia", "amazon", "yahoo", "agnews"),
    2: ("dbpedia", "amazon", "agnews", "yahoo"),
    3: ("yahoo", "amazon", "agnews", "dbpedia"),
}  # 4 of the 5 datasets, as O-LoRA's scripts (yelp shares amazon's labels; add it to task_order if wanted)
TEXT15_ORDERS = {
    4: ("mnli", "cb", "wic", "copa", "qqp", "boolq", "rte", "imdb", "yelp", "amazon", "sst2", "dbpedia", "agnews",
        "multirc", "yahoo"),
    5: ("multirc", "boolq", "wic", "mnli", "cb", "copa", "qqp", "rte", "imdb", "sst2", "dbpedia", "agnews", "yelp",
        "amazon", "yahoo"),
    6: ("yelp", "amazon", "mnli", "cb", "copa", "qqp", "rte", "imdb", "sst2", "dbpedia", "agnews", "yahoo", "multirc",
        "boolq", "wic"),
}  # fmt: skip
TRACE_ORDER = ("C-STANCE", "FOMC", "MeetingBank", "Py150", "ScienceQA", "NumGLUE-cm", "NumGLUE-ds", "20Minuten")


class TextDataset(Dataset):
    """A list of ``{"prompt", "answer"}`` examples; every item also carries the generation cap."""

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
    max_new_tokens: int = 16  # cap; each task stops at its longest tokenized training answer + EOS
    prompt_format: str = "auto"  # auto (the chat template when the tokenizer has one) | chat | plain


@dataclass
class TextConfig:
    data_dir: str = ""  # O-LoRA's CL_Benchmark folder
    order: int = 0  # O-LoRA's order number (1-3 for text5, 4-6 for text15); 0: use task_order
    task_order: tuple[str, ...] = TEXT5_ORDERS[1]
    backbone: str = "auto"
    train_per_task: int = 0  # 0 = every example in the files
    test_per_task: int = 0
    split_seed: int = 0  # seeds the subsampling when *_per_task > 0
    max_prompt_tokens: int = 512  # O-LoRA's --max_source_length
    max_new_tokens: int = 50  # cap; O-LoRA's --generation_max_length
    prompt_format: str = "o-lora"  # o-lora (raw, Task/Dataset prefix) | chat


@dataclass
class Text15Config(TextConfig):
    task_order: tuple[str, ...] = TEXT15_ORDERS[4]


@dataclass
class TraceConfig:
    data_dir: str = ""  # TRACE's LLM-CL_Benchmark folder (e.g. LLM-CL-Benchmark_5000)
    task_order: tuple[str, ...] = TRACE_ORDER
    backbone: str = "auto"
    train_per_task: int = 0
    test_per_task: int = 0
    split_seed: int = 0
    max_prompt_tokens: int = 1024  # TRACE's --max_prompt_len
    max_new_tokens: int = 512  # cap; TRACE's --max_ans_len
    prompt_format: str = "trace"  # trace (raw) | chat


class LLMSequence(Scenario):
    """Shared machinery: examples -> tasks, the LLM task model, generation-based evaluation."""

    setting = "instr"
    provides = frozenset({"linear_targets", "blocks"})
    metrics = {"score": "max", "em": "max", "rougeL": "max"}
    summary = ("last", "avg_inc", "bwt", "forgetting", "fwt", "trace_bwt")
    train_defaults = {"epochs": 1, "batch_size": 8, "eval_batch_size": 16, "lr": 1e-5}
    prompt_formats: dict[str, str] = {"auto": "auto", "chat": "chat", "plain": "plain"}
    """Accepted ``scenario.prompt_format`` values -> the model's format (cl_suite.models.llm)."""

    def __init__(self, config: Any = None, *, tiny: bool = False) -> None:
        super().__init__(config, tiny=tiny)
        if not self.task_names():
            raise ConfigError("scenario.task_order is empty; give at least one task name")
        if self.config.prompt_format not in self.prompt_formats:
            raise ConfigError(f"scenario.prompt_format must be one of {', '.join(self.prompt_formats)}, "
                             f"got {self.config.prompt_format!r}")  # fmt: skip
        self._model = None
        self._budgets: dict[str, int] = {}

    @property
    def backbone(self) -> str:
        spec = self.config.backbone
        return ("tiny-llama" if self.tiny else "smollm2-135m") if spec == "auto" else spec

    def task_names(self) -> tuple[str, ...]:
        """The full task order (before --tiny keeps the first TINY_TASKS)."""
        return tuple(self.config.task_order)

    def run_names(self) -> tuple[str, ...]:
        names = self.task_names()
        return names[:TINY_TASKS] if self.tiny else names

    def load_task(self, name: str) -> tuple[list[dict], list[dict], dict[str, Any]]:
        raise NotImplementedError

    def tasks(self) -> list[Task]:
        c = self.config
        n_train = min(c.train_per_task or TINY_TRAIN, TINY_TRAIN) if self.tiny else c.train_per_task
        n_test = min(c.test_per_task or TINY_TEST, TINY_TEST) if self.tiny else c.test_per_task
        tasks = []
        for i, name in enumerate(self.run_names()):
            train, test, meta = self.load_task(name)
            rng = random.Random(f"{c.split_seed}-{name}")
            train, test = subsample(train, n_train, rng), subsample(test, n_test, rng)
            if not train or not test:
                raise ValueError(f"task {name!r} has {len(train)} train and {len(test)} test examples; need both")
            cap = c.max_new_tokens
            tasks.append(Task(index=i, name=name, train=TextDataset(train, cap), test=TextDataset(test, cap),
                              meta={**meta, "max_new_tokens": cap}))  # fmt: skip
        return tasks

    def build_model(self, ctx: Context) -> TaskModel:
        from cl_suite.models import llm_backbones
        from cl_suite.models.llm import LLMTaskModel

        loaded = llm_backbones.load(self.backbone, ctx.dtype)
        self._model = LLMTaskModel(loaded.model, loaded.tokenizer, loaded.name,
                                   max_prompt_tokens=self.config.max_prompt_tokens,
                                   max_answer_tokens=self.config.max_new_tokens,
                                   prompt_format=self.prompt_formats[self.config.prompt_format])  # fmt: skip
        self._budgets = {}
        return self._model

    def collate(self, items: list[dict[str, Any]]) -> Batch:
        return {"prompt": [x["prompt"] for x in items], "answer": [x["answer"] for x in items],
                "max_new_tokens": max(x["max_new_tokens"] for x in items)}  # fmt: skip

    def generation_budget(self, task: Task) -> int:
        """New tokens to generate for ``task``: its longest tokenized training answer (or label) + EOS, capped."""
        if task.name not in self._budgets:
            answers = {e["answer"] for e in task.train.examples} | set(task.meta.get("labels") or ())
            longest = max(len(self._model.answer_ids(a)) for a in answers)
            self._budgets[task.name] = max(1, min(task.meta.get("max_new_tokens", longest), longest))
        return self._budgets[task.name]

    def evaluate(self, predict, task: Task, ctx: Context) -> dict[str, float]:
        if self._model is None:
            raise RuntimeError("evaluate() needs the model from build_model() (its tokenizer decodes the answers)")
        from cl_suite.models.llm import sorted_batches

        budget = self.generation_budget(task)
        totals = {"score": 0.0, "em": 0.0, "rougeL": 0.0}
        n = 0
        items = [task.test[i] for i in range(len(task.test))]
        lengths = [len(self._model.prompt_ids(x["prompt"])) for x in items]
        for chunk in sorted_batches(lengths, ctx.train.eval_batch_size):  # similar lengths: little padding
            batch = {**self.collate([items[i] for i in chunk]), "max_new_tokens": budget}
            texts = self._model.decode(predict(to_device(batch, ctx.device)))
            for prompt, pred, gold in zip(batch["prompt"], texts, batch["answer"]):
                for name, value in score_example(pred, gold, task.meta, source=prompt).items():
                    totals[name] += value
                n += 1
        return {**{k: 100.0 * v / max(n, 1) for k, v in totals.items()}, "n": n}


def score_example(prediction: str, reference: str, meta: dict[str, Any], source: str = "") -> dict[str, float]:
    """The task's own metric (``score``) plus the lenient exact match and ROUGE-L of one generation."""
    metric, labels = meta.get("metric", "em"), meta.get("labels") or ()
    return {"score": text_metrics.score(metric, prediction, reference, source=source, labels=labels),
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


class LocalFilesSequence(LLMSequence):
    """A sequence read from a local benchmark folder (``scenario.data_dir``): one root/check_data serves text5,
    text15 and trace, each declaring only its folder's facts below."""

    data_label: ClassVar[str] = ""  # the scenario as named in MissingData messages
    layout: ClassVar[str] = ""  # the folder's expected layout (llm_files.*_LAYOUT)
    source: ClassVar[str] = ""  # where the folder comes from
    known_tasks: ClassVar[dict[str, Any]] = {}  # llm_files' task table: the names the folder can hold
    benchmark: ClassVar[str] = ""  # the task table as named in "unknown ... task" messages

    @staticmethod
    def task_files(root: Path, name: str) -> list[Path]:
        """The files task ``name`` needs under ``root``."""
        raise NotImplementedError

    def root(self) -> Path:
        return llm_files.check_root(self.config.data_dir, self.data_label, self.layout, self.source)

    def check_data(self) -> None:
        root = self.root()
        for name in self.run_names():
            if name in self.known_tasks:  # unknown names fail in load_task with the accepted list
                llm_files.check_files(self.task_files(root, name), name, self.layout)

    def known_run_names(self) -> list[str]:
        """The run's task names, each checked against ``known_tasks`` (describe reads no file that would)."""
        names = list(self.run_names())
        for name in names:
            if name not in self.known_tasks:
                raise ValueError(f"unknown {self.benchmark} task {name!r}; accepted: {', '.join(self.known_tasks)}")
        return names


class Text5(LocalFilesSequence):
    """Standard text-classification CL benchmark (O-LoRA orders 1-3 over AG News, Amazon, DBpedia, Yahoo); local files."""

    setting = "instr"
    Config = TextConfig
    orders = TEXT5_ORDERS
    prompt_formats = {"o-lora": "raw", "chat": "chat"}
    data_label = "text5/text15"
    layout = llm_files.OLORA_LAYOUT
    source = "github.com/cmnfriend/O-LoRA CL_Benchmark/"
    known_tasks = llm_files.CL_BENCHMARK_TASKS
    benchmark = "CL_Benchmark"
    task_files = staticmethod(llm_files.cl_benchmark_files)

    def task_names(self):
        order = self.config.order
        if order and order not in self.orders:
            raise ConfigError(f"scenario.order must be one of {', '.join(map(str, self.orders))} (O-LoRA's orders "
                             f"for this scenario), or 0 to use scenario.task_order; got {order}")  # fmt: skip
        return self.orders[order] if order else tuple(self.config.task_order)

    def load_task(self, name):
        return llm_files.cl_benchmark_task(self.root(), name, prefix=self.config.prompt_format == "o-lora")

    def describe(self):
        tasks = []
        for name in self.known_run_names():
            labels = list(llm_files.OLORA_LABELS[name])
            group, folder = llm_files.CL_BENCHMARK_TASKS[name]
            example = llm_files.olora_prompt(name, "<sentence>", labels, prefix=self.config.prompt_format == "o-lora")
            tasks.append({"name": name, "metric": "olora_em", "labels": labels, "split": f"{group}/{folder}",
                          "example_input": example})  # fmt: skip
        return {"tasks": tasks, "sources": [
            {"what": "inputs (--add_task_name/--add_dataset_name True), instructions, labels", "repo": "cmnfriend/O-LoRA",
             "path": "src/uie_collator.py, src/uie_dataset_lora.py, configs/instruction_config.json, CL_Benchmark/*/labels.json",
             "commit": llm_files.OLORA_COMMIT},
            {"what": "orders 1-3 and 6", "repo": "cmnfriend/O-LoRA", "path": "scripts/order_{1,2,3}.sh, scripts/long.sh",
             "commit": llm_files.OLORA_COMMIT},
            {"what": "exact match (normalize_answer)", "repo": "cmnfriend/O-LoRA", "path": "src/compute_metrics.py",
             "commit": llm_files.OLORA_COMMIT}],
            "notes": ["example_input shows <sentence> where the data's sentence goes; the model reads it after BOS",
                      "O-LoRA trains T5/LLaMA with LoRA at lr 1e-3, 1 epoch, batch 8 per GPU on 8 GPUs; the train "
                      "recipe here is this scenario's CPU default (override with --set train.*)"]}  # fmt: skip


class Text15(Text5):
    """The 15-task long sequence (Progressive Prompts / O-LoRA orders 4-6), from a local CL_Benchmark folder."""

    setting = "instr"
    Config = Text15Config
    orders = TEXT15_ORDERS


class Trace(LocalFilesSequence):
    """TRACE's 8 tasks (Wang et al. 2023): OP and BWT, from a local LLM-CL_Benchmark folder."""

    setting = "instr"
    Config = TraceConfig
    summary = ("trace_op", "trace_bwt", "bwt", "forgetting", "fwt", "avg_inc")
    prompt_formats = {"trace": "raw", "chat": "chat"}
    data_label = "trace"
    layout = llm_files.TRACE_LAYOUT
    source = "github.com/BeyonderXX/TRACE, LLM-CL_Benchmark"
    known_tasks = llm_files.TRACE_TASKS
    benchmark = "TRACE"
    task_files = staticmethod(llm_files.trace_files)
    # TRACE's scripts/train_seq_naive.sh: per-task epochs 5,3,7,5,3,5,5,7, lr 1e-5, cosine, no warmup, no decay.
    train_defaults = {"epochs": 1, "task_epochs": llm_files.TRACE_EPOCHS, "batch_size": 8, "eval_batch_size": 16,
                      "lr": 1e-5, "scheduler": "cosine"}  # fmt: skip

    def load_task(self, name):
        return llm_files.trace_task(self.root(), name)

    def describe(self):
        tasks = []
        for name in self.known_run_names():
            tasks.append({"name": name, "metric": llm_files.TRACE_TASKS[name],
                          "example_input": llm_files.TRACE_INSTRUCTIONS[name] + "<input>"})  # fmt: skip
        return {"tasks": tasks, "sources": [
            {"what": "prompt and answer format, per-task epochs, lr, scheduler", "repo": "BeyonderXX/TRACE",
             "path": "utils/data/data_collator.py, inference/ICL.py, scripts/train_seq_naive.sh",
             "commit": llm_files.TRACE_COMMIT},
            {"what": "metrics per task", "repo": "BeyonderXX/TRACE", "path": "metrics.py, evaluations/eval_*.py",
             "commit": llm_files.TRACE_COMMIT},
            {"what": "SARI (loaded by TRACE's caculate_sari)", "repo": "huggingface/evaluate",
             "path": "metrics/sari/sari.py", "commit": "a7dd338386a4fae9a1767e05eb9ef9479513d9e8"}],
            "notes": ["each data prompt starts with the instruction shown; <input> marks the rest of it; the model "
                      "reads it after BOS and the answer follows directly",
                      "TRACE's effective batch is 2 per GPU x 8 GPUs x 16 accumulation steps; batch_size here is "
                      "the CPU default (override with --set train.batch_size)"]}  # fmt: skip
