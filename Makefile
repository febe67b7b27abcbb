# The two commands of the quick start: `make run` and `make test`.
.PHONY: run test setup bench-launch

run:
	scripts/run.sh

test:
	scripts/test.sh

# Install everything and start the services, without starting the portal.
setup:
	scripts/install-deps.sh
	scripts/start-services.sh

bench-launch:
	scripts/install-deps.sh && scripts/start-services.sh && .venv/bin/python bench/launch.py
