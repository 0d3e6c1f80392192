"""The four llm-tiny tasks: real text from chatterbot-corpus (a wheel, BSD) and generated text, no downloads.

Every builder returns ``(train, test, meta)`` lists of ``{"prompt", "answer"}`` examples with disjoint train and test
pools, drawn with ``random.Random(seed)``; label tasks are balanced over their labels.

- ``topic``: which chatterbot-corpus English topic file an utterance comes from (coding, literature, money, trivia).
- ``language``: the language of a chatterbot-corpus utterance (English, French, German, Italian, Spanish).
- ``arithmetic``: two-digit addition and subtraction, answered with the number.
- ``uppercase``: a word from the English corpus written in capital letters (a string transformation).
"""

from __future__ import annotations

import importlib.util
import random
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

TOPICS = ("coding", "literature", "money", "trivia")
LANGUAGES = {"english": "English", "french": "French", "german": "German", "italian": "Italian", "spanish": "Spanish"}
Example = dict[str, str]


def corpus_dir() -> Path:
    spec = importlib.util.find_spec("chatterbot_corpus")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("llm-tiny needs the chatterbot-corpus wheel: pip install chatterbot-corpus==1.3.3 "
                                  "(it is in cl-suite's llm extra)")  # fmt: skip
    return Path(spec.origin).parent / "data"


def utterances(files: list[Path], min_chars: int = 12) -> list[str]:
    """Unique utterances (questions and replies) of chatterbot YAML files, in file order."""
    seen: dict[str, None] = {}
    for path in files:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for conversation in data.get("conversations") or []:
            for line in conversation if isinstance(conversation, list) else [conversation]:
                text = " ".join(str(line).split())
                if len(text) >= min_chars:
                    seen.setdefault(text, None)
    return list(seen)


def balanced_split(pools: dict[str, list[str]], n_train: int, n_test: int, rng: random.Random):
    """Disjoint (text, label) train/test lists with about n/k examples per label; fewer if a label runs out."""
    k = len(pools)
    train, test = [], []
    for label, texts in pools.items():
        texts = list(texts)
        rng.shuffle(texts)
        n_te = min(-(-n_test // k), len(texts) // 2)
        test += [(t, label) for t in texts[:n_te]]
        train += [(t, label) for t in texts[n_te : n_te + -(-n_train // k)]]
    rng.shuffle(train)
    rng.shuffle(test)
    return train[:n_train], test[:n_test]


def topic(n_train: int, n_test: int, seed: int):
    root = corpus_dir() / "english"
    pools = {t: utterances([root / f"{t}.yml"]) for t in TOPICS}
    options = ", ".join(TOPICS)
    make = lambda text, label: {"prompt": f"Which topic is this chatbot line about? Options: {options}.\n"  # noqa: E731
                                          f"Line: {text}\nAnswer with the topic only.", "answer": label}  # fmt: skip
    train, test = balanced_split(pools, n_train, n_test, random.Random(seed))
    return [make(*x) for x in train], [make(*x) for x in test], {"metric": "acc", "labels": list(TOPICS)}


def language(n_train: int, n_test: int, seed: int):
    root = corpus_dir()
    pools = {name: utterances(sorted((root / folder).glob("*.yml"))) for folder, name in LANGUAGES.items()}
    options = ", ".join(LANGUAGES.values())
    make = lambda text, label: {"prompt": f"Which language is this text written in? Options: {options}.\n"  # noqa: E731
                                          f"Text: {text}\nAnswer with the language only.", "answer": label}  # fmt: skip
    train, test = balanced_split(pools, n_train, n_test, random.Random(seed))
    return [make(*x) for x in train], [make(*x) for x in test], {"metric": "acc", "labels": list(LANGUAGES.values())}


def arithmetic(n_train: int, n_test: int, seed: int):
    rng = random.Random(seed)
    problems: dict[str, str] = {}
    while len(problems) < n_train + n_test:
        a, b, op = rng.randint(10, 99), rng.randint(10, 99), rng.choice("+-")
        problems.setdefault(f"{a} {op} {b}", str(a + b if op == "+" else a - b))
    items = [{"prompt": f"Compute {q}. Answer with the number only.", "answer": a} for q, a in problems.items()]
    return items[n_test:], items[:n_test], {"metric": "em"}


def uppercase(n_train: int, n_test: int, seed: int):
    words = sorted({w.lower() for line in utterances(sorted((corpus_dir() / "english").glob("*.yml")))
                    for w in re.findall(r"[A-Za-z]{4,10}", line)})  # fmt: skip
    rng = random.Random(seed)
    rng.shuffle(words)
    items = [{"prompt": f"Write the word '{w}' in capital letters. Answer with the word only.", "answer": w.upper()}
             for w in words[: n_train + n_test]]  # fmt: skip
    return items[n_test:], items[:n_test], {"metric": "em"}


BUILDERS: dict[str, Callable[[int, int, int], tuple[list[Example], list[Example], dict[str, Any]]]] = {
    "topic": topic, "language": language, "arithmetic": arithmetic, "uppercase": uppercase,
}  # fmt: skip
"""Task name -> builder(n_train, n_test, seed); the scenario's ``tasks`` config lists them in order."""
