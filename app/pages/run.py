"""Run page: one run's score matrix (with the zero-shot row), per-task curves, losses, config, environment, stats."""

import pandas as pd
import streamlit as st

from app import store, views
from cl_suite import compare, metrics


def _pick_run(runs: pd.DataFrame) -> pd.Series:
    runs = runs.sort_values("started_at", ascending=False, na_position="last")
    labels = {r.run_id: f"{r.run_id} · {r.status}" for r in runs.itertuples()}
    run_id = st.selectbox("Run", list(labels), format_func=labels.get, key="run_id")
    return runs[runs["run_id"] == run_id].iloc[0]


def _summary(record: dict) -> pd.DataFrame:
    direction = record.get("direction", "max")
    rows = []
    for name, value in (record.get("summary") or {}).items():
        known = name in metrics.SUMMARIES
        rows.append({"summary": name, "value": value,
                     "better": ("higher" if metrics.direction(name, direction) == "max" else "lower") if known else "",
                     "meaning": metrics.SUMMARIES[name].label if known else ""})  # fmt: skip
    return pd.DataFrame(rows)


def page() -> None:
    st.title("Run")
    source = views.source()
    data = store.load(source)
    if not views.notices(data, source):
        return
    run = _pick_run(data.runs)
    record, train, problems = store.run_detail(run["path"])
    for problem in problems:
        st.warning(views.esc(problem))
    st.markdown(" · ".join(f"**{k}** {views.esc(record.get(k))}"
                           for k in ("scenario", "strategy", "seed", "backbone", "setting", "status")))  # fmt: skip
    if record.get("error"):
        st.error(views.esc(record["error"]))

    names = record.get("tasks") or []
    R = compare.run_matrix(data.tables, run["run_id"])
    matrix = compare.task_curves(R, names)
    st.subheader("Score matrix")
    st.caption(f"{views.esc(record.get('metric'))} after training each task (rows) on every task (columns); "
               "the first row is the model before any training (zero-shot).")  # fmt: skip
    st.altair_chart(views.heatmap(matrix, str(record.get("metric"))), key="run_heatmap")
    st.dataframe(matrix.pivot(index="after", columns="task", values="score").loc[list(dict.fromkeys(matrix["after"]))],
                 key="run_matrix")  # fmt: skip

    st.subheader("Per-task curves across training")
    st.altair_chart(views.lines(matrix, "step", "score", "task", str(record.get("metric")),
                                "tasks trained (0 = before training)"), key="run_task_curves")  # fmt: skip
    losses = pd.DataFrame([r for r in train if "loss" in r and "step" in r])
    if not losses.empty:
        losses = losses.assign(task=losses["task"].map(lambda t: names[t] if 0 <= t < len(names) else t),
                               step=range(1, len(losses) + 1))  # fmt: skip
        st.altair_chart(views.lines(losses, "step", "loss", "task", "training loss", "logged step"), key="run_losses")

    st.subheader("Summary")
    st.dataframe(_summary(record), hide_index=True, key="run_summary")
    left, right = st.columns(2)
    with left:
        st.subheader("Cost")
        st.json(record.get("cost") or {})
        st.subheader("Strategy stats per task")
        stats = pd.DataFrame(record.get("strategy_stats") or [])
        st.dataframe(stats, hide_index=True, key="run_stats") if not stats.empty else st.caption("none recorded")
    with right:
        st.subheader("Resolved config")
        st.json(record.get("config") or {}, expanded=False)
        st.subheader("Environment")
        st.json(record.get("env") or {}, expanded=False)


page()
