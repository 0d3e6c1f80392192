"""Scores of generated text against a reference, per example, in [0, 1] (scenarios report them in percent).

One public entry point: :func:`score` ``(metric, prediction, reference, *, source="", labels=())``. The metrics are
the official protocols' own, computed as their evaluation code computes them, with the packages it uses:

=================  ================================================================================================
``olora_em``       O-LoRA's exact match (cmnfriend/O-LoRA ``src/compute_metrics.py`` @ 07117e1, ``normalize_answer``:
                   lowercase, drop every ASCII punctuation character, collapse whitespace), so "Society Culture"
                   equals "Society & Culture". The text5/text15 metric.
``trace_acc``      TRACE's accuracy (BeyonderXX/TRACE ``metrics.py`` @ 462e39f, ``caculate_accuracy``): the raw strings
                   are equal; an empty prediction or reference scores 0. C-STANCE, FOMC, NumGLUE-cm, NumGLUE-ds.
``scienceqa_acc``  TRACE's ScienceQA accuracy (``evaluations/eval_ScienceQA.py``): the first characters (the answer
                   letter of "A\\nBecause ...") are equal; empty scores 0.
``rougeL``         ROUGE-L F of the ``rouge`` 1.0.1 package, as TRACE's ``score_rouge`` calls it; empty scores 0.
``py150_sim``      TRACE's Py150 similarity (``evaluations/eval_Py150.py``): both sides post-processed
                   (``<NUM_LIT>`` -> 0, ``<STR_LIT>``/``<CHAR_LIT>`` removed, ``<X_LIT:v>`` -> v), then fuzzywuzzy's
                   ``fuzz.ratio`` (an integer percentage; TRACE's requirements have no python-Levenshtein, so
                   fuzzywuzzy runs on difflib) / 100; empty scores 0.
``sari``           SARI (Xu et al. 2016) as HuggingFace's ``sari`` metric that TRACE's ``caculate_sari`` loads
                   (huggingface/evaluate ``metrics/sari/sari.py`` @ a7dd338): sacrebleu's 13a tokenizer on lowercased
                   text, n = 1..4, 0/0 = 1, the fixed keep recall; needs the ``source`` (TRACE passes the prompt).
                   The corpus value is the mean of these per-example values. 20Minuten.
``em``             A lenient exact match (case, surrounding whitespace and punctuation): a diagnostic column.
``acc``            Label accuracy: the first label the prediction mentions (whole words) is the reference; lets a
                   chatty instruction model's zero-shot answer count (llm-tiny).
=================  ================================================================================================

Values in the tests come from running the official code above on the same pairs.
"""

from __future__ import annotations

import re
import string
import warnings
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache

_PUNCT = string.punctuation + "“”‘’«»。，！？：；"


# -- exact matches ----------------------------------------------------------------------------------------------
def normalize(text: str) -> str:
    """Lowercase, collapse whitespace, strip surrounding whitespace and punctuation (the lenient ``em``)."""
    return " ".join(text.lower().split()).strip(_PUNCT + " ")


def exact_match(prediction: str, reference: str) -> float:
    return float(normalize(prediction) == normalize(reference))


def olora_normalize(text: str) -> str:
    """O-LoRA's ``normalize_answer``: lowercase, remove ASCII punctuation, collapse whitespace."""
    return " ".join("".join(ch for ch in text.lower() if ch not in string.punctuation).split())


def olora_exact_match(prediction: str, reference: str) -> float:
    return float(olora_normalize(prediction) == olora_normalize(reference))


def trace_accuracy(prediction: str, reference: str) -> float:
    return float(bool(prediction) and bool(reference) and prediction == reference)


def scienceqa_accuracy(prediction: str, reference: str) -> float:
    return float(bool(prediction) and bool(reference) and prediction[0] == reference[0])


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


# -- ROUGE-L and Py150 similarity (the packages TRACE uses) ------------------------------------------------------
@lru_cache(maxsize=1)
def _rouge():
    from rouge import Rouge

    return Rouge(metrics=["rouge-l"])


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F of ``rouge`` 1.0.1; 0 when either side is empty or has no words (the package raises there)."""
    if not prediction or not reference:
        return 0.0
    try:
        return float(_rouge().get_scores(reference, prediction, avg=True)["rouge-l"]["f"])
    except ValueError:  # "Hypothesis is empty" / "Reference is empty" after its whitespace split
        return 0.0


_LIT = re.compile(r"<(STR|NUM|CHAR)_LIT:(.*?)>", re.S)


def py150_postprocess(code: str) -> str:
    """TRACE's Py150 post-processing of literal placeholders."""
    code = code.replace("<NUM_LIT>", "0").replace("<STR_LIT>", "").replace("<CHAR_LIT>", "")
    for kind, value in _LIT.findall(code):
        code = code.replace(f"<{kind}_LIT:{value}>", value)
    return code


@lru_cache(maxsize=1)
def _fuzz():
    with warnings.catch_warnings():  # "Using slow pure-python SequenceMatcher": the matcher TRACE's install runs
        warnings.simplefilter("ignore")
        from fuzzywuzzy import fuzz
    return fuzz


def py150_similarity(prediction: str, reference: str) -> float:
    pred, ref = py150_postprocess(prediction), py150_postprocess(reference)
    if not pred or not ref:
        return 0.0
    return _fuzz().ratio(pred, ref) / 100.0


# -- SARI -------------------------------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def _tokenizer_13a():
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    return Tokenizer13a()


def _ngrams(tokens: list[str], n: int) -> list[str]:
    return [" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def _sari_ngram(src: list[str], out: list[str], refs: list[list[str]]) -> tuple[float, float, float]:
    """(keep F1, deletion precision, addition F1) for one n-gram order, with 0/0 = 1."""
    n_refs = len(refs)
    ref_counts = Counter(g for r in refs for g in r)
    src_rep = Counter({g: c * n_refs for g, c in Counter(src).items()})
    out_rep = Counter({g: c * n_refs for g, c in Counter(out).items()})

    kept, kept_good, kept_all = src_rep & out_rep, src_rep & out_rep & ref_counts, src_rep & ref_counts
    keep_p = sum(kept_good[g] / kept[g] for g in kept_good) / len(kept) if kept else 1.0
    keep_r = sum(kept_good.values()) / sum(kept_all.values()) if kept_all else 1.0
    keep = 2 * keep_p * keep_r / (keep_p + keep_r) if keep_p + keep_r > 0 else 0.0

    deleted = src_rep - out_rep
    deleted_good = deleted - ref_counts
    del_p = sum(deleted_good[g] / deleted[g] for g in deleted_good) / len(deleted) if deleted else 1.0

    added = set(out_rep) - set(src_rep)
    added_good, added_all = added & set(ref_counts), set(ref_counts) - set(src_rep)
    add_p = len(added_good) / len(added) if added else 1.0
    add_r = len(added_good) / len(added_all) if added_all else 1.0
    add = 2 * add_p * add_r / (add_p + add_r) if add_p + add_r > 0 else 0.0
    return keep, del_p, add


def sari(prediction: str, reference: str | Sequence[str], source: str) -> float:
    """Sentence SARI in [0, 1] of ``prediction`` for ``source`` against one or more references."""
    refs = [reference] if isinstance(reference, str) else list(reference)
    tok = _tokenizer_13a()
    src, out = tok(source.lower()).split(" "), tok(prediction.lower()).split(" ")
    ref_tokens = [tok(r.lower()).split(" ") for r in refs]
    parts = [_sari_ngram(_ngrams(src, n), _ngrams(out, n), [_ngrams(r, n) for r in ref_tokens]) for n in (1, 2, 3, 4)]
    keep, delete, add = (sum(p[i] for p in parts) / 4 for i in range(3))
    return (keep + delete + add) / 3


# -- the entry point --------------------------------------------------------------------------------------------
SCORERS = {"olora_em": olora_exact_match, "trace_acc": trace_accuracy, "scienceqa_acc": scienceqa_accuracy,
           "rougeL": rouge_l, "py150_sim": py150_similarity, "em": exact_match}  # fmt: skip
METRICS = (*SCORERS, "sari", "acc")
"""Every metric name :func:`score` accepts."""


def score(metric: str, prediction: str, reference: str, *, source: str = "", labels: Sequence[str] = ()) -> float:
    """One example's score in [0, 1] under ``metric`` (see the module docstring; ``sari`` needs ``source``, ``acc``
    takes the label set). Average the per-example values for a task's score, as the official code does."""
    if metric == "acc":
        return label_accuracy(prediction, reference, labels)
    if metric == "sari":
        return sari(prediction, reference, source)
    if metric not in SCORERS:
        raise ValueError(f"unknown text metric {metric!r}; accepted: {', '.join(METRICS)}")
    return SCORERS[metric](prediction, reference)
