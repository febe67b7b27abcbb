# The two commands of the quick start: `make run` and `make test`.
.PHONY: run test setup bench-launch bench-scale

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

# The broker at the size of a large site (issue 10): libvirt test-driver hosts, PostgreSQL.
bench-scale:
	scripts/install-deps.sh --test && scripts/start-services.sh --postgres && .venv/bin/python bench/scale.py
