"""Loaders for the LLM benchmarks the community ships as JSON folders (nothing here downloads).

- **O-LoRA's CL_Benchmark layout** (cmnfriend/O-LoRA ``CL_Benchmark/``; also used by the Progressive Prompts long
  sequence): ``<root>/<group>/<dataset>/{train,dev,test}.json``, each a list of ``{"sentence", "label"}``, plus
  ``labels.json`` (the answer set). The prompt is built as O-LoRA's ``uie_dataset_lora.py`` builds it: the group's
  instruction, ``"Option: " + labels`` and the sentence, then ``"\\nAnswer:"``; COPA has no instruction. Metric:
  exact match of the generated label (up to case, spacing and punctuation; cl_suite.text_metrics), as O-LoRA.
- **TRACE's layout** (BeyonderXX/TRACE ``LLM-CL_Benchmark``, e.g. the 5000-example release):
  ``<root>/<dataset>/{train,eval,test}.json``, each a list of ``{"prompt", "answer"}``. Metrics as TRACE's
  ``evaluations/``: accuracy as exact match (C-STANCE, FOMC, ScienceQA's answer letter, NumGLUE-cm, NumGLUE-ds), ROUGE-L
  (MeetingBank), edit similarity (Py150). **Simplification:** TRACE scores 20Minuten with SARI; here it is ROUGE-L.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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

# Suite task name -> (group folder, dataset folder) in the CL_Benchmark layout.
CL_BENCHMARK_TASKS = {
    "agnews": ("TC", "agnews"), "dbpedia": ("TC", "dbpedia"), "yahoo": ("TC", "yahoo"),
    "amazon": ("SC", "amazon"), "yelp": ("SC", "yelp"), "imdb": ("SC", "IMDB"), "sst2": ("SC", "SST-2"),
    "mnli": ("NLI", "MNLI"), "rte": ("NLI", "RTE"), "cb": ("NLI", "CB"), "qqp": ("QQP", "QQP"),
    "wic": ("WiC", "WiC"), "multirc": ("MultiRC", "MultiRC"), "copa": ("COPA", "COPA"), "boolq": ("BoolQA", "BoolQA"),
}  # fmt: skip

# TRACE dataset folder -> (metric, regex whose first group is compared, or None).
TRACE_TASKS = {
    "C-STANCE": ("em", None), "FOMC": ("em", None), "MeetingBank": ("rougeL", None), "Py150": ("edit_sim", None),
    "ScienceQA": ("em", r"Answer:\s*([A-Za-z])"), "NumGLUE-cm": ("em", None), "NumGLUE-ds": ("em", None),
    "20Minuten": ("rougeL", None),
}  # fmt: skip

Examples = list[dict[str, str]]


def read_json_list(path: Path, keys: tuple[str, ...]) -> list[dict[str, Any]]:
    """A JSON list of objects that all have ``keys``; one clear error line otherwise."""
    if not path.is_file():
        raise FileNotFoundError(f"missing {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(data, list) or any(not isinstance(r, dict) or not set(keys) <= set(r) for r in data):
        raise ValueError(f"{path} must be a JSON list of objects with keys {', '.join(keys)}")
    return data


def check_root(root: str, scenario: str, layout: str, source: str) -> Path:
    if not root:
        raise FileNotFoundError(f"{scenario} reads local files: set scenario.data_dir=PATH ({layout}; from {source})")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"{scenario}: data_dir {str(path)!r} is not a folder ({layout}; from {source})")
    return path


def cl_benchmark_task(root: Path, name: str) -> tuple[Examples, Examples, dict[str, Any]]:
    """One task of O-LoRA's CL_Benchmark folder as (train, test, meta)."""
    if name not in CL_BENCHMARK_TASKS:
        raise ValueError(f"unknown CL_Benchmark task {name!r}; accepted: {', '.join(CL_BENCHMARK_TASKS)}")
    group, folder = CL_BENCHMARK_TASKS[name]
    base = root / group / folder
    labels_path = base / "labels.json"
    if not labels_path.is_file():
        raise FileNotFoundError(f"missing {labels_path} (CL_Benchmark layout: <root>/{group}/{folder}/labels.json)")
    labels = [str(x) for x in json.loads(labels_path.read_text(encoding="utf-8"))]
    head = "" if group == "COPA" else OLORA_INSTRUCTIONS[group] + "Option: " + ", ".join(labels) + " \n"

    def load(split: str) -> Examples:
        rows = read_json_list(base / f"{split}.json", ("sentence", "label"))
        return [{"prompt": f"{head}{r['sentence']}\nAnswer:", "answer": str(r["label"])} for r in rows]

    return load("train"), load("test"), {"metric": "em", "labels": labels, "source": str(base)}


def trace_task(root: Path, name: str) -> tuple[Examples, Examples, dict[str, Any]]:
    """One TRACE dataset folder as (train, test, meta)."""
    if name not in TRACE_TASKS:
        raise ValueError(f"unknown TRACE task {name!r}; accepted: {', '.join(TRACE_TASKS)}")
    metric, extract = TRACE_TASKS[name]

    def load(split: str) -> Examples:
        rows = read_json_list(root / name / f"{split}.json", ("prompt", "answer"))
        return [{"prompt": str(r["prompt"]), "answer": str(r["answer"])} for r in rows]

    meta: dict[str, Any] = {"metric": metric, "source": str(root / name)}
    if extract:
        meta["extract"] = extract
    return load("train"), load("test"), meta
