# Everything runs from the project's own virtual environments (emulators/install.sh builds them).
PY := .venv/bin/python
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: install services up down status seed refresh etl migrate test test-fast test-faults test-migration lint typecheck bench bench-serving bench-ingest bench-refresh bench-offline bench-grpc bench-migration bench-feast bench-coldstart wrk h2load proto package clean

install:  ## build .venv and the emulators' virtual environments
	bash emulators/install.sh

services: install  ## PostgreSQL ready for change data capture: wal2json installed and allowed, wal_level = logical (idempotent)
	$(PY) emulators/postgres_setup.py

up: install  ## bring the local stack up with data and print where each part listens (runs the services setup itself)
	$(PY) emulators/stack.py up

down:  ## stop what `make up` started
	$(PY) emulators/stack.py down

status:
	$(PY) emulators/stack.py status

seed: install  ## load USERS synthetic users (default 1,000,000) into the stack's database
	. .local/stack.env 2>/dev/null; $(PY) -m feature_store.cli.migrate && \
	  $(PY) -m feature_store.cli.generate seed --users $${USERS:-1000000} --seed $${SEED:-42}

refresh: install  ## refresh the stack's online store: MODE=full (default) | incremental | stats, ARGS for fs-refresh
	. .local/stack.env 2>/dev/null; $(PY) -m feature_store.cli.refresh $${MODE:-full} $${ARGS:-}

etl: install  ## run workflows/etl.yaml once against the `make up` stack (DATE=YYYY-MM-DD, RUN_ID=... to resume)
	$(PY) -c 'import json, sys; f = json.load(open(".local/stack.json"))["functions"]; a = {"run_etl_url": f["run_etl"], "refresh_cache_url": f["refresh_cache"], "auth": "none"}; a.update({k: v for k, v in (("date", sys.argv[1]), ("run_id", sys.argv[2])) if v}); json.dump(a, open(".local/etl-args.json", "w"))' "$${DATE:-}" "$${RUN_ID:-}"
	.local/venvs/wf/bin/workflows-emulator --source workflows/etl.yaml --loglevel WARNING run --data .local/etl-args.json

migrate: install  ## run workflows/migration.yaml against the `make up` stack (ACTION=migrate|cutover|rollback, RUN_ID, PERCENTS=1,10,50,100, HOLD_S, CUTOVER=yes|no, TO_PERCENT)
	$(PY) -c 'import json, os; f = json.load(open(".local/stack.json"))["functions"]; e = os.environ.get; a = {"run_migration_url": f["run_migration"], "auth": "none", "action": e("ACTION") or "migrate", "cutover": e("CUTOVER") or "yes"}; a.update({k: v for k, v in (("run_id", e("RUN_ID")),) if v}); a.update({k: float(v) for k, v in (("hold_s", e("HOLD_S")), ("to_percent", e("TO_PERCENT"))) if v}); a.update({"percents": [float(p) for p in e("PERCENTS").split(",") if p]} if e("PERCENTS") is not None else {}); json.dump(a, open(".local/migration-args.json", "w"))'
	.local/venvs/wf/bin/workflows-emulator --source workflows/migration.yaml --loglevel WARNING run --data .local/migration-args.json

test: install services wrk  ## the whole suite against real PostgreSQL, Redis and the emulators, then the fault suite
	$(PY) -m pytest -q -m "not faults" --durations=15 --cov --cov-report=term --cov-fail-under=90
	FS_SERVING_MODE=threaded $(PY) -m pytest -q tests/functions/test_read_features.py tests/functions/test_access.py \
		tests/functions/test_read_undecodable.py tests/audit/test_audited_reads.py
	FS_CDC_SERVING_MODE=threaded $(PY) -m pytest -q tests/functions/test_ingest_changes.py tests/e2e/test_cdc_e2e.py
	$(PY) -m pytest -q -m faults --durations=10 tests/faults

test-fast:
	$(PY) -m pytest -q -m "not slow and not faults"

test-faults: install wrk  ## only the fault suite: outages under load on private PostgreSQL and Redis servers (~3 min)
	$(PY) -m pytest -q -m faults --durations=10 tests/faults

test-migration: install  ## the migration's suite (part of `make test` too): two real databases, the functions, the workflow
	$(PY) -m pytest -q tests/migration tests/infra/test_migration_terraform.py

lint:
	$(PY) -m ruff check shared functions tests emulators bench .ci
	$(PY) -m mypy

bench: bench-serving bench-grpc bench-ingest bench-refresh bench-offline bench-migration bench-feast bench-coldstart

bench-serving: install wrk  ## read functions against a no-op floor: p50/p95/p99 and req/s at concurrency 1, 10, 50
	$(PY) bench/serving.py

bench-ingest: install wrk  ## CDC: events/s through one ingest_changes instance, commit-to-servable lag
	$(PY) bench/ingest.py

bench-feast: install wrk  ## Feast (own venv, built on first run) against ours and the no-op floor in one run: reads and materialize of 100K users
	$(PY) bench/feast/compare.py

bench-coldstart: install  ## import plus first answer of each function in a fresh functions-framework process (BigQuery emulator for the changelog)
	$(PY) bench/coldstart.py --bigquery

bench-grpc: install wrk h2load  ## gRPC against REST in one run (h2load), cached single reads and batches of 100; client overhead
	$(PY) bench/grpc_serving.py

h2load:  ## the HTTP/2 load generator of the gRPC benchmark (Debian's nghttp2-client)
	command -v h2load >/dev/null || { apt-get update -qq && apt-get install -y -qq nghttp2-client; }

proto:  ## regenerate feature_store_client/v1/feature_store_pb2.py(i) from shared/proto (committed; tests check it is current)
	bash .ci/setup_infra_venvs.sh >/dev/null
	.local/venvs/protoc/bin/python .ci/generate_proto.py

wrk:  ## the HTTP load generator of the serving and ingest benchmarks
	command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }

bench-refresh: install  ## bulk refresh PostgreSQL -> Redis: users/s, peak RSS at 100K and 1M users, Redis bytes/user
	$(PY) bench/refresh.py

bench-offline: install  ## ETL of fs_bench (1M users) into the BigQuery emulator, snapshot, 100K-row training set
	$(PY) bench/offline.py --max-emulator-gb $${MAX_EMULATOR_GB:-18}

bench-migration: install  ## the migration of fs_bench (1M users): backfill + verification rows/s, replication lag under 200 writes/s, reads through the shift
	$(PY) bench/migration.py $${ARGS:-}

package: install  ## build/functions/<name>/ and its .zip for every function (self-contained deploy folders)
	$(PY) .ci/package_functions.py --zip

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache
