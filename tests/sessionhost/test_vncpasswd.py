import os
import stat
import subprocess

import pytest

from broker.sessionhost.vncpasswd import obfuscate_vnc_password, write_vnc_password_file


@pytest.mark.parametrize("password", ["first-pw", "a", "123456", "exactly8", "longer-than-eight", "P@ss w0rd!"])
def test_it_writes_what_vncpasswd_writes(password, tmp_path):
    expected = subprocess.run(["vncpasswd", "-f"], input=password.encode(), capture_output=True, timeout=10,
                              check=True).stdout
    path = tmp_path / "passwd"

    write_vnc_password_file(str(path), password, uid=os.getuid(), gid=os.getgid())

    assert path.read_bytes() == expected == obfuscate_vnc_password(password)


def test_the_file_is_private_to_its_owner_and_replaced_atomically(tmp_path, make_account):
    account = make_account("frank")
    os.chown(tmp_path, account.uid, account.gid)
    path = tmp_path / "passwd"
    (tmp_path / "target").write_text("not yours")
    os.symlink(tmp_path / "target", path)  # what a hostile account could leave in its directory

    write_vnc_password_file(str(path), "secret12", uid=account.uid, gid=account.gid)

    info = os.lstat(path)
    assert stat.S_ISREG(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600
    assert (info.st_uid, info.st_gid) == (account.uid, account.gid)
    assert (tmp_path / "target").read_text() == "not yours"
    assert sorted(os.listdir(tmp_path)) == ["passwd", "target"]  # no temporary file left


@pytest.mark.parametrize("password", ["", "pässword", "two\nlines"])
def test_it_rejects_passwords_vnc_clients_would_encode_differently(password, tmp_path):
    with pytest.raises(ValueError):
        write_vnc_password_file(str(tmp_path / "passwd"), password, uid=0, gid=0)
