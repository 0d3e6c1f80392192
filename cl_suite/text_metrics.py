"""Scores of generated text against a reference, per example, in [0, 1] (scenarios report them in percent).

- ``exact_match``: equal after normalisation (case, surrounding whitespace and punctuation, inner whitespace runs);
  the O-LoRA / Progressive Prompts metric for the 5- and 15-task text benchmarks.
- ``label_accuracy``: for label tasks (a fixed answer set): the prediction counts as the first label it mentions
  (whole words, case-insensitive; at equal positions the longest label), so "Sports." and "The topic is sports."
  are correct for "sports" and "sportsy" is not. This lenient reading lets a chatty instruction model's zero-shot
  answer count; the text benchmarks' protocol metric stays ``exact_match``. Without a label set it is exact match.
- ``rouge_l``: ROUGE-L F1 (Lin 2004) over lowercase word tokens, from the longest common subsequence; beta = 1,
  as the ``rouge`` package that TRACE's metrics.py calls (its ``rouge-l`` ``f``).
- ``edit_similarity``: difflib's ratio, 2·matches / total length: what fuzzywuzzy's ``fuzz.ratio`` computes (TRACE
  scores Py150 with it), as a fraction instead of a rounded percentage.
"""

from __future__ import annotations

import difflib
import re
import string
from collections.abc import Sequence

_PUNCT = string.punctuation + "“”‘’«»。，！？：；"
_WORD = re.compile(r"\w+", re.UNICODE)


def normalize(text: str) -> str:
    """Lowercase, collapse whitespace, strip surrounding whitespace and punctuation."""
    return " ".join(text.lower().split()).strip(_PUNCT + " ")


def exact_match(prediction: str, reference: str) -> float:
    return float(normalize(prediction) == normalize(reference))


def label_accuracy(prediction: str, reference: str, labels: Sequence[str] = ()) -> float:
    """1 if the first label that ``prediction`` mentions is ``reference``, else 0."""
    if not labels:
        return exact_match(prediction, reference)
    pred = " ".join(prediction.lower().split())
    found = []
    for label in {normalize(lab) for lab in labels}:
        match = re.search(rf"(?<!\w){re.escape(label)}(?!\w)", pred)
        if match:
            found.append((match.start(), -len(label), label))
    return float(bool(found) and min(found)[2] == normalize(reference))


def _lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence (dynamic programming over one row)."""
    if len(a) < len(b):
        a, b = b, a
    row = [0] * (len(b) + 1)
    for x in a:
        prev_diag = 0
        for j, y in enumerate(b, start=1):
            prev_diag, row[j] = row[j], prev_diag + 1 if x == y else max(row[j], row[j - 1])
    return row[-1]


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 over lowercase word tokens (0 when either side has no words)."""
    pred, ref = _WORD.findall(prediction.lower()), _WORD.findall(reference.lower())
    if not pred or not ref:
        return 0.0
    lcs = _lcs_length(pred, ref)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


def edit_similarity(prediction: str, reference: str) -> float:
    return difflib.SequenceMatcher(None, prediction, reference, autojunk=False).ratio()


SCORERS = {"em": exact_match, "rougeL": rouge_l, "edit_sim": edit_similarity}
"""Per-example scorers by metric name (``acc`` takes the label set too; see ``score``)."""


def score(metric: str, prediction: str, reference: str, labels: Sequence[str] = ()) -> float:
    """One example's score under ``metric`` (acc, em, rougeL, edit_sim)."""
    if metric == "acc":
        return label_accuracy(prediction, reference, labels)
    if metric not in SCORERS:
        raise ValueError(f"unknown text metric {metric!r}; accepted: acc, {', '.join(SCORERS)}")
    return SCORERS[metric](prediction, reference)
