"""Entry page of ``cl-suite app``: page config and navigation between the Leaderboard, Run and Compare pages."""

from pathlib import Path

import streamlit as st

HERE = Path(__file__).resolve().parent


def main() -> None:
    st.set_page_config(page_title="cl-suite leaderboard", layout="wide")
    pages = [
        st.Page(HERE / "pages" / "leaderboard.py", title="Leaderboard", default=True),
        st.Page(HERE / "pages" / "run.py", title="Run"),
        st.Page(HERE / "pages" / "compare.py", title="Compare"),
    ]
    st.navigation(pages).run()


main()
