"""Built-in scenario plugins, one module per family; registered through the cl_suite.scenarios entry points."""
