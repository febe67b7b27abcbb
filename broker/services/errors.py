class LaunchRefused(Exception):
    """The user cannot launch this pool now; the message tells them what to do."""
