"""Loaders and protocol data for the LLM benchmarks shipped as JSON folders (nothing here downloads).

- **O-LoRA's CL_Benchmark layout** (cmnfriend/O-LoRA @ 07117e1fc4a5f5ad9308a815a42cee8f46502dc8, ``CL_Benchmark/``;
  also the Progressive Prompts long sequence): ``<root>/<group>/<dataset>/{train,dev,test}.json``, each a list of
  ``{"sentence", "label"}``, plus ``labels.json``. The input is built as O-LoRA's ``src/uie_dataset_lora.py`` and
  ``src/uie_collator.py`` (``get_instruction``) build it under the scripts' ``--add_task_name True
  --add_dataset_name True``: ``"Task:<group>\\nDataset:<dataset>\\n"``, the group's instruction
  (``configs/instruction_config.json``), ``"Option: " + ", ".join(labels) + " \\n"``, the sentence, ``"\\nAnswer:"``
  (COPA: no instruction and no options). Metric: O-LoRA's exact match (``cl_suite.text_metrics`` ``olora_em``).
- **TRACE's layout** (BeyonderXX/TRACE @ 462e39f616134f4f819efeb3baea8638c03c7db4, ``LLM-CL_Benchmark``):
  ``<root>/<dataset>/{train,eval,test}.json``, each a list of ``{"prompt", "answer"}``; the prompt already holds the
  task instruction (``inference/ICL.py`` ``TASK_PROMT``) and is fed raw. Metrics per dataset as ``evaluations/``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cl_suite.api import MissingData

OLORA_COMMIT = "07117e1fc4a5f5ad9308a815a42cee8f46502dc8"
TRACE_COMMIT = "462e39f616134f4f819efeb3baea8638c03c7db4"
OLORA_LAYOUT = "O-LoRA CL_Benchmark layout: <root>/<group>/<dataset>/{train,test}.json + labels.json"
TRACE_LAYOUT = "TRACE layout: <root>/<dataset>/{train,test}.json, lists of {prompt, answer}"

# Verbatim task instructions of O-LoRA's configs/instruction_config.json (protocol data).
OLORA_INSTRUCTIONS = {
    "NLI": 'What is the logical relationship between the "sentence 1" and the "sentence 2"? Choose one from the option.\n',
    "QQP": 'Whether the "first sentence" and the "second sentence" have the same meaning? Choose one from the option.\n',
    "SC": "What is the sentiment of the following paragraph? Choose one from the option.\n",
    "TC": "What is the topic of the following paragraph? Choose one from the option.\n",
    "BoolQA": "According to the following passage, is the question true or false? Choose one from the option.\n",
    "MultiRC": "According to the following passage and question, is the candidate answer true or false? "
               "Choose one from the option.\n",
    "WiC": "Given a word and two sentences, whether the word is used with the same sense in both sentence? "
           "Choose one from the option.\n",
    "COPA": "",
}  # fmt: skip

# Suite task name -> (group folder = O-LoRA's "Task", dataset folder = its "Dataset") in the CL_Benchmark layout.
CL_BENCHMARK_TASKS = {
    "agnews": ("TC", "agnews"), "dbpedia": ("TC", "dbpedia"), "yahoo": ("TC", "yahoo"),
    "amazon": ("SC", "amazon"), "yelp": ("SC", "yelp"), "imdb": ("SC", "IMDB"), "sst2": ("SC", "SST-2"),
    "mnli": ("NLI", "MNLI"), "rte": ("NLI", "RTE"), "cb": ("NLI", "CB"), "qqp": ("QQP", "QQP"),
    "wic": ("WiC", "WiC"), "multirc": ("MultiRC", "MultiRC"), "copa": ("COPA", "COPA"), "boolq": ("BoolQA", "BoolQA"),
}  # fmt: skip

# The labels.json of each CL_Benchmark dataset, in file order (the order the "Option:" line lists them).
OLORA_LABELS = {
    "agnews": ("World", "Sports", "Business", "Science or Technology"),
    "dbpedia": ("Company", "Educational Institution", "Artist", "Athlete", "Office Holder", "Mean of Transportation",
                "Building", "Natural Place", "Village", "Animal", "Plant", "Album", "Film", "Written Work"),
    "yahoo": ("Society & Culture", "Science & Mathematics", "Health", "Education & Reference", "Computers & Internet",
              "Sports", "Business & Finance", "Entertainment & Music", "Family & Relationships",
              "Politics & Government"),
    "amazon": ("very negative", "negative", "neutral", "positive", "very positive"),
    "yelp": ("very negative", "negative", "neutral", "positive", "very positive"),
    "imdb": ("Good", "Bad"), "sst2": ("Good", "Bad"),
    "mnli": ("neutral", "entailment", "contradiction"), "cb": ("entailment", "contradiction", "neutral"),
    "rte": ("contradiction", "entailment"), "qqp": ("False", "True"), "wic": ("True", "False"),
    "multirc": ("False", "True"), "copa": ("A", "B"), "boolq": ("True", "False"),
}  # fmt: skip

# TRACE dataset folder -> metric (cl_suite.text_metrics), as evaluations/eval_<task>.py scores it.
TRACE_TASKS = {
    "C-STANCE": "trace_acc", "FOMC": "trace_acc", "MeetingBank": "rougeL", "Py150": "py150_sim",
    "ScienceQA": "scienceqa_acc", "NumGLUE-cm": "trace_acc", "NumGLUE-ds": "trace_acc", "20Minuten": "sari",
}  # fmt: skip
# The instruction each TRACE prompt starts with (inference/ICL.py TASK_PROMT), for the protocol card.
TRACE_INSTRUCTIONS = {
    "FOMC": "What is the monetary policy stance for the following text? A. dovish, B. hawkish, C. neutral. "
            "Choose one from A, B and C.\n",
    "C-STANCE": "判断以下文本对指定对象的态度，选择一项：A.支持，B.反对，C.中立。输出A，B或者C。\n",
    "ScienceQA": "Choose an answer for the following question and give your reasons.\n\n",
    "NumGLUE-cm": "Solve the following math problem.\n",
    "NumGLUE-ds": "Solve the following math problem.\n",
    "MeetingBank": "Write a summary of the following meeting transcripts.\n",
    "Py150": "Continue writing the code.\n",
    "20Minuten": "Provide a simplified version of the following paragraph in German.\n\n",
}  # fmt: skip
# scripts/train_seq_naive.sh --num_train_epochs, one count per task of the default order.
TRACE_EPOCHS = (5, 3, 7, 5, 3, 5, 5, 7)

Examples = list[dict[str, str]]


def olora_prompt(name: str, sentence: str, labels: tuple[str, ...] | list[str], *, prefix: bool = True) -> str:
    """O-LoRA's input for one example of CL_Benchmark task ``name`` (the task/dataset prefix when ``prefix``)."""
    group, dataset = CL_BENCHMARK_TASKS[name]
    head = "" if group == "COPA" else OLORA_INSTRUCTIONS[group] + "Option: " + ", ".join(labels) + " \n"
    return (f"Task:{group}\nDataset:{dataset}\n" if prefix else "") + f"{head}{sentence}\nAnswer:"


def read_json_list(path: Path, keys: tuple[str, ...]) -> list[dict[str, Any]]:
    """A JSON list of objects that all have ``keys``; one clear error line otherwise."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(data, list) or any(not isinstance(r, dict) or not set(keys) <= set(r) for r in data):
        raise ValueError(f"{path} must be a JSON list of objects with keys {', '.join(keys)}")
    return data


def check_root(root: str, scenario: str, layout: str, source: str) -> Path:
    if not root:
        raise MissingData(f"{scenario} reads local files: set scenario.data_dir=PATH ({layout}; from {source})")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise MissingData(f"{scenario}: data_dir {str(path)!r} is not a folder ({layout}; from {source})")
    return path


def cl_benchmark_files(root: Path, name: str) -> list[Path]:
    group, folder = CL_BENCHMARK_TASKS[name]
    return [root / group / folder / f for f in ("train.json", "test.json", "labels.json")]


def trace_files(root: Path, name: str) -> list[Path]:
    return [root / name / f for f in ("train.json", "test.json")]


def check_files(files: list[Path], task: str, layout: str) -> None:
    """MissingData naming the task, the first missing path and the layout."""
    for path in files:
        if not path.is_file():
            raise MissingData(f"task {task}: missing {path} ({layout})")


def cl_benchmark_task(root: Path, name: str, *, prefix: bool = True) -> tuple[Examples, Examples, dict[str, Any]]:
    """One task of O-LoRA's CL_Benchmark folder as (train, test, meta)."""
    if name not in CL_BENCHMARK_TASKS:
        raise ValueError(f"unknown CL_Benchmark task {name!r}; accepted: {', '.join(CL_BENCHMARK_TASKS)}")
    check_files(cl_benchmark_files(root, name), name, OLORA_LAYOUT)
    base = cl_benchmark_files(root, name)[0].parent
    labels = [str(x) for x in json.loads((base / "labels.json").read_text(encoding="utf-8"))]

    def load(split: str) -> Examples:
        rows = read_json_list(base / f"{split}.json", ("sentence", "label"))
        return [{"prompt": olora_prompt(name, r["sentence"], labels, prefix=prefix), "answer": str(r["label"])}
                for r in rows]  # fmt: skip

    return load("train"), load("test"), {"metric": "olora_em", "labels": labels, "source": str(base)}


def trace_task(root: Path, name: str) -> tuple[Examples, Examples, dict[str, Any]]:
    """One TRACE dataset folder as (train, test, meta)."""
    if name not in TRACE_TASKS:
        raise ValueError(f"unknown TRACE task {name!r}; accepted: {', '.join(TRACE_TASKS)}")
    check_files(trace_files(root, name), name, TRACE_LAYOUT)

    def load(split: str) -> Examples:
        rows = read_json_list(root / name / f"{split}.json", ("prompt", "answer"))
        return [{"prompt": str(r["prompt"]), "answer": str(r["answer"])} for r in rows]

    return load("train"), load("test"), {"metric": TRACE_TASKS[name], "source": str(root / name)}
