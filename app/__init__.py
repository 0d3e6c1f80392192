"""The Streamlit leaderboard (``cl-suite app``): an entry page, three pages, and cached access to the results store.

Data only comes through cl_suite.results / cl_suite.leaderboard / cl_suite.compare (so the CLI and the app show the
same numbers), and only from the results root the app was started with (``CL_SUITE_RESULTS``).
"""
