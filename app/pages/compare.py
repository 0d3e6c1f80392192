"""Compare page: accuracy and forgetting curves over tasks for chosen runs or strategies, and a Pareto plot of the
primary summary against a cost, on one scenario."""

import streamlit as st

from app import store, views
from cl_suite import compare, leaderboard, metrics

COSTS = {"wall_s": "wall time (s)", "peak_mem_mb": "peak memory (MB)", "trainable_params": "trainable parameters",
         "added_inference_params": "added inference parameters"}  # fmt: skip


def _curves(data, scenario: str):
    runs = data.runs[(data.runs["scenario"] == scenario) & (data.runs["status"] == "success")]
    mode = st.radio("Compare", ["strategies (mean over seeds)", "runs"], horizontal=True, key="cmp_mode")
    if mode == "runs":
        ids = list(runs["run_id"])
        chosen = st.multiselect("Runs", ids, default=ids[:4], key="cmp_runs")
        curves = compare.runs_curves(data.tables, chosen)
        score, forgetting, color = "score", "forgetting", "label"
    else:
        names = sorted(runs["strategy"].unique())
        chosen = st.multiselect("Strategies", names, default=names, key="cmp_strategies")
        curves = compare.strategy_curves(data.tables, scenario, chosen)
        score, forgetting, color = "score_mean", "forgetting_mean", "label"
    if curves.empty:
        st.info("Pick at least one run or strategy.")
        return
    metric = views.esc(runs["metric"].iloc[0])
    left, right = st.columns(2)
    left.altair_chart(views.lines(curves, "step", score, color, f"mean {metric} over seen tasks", "tasks trained"),
                      key="cmp_score")  # fmt: skip
    right.altair_chart(views.lines(curves, "step", forgetting, color, "forgetting (max-based)", "tasks trained"),
                       key="cmp_forgetting")  # fmt: skip


def _pareto(data, scenario: str):
    board = leaderboard.leaderboard(data.tables, scenario=scenario)
    if board.empty:
        return
    primary = next(c for c in board.columns if c.endswith("_mean"))
    name = primary[: -len("_mean")]
    maximize = name not in metrics.SUMMARIES or metrics.direction(name, board_direction(data, scenario)) == "max"
    cost = st.selectbox("Cost", list(COSTS), format_func=COSTS.get, key="cmp_cost")
    frame = board.assign(pareto=compare.pareto_front(board[cost], board[primary], maximize=maximize),
                         label=board["strategy"] + " · " + board["backbone"])  # fmt: skip
    if frame[cost].isna().all():
        st.info("No run of this scenario recorded this cost.")
        return
    st.altair_chart(views.pareto(frame, cost, primary, "label"), key="cmp_pareto")
    st.dataframe(frame[["strategy", "backbone", "n_seeds", primary, cost, "pareto"]], hide_index=True, key="cmp_front")


def board_direction(data, scenario: str) -> str:
    directions = data.runs.loc[data.runs["scenario"] == scenario, "direction"].dropna()
    return directions.iloc[0] if len(directions) else "max"


def page() -> None:
    st.title("Compare")
    source = views.source()
    data = store.load(source)
    if not views.notices(data, source):
        return
    scenarios = sorted(data.runs.loc[data.runs["status"] == "success", "scenario"].dropna().unique())
    if not scenarios:
        st.info("No successful run to compare yet.")
        return
    scenario = st.selectbox("Scenario", scenarios, key="cmp_scenario")
    st.subheader("Accuracy and forgetting over tasks")
    _curves(data, scenario)
    st.subheader("Primary metric against cost")
    _pareto(data, scenario)


page()
