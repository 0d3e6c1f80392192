"""Metric conformance: every expected value below was printed by running the official evaluation code on the pair.

How they were obtained (the official code was fetched into a temp folder, run there, and not committed):
- TRACE: BeyonderXX/TRACE @ 462e39f616134f4f819efeb3baea8638c03c7db4, ``metrics.py`` (``caculate_rouge``,
  ``caculate_accuracy``), ``evaluations/eval_Py150.py`` (``eval``), ``evaluations/eval_ScienceQA.py`` (``eval``),
  with rouge==1.0.1 and fuzzywuzzy==0.18.0 (no python-Levenshtein, as TRACE's requirements.txt).
- SARI: huggingface/evaluate @ a7dd338386a4fae9a1767e05eb9ef9479513d9e8 ``metrics/sari/sari.py`` (``SARIsent`` on
  ``normalize``d text, sacrebleu 2.6.0), the metric TRACE's ``caculate_sari`` loads; values are its 0-100 scale.
- O-LoRA: cmnfriend/O-LoRA @ 07117e1fc4a5f5ad9308a815a42cee8f46502dc8 ``src/compute_metrics.py``
  (``exact_match_score``).
"""

import pytest

from cl_suite.text_metrics import score

ROUGE_L = [  # TRACE caculate_rouge([pred], [ref])
    ("the cat sat on the mat", "the cat was sitting on the mat", 0.7272727223140496),
    ("Council approved the budget, with amendments.", "The council approved the amended budget.", 0.3333333283333334),
    ("a b c d", "e f g", 0.0),
    ("", "reference text", 0.0),
    ("Die Stadt baut eine neue Brücke.", "Die Stadt plant eine Brücke über den Fluss.", 0.5714285665306124),
]
PY150 = [  # TRACE eval_Py150.eval([pred], [ref])["similarity"] (a percentage)
    ("x = <NUM_LIT>", "x = 0", 100.0),
    ("print(<STR_LIT>)", "print()", 100.0),
    ("self.assertEqual(x, <STR_LIT:foo>)", "self.assertEqual(x, foo)", 100.0),
    ("return self . value", "return self . values", 97.0),
    ("for i in range ( <NUM_LIT:10> ) :", "for j in range(10):", 86.0),
    ("", "x", 0.0),
]
SCIENCEQA = [  # TRACE eval_ScienceQA.eval([pred], [ref])["accuracy"]; empty: caculate_accuracy
    ("A\nBecause the magnet attracts iron.", "A\nBecause magnets attract iron.", 1.0),
    ("B\nwrong", "A\nright", 0.0),
    ("A", "A\nBecause", 1.0),
    ("", "A\nBecause", 0.0),
    ("Answer: A", "A\nBecause", 1.0),  # the official first-character rule: "Answer" starts with A
]
TRACE_ACC = [("A", "A", 1.0), ("A ", "A", 0.0), ("a", "A", 0.0), ("", "", 0.0), ("12.5", "12.5", 1.0)]
SARI = [  # HF SARIsent(normalize(src), normalize(pred), [normalize(ref)]) * 100
    ("About 95 species are currently accepted .", "About 95 you now get in .", "About 95 species are now accepted .",
     28.888888888888886),
    ("Der Bundesrat hat am Mittwoch die neue Verordnung verabschiedet, die ab Januar gilt.",
     "Der Bundesrat hat die Verordnung verabschiedet.", "Die neue Verordnung gilt ab Januar.", 45.39592352092352),
    ("The cat sat on the mat.", "The cat sat on the mat.", "The cat sat on the mat.", 100.0),
    ("Zürich: Ein Mann (45) wurde verletzt!", "Ein Mann wurde in Zürich verletzt.",
     "In Zürich wurde ein 45-jähriger Mann verletzt.", 63.84559884559885),
]
SARI_CORPUS = 59.53260281385282  # HF Sari._compute over the four rows above
OLORA_EM = [  # O-LoRA exact_match_score
    ("Society & Culture", "Society Culture", 1.0), ("World.", "world", 1.0), ("Sci/Tech", "SciTech", 1.0),
    ("not_entailment", "not entailment", 0.0), ("Entertainment & Music", "Entertainment  &  Music", 1.0),
    ("positive", "negative", 0.0), ("  Business ", "business", 1.0),
]


@pytest.mark.parametrize(("pred", "ref", "expected"), ROUGE_L)
def test_rouge_l_matches_trace(pred, ref, expected):
    assert score("rougeL", pred, ref) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(("pred", "ref", "expected"), PY150)
def test_py150_matches_trace(pred, ref, expected):
    assert 100 * score("py150_sim", pred, ref) == pytest.approx(expected)


@pytest.mark.parametrize(("pred", "ref", "expected"), SCIENCEQA)
def test_scienceqa_matches_trace(pred, ref, expected):
    assert score("scienceqa_acc", pred, ref) == expected


@pytest.mark.parametrize(("pred", "ref", "expected"), TRACE_ACC)
def test_trace_accuracy_is_raw(pred, ref, expected):
    assert score("trace_acc", pred, ref) == expected


@pytest.mark.parametrize(("src", "pred", "ref", "expected"), SARI)
def test_sari_matches_huggingface(src, pred, ref, expected):
    assert 100 * score("sari", pred, ref, source=src) == pytest.approx(expected, abs=1e-9)


def test_sari_corpus_is_the_mean_of_sentences():
    values = [score("sari", pred, ref, source=src) for src, pred, ref, _ in SARI]
    assert 100 * sum(values) / len(values) == pytest.approx(SARI_CORPUS, abs=1e-9)


@pytest.mark.parametrize(("pred", "ref", "expected"), OLORA_EM)
def test_olora_exact_match(pred, ref, expected):
    assert score("olora_em", pred, ref) == expected


def test_unknown_metric_names_the_accepted_ones():
    with pytest.raises(ValueError, match="olora_em"):
        score("bleu", "a", "a")
