"""Research scripts (studies beside the benchmark suites); see docs/experiments.md. Run each as python -m experiments.NAME."""
