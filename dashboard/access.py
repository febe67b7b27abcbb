"""Who may see the dashboard: active staff who may read the whole site's hosts and pools in the
admin (a superuser, an auditor, or staff with the view or change permission of both). An
operator scoped to some pools sees those through the API, not the site-wide figures."""

from api.scoping import reads_all
from broker.models import Host, Pool


def may_see_dashboard(user) -> bool:
    return bool(user.is_authenticated and user.is_active and user.is_staff
                and reads_all(user, Host) and reads_all(user, Pool))
