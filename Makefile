# The two commands: `make run` (the product, with demo data) and `make test` (every check).
PYTHON ?= python3.11
VENV ?= .venv
PORT ?= 8000
PYTEST_ARGS ?= -n auto
BIN := $(VENV)/bin

.PHONY: run test install system-deps demo demo-env lint typecheck check-deploy clean

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

# The offline demo pays through localstripe and the PayPal sandbox on loopback, with obviously fake keys (added once).
demo-env: .env
	@grep -q '^STRIPE_API_BASE=' .env || printf '%s\n' STRIPE_SECRET_KEY=sk_test_FAKE_demo \
	  STRIPE_PUBLISHABLE_KEY=pk_test_FAKE_demo STRIPE_WEBHOOK_SECRET=whsec_FAKE_demo \
	  STRIPE_API_BASE=http://127.0.0.1:8420 STRIPE_JS_URL=http://127.0.0.1:8420/js.stripe.com/v3/ >> .env
	@grep -q '^PAYPAL_API_BASE=' .env || printf '%s\n' PAYPAL_CLIENT_ID=sandbox-paypal-client-FAKE-0001 \
	  PAYPAL_CLIENT_SECRET=sandbox-paypal-secret-FAKE-0001 PAYPAL_WEBHOOK_ID=WH-SANDBOX-FAKE-0001 \
	  PAYPAL_API_BASE=http://127.0.0.1:8606 PAYPAL_WEBHOOK_CERT_HOSTS=127.0.0.1 >> .env

demo: system-deps install demo-env
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py load_demo

run: demo
	@echo "Starting web, worker and beat on http://127.0.0.1:$(PORT)/ (Ctrl-C stops all three)"
	SITE_URL=http://127.0.0.1:$(PORT) PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/honcho start -f Procfile.dev -p $(PORT)

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
	STRIPE_SECRET_KEY=sk_test_FAKE_deploy_check STRIPE_PUBLISHABLE_KEY=pk_test_FAKE_deploy_check \
	STRIPE_WEBHOOK_SECRET=whsec_FAKE_deploy_check PAYPAL_CLIENT_ID=FAKE-deploy-check \
	PAYPAL_CLIENT_SECRET=FAKE-deploy-check PAYPAL_WEBHOOK_ID=FAKE-deploy-check \
	$(BIN)/python manage.py check --deploy --fail-level WARNING

test: system-deps lint typecheck check-deploy
	DEBUG=1 $(BIN)/python manage.py makemigrations --check --dry-run
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) var .env
