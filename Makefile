.PHONY: bench test

# Every benchmark, about 3 minutes on 2 cores; see docs/benchmarks.md.
bench:
	python bench/run_all.py --output bench/results.md

test:
	python -m pytest -q
