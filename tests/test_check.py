"""`cl-suite check` and cl_suite.testing: built-in plugins pass, and each deliberately broken plugin fails the check
that names its fault (and only the checks that fault explains)."""

from __future__ import annotations

import shutil
import textwrap

import pytest
from conftest import REPO, cli

from cl_suite import cli as cli_mod
from cl_suite import testing

# Each broken plugin is fine-tuning with one fault; the checks must name it.
BROKEN = {
    # An L2 anchor kept in a plain attribute: not in the state dict, so a resumed run trains task 2 without it.
    "loses_state": '''
        class Plugin(Strategy):
            supports = frozenset({"cil"})

            def setup(self, model, ctx):
                super().setup(model, ctx)
                self.anchor = None

            def training_step(self, batch, task):
                loss = self.model.loss(batch, task)
                if self.anchor is None:
                    return loss
                return loss + 100.0 * sum(((p - a) ** 2).sum() for p, a in zip(self.model.parameters(), self.anchor))

            def after_task(self, task):
                self.anchor = [p.detach().clone() for p in self.model.parameters()]
    ''',
    # A tensor in strategy_stats: run.json cannot hold it.
    "stats_not_json": '''
        class Plugin(Strategy):
            supports = frozenset({"cil"})

            def strategy_stats(self):
                return {"weight_norm": torch.stack([p.norm() for p in self.model.parameters()]).sum()}
    ''',
    # Perturbs the weights from a generator seeded by the OS, not by the run's seed (state dict keeps it: resume is fine).
    "ignores_seed": '''
        class Plugin(Strategy):
            supports = frozenset({"cil"})

            def setup(self, model, ctx):
                super().setup(model, ctx)
                generator = torch.Generator()
                generator.seed()
                with torch.no_grad():
                    for p in model.parameters():
                        p.add_(0.1 * torch.randn(p.shape, generator=generator))
    ''',
    # Claims segmentation, but trains a classifier over model.logits, which a segmentation model does not provide.
    "supports_lies": '''
        class Plugin(Strategy):
            supports = frozenset({"cil", "seg"})

            def training_step(self, batch, task):
                return torch.nn.functional.cross_entropy(self.model.logits(batch), batch["y"])
    ''',
}
HEADER = "import torch\n\nfrom cl_suite.api import Strategy\n"


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    for name, body in BROKEN.items():
        (tmp_path / f"broken_{name}.py").write_text(HEADER + textwrap.dedent(body))
    return tmp_path


def run_check(capsys, *argv: str) -> tuple[int, dict[tuple[str, str], testing.CheckResult]]:
    """`cl-suite check ARGV` in-process: exit code and the printed checks by (check, subject)."""
    code = cli_mod.main(["check", *argv])
    lines = capsys.readouterr().out.splitlines()
    found = {}
    for line in lines[:-1]:
        status, check, rest = line.split(maxsplit=2)
        subject, _, reason = rest.partition(": ")
        found[(check, subject)] = testing.CheckResult(check, subject, status.lower(), reason)
    assert lines[-1].split()[1:4] == ["passed,", str(sum(r.failed for r in found.values())), "failed,"]
    return code, found


def failing(found) -> set[tuple[str, str]]:
    return {key for key, result in found.items() if result.failed}


def test_builtin_strategies_pass(capsys):
    code, found = run_check(capsys, "finetune", "prototype", "--scenario", "digits-tiny", "--scenario", "organ-tiny")
    assert code == 0, failing(found)
    ran = {key for key, r in found.items() if r.status == "pass"}
    for check in ("finishes", "record", "stats-json", "resume", "seed"):
        assert {(check, "finetune on digits-tiny"), (check, "finetune on organ-tiny"), (check, "prototype on digits-tiny")} <= ran
    assert ("supports", "prototype") in ran and ("supports", "finetune") in ran  # prototype refused on organ-tiny
    assert not any("prototype on organ-tiny" in subject for _, subject in found)


def test_loses_state_on_resume(plugin_dir, capsys):
    code, found = run_check(capsys, "broken_loses_state:Plugin", "--scenario", "digits-tiny")
    assert code == 1
    assert failing(found) == {("resume", "broken_loses_state:Plugin on digits-tiny")}
    assert "differ (uninterrupted vs resumed)" in found["resume", "broken_loses_state:Plugin on digits-tiny"].reason


def test_stats_not_json(plugin_dir, capsys):
    code, found = run_check(capsys, "broken_stats_not_json:Plugin", "--scenario", "digits-tiny")
    assert code == 1
    subject = "broken_stats_not_json:Plugin on digits-tiny"
    assert failing(found) == {("stats-json", subject), ("finishes", subject)}
    assert "strategy_stats() after task 1" in found["stats-json", subject].reason
    assert "Tensor" in found["stats-json", subject].reason
    assert found["supports", "broken_stats_not_json:Plugin"].status == "pass"  # the fault is named once, not as supports


def test_ignores_the_seed(plugin_dir, capsys):
    code, found = run_check(capsys, "broken_ignores_seed:Plugin", "--scenario", "digits-tiny")
    assert code == 1
    assert failing(found) == {("seed", "broken_ignores_seed:Plugin on digits-tiny")}
    assert "differ (first run vs second run, seed 0)" in found["seed", "broken_ignores_seed:Plugin on digits-tiny"].reason


def test_supports_lies(plugin_dir, capsys):
    code, found = run_check(capsys, "broken_supports_lies:Plugin", "--scenario", "digits-tiny",
                            "--scenario", "organ-tiny", "--scenario", "llm-tiny")  # fmt: skip
    assert code == 1
    subject = "broken_supports_lies:Plugin"
    assert failing(found) == {("supports", subject), ("finishes", f"{subject} on organ-tiny")}
    reason = found["supports", subject].reason
    assert "supports claims 'seg'" in reason and "organ-tiny" in reason and "llm-tiny" not in reason
    assert "broken_supports_lies.py" in found["finishes", f"{subject} on organ-tiny"].reason  # where it went wrong
    assert found["finishes", f"{subject} on digits-tiny"].status == "pass"


def test_supports_not_readable_by_list(tmp_path, monkeypatch, capsys):
    """A supports computed at import time is what the class has, but not what `cl-suite list` reads."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "computed_supports.py").write_text(HEADER + textwrap.dedent('''
        class Plugin(Strategy):
            supports = frozenset(["cil"] + [])
    '''))  # fmt: skip
    code, found = run_check(capsys, "computed_supports:Plugin", "--scenario", "digits-tiny")
    assert code == 1 and failing(found) == {("supports", "computed_supports:Plugin")}
    assert "`cl-suite list` reads supports" in found["supports", "computed_supports:Plugin"].reason


def test_scenario_plugin(capsys):
    code, found = run_check(capsys, "--scenario-plugin", "fscil-tiny", "finetune", "lora")
    assert code == 0, failing(found)
    assert {("finishes", "finetune on fscil-tiny"), ("resume", "lora on fscil-tiny"), ("seed", "lora on fscil-tiny"),
            ("declares", "fscil-tiny")} <= set(found)  # fmt: skip


def test_bad_input_is_exit_2(capsys):
    assert cli_mod.main(["check"]) == 2
    assert cli_mod.main(["check", "no-such-strategy"]) == 2
    assert cli_mod.main(["check", "finetune", "--scenario", "no-such-scenario"]) == 2
    assert "no-such-scenario" in capsys.readouterr().err


def test_conformance_tests_helper_reports_the_failing_check(plugin_dir):
    """The pytest helper is a parametrised test; run here by hand, it fails with the failing check's line."""
    test = testing.conformance_tests("broken_ignores_seed:Plugin", scenarios=["digits-tiny"])
    assert [m.name for m in test.pytestmark] == ["parametrize"]
    with pytest.raises(pytest.fail.Exception, match=r"FAIL  seed        broken_ignores_seed:Plugin on digits-tiny"):
        test("broken_ignores_seed:Plugin", plugin_dir / "runs")


def test_new_strategy_then_check_in_a_fresh_copy(tmp_path):
    """The acceptance path: in a copy of the repository, `new-strategy my-method`, then `check` it, and pytest
    collects the test file it wrote (subprocesses, as a plugin author would)."""
    clone = tmp_path / "clone"
    for part in ("cl_suite", "strategies", "scenarios"):
        shutil.copytree(REPO / part, clone / part, ignore=shutil.ignore_patterns("__pycache__"))
    (clone / "tests").mkdir()
    made = cli("new-strategy", "my-method", cwd=clone)
    assert made.returncode == 0, made.stderr
    assert "cl-suite check strategies.my_method:MyMethod" in made.stdout
    workflow = (clone / ".github" / "workflows" / "cl-suite-check.yml").read_text()
    assert "-c constraints.txt" in workflow and "cl-suite check strategies.my_method:MyMethod" in workflow
    checked = cli("check", "strategies.my_method:MyMethod", "--scenario", "digits-tiny", cwd=clone)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "PASS  resume      strategies.my_method:MyMethod on digits-tiny" in checked.stdout
    assert "0 failed" in checked.stdout
    collected = cli_module_pytest(clone, "--collect-only", "-q", "tests/test_my_method.py")
    assert collected.returncode == 0 and "test_conformance[strategies.my_method:MyMethod]" in collected.stdout


def cli_module_pytest(cwd, *args):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def test_full_size_scenario_without_data_is_skipped_not_failed(tmp_path):
    (result,) = testing.check_pair("fscil-cifar100", "finetune", tmp_path)
    assert (result.check, result.status) == ("finishes", "skip") and "scenario.root" in result.reason
