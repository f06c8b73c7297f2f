"""A toy objective outside brainscale (tests/test_objective_plugins.py installs it as a plug-in)."""
