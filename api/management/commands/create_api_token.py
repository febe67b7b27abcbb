from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from rest_framework.authtoken.models import Token


class Command(BaseCommand):
    help = ("Make USER's API token and print it (once: only its owner should keep it). "
            "--replace makes a new one, ending the old.")

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--replace", action="store_true", help="Replace the user's existing token.")

    def handle(self, *args, username, replace, **options):
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"no user named {username!r}")
        if not user.is_active:
            raise CommandError(f"{username} is not active")
        existing = Token.objects.filter(user=user).first()
        if existing and not replace:
            raise CommandError(f"{username} has a token already (made {existing.created:%Y-%m-%d}); "
                               "use --replace to make a new one")
        if existing:
            existing.delete()
        token = Token.objects.create(user=user)
        self.stdout.write(token.key)
