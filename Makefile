# Two commands: `make demo` (set up + run the main job on embedded defaults) and `make test`
# (set up + start services + lint + type-check + tests). Both are idempotent.
.PHONY: demo test setup services-up services-down lint bench

setup:
	bash scripts/setup-venv.sh

demo:
	bash scripts/demo.sh

test:
	bash scripts/test.sh

services-up:
	scripts/services up

services-down:
	scripts/services down

lint: setup
	.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy
