from broker.models import Desktop, DesktopState


def running_desktop_on(server, *, pool, user, host, name: str):
    """A desktop row in state running whose console port is `server` (no VM behind it)."""
    return Desktop.objects.create(pool=pool, user=user, host=host, image_version=pool.image.current_version(),
                                  name=name, state=DesktopState.RUNNING, vnc_port=server.port)
