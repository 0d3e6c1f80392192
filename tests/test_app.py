"""The Streamlit app (app/), the published-numbers loader (cl_suite.reference), curves and Pareto fronts
(cl_suite.compare) and `cl-suite app`, on results roots made by real --tiny runs of digits-tiny.

Fixture roots: ``normal`` (4 runs: finetune x 2 seeds, joint, zero-shot, plus one copy relabelled as a full-scale
run of the X-TAIL protocol so published numbers have something to sit beside), ``corrupted`` (the same plus broken
files and a run whose names carry markup), ``empty``. The last test loads the served app in headless Chromium.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest

from cl_suite import compare, leaderboard, reference, results

REPO = Path(__file__).resolve().parent.parent
PAGES = {name: REPO / "app" / "pages" / f"{name}.py" for name in ("leaderboard", "run", "compare")}
STRATEGIES = {"finetune", "joint", "zero-shot"}
NASTY = "<script>alert(1)</script> [click](javascript:alert(1)) **bold**"


def make_runs(root: Path) -> None:
    """Real runs through the runner (tiny mode, one epoch), then one relabelled copy and the repo's reference files."""
    import io

    from cl_suite import config, runner

    for strategy, seed in [("finetune", 0), ("finetune", 1), ("joint", 0), ("zero-shot", 0)]:
        cfg = config.resolve({}, {"scenario.name": "digits-tiny", "strategy.name": strategy, "seed": str(seed),
                                  "tiny": "true", "train.epochs": "1"})  # fmt: skip
        runner.start(cfg, root, progress=False, out=io.StringIO())
    relabel(root, "protocol-demo", scenario="xtail-demo", tiny=False, protocol="x-tail", backbone="demo-backbone")
    shutil.copytree(REPO / "results" / "reference", root / "reference")


def relabel(root: Path, new_id: str, **fields) -> Path:
    """Copy the first finetune run under a new id with some record fields changed."""
    source = next(p.parent for p in sorted((root / "runs").glob("*/run.json")) if "finetune" in p.parent.name)
    target = root / "runs" / new_id
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("checkpoints"))
    record = json.loads((target / "run.json").read_text())
    record.update(run_id=new_id, **fields)
    (target / "run.json").write_text(json.dumps(record))
    return target


@pytest.fixture(scope="session")
def normal_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("normal") / "results"
    make_runs(root)
    return root


@pytest.fixture(scope="session")
def corrupted_root(normal_root: Path, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corrupted") / "results"
    shutil.copytree(normal_root, root)
    (root / "runs" / "torn").mkdir()
    (root / "runs" / "torn" / "run.json").write_text('{"schema_version": 1, "run_id": "torn", "sta')
    (root / "runs" / "foreign").mkdir()
    (root / "runs" / "foreign" / "run.json").write_text('{"schema_version": 99, "run_id": "foreign"}')
    with open(next((root / "runs").glob("*joint*/evals.jsonl")), "a") as f:
        f.write('{"after_task": 1, "eval_t\n')
    (root / "reference" / "broken.yaml").write_text("tables: [ {protocol: x\n")
    relabel(root, "nasty", strategy=NASTY, scenario=NASTY)
    return root


@pytest.fixture
def empty_root(tmp_path: Path) -> Path:
    root = tmp_path / "results"
    root.mkdir()
    return root


def app(page: str, root: Path, monkeypatch, published: Path | None = None) -> AppTest:
    """The page over ``root`` as the user's runs; the published root is ``published`` or a missing folder (then the
    page opens on the user's runs)."""
    monkeypatch.setenv("CL_SUITE_RESULTS", str(root))
    monkeypatch.setenv("CL_SUITE_PUBLISHED", str(published or root / "no-published-runs"))
    at = AppTest.from_file(str(PAGES[page]), default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def frames(at: AppTest, column: str) -> list:
    """The dataframes on the page that have ``column`` (AppTest does not expose dataframe keys), in page order."""
    return [d.value for d in at.dataframe if column in d.value.columns]


def board_of(at: AppTest, scenario: str):
    """The ranked table shown under ``scenario``'s subheader."""
    scenarios = [s.value for s in at.subheader]
    return frames(at, "rank")[scenarios.index(scenario)]


# -- published numbers -----------------------------------------------------------------------------------------
def test_repo_reference_files_load_cleanly():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ref = results.load_reference(REPO / "results")
    assert {"mtil-order1", "x-tail", "trace", "fscil-cifar100", "vit-cil-imagenet-r-10x20", "llm-long"} <= set(
        ref["protocol"])
    assert set(ref["tag"]) <= set(reference.TAGS) and ref["paper"].str.len().gt(0).all()
    sema = ref[(ref["method"] == "SEMA") & (ref["protocol"] == "vit-cil-cifar100-10x10")]
    assert dict(zip(sema["metric"], sema["value"])) == {"avg_inc_weighted": 91.37, "last_weighted": 86.98}
    moram = ref[(ref["method"] == "MoRAM") & (ref["protocol"] == "trace") & (ref["backbone"] == "llama-2-7b-chat")]
    assert moram.set_index("metric")["std"].to_dict() == {"trace_op": 0.9, "trace_forgetting": 0.3}


@pytest.mark.parametrize("text, problem", [
    ("tables: [ {protocol: x\n", "not valid YAML"),
    ("rows: []\n", "'tables' list"),
    ("tables: [{protocol: p, backbone: b, metrics: {last: up}, rows: [{method: m, paper: p, last: 1, tag: V}]}]\n",
     "max or min"),
    ("tables: [{protocol: p, backbone: b, metrics: {last: max}, rows: [{method: m, paper: p, last: 1, tag: X}]}]\n",
     "verification tag"),
    ("tables: [{protocol: p, backbone: b, metrics: {last: max}, rows: [{method: m, paper: p, last: hi, tag: V}]}]\n",
     "must be a number"),
    ("tables: [{protocol: p, backbone: b, metrics: {last: max}, rows: [{method: m, paper: p, lst: 1, tag: V}]}]\n",
     "unknown keys"),
])  # fmt: skip
def test_bad_reference_file_is_skipped_with_a_reason(tmp_path, text, problem):
    (tmp_path / "reference").mkdir()
    (tmp_path / "reference" / "bad.yaml").write_text(text)
    (tmp_path / "reference" / "good.yaml").write_text(
        "tables: [{protocol: p, backbone: b, metrics: {last: max}, rows: [{method: m, paper: q, last: 1.5, tag: V}]}]\n")
    with pytest.warns(UserWarning, match=problem):
        ref = reference.load_reference(tmp_path)
    assert ref[["method", "value"]].values.tolist() == [["m", 1.5]]


def test_protocol_of_a_run():
    assert reference.protocol_of({"protocol": "x-tail"}) == "x-tail"
    assert reference.protocol_of({"config": {"scenario": {"protocol": "trace"}}}) == "trace"
    assert reference.protocol_of({"protocol": "x-tail", "tiny": True}) is None, "a --tiny run is not the benchmark"
    assert reference.protocol_of({"config": {"scenario": {"name": "digits-tiny"}}}) is None


def test_published_rows_only_for_the_runs_protocol(normal_root):
    tables = results.load_runs(normal_root)
    assert set(tables.runs["protocol"].dropna()) == {"x-tail"}
    shown = reference.for_protocols(results.load_reference(normal_root), tables.runs["protocol"].dropna())
    assert set(shown["protocol"]) == {"x-tail"} and "MoRAM" in set(shown["method"])
    assert reference.for_protocols(results.load_reference(normal_root), []).empty


# -- curves and Pareto -------------------------------------------------------------------------------------------
def test_curves_end_at_the_run_summary(normal_root):
    tables = results.load_runs(normal_root)
    for run in tables.runs.itertuples():
        curves = compare.step_curves(compare.run_matrix(tables, run.run_id))
        assert list(curves["step"]) == [1, 2]
        assert curves["score"].iloc[-1] == pytest.approx(run.last)
        assert curves["forgetting"].iloc[-1] == pytest.approx(run.forgetting)
        assert np.isnan(curves["forgetting"].iloc[0])


def test_strategy_curves_average_over_seeds(normal_root):
    tables = results.load_runs(normal_root)
    curves = compare.strategy_curves(tables, "digits-tiny", ["finetune"])
    assert curves["n_seeds"].tolist() == [2, 2]
    finetune = tables.runs[(tables.runs["strategy"] == "finetune") & (tables.runs["scenario"] == "digits-tiny")]
    assert curves["score_mean"].iloc[-1] == pytest.approx(finetune["last"].mean())


def test_pareto_front():
    cost = [1.0, 2.0, 3.0, 2.0, np.nan]
    score = [10.0, 20.0, 15.0, 5.0, 99.0]
    assert compare.pareto_front(cost, score).tolist() == [True, True, False, False, False]
    assert compare.pareto_front(cost, score, maximize=False).tolist() == [True, False, False, True, False]


def test_select_filters_runs_and_evals(normal_root):
    tables = results.load_runs(normal_root)
    picked = leaderboard.select(tables, scenario="digits-tiny", setting="cil", backbone=None)
    assert set(picked.runs["scenario"]) == {"digits-tiny"} and len(picked.runs) == 4
    assert set(picked.evals["run_id"]) == set(picked.runs["run_id"])


# -- pages ---------------------------------------------------------------------------------------------------
def test_leaderboard_page(normal_root, monkeypatch):
    at = app("leaderboard", normal_root, monkeypatch)
    assert [s.value for s in at.subheader] == ["digits\\-tiny", "xtail\\-demo"]
    table = board_of(at, "digits\\-tiny")
    expected = leaderboard.leaderboard(results.load_runs(normal_root), scenario="digits-tiny")
    assert table["strategy"].tolist() == expected["strategy"].tolist() and set(table["strategy"]) == STRATEGIES
    assert table["rank"].tolist() == [1, 2, 3]
    assert dict(zip(table["strategy"], table["n_seeds"]))["finetune"] == 2
    assert {"wall_s", "peak_mem_mb", "params_trained", "params_added"} <= set(table.columns)
    published = frames(at, "paper")
    assert len(published) == 1, "paper numbers only beside the run of their protocol, never beside tiny runs"
    assert "MoRAM" in set(published[0]["method"]) and (published[0]["benchmark"].str.startswith("X-TAIL")).all()
    assert [b.label for b in at.get("download_button")] == ["Download CSV", "Download LaTeX"]

    at.selectbox(key="lb_scenario").select("xtail-demo").run()
    assert [s.value for s in at.subheader] == ["xtail\\-demo"]
    at.selectbox(key="lb_scenario").select("digits-tiny")
    at.selectbox(key="lb_backbone").select("demo-backbone").run()
    assert not at.exception and at.info[0].value == "No successful run matches these filters."


def test_leaderboard_opens_on_published_runs_and_shows_yours_apart(normal_root, empty_root, monkeypatch):
    """With published runs present the first view is theirs; the user's runs are one radio choice away and never
    mixed into the published table."""
    at = app("leaderboard", empty_root, monkeypatch, published=normal_root)
    assert at.sidebar.radio(key="runs_source").value == "Published runs"
    assert at.caption[0].value.startswith("Published runs") and "digits\\-tiny" in [s.value for s in at.subheader]
    assert set(board_of(at, "digits\\-tiny")["strategy"]) == STRATEGIES
    at.sidebar.radio(key="runs_source").set_value("Your runs").run()
    assert not at.exception and at.caption[0].value.startswith("Your runs") and not at.subheader
    assert "No runs under this results root yet" in at.info[0].value


def test_published_folder_under_your_root_is_not_mixed_into_your_runs(normal_root, tmp_path, monkeypatch):
    """results/published lives under the default user root results/: its runs show only as the published ones."""
    root = tmp_path / "results"
    shutil.copytree(normal_root, root / "published")
    at = app("leaderboard", root, monkeypatch, published=root / "published")
    assert at.sidebar.radio(key="runs_source").value == "Published runs" and at.subheader
    at.sidebar.radio(key="runs_source").set_value("Your runs").run()
    assert not at.subheader and "No runs under this results root yet" in at.info[0].value


def test_run_page(normal_root, monkeypatch):
    at = app("run", normal_root, monkeypatch)
    tables = results.load_runs(normal_root)
    run_id = tables.runs.loc[tables.runs["strategy"] == "joint", "run_id"].iloc[0]
    at.selectbox(key="run_id").select(run_id).run()
    assert not at.exception
    matrix = next(d.value for d in at.dataframe if d.value.index[0] == "before")
    assert matrix.index[0] == "before" and matrix.shape == (3, 2)
    np.testing.assert_allclose(matrix.to_numpy(), compare.run_matrix(tables, run_id))
    assert {"Score matrix", "Per-task curves across training", "Resolved config", "Environment",
            "Strategy stats per task"} <= {s.value for s in at.subheader}  # fmt: skip
    assert "last" in set(frames(at, "summary")[0]["summary"])
    assert len(at.json) == 3  # cost, config, environment


def test_compare_page(normal_root, monkeypatch):
    at = app("compare", normal_root, monkeypatch)
    front = frames(at, "pareto")[0]
    assert set(front["strategy"]) == STRATEGIES and front["pareto"].any()
    at.selectbox(key="cmp_cost").select("trainable_params").run()
    assert "trainable_params" in frames(at, "pareto")[0].columns
    at.radio(key="cmp_mode").set_value("runs").run()
    assert not at.exception and len(at.multiselect(key="cmp_runs").value) == 4
    at.multiselect(key="cmp_runs").set_value([]).run()
    assert at.info[0].value == "Pick at least one run or strategy."


@pytest.mark.parametrize("page", list(PAGES))
def test_every_page_on_an_empty_or_missing_root(page, empty_root, monkeypatch):
    for root in (empty_root, empty_root / "does-not-exist"):
        at = app(page, root, monkeypatch)
        assert "No runs under this results root yet" in at.info[0].value
        assert not at.dataframe


@pytest.mark.parametrize("page", list(PAGES))
def test_every_page_on_a_partly_corrupted_root(page, corrupted_root, monkeypatch):
    at = app(page, corrupted_root, monkeypatch)
    assert "could not be read and were skipped" in at.warning[0].value
    skipped = at.expander[0].text[0].value
    assert "torn" in skipped and "foreign" in skipped and "broken.yaml" in skipped
    if page == "leaderboard":
        assert set(board_of(at, "digits\\-tiny")["strategy"]) == STRATEGIES


def test_text_from_the_store_is_escaped(corrupted_root, monkeypatch):
    from app.views import esc

    at = app("leaderboard", corrupted_root, monkeypatch)
    assert esc(NASTY) in [s.value for s in at.subheader]
    rendered = " ".join(m.value for m in [*at.subheader, *at.caption, *at.markdown])
    for raw in ("<script>", "](javascript:", "**bold**"):
        assert raw not in rendered
    assert NASTY in set(board_of(at, esc(NASTY))["strategy"]), "dataframes show the text as it is"


def test_cache_refreshes_when_the_root_changes(normal_root, tmp_path, monkeypatch):
    root = tmp_path / "results"
    shutil.copytree(normal_root, root)
    at = app("leaderboard", root, monkeypatch)
    assert "late-arrival" not in set(board_of(at, "digits\\-tiny")["strategy"])
    relabel(root, "late", strategy="late-arrival")
    at.run()
    assert "late-arrival" in set(board_of(at, "digits\\-tiny")["strategy"])


# -- cl-suite app ------------------------------------------------------------------------------------------------
def test_app_command_serves_one_root_on_localhost(tmp_path):
    from cl_suite.cli import UsageError, app_command

    command, env = app_command(tmp_path, 8599)
    assert command[command.index("run") + 1] == str(REPO / "app" / "main.py")
    assert command[command.index("--server.address") + 1] == "127.0.0.1"
    assert command[command.index("--server.port") + 1] == "8599"
    assert env["CL_SUITE_RESULTS"] == str(tmp_path.resolve())
    assert env["CL_SUITE_PUBLISHED"] == str(REPO / "results" / "published")
    assert app_command(tmp_path, 8599, tmp_path / "pub")[1]["CL_SUITE_PUBLISHED"] == str((tmp_path / "pub").resolve())
    with pytest.raises(UsageError, match="--port"):
        app_command(tmp_path, 70000)


def test_cli_rejects_a_bad_port(capsys):
    from cl_suite.cli import main

    assert main(["app", "--port", "0"]) == 2
    assert "--port must be in 1..65535" in capsys.readouterr().err


# -- a real browser --------------------------------------------------------------------------------------------
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"cl-suite app exited with {proc.returncode}"
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.read() == b"ok":
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"the app did not answer on {url} within {timeout} s")


def test_browser_shows_the_leaderboard(normal_root, empty_root, tmp_path):
    """`cl-suite app` on localhost, loaded in headless Chromium through Playwright (the system chromium, never
    `playwright install`); the first page is the published leaderboard (here the fixture root passed as --published,
    the user's root empty) and its grid lists the fixture's strategies; a screenshot is saved."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no system chromium (make test installs Debian's chromium with apt-get when it can)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip playwright missing (it is in the dev extra)")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(tmp_path / "app.log", "w")  # noqa: SIM115  (the server outlives this statement; closed below)
    proc = subprocess.Popen([sys.executable, "-m", "cl_suite.cli", "app", "--results", str(empty_root), "--published",
                             str(normal_root), "--port", str(port)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    shot = Path(os.environ.get("CL_SUITE_SCREENSHOTS") or tmp_path) / "leaderboard.png"
    try:
        wait_healthy(url, proc)
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS, headless=True)
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(url, timeout=60_000)
            page.get_by_role("heading", name="Leaderboard").wait_for(timeout=60_000)
            page.get_by_text("Published runs · results root").wait_for(timeout=60_000)
            page.wait_for_selector('[data-testid="stDataFrame"] [role="gridcell"]', state="attached", timeout=60_000)
            page.wait_for_timeout(1500)
            cells = set(page.locator('[data-testid="stDataFrame"] [role="gridcell"]').all_text_contents())
            shot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shot), full_page=True)
            browser.close()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
    assert cells >= STRATEGIES, f"grid cells: {sorted(cells)[:20]}; log: {(tmp_path / 'app.log').read_text()[-500:]}"
    assert shot.stat().st_size > 10_000, "the screenshot should show a rendered page"
