# The single entry point for demo, tests, lint, protos and benchmarks; CI calls `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint protos check-protos bench bench-network bench-analyses bench-glm bench-cox bench-release bench-rows bench-refusals bench-spark clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/fedtre demo

# The tests also run Spark SQL (the `spark` extra: pyspark, some 450 MB, so not in dev).
SPARK_STAMP := $(VENV)/.installed-spark

$(SPARK_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,spark]'
	touch $(SPARK_STAMP)

test: $(SPARK_STAMP)
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

protos: $(STAMP)
	$(BIN)/python scripts/gen_protos.py

clean:
	rm -rf $(VENV) .pytest_cache

# Benchmarks run on demand, never in CI; each prints a table and writes bench/results/*.json
# (figures and commands: bench/README.md). pandas reads Parquet through pyarrow, a bench-only need.
BENCH_NICE ?= nice -n 10

bench: bench-network bench-analyses bench-glm bench-cox bench-release bench-rows bench-refusals

# One node's analyses on Spark SQL (local[2]) against DuckDB on one 1 M-row Parquet file.
bench-spark: $(SPARK_STAMP)
	$(BENCH_NICE) $(BIN)/python bench/spark.py --rows 1000000

# Latency, throughput (SQLite and the PostgreSQL on 127.0.0.1:5432), fan-out, rows curve.
bench-network: $(STAMP)
	$(BIN)/python bench/network.py all

bench-analyses: $(STAMP)
	$(BIN)/pip install --quiet pyarrow
	$(BENCH_NICE) $(BIN)/python bench/analyses.py --rows 10000000

bench-glm: $(STAMP)
	$(BENCH_NICE) $(BIN)/python bench/glm.py --rows 1000000 --profile

# One node's cox round (SQLite, and a CSV through DuckDB) against lifelines in memory.
bench-cox: $(STAMP)
	$(BENCH_NICE) $(BIN)/python bench/cox.py --rows 200000

# The release stage at 10 M rows per node: cell keys, dominance and the differencing
# sketch in DuckDB, against DuckDB's own aggregate in the same run.
bench-release: $(STAMP)
	$(BENCH_NICE) $(BIN)/python bench/release.py --rows 10000000

# Job time through the network against the engine's own query, 0.1 / 1 / 10 M rows per
# node on Parquet (DuckDB), then PostgreSQL at the small sizes; the GLM against statsmodels.
bench-rows: $(STAMP)
	$(BENCH_NICE) $(BIN)/python bench/rows.py --rows 100000,1000000,10000000
	$(BENCH_NICE) $(BIN)/python bench/rows.py --rows 100000,1000000 --source postgres --out bench/results/rows-postgres.json
	$(BENCH_NICE) $(BIN)/python bench/glm.py --rows 1000000 --source parquet --tol 1e-8

# A legitimate call's p50, quiet and under a flood of refused calls (loopback, bounded).
bench-refusals: $(STAMP)
	$(BIN)/python bench/refusal_flood.py --seconds 10 --flooders 2 --max-calls 5000
