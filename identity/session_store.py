"""Login sessions: Django's database sessions (SESSION_ENGINE), with two fewer trips per login.

Django's database store, at a login:
- looks up each new random key before it uses it (a SELECT), though the row's unique key
  refuses a duplicate anyway and `create()` then draws another;
- writes the session twice: `login()` cycles the key, which INSERTs the session as it is
  (empty for a visitor who had none), then stores the user in it, which UPDATEs that row at the
  end of the response.

Here a new key is drawn without the lookup, and cycling the key of a session that was never
stored only draws the new key: the one INSERT at the end of the response stores the session
with the user in it, and still refuses (then redraws) a key that exists. A session that was
stored is cycled as Django does (a new row, the old one deleted): that is the protection
against session fixation, and it is unchanged.
"""

from django.contrib.sessions.backends import db
from django.contrib.sessions.backends.base import VALID_KEY_CHARS, CreateError
from django.utils.crypto import get_random_string


class SessionStore(db.SessionStore):
    _not_stored_yet = False

    def _get_new_session_key(self):
        # The INSERT with must_create refuses an existing key (CreateError); callers redraw.
        return get_random_string(32, VALID_KEY_CHARS)

    def cycle_key(self):
        if self.session_key is None:
            # Nothing was ever stored under any key: there is no old row to replace.
            self._session_key = self._get_new_session_key()
            self._not_stored_yet = True
            self.modified = True
            return
        super().cycle_key()

    def save(self, must_create=False):
        if not self._not_stored_yet:
            return super().save(must_create=must_create)
        while True:
            try:
                super().save(must_create=True)
            except CreateError:
                self._session_key = self._get_new_session_key()  # drawn twice: as create() does
                continue
            self._not_stored_yet = False
            return
