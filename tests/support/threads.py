from django.db import connection


def closing_connection(action):
    """Run `action` in a worker thread and close that thread's database connection after, so no
    connection outlives the test (PostgreSQL refuses to drop a test database still in use)."""

    def run():
        try:
            return action()
        finally:
            connection.close()

    return run
