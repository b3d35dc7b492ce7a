# The two commands a newcomer needs: `make dev` and `make test`.
.PHONY: dev test install lint bench-smoke

install:
	@scripts/bootstrap

dev: install
	.venv/bin/papo dev

test: install
	scripts/system-deps
	scripts/test

lint: install
	.venv/bin/ruff check papo tests bench && .venv/bin/ruff format --check papo tests bench && .venv/bin/mypy
