"""Run by a session's supervisor (as root, see sessions._SUPERVISOR_SCRIPT) once the session's
main program has exited: end the rest of the session exactly as a log-off would.

    python -m broker.sessionhost.session_exit STATE_DIR SESSION_NAME INSTANCE

INSTANCE guards against ending a newer session that reuses the name after the agent ended
this one.
"""

import sys

from broker.sessionhost.errors import SessionHostError
from broker.sessionhost.sessions import end_session_instance


def main(argv: list[str]) -> int:
    state_dir, session_name, instance = argv
    try:
        end_session_instance(session_name=session_name, instance=instance, state_dir=state_dir)
    except SessionHostError as exc:
        print(f"ending session {session_name}: {exc}", file=sys.stderr)  # lands in session.log
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
