# The two commands: `make run` (the product, with demo data) and `make test` (every check).
PYTHON ?= python3.11
VENV ?= .venv
PORT ?= 8000
PYTEST_ARGS ?= -n auto
BIN := $(VENV)/bin

.PHONY: run test install system-deps demo lint typecheck check-deploy clean

system-deps:
	./scripts/system-deps.sh

$(VENV)/.installed: pyproject.toml
	./scripts/system-deps.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# Local development settings; never used in production (which sets real environment variables).
.env:
	printf 'DEBUG=1\n' > .env

demo: system-deps install .env
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py load_demo

run: demo
	@echo "Starting web, worker and beat on http://127.0.0.1:$(PORT)/ (Ctrl-C stops all three)"
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/honcho start -f Procfile.dev -p $(PORT)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	DEBUG=1 $(BIN)/mypy aggregator providers billing

# `check --deploy` under production-like settings: DEBUG off, real-looking secrets from the environment.
check-deploy: install
	DEBUG=0 ALLOWED_HOSTS=billing.example.com \
	SECRET_KEY="$$($(BIN)/python -c 'import secrets; print(secrets.token_urlsafe(60))')" \
	CREDENTIALS_KEYS="$$($(BIN)/python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')" \
	$(BIN)/python manage.py check --deploy --fail-level WARNING

test: system-deps lint typecheck check-deploy
	DEBUG=1 $(BIN)/python manage.py makemigrations --check --dry-run
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) var .env
