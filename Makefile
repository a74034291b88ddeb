.PHONY: setup test test-all typecheck bench up
export HF_HUB_OFFLINE=1
export PYTHONUNBUFFERED=1

setup:
	./setup.sh

typecheck:
	.venv/bin/python -m mypy

test: typecheck
	.venv/bin/python -m pytest -q

test-all: typecheck
	.venv/bin/python -m pytest -q -m "not gpu"

bench:
	.venv/bin/python bench/engine.py
	.venv/bin/python bench/gateway.py
	.venv/bin/python bench/scale.py
	.venv/bin/python bench/faults.py
	.venv/bin/python bench/realtime.py
	.venv/bin/python bench/turns.py

up:
	.venv/bin/omniserve up
