# DashOffice: the commands a developer needs. `make help` lists them.

CARGO ?= cargo

.PHONY: help run test lint bench fuzz-api fmt build release deb test-packaging clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

run: ## Build and run dashd on the embedded default (data in ./dashd-data, http://127.0.0.1:3009)
	$(CARGO) run -p dashd --

test: ## Run the whole test suite: Rust (PostgreSQL suite too when DASHD_TEST_DATABASE_URL is set), the bridges (Node 20), the container files, and as root the Debian package
	@if [ -z "$$DASHD_TEST_DATABASE_URL" ]; then \
	  if [ "$$CI" = "true" ]; then \
	    echo "error: CI=true needs DASHD_TEST_DATABASE_URL (a PostgreSQL server URL); .ci/run sets it" >&2; exit 1; \
	  fi; \
	  echo "notice: DASHD_TEST_DATABASE_URL is not set: the PostgreSQL suite is skipped (its tests show as ignored)."; \
	  echo "        e.g. DASHD_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres make test"; \
	fi
	$(CARGO) test --workspace --locked
	@command -v node >/dev/null || { echo "error: Node 20 is needed for the bridge tests (bridges/)" >&2; exit 1; }
	for bridge in bridges/common bridges/baileys-http bridges/venom-http bridges/wwebjs-http; do \
	  (cd $$bridge && npm ci --no-audit --no-fund --loglevel=error && npm test) || exit 1; \
	done
	packaging/docker/check
	@if [ "$$(id -u)" = 0 ]; then \
	  $(MAKE) --no-print-directory test-packaging; \
	elif [ "$$CI" = "true" ] && sudo -n true 2>/dev/null; then \
	  $(MAKE) --no-print-directory deb && sudo -n packaging/tests/vps-walkthrough; \
	elif [ "$$CI" = "true" ]; then \
	  echo "error: CI=true needs root (or sudo without a password) for the package tests (debootstrap, chroot)" >&2; exit 1; \
	else \
	  echo "notice: not root: the package tests are skipped (sudo make test-packaging runs them)"; \
	fi

lint: ## What CI checks: formatting and clippy with warnings as errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

bench: ## Benchmarks: the message pipeline (writes docs/performance.md), start-up and size (docs/startup.md), trigger matching
	$(CARGO) bench -p dashd --bench pipeline
	$(CARGO) bench -p dashd --bench startup
	$(CARGO) bench -p dash-core --bench triggers

fuzz-api: ## Schema-driven fuzzing of the REST API (schemathesis from PyPI; FUZZ_EXAMPLES per operation, default 50)
	scripts/fuzz-api

fmt: ## Format the code
	$(CARGO) fmt --all

build: ## Debug build of dashd and dashctl
	$(CARGO) build --workspace --locked

release: ## Optimised binaries in target/release/
	$(CARGO) build --workspace --release --locked

deb: release ## Debian package in target/debian/ (needs dpkg-dev): dashd, dashctl, units, man pages
	packaging/debian/build-deb

test-packaging: deb ## As root: lintian, install in a debootstrap Debian 12 root, the VPS walkthrough, unit checks
	packaging/tests/vps-walkthrough

clean: ## Remove build output (not ./dashd-data)
	$(CARGO) clean
