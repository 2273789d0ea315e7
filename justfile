# a3s_gateway task runner. `just` lists the recipes; every recipe calls a tool configured in
# pyproject.toml. Run them through ./dev (which sets .venv up as far as the recipe needs) or with
# .venv active. ./dev runs demo, run and validate itself (python -m a3s_gateway, in the caller's
# directory), without just.

set shell := ["bash", "-euo", "pipefail", "-c"]

py := if path_exists(".venv/bin/python") == "true" { ".venv/bin/python" } else { "python3" }

# List the recipes
default:
    @{{just_executable()}} --justfile {{quote(justfile())}} --list

# Format the code in place
fmt:
    {{py}} -m ruff format .
    {{py}} -m ruff check --fix --quiet .

# Lint and check formatting (no changes)
lint:
    {{py}} -m ruff check .
    {{py}} -m ruff format --check .

# Type-check src/ and tests/ (incl. tests/typing) with mypy --strict
type:
    {{py}} -m mypy

# Run the whole test suite
test *args:
    {{py}} -m pytest -q {{args}}

# Property tests only, in a Hypothesis profile: dev (fast), ci, nightly (many examples)
prop profile="dev" *args:
    A3S_HYPOTHESIS_PROFILE={{quote(profile)}} {{py}} -m pytest -q tests/property {{ if profile == "nightly" { "-o faulthandler_timeout=0" } else { "" } }} {{args}}

# The suite under coverage (CLI, worker and child subprocesses too); fails under fail_under
cov *args:
    #!/usr/bin/env bash
    set -euo pipefail
    # The data files (one per measured process) live in a temporary directory, never the tree.
    data=$(mktemp -d "${TMPDIR:-/tmp}/a3s-coverage.XXXXXX")
    trap 'rm -rf "$data"' EXIT
    export COVERAGE_FILE="$data/.coverage"
    # The report comes even when a test fails; the exit status is pytest's, else the report's.
    tests=0
    # Two pytest-xdist workers (measured like every other subprocess); `-n 0` in args runs
    # the suite in one process.
    {{py}} -m coverage run -m pytest -q -n 2 {{args}} || tests=$?
    {{py}} -m coverage combine --quiet || true
    report=0
    {{py}} -m coverage report || report=$?
    exit $((tests ? tests : report))

# Start the local demo: echo and SSE/WebSocket backends behind the gateway (--port P)
demo *args:
    {{py}} -m a3s_gateway demo {{args}}

# Benchmarks: micro and memory, then HTTP load vs NGINX and Python peers (args: run_bench.py's)
bench *args:
    bash bench/harness/install-debian-packages.sh
    {{py}} -m bench.micro --json bench/results/micro-latest.json {{ if args =~ '--quick|--ab' { "--quick" } else { "" } }}
    {{py}} -m bench.run_bench {{args}}

# Regenerate the schema-derived field reference in docs/configuration.md
docs:
    @{{py}} -c 'import pathlib; from a3s_gateway.config.reference import update_document as u; p = pathlib.Path("docs/configuration.md"); p.write_text(u(p.read_text()))'

# Everything CI runs: lint, format check, types, the whole suite under coverage (fail_under)
check: lint type cov

# Run the gateway on a config file
run config="examples/gateway.hcl" *args:
    {{py}} -m a3s_gateway run {{config}} {{args}}

# Validate a config file
validate config="examples/gateway.hcl" *args:
    {{py}} -m a3s_gateway validate {{config}} {{args}}

alias t := test
alias c := check
