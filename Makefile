# The two commands of the quick start: `make run` and `make test`.
.PHONY: run test setup screenshots bench-launch bench-scale bench-logon-storm

run:
	scripts/run.sh

test:
	scripts/test.sh

# The operator's guide's screenshots (docs/screenshots/), taken by the browser tests.
screenshots:
	scripts/screenshots.sh

# Install everything and start the services, without starting the portal.
setup:
	scripts/install-deps.sh
	scripts/start-services.sh

bench-launch:
	scripts/install-deps.sh && scripts/start-services.sh && .venv/bin/python bench/launch.py

# The broker at the size of a large site (issue 10): libvirt test-driver hosts, PostgreSQL.
bench-scale:
	scripts/install-deps.sh --test && scripts/start-services.sh --postgres && .venv/bin/python bench/scale.py

# A logon storm through the real portal (issue 11): 1,000 directory users within 60 s, each to
# its desktop's console; cheap RFB desktops on libvirt test-driver hosts, PostgreSQL, slapd.
bench-logon-storm:
	scripts/install-deps.sh --test && scripts/start-services.sh --postgres && .venv/bin/python bench/logon_storm.py --users 1000 --within 60
