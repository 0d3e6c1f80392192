"""Small fixture folders in O-LoRA's CL_Benchmark layout and in TRACE's layout, for smoke runs and tests.

``python -m scenarios.llm_fixtures DIR [--n N]`` writes ``DIR/CL_Benchmark`` (all 15 datasets of text5/text15) and
``DIR/TRACE`` (the 8 TRACE datasets), N examples per split. The rows are made up, but each follows the official
format of its dataset: CL_Benchmark sentences as O-LoRA's files write them ("Title: ...\\nText: ...", "sentence 1:
...\\nsentence 2: ...", COPA's "Which sentence is the effect of ...") with labels from its labels.json; TRACE prompts
start with the task's instruction and answers take the task's form (ScienceQA "A\\nBecause ...", Py150 code with
``<NUM_LIT>`` placeholders, numbers for NumGLUE). Nothing is downloaded; the folders are for plumbing, not scores.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from scenarios import llm_files

GROUP_SENTENCES = {
    "TC": "Title: Item {i} of the {name} fixture\nText: A short made-up article number {i}.\n",
    "SC": "Title: Review {i}\nText: A made-up review number {i} of a product.\n",
    "NLI": "sentence 1: Fixture premise number {i}.\nsentence 2: Fixture hypothesis number {i}.",
    "QQP": "first sentence: Is fixture question {i} a question?\nsecond sentence: Is item {i} a question?",
    "BoolQA": "Fixture passage {i} about a topic.\nquestion: is the passage number {i}?",
    "MultiRC": "Fixture passage {i}.\nquestion: what number is it?\ncandidate answer: {i}",
    "WiC": "word: fixture\nThe fixture number {i} was fixed.\nA fixture is a thing.",
    "COPA": 'Which sentence is the effect of "Fixture cause {i}."? Choose one between A and B.\n'
            "A: Effect one.\nB: Effect two.",
}  # fmt: skip


def trace_row(name: str, i: int, rng: random.Random) -> dict[str, str]:
    head = llm_files.TRACE_INSTRUCTIONS[name]
    if name == "ScienceQA":
        return {"prompt": f"{head}Question: Which fixture is number {i}?\nOptions: (A) one (B) two\nAnswer:",
                "answer": f"{'AB'[i % 2]}\nBecause the fixture is number {i}."}  # fmt: skip
    if name == "Py150":
        return {"prompt": f"{head}<s> def f{i} ( x ) : <EOL> y = x + <NUM_LIT> <EOL>",
                "answer": f"return y * <NUM_LIT:{i}>"}  # fmt: skip
    if name.startswith("NumGLUE"):
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        return {"prompt": f"{head}What is {a} plus {b}?\nAnswer:", "answer": str(a + b)}
    if name in ("C-STANCE", "FOMC"):
        return {"prompt": f"{head}Fixture text {i}.\nAnswer:", "answer": "ABC"[i % 3]}
    if name == "MeetingBank":
        return {"prompt": f"{head}Fixture meeting {i}: the council votes on item {i}.\nSummary:",
                "answer": f"The council voted on item {i}."}  # fmt: skip
    return {"prompt": f"{head}Der Rat hat am Mittwoch über Vorlage {i} entschieden.\nVereinfachung:",
            "answer": f"Der Rat hat über Vorlage {i} entschieden."}  # fmt: skip


def write_cl_benchmark(root: Path, n: int = 8, names: tuple[str, ...] | None = None) -> Path:
    """O-LoRA's layout: ``root/<group>/<dataset>/{train,dev,test}.json`` + ``labels.json``."""
    for name in names or tuple(llm_files.CL_BENCHMARK_TASKS):
        group, folder = llm_files.CL_BENCHMARK_TASKS[name]
        labels = llm_files.OLORA_LABELS[name]
        base = root / group / folder
        base.mkdir(parents=True, exist_ok=True)
        (base / "labels.json").write_text(json.dumps(list(labels)), encoding="utf-8")
        for split in ("train", "dev", "test"):
            rows = [{"sentence": GROUP_SENTENCES[group].format(i=i, name=name), "label": labels[i % len(labels)]}
                    for i in range(n)]  # fmt: skip
            (base / f"{split}.json").write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    return root


def write_trace(root: Path, n: int = 8, names: tuple[str, ...] | None = None) -> Path:
    """TRACE's layout: ``root/<dataset>/{train,eval,test}.json`` of ``{prompt, answer}``."""
    for name in names or tuple(llm_files.TRACE_TASKS):
        (root / name).mkdir(parents=True, exist_ok=True)
        for split in ("train", "eval", "test"):
            rng = random.Random(f"{name}-{split}")
            rows = [trace_row(name, i, rng) for i in range(n)]
            (root / name / f"{split}.json").write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    return root


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", type=Path)
    parser.add_argument("--n", type=int, default=8, help="examples per split (default 8)")
    args = parser.parse_args(argv)
    olora, trace = write_cl_benchmark(args.dir / "CL_Benchmark", args.n), write_trace(args.dir / "TRACE", args.n)
    print(f"wrote {olora} (O-LoRA CL_Benchmark layout) and {trace} (TRACE layout), {args.n} examples per split")


if __name__ == "__main__":
    main()
