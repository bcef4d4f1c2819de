# The two promises to a new user: `make demo` and `make test`.
PYTHON ?= python3
# Most tests wait on real daemons, sockets and settle times rather than the CPU: four workers keep
# the whole suite well under five minutes even on two cores. TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 4
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test test-deps bench clean

$(BIN)/ingestd: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

demo: $(BIN)/ingestd
	$(BIN)/ingestd demo

# Debian packages some tests drive for real (systemd-analyze, chromium); installed when we are root.
test-deps:
	@missing=$$(for p in $$(grep -v '^#' tests/debian-packages.txt); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "installing Debian packages for the tests: $$missing"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
		else \
			echo "note: not root, so these tests will be skipped: $$missing"; \
		fi; \
	fi

test: $(BIN)/ingestd test-deps
	$(BIN)/python -m pytest -n $(TEST_WORKERS)

bench: $(BIN)/ingestd
	$(BIN)/python -m bench all

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
