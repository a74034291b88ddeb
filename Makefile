.PHONY: setup test test-all bench up
export HF_HUB_OFFLINE=1
export PYTHONUNBUFFERED=1

setup:
	./setup.sh

test:
	.venv/bin/python -m pytest -q

test-all:
	.venv/bin/python -m pytest -q -m "not gpu"

bench:
	.venv/bin/python bench/engine.py
	.venv/bin/python bench/gateway.py
	.venv/bin/python bench/faults.py

up:
	.venv/bin/omniserve up
