"""Shared by the hostile-input tests: hypothesis settings that keep CI reproducible and fast."""

from hypothesis import HealthCheck, settings

# Derandomized (the same examples on every run, so CI failures reproduce) and no example
# database (nothing written into the worktree); small example counts: the whole directory
# must stay well under a minute on two busy cores.
def hostile(max_examples: int):
    return settings(max_examples=max_examples, derandomize=True, database=None, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.filter_too_much])
