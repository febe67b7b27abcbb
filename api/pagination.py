from rest_framework.pagination import LimitOffsetPagination


class ApiPagination(LimitOffsetPagination):
    """?limit=&offset= ; 50 rows a page unless asked, never more than 500."""

    default_limit = 50
    max_limit = 500
