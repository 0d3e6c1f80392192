"""Leaderboard page: per scenario, strategies ranked by the primary summary, mean ± std over seeds, and costs.

The table is cl_suite.leaderboard's (the one `cl-suite leaderboard` prints). Published paper numbers are shown under
it, apart, only for the protocol the scenario's runs reproduce.
"""

import streamlit as st

from app import store, views
from cl_suite import leaderboard, metrics, reference

ALL = "all"


def _choice(label: str, values, key: str) -> str | None:
    options = [ALL, *sorted({str(v) for v in values})]
    picked = st.selectbox(label, options, key=key)
    return None if picked == ALL else picked


def _ranked_by(board, metric_direction: str) -> str:
    name = next((c[: -len("_mean")] for c in board.columns if c.endswith("_mean")), "?")
    better = metrics.direction(name, metric_direction) if name in metrics.SUMMARIES else metric_direction
    return f"ranked by {views.esc(name)} (mean over seeds; {'higher' if better == 'max' else 'lower'} is better)"


def page() -> None:
    st.title("Leaderboard")
    source = views.source()
    data = store.load(source)
    if not views.notices(data, source):
        return
    runs = data.runs
    cols = st.columns(3)
    with cols[0]:
        scenario = _choice("Scenario", runs["scenario"].dropna(), "lb_scenario")
    with cols[1]:
        backbone = _choice("Backbone", runs["backbone"].fillna("unknown"), "lb_backbone")
    with cols[2]:
        setting = _choice("Setting", runs["setting"].dropna(), "lb_setting")
    tables = leaderboard.select(data.tables, scenario=scenario, backbone=backbone, setting=setting)
    board = leaderboard.leaderboard(tables)
    not_done = tables.runs[tables.runs["status"] != "success"]
    if board.empty:
        st.info("No successful run matches these filters.")
    for name, rows in board.groupby("scenario", sort=True):
        rows = rows.dropna(axis=1, how="all")
        scenario_runs = tables.runs[tables.runs["scenario"] == name]
        direction = next(iter(scenario_runs["direction"].dropna()), "max")
        st.subheader(views.esc(name))
        st.caption(_ranked_by(rows, direction) + f" · metric {views.esc(rows['metric'].iloc[0])}")
        table = leaderboard.display_table(rows).drop(columns=["scenario"])
        table.insert(0, "rank", range(1, len(table) + 1))
        st.dataframe(table, hide_index=True, key=f"lb_table_{name}")
        published = reference.for_protocols(data.reference, scenario_runs["protocol"].dropna().unique())
        if not published.empty:
            st.markdown("**Published numbers** (from papers, not measured here; protocol "
                        + ", ".join(views.esc(p) for p in published["protocol"].unique()) + ")")  # fmt: skip
            st.dataframe(published.drop(columns=["protocol"]), hide_index=True, key=f"lb_reference_{name}")
            st.caption("Verification tags: " + "; ".join(f"{k}: {views.esc(v)}" for k, v in reference.TAGS.items()))
    if not board.empty:
        c1, c2 = st.columns(2)
        c1.download_button("Download CSV", leaderboard.render(board, "csv"), "leaderboard.csv", "text/csv")
        c2.download_button("Download LaTeX", leaderboard.render(board, "latex"), "leaderboard.tex", "text/x-tex")
    if not not_done.empty:
        with st.expander(f"{len(not_done)} run(s) not counted (running or failed)"):
            st.dataframe(not_done[["run_id", "status", "scenario", "strategy", "seed", "error"]], hide_index=True)


page()
