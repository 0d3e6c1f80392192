"""Built-in strategy plugins, one module per strategy; registered through the cl_suite.strategies entry points."""
