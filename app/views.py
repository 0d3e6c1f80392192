"""Shared page pieces: escaping, the notices every page shows, and the Altair charts."""

from __future__ import annotations

import re

import altair as alt
import pandas as pd
import streamlit as st

from app import store
from app.store import Loaded

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:&])")


def esc(text: object) -> str:
    """Text from the results store, safe inside Streamlit markdown (no links, images, HTML or formatting)."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", str(text))


def source() -> str:
    """Which runs the page shows, picked in the sidebar (one key, so every page shares it): the published runs
    first when there are any, the user's own runs apart from them."""
    default = 0 if store.has_runs(store.published_root()) else 1
    return st.sidebar.radio("Runs", store.SOURCES, index=default, key="runs_source",
                            help="Published: the tiny tier made by `make published`. Yours: your --results root.")


def notices(data: Loaded, source: str = store.YOURS) -> bool:
    """Say which root is shown and what could not be read; False (after a friendly message) when there is no run."""
    root = store.root_of(source)
    st.caption(f"{esc(source)} · results root: {esc(root)}")
    if data.problems:
        st.warning(f"{len(data.problems)} file(s) under the results root could not be read and were skipped.")
        with st.expander("Skipped files"):
            st.text("\n".join(data.problems))
    if data.runs.empty and source == store.PUBLISHED:
        st.info("No published runs yet: `make published` makes them (see the README).")
        return False
    if data.runs.empty:
        st.info("No runs under this results root yet. Start one with "
                f"`cl-suite run --scenario digits-tiny --strategy finetune --results {root}` "
                "(or `make demo`), then reload this page.")  # fmt: skip
        return False
    return True


def heatmap(matrix: pd.DataFrame, metric: str) -> alt.Chart:
    """Score-matrix heatmap: rows are 'before' (the zero-shot row) and 'after <task>', columns the evaluated task."""
    rows, cols = list(dict.fromkeys(matrix["after"])), list(dict.fromkeys(matrix["task"]))
    base = alt.Chart(matrix).encode(
        x=alt.X("task:N", sort=cols, title="evaluated task"), y=alt.Y("after:N", sort=rows, title="trained up to"))
    cells = base.mark_rect().encode(color=alt.Color("score:Q", title=metric, scale=alt.Scale(scheme="viridis")),
                                    tooltip=["after", "task", alt.Tooltip("score:Q", format=".2f")])  # fmt: skip
    text = base.mark_text(color="white").encode(text=alt.Text("score:Q", format=".1f"))
    return (cells + text).properties(height=max(160, 36 * len(rows)))


def lines(frame: pd.DataFrame, x: str, y: str, color: str, title: str, x_title: str | None = None) -> alt.Chart:
    return (alt.Chart(frame.dropna(subset=[y])).mark_line(point=True)
            .encode(x=alt.X(f"{x}:O", title=x_title or x), y=alt.Y(f"{y}:Q", title=title), color=f"{color}:N",
                    tooltip=[color, x, alt.Tooltip(f"{y}:Q", format=".2f")])
            .properties(height=280))  # fmt: skip


def pareto(frame: pd.DataFrame, cost: str, score: str, label: str) -> alt.Chart:
    """Scatter of score against cost; the Pareto-optimal points are filled and joined."""
    points = alt.Chart(frame).mark_point(size=90, filled=True).encode(
        x=alt.X(f"{cost}:Q", title=cost), y=alt.Y(f"{score}:Q", title=score),
        color=alt.Color("pareto:N", title="Pareto-optimal"), shape=f"{label}:N",
        tooltip=[label, alt.Tooltip(f"{cost}:Q", format=",.1f"), alt.Tooltip(f"{score}:Q", format=".2f")])
    front = alt.Chart(frame[frame["pareto"]].sort_values(cost)).mark_line(strokeDash=[4, 3]).encode(
        x=f"{cost}:Q", y=f"{score}:Q")
    return (points + front).properties(height=320)
