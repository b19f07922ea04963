"""The nubo command-line client against real daemons and real tiny guests.

Every test drives the nubo binary (cloud.cli) the way a person or a script
would, and checks what they would: exit codes, tables, --json, messages."""

import hashlib
import json
import os
import re
import select
import subprocess
import time

import pytest

from conftest import BUILD, SAN_ENV, SAN_RE, ConsoleSession, wait_until


def table(text):
    """Rows of a nubo table as dicts keyed by the header's columns."""
    lines = [l for l in text.splitlines() if l.strip()]
    head = re.split(r"\s{2,}", lines[0].strip())
    rows = []
    for line in lines[1:]:
        cells = re.split(r"\s{2,}", line.strip())
        assert len(cells) == len(head), f"ragged row {line!r} under {lines[0]!r}"
        rows.append(dict(zip(head, cells)))
    return rows


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def test_version_and_exit_codes(cloud):
    p = cloud.cli("version")
    assert p.stdout.splitlines()[0] == "nubo 0.1.0"
    assert f"nubod 0.1.0 at {cloud.endpoint}" in p.stdout

    p = cloud.cli("show", "i-0123456789abcdef0", check=False)
    assert p.returncode == 4
    assert p.stderr.startswith("error: NotFound: ")

    p = cloud.cli("frobnicate", check=False)
    assert p.returncode == 2 and "unknown command 'frobnicate'" in p.stderr

    p = cloud.cli("run", "tiny", check=False)  # no --type
    assert p.returncode == 2 and "--type is required" in p.stderr and "usage: nubo run" in p.stderr

    p = cloud.cli("--token", "not-a-token", "ls", check=False)
    assert p.returncode == 1 and "error: AuthFailure:" in p.stderr

    dead = "http://127.0.0.1:1"
    p = cloud.cli("--endpoint", dead, "ls", check=False)
    assert p.returncode == 3 and dead in p.stderr

    p = cloud.cli("ls", "--help")
    assert p.stdout.startswith("usage: nubo ls") and "--all" in p.stdout


def test_types(cloud):
    p = cloud.cli("type", "set", "x1.cli", "--vcpus", "1", "--memory", "96", "--disk", "1",
                  "--net", "50", "--price", "0.125")
    assert table(p.stdout) == [{"NAME": "x1.cli", "VCPUS": "1", "MEMORY": "96 MiB",
                                "DISK": "1 GiB", "NET": "50 Mbps", "PRICE": "0.125/h"}]
    rows = {r["NAME"]: r for r in table(cloud.cli("type", "ls").stdout)}
    assert rows["x1.cli"]["MEMORY"] == "96 MiB" and "t1.nano" in rows
    types = json.loads(cloud.cli("--json", "type", "ls").stdout)["types"]
    mine = [t for t in types if t["name"] == "x1.cli"][0]
    assert mine["memory_mb"] == 96 and mine["price_per_hour"] == pytest.approx(0.125)

    p = cloud.cli("type", "set", "x1.cli", "--vcpus", "0", "--memory", "96", "--disk", "1",
                  "--net", "50", "--price", "1", check=False)
    assert p.returncode == 2 and "--vcpus" in p.stderr

    assert cloud.cli("type", "rm", "x1.cli").stdout == "x1.cli  deleted\n"
    p = cloud.cli("type", "rm", "x1.cli", check=False)
    assert p.returncode == 4


def test_hosts(cloud):
    rows = table(cloud.cli("host", "ls").stdout)
    me = [r for r in rows if r["NAME"] == cloud.name]
    assert len(me) == 1
    assert me[0]["STATE"] == "up" and me[0]["ACCEL"] == "tcg"
    assert re.fullmatch(r"\d+/\d+", me[0]["VCPUS"])
    assert re.fullmatch(r"\d+s|\d+m", me[0]["LAST-SEEN"])


def test_image_import_show_rm(cloud, tiny_image, tmp_path):
    # a raw disk (the controller converts it) plus the tiny kernel and initrd
    raw = tmp_path / "disk.raw"
    with open(raw, "wb") as f:
        f.truncate(8 << 20)
        f.write(b"nubo-cli-test")
    p = cloud.cli("image", "import", str(raw), "--name", "cli-raw", "--os", "busybox",
                  "--release", "9", "--kernel", str(tiny_image.vmlinuz),
                  "--initrd", str(tiny_image.initrd), "--cmdline", "console=ttyS0")
    rows = table(p.stdout)
    assert len(rows) == 1 and rows[0]["NAME"] == "cli-raw"
    assert rows[0]["BOOT"] == "kernel" and rows[0]["SIZE"] == "8 MiB"
    assert rows[0]["ID"].startswith("ami-")
    # not a terminal: no progress bar on stderr
    assert "\r" not in p.stderr and "[#" not in p.stderr

    im = json.loads(cloud.cli("--json", "image", "show", "cli-raw").stdout)
    assert im["format"] == "qcow2" and im["size"] == 8 << 20
    assert im["kernel_sha256"] == sha256(tiny_image.vmlinuz)
    assert im["initrd_sha256"] == sha256(tiny_image.initrd)
    assert im["cmdline"] == "console=ttyS0" and im["os"] == "busybox"
    assert im["id"] in cloud.cli("image", "ls").stdout

    # the name is taken: refused before anything is uploaded
    p = cloud.cli("image", "import", str(raw), "--name", "cli-raw", check=False)
    assert p.returncode == 1 and "Conflict" in p.stderr

    p = cloud.cli("image", "import", str(tmp_path / "missing.qcow2"), "--name", "x", check=False)
    assert p.returncode == 2 and "missing.qcow2" in p.stderr

    assert cloud.cli("image", "rm", im["id"]).returncode == 0
    assert cloud.cli("image", "show", "cli-raw", check=False).returncode == 4


def test_image_build_tiny(cloud):
    p = cloud.cli("image", "build", "tiny", "--name", "tiny-cli", timeout=900)
    rows = table(p.stdout)
    assert rows[0]["NAME"] == "tiny-cli" and rows[0]["BOOT"] == "kernel"
    assert rows[0]["OS"] == "busybox"
    # the builder's progress lines came through as plain lines (no terminal)
    assert re.search(r"^build: 100% ", p.stderr, re.M)
    im = json.loads(cloud.cli("--json", "image", "show", "tiny-cli").stdout)
    assert im["cmdline"] and im["kernel_sha256"] and im["initrd_sha256"]
    cloud.cli("image", "rm", "tiny-cli")


def test_run_wait_ls_show_logs(cloud):
    p = cloud.cli("run", "tiny", "--type", "t1.nano", "--count", "2", "--name", "clitest",
                  "--wait", "--timeout", "120", timeout=180)
    rows = table(p.stdout)
    assert len(rows) == 2
    assert all(r["STATE"] == "running" and r["NAME"] == "clitest" for r in rows)
    ids = [r["ID"] for r in rows]

    listed = {r["ID"]: r for r in table(cloud.cli("ls").stdout)}
    for iid in ids:
        assert listed[iid]["HOST"] == cloud.name and listed[iid]["IMAGE"] == "tiny"
        assert listed[iid]["IP"] == cloud.instance(iid)["ip"]
        assert re.fullmatch(r"\d+[smhd]", listed[iid]["AGE"])

    show = cloud.cli("show", ids[0]).stdout
    assert re.search(rf"^id\s+{ids[0]}$", show, re.M)
    assert re.search(r"^state\s+running$", show, re.M)

    # the console output, through the controller
    out = wait_until(lambda: (lambda o: o if "NUBO-READY" in o else None)(
        cloud.cli("logs", ids[0]).stdout), 90, "NUBO-READY in nubo logs", interval=0.5)
    assert f"NUBO-READY {ids[0]}" in out
    j = json.loads(cloud.cli("--json", "logs", ids[0]).stdout)
    assert j["id"] == ids[0] and "NUBO-READY" in j["output"]

    p = cloud.cli("rm", *ids)
    assert [l.split()[0] for l in p.stdout.splitlines()] == ids


def _read_until(proc, pattern, timeout):
    buf = b""
    deadline = time.monotonic() + timeout
    rx = re.compile(pattern)
    while not rx.search(buf):
        left = deadline - time.monotonic()
        assert left > 0, f"{pattern!r} not seen; got {buf[-300:]!r}"
        r, _, _ = select.select([proc.stdout], [], [], left)
        if r:
            chunk = os.read(proc.stdout.fileno(), 65536)
            assert chunk, f"nubo console ended early; got {buf[-300:]!r}"
            buf += chunk
    return buf


def test_console_piped(cloud):
    iid = cloud.run(name="clicons")["instances"][0]["id"]
    cloud.wait_ready(iid)
    env = dict(os.environ, NUBO_ENDPOINT=cloud.endpoint, NUBO_TOKEN=cloud.token, **SAN_ENV)
    proc = subprocess.Popen([str(BUILD / "src/cli/nubo"), "console", iid],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    try:
        proc.stdin.write(b"echo CLI-$((6*7))-$(cat /proc/sys/kernel/hostname)\n")
        proc.stdin.flush()
        _read_until(proc, rb"CLI-42-", 60)
        proc.stdin.close()  # stdin's end, no --linger: nubo leaves at once
        assert proc.wait(15) == 0
        assert f"Connected to {iid} (Ctrl-] to detach)" in proc.stderr.read().decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    cloud.cli("rm", iid)


def test_actions_and_terminated_listing(cloud):
    iid = cloud.run(name="cliact")["instances"][0]["id"]
    cloud.wait_state(iid, "running", 60)

    p = cloud.cli("stop", "--force", iid)
    assert p.stdout.split()[0] == iid and p.stdout.split()[1] in ("stopping", "stopped")
    cloud.wait_state(iid, "stopped", 60)
    listed = {r["ID"]: r for r in table(cloud.cli("ls").stdout)}
    assert listed[iid]["STATE"] == "stopped"  # stopped ones are listed
    p = cloud.cli("--json", "start", iid)
    assert json.loads(p.stdout)["id"] == iid
    cloud.wait_state(iid, "running", 60)

    # several ids: one unknown -> the known one is still acted on, exit 4
    p = cloud.cli("rm", iid, "i-0000000000000000f", check=False)
    assert p.returncode == 4
    assert p.stdout.split()[0] == iid
    assert "error: NotFound:" in p.stderr
    cloud.wait_state(iid, "terminated", 60)

    assert iid not in cloud.cli("ls").stdout
    gone = {r["ID"]: r for r in table(cloud.cli("ls", "--all").stdout)}
    assert gone[iid]["STATE"] == "terminated"
    assert iid in [i["id"] for i in json.loads(cloud.cli("--json", "ls", "--all").stdout)["instances"]]


# ---- accounts, access keys and requests signed with a key (SigV4) ----

def key_env(cloud, key_id=None, secret=None, **extra):
    """The environment of a person using an access key: the admin token is
    still set (a key wins over it), no AWS_* or config leaks in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "NUBO_"))}
    env.update(NUBO_ENDPOINT=cloud.endpoint, NUBO_TOKEN=cloud.token,
               NUBO_CONFIG="/nonexistent/nubo-config", **SAN_ENV)
    if key_id is not None:
        env["NUBO_ACCESS_KEY_ID"] = key_id
    if secret is not None:
        env["NUBO_SECRET_ACCESS_KEY"] = secret
    env.update(extra)
    return env


def nubo(env, *args, check=True, timeout=120):
    p = subprocess.run([str(BUILD / "src/cli/nubo"), *args], capture_output=True, text=True,
                       env=env, timeout=timeout)
    assert not SAN_RE.search(p.stderr), f"nubo {' '.join(args)}: sanitizer: {p.stderr}"
    if check and p.returncode != 0:
        raise AssertionError(f"nubo {' '.join(args)} failed ({p.returncode}): {p.stderr}")
    return p


def object_lines(text):
    """'key   value' lines of nubo's object output as a dict."""
    out = {}
    for line in text.splitlines():
        m = re.fullmatch(r"(\S+)\s{2,}(.*)", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def create_key(cloud, account, user, role):
    """A key made with the CLI as the admin; returns (id, secret)."""
    p = cloud.cli("key", "create", "--account", account, "--user", user, "--role", role)
    kv = object_lines(p.stdout)
    assert kv["account"] == account and kv["user"] == user and kv["role"] == role
    assert "will not be shown again" in p.stdout
    return kv["access_key_id"], kv["secret_access_key"]


def test_accounts_quotas_keys_as_admin(cloud):
    p = cloud.cli("account", "create", "cliacct")
    rows = table(p.stdout)
    assert len(rows) == 1 and rows[0]["NAME"] == "cliacct" and rows[0]["ID"].startswith("acct-")
    acct_id = rows[0]["ID"]
    p = cloud.cli("account", "create", "cliacct", check=False)
    assert p.returncode == 1 and "error: Conflict:" in p.stderr
    p = cloud.cli("account", "create", "bad name!", check=False)
    assert p.returncode == 1 and "error: InvalidParameterValue:" in p.stderr

    listed = {r["NAME"]: r for r in table(cloud.cli("account", "ls").stdout)}
    assert listed["cliacct"]["ID"] == acct_id and "admin" in listed
    assert re.fullmatch(r"\d+[smhd]", listed["cliacct"]["AGE"])
    js = json.loads(cloud.cli("--json", "account", "ls").stdout)["accounts"]
    assert acct_id in [a["id"] for a in js]

    # quotas: shown, then set one by one; untouched limits keep their values
    before = {r["QUOTA"]: r for r in table(cloud.cli("account", "quota", "cliacct").stdout)}
    assert set(before) == {"instances", "vcpus", "memory", "images", "addresses"}
    assert all(r["USED"] == "0" for r in before.values())
    p = cloud.cli("account", "quota", "cliacct", "--instances", "3", "--memory", "1024")
    after = {r["QUOTA"]: r for r in table(p.stdout)}
    assert after["instances"]["LIMIT"] == "3" and after["memory"]["LIMIT"] == "1 GiB"
    assert after["vcpus"]["LIMIT"] == before["vcpus"]["LIMIT"]
    q = json.loads(cloud.cli("--json", "account", "quota", "cliacct").stdout)
    assert q["account"] == "cliacct"
    assert q["limits"]["instances"] == 3 and q["limits"]["memory_mb"] == 1024
    assert q["usage"] == {"instances": 0, "vcpus": 0, "memory_mb": 0, "images": 0, "addresses": 0}
    p = cloud.cli("account", "quota", "cliacct", "--vcpus", "-1", check=False)
    assert p.returncode == 2 and "--vcpus" in p.stderr
    p = cloud.cli("account", "quota", "no-such-account", check=False)
    assert p.returncode == 4 and "error: NotFound:" in p.stderr

    # keys: the secret is printed once; listings never show it
    kid, secret = create_key(cloud, "cliacct", "dev", "member")
    assert re.fullmatch(r"[A-Z0-9]{16,128}", kid) and len(secret) >= 30
    keys = {r["ID"]: r for r in table(cloud.cli("key", "ls").stdout)}
    assert keys[kid] == {"ID": kid, "ACCOUNT": "cliacct", "USER": "dev", "ROLE": "member",
                         "STATUS": "Active", "AGE": keys[kid]["AGE"]}
    p = cloud.cli("--json", "key", "ls")
    assert secret not in p.stdout
    mine = [k for k in json.loads(p.stdout)["keys"] if k["id"] == kid][0]
    assert mine["account_id"] == acct_id and mine["status"] == "Active"
    js = json.loads(cloud.cli("--json", "key", "create", "--account", "cliacct", "--user",
                              "ops", "--role", "read-only").stdout)
    assert js["account"] == "cliacct" and js["role"] == "read-only" and js["secret_access_key"]

    p = cloud.cli("key", "create", "--account", "cliacct", "--role", "boss", check=False)
    assert p.returncode == 2 and "admin, member or read-only" in p.stderr
    p = cloud.cli("key", "create", "--user", "x", check=False)
    assert p.returncode == 2 and "--account is required" in p.stderr
    p = cloud.cli("key", "create", "--account", "no-such-account", check=False)
    assert p.returncode == 4 and "error: NotFound:" in p.stderr
    p = cloud.cli("key", "disable", "AKIA0000000000000000", check=False)
    assert p.returncode == 4

    for sub in ("create", "ls", "quota"):
        p = cloud.cli("account", sub, "--help")
        assert p.stdout.startswith(f"usage: nubo account {sub}")
    for sub in ("create", "ls", "disable", "enable", "rm"):
        p = cloud.cli("key", sub, "--help")
        assert p.stdout.startswith(f"usage: nubo key {sub}")
    assert "--role ROLE" in cloud.cli("key", "create", "--help").stdout
    assert "--access-key-id ID" in cloud.cli("--help").stdout


def _logs_ready(env, iid):
    out = nubo(env, "logs", iid).stdout
    return out if f"NUBO-READY {iid}" in out else None


def test_tenant_with_access_key(cloud, tiny_image):
    cloud.cli("account", "create", "clitenant")
    kid, secret = create_key(cloud, "clitenant", "dev", "member")
    env = key_env(cloud, kid, secret)

    # the tenant brings its own copy of tiny: three uploads streamed with
    # UNSIGNED-PAYLOAD, then the registration, all signed with the key
    m = tiny_image.manifest
    p = nubo(env, "image", "import", str(tiny_image.disk), "--name", "tiny-tenant",
             "--os", m["os"], "--release", m["release"], "--arch", m["arch"],
             "--kernel", str(tiny_image.vmlinuz), "--initrd", str(tiny_image.initrd),
             "--cmdline", m["cmdline"], timeout=300)
    assert table(p.stdout)[0]["NAME"] == "tiny-tenant"
    images = [r["NAME"] for r in table(nubo(env, "image", "ls").stdout)]
    assert "tiny-tenant" in images

    # an instance of the admin's, to check the tenant does not see it
    admin_iid = cloud.run(name="cliadminvm")["instances"][0]["id"]

    p = nubo(env, "run", "tiny-tenant", "--type", "t1.nano", "--name", "tenantvm", "--wait",
             "--timeout", "120", timeout=180)
    rows = table(p.stdout)
    assert len(rows) == 1 and rows[0]["STATE"] == "running" and rows[0]["NAME"] == "tenantvm"
    iid = rows[0]["ID"]

    listed = [r["ID"] for r in table(nubo(env, "ls", "--all").stdout)]
    assert listed == [iid]
    assert admin_iid in [r["ID"] for r in table(cloud.cli("ls").stdout)]
    assert iid not in cloud.cli("ls").stdout
    p = nubo(env, "show", admin_iid, check=False)
    assert p.returncode == 4

    usage = {r["QUOTA"]: r for r in table(cloud.cli("account", "quota", "clitenant").stdout)}
    assert usage["instances"]["USED"] == "1" and usage["vcpus"]["USED"] == "1"
    assert usage["memory"]["USED"] == "128 MiB" and usage["images"]["USED"] == "1"

    # the tenant sees its account's keys only, and cannot manage accounts
    keys = table(nubo(env, "key", "ls").stdout)
    assert keys and {r["ACCOUNT"] for r in keys} == {"clitenant"}
    p = nubo(env, "account", "ls", check=False)
    assert p.returncode == 1 and "error: UnauthorizedOperation:" in p.stderr

    # the live console, its upgrade request signed with the key
    wait_until(lambda: _logs_ready(env, iid), 90, "NUBO-READY in the tenant's logs",
               interval=0.5)
    proc = subprocess.Popen([str(BUILD / "src/cli/nubo"), "console", iid],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    try:
        proc.stdin.write(b"echo KEY-$((6*7))-$(cat /proc/sys/kernel/hostname)\n")
        proc.stdin.flush()
        _read_until(proc, rb"KEY-42-", 60)
        proc.stdin.close()
        assert proc.wait(15) == 0
        assert f"Connected to {iid}" in proc.stderr.read().decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # the admin's instance's console is not the tenant's to open
    p = nubo(env, "console", admin_iid, check=False)
    assert p.returncode == 4 and "error: NotFound:" in p.stderr

    p = nubo(env, "rm", iid)
    assert p.stdout.split()[0] == iid
    cloud.cli("rm", admin_iid)


def test_read_only_disabled_and_wrong_keys(cloud):
    cloud.cli("account", "create", "clikeys")
    ro_id, ro_secret = create_key(cloud, "clikeys", "viewer", "read-only")
    ro = key_env(cloud, ro_id, ro_secret)
    assert table(nubo(ro, "ls").stdout) == []  # reading is allowed
    p = nubo(ro, "run", "tiny", "--type", "t1.nano", check=False)
    assert p.returncode == 1 and "error: UnauthorizedOperation:" in p.stderr
    assert json.loads(nubo(ro, "--json", "ls", "--all").stdout)["instances"] == []
    p = nubo(ro, "key", "create", "--account", "clikeys", check=False)
    assert p.returncode == 1 and "error: UnauthorizedOperation:" in p.stderr

    kid, secret = create_key(cloud, "clikeys", "dev", "member")
    env = key_env(cloud, kid, secret)
    assert nubo(env, "ls").returncode == 0

    # disabled: refused; enabled: accepted again; deleted: refused for good
    assert cloud.cli("key", "disable", kid).stdout == f"{kid}  disabled\n"
    status = {r["ID"]: r["STATUS"] for r in table(cloud.cli("key", "ls").stdout)}
    assert status[kid] == "Inactive"
    p = nubo(env, "ls", check=False)
    assert p.returncode == 1 and "InvalidClientTokenId" in p.stderr
    assert f"hint: requests are signed with access key {kid}" in p.stderr
    assert cloud.cli("key", "enable", kid).stdout == f"{kid}  enabled\n"
    assert nubo(env, "ls").returncode == 0
    assert cloud.cli("key", "rm", kid).stdout == f"{kid}  deleted\n"
    p = nubo(env, "ls", check=False)
    assert p.returncode == 1 and "InvalidClientTokenId" in p.stderr
    assert cloud.cli("key", "rm", kid, check=False).returncode == 4
    assert kid not in cloud.cli("key", "ls").stdout

    # a wrong secret or region is refused; the admin token in the environment
    # is not tried instead
    p = nubo(key_env(cloud, ro_id, ro_secret[:-1] + ("A" if ro_secret[-1] != "A" else "B")),
             "ls", check=False)
    assert p.returncode == 1 and "error: SignatureDoesNotMatch:" in p.stderr
    p = nubo(key_env(cloud, ro_id, ro_secret, NUBO_REGION="elsewhere-1"), "ls", check=False)
    assert p.returncode == 1 and "error: SignatureDoesNotMatch:" in p.stderr
    assert "region elsewhere-1" in p.stderr

    # half a key is a usage error, not a silent fall back to the token
    p = nubo(key_env(cloud, ro_id), "ls", check=False)
    assert p.returncode == 2 and "the secret is missing" in p.stderr


def test_key_sources(cloud, tmp_path):
    """Flags, NUBO_*, AWS_* and the config file all carry a key; each is
    proved in use by a read-only key's refusal to run anything."""
    cloud.cli("account", "create", "clisrc")
    kid, secret = create_key(cloud, "clisrc", "viewer", "read-only")

    def refused(p):
        return p.returncode == 1 and "error: UnauthorizedOperation:" in p.stderr

    plain = key_env(cloud)
    # with the admin token only, the same command gets past authorization
    assert not refused(nubo(plain, "type", "rm", "no-such-type", check=False))
    assert refused(nubo(plain, "--access-key-id", kid, "--secret-access-key", secret,
                        "type", "rm", "no-such-type", check=False))
    assert refused(nubo(key_env(cloud, AWS_ACCESS_KEY_ID=kid, AWS_SECRET_ACCESS_KEY=secret,
                                AWS_DEFAULT_REGION="nubo-1"),
                        "type", "rm", "no-such-type", check=False))
    conf = tmp_path / "config"
    conf.write_text(f"access_key_id = {kid}\nsecret_access_key = {secret}\nregion = nubo-1\n")
    assert refused(nubo(key_env(cloud, NUBO_CONFIG=str(conf)), "type", "rm", "no-such-type",
                        check=False))
    # NUBO_* wins over AWS_*
    p = nubo(key_env(cloud, kid, secret, AWS_ACCESS_KEY_ID="AKIAWRONGWRONGWRONG0",
                     AWS_SECRET_ACCESS_KEY="wrong"), "ls")
    assert p.returncode == 0
    # the flag's region wins over the environment's
    p = nubo(key_env(cloud, kid, secret, NUBO_REGION="elsewhere-1"), "--region", "nubo-1", "ls")
    assert p.returncode == 0


def test_users_within_accounts(cloud):
    """An account's admins list, create, re-role and delete its users (and
    with a user, its keys); members and read-only users cannot; another
    account is NotFound to them."""
    cloud.cli("account", "create", "cliusers")
    cloud.cli("account", "create", "cliother")
    p = cloud.cli("account", "user-create", "alice", "--account", "cliusers", "--role", "admin")
    rows = table(p.stdout)
    assert [(r["USER"], r["ACCOUNT"], r["ROLE"], r["KEYS"]) for r in rows] == [("alice", "cliusers", "admin", "0")]
    aid, asecret = create_key(cloud, "cliusers", "alice", "admin")
    alice = key_env(cloud, aid, asecret)

    # the account's admin makes the others, with keys
    nubo(alice, "account", "user-create", "bob", "--account", "cliusers")  # member by default
    nubo(alice, "account", "user-create", "carol", "--account", "cliusers", "--role", "read-only")
    nubo(alice, "key", "create", "--account", "cliusers", "--user", "bob")  # bob holds two keys
    kv = object_lines(nubo(alice, "key", "create", "--account", "cliusers", "--user", "bob").stdout)
    bid, bsecret = kv["access_key_id"], kv["secret_access_key"]
    kv = object_lines(nubo(alice, "key", "create", "--account", "cliusers", "--user", "carol").stdout)
    assert kv["role"] == "read-only"
    bob, carol = key_env(cloud, bid, bsecret), key_env(cloud, kv["access_key_id"], kv["secret_access_key"])
    users = {r["USER"]: r for r in table(nubo(alice, "account", "users", "--account", "cliusers").stdout)}
    assert {u: (r["ROLE"], r["KEYS"]) for u, r in users.items()} == {
        "alice": ("admin", "1"), "bob": ("member", "2"), "carol": ("read-only", "1")}
    js = json.loads(cloud.cli("--json", "account", "users", "--account", "cliusers").stdout)
    assert js["account"] == "cliusers" and sorted(u["name"] for u in js["users"]) == ["alice", "bob", "carol"]

    # members and read-only users manage no users, not even in their account
    for env in (bob, carol):
        for args in (("account", "users", "--account", "cliusers"),
                     ("account", "user-create", "eve", "--account", "cliusers"),
                     ("account", "user-role", "alice", "read-only", "--account", "cliusers"),
                     ("account", "user-rm", "alice", "--account", "cliusers")):
            p = nubo(env, *args, check=False)
            assert p.returncode == 1 and "error: UnauthorizedOperation:" in p.stderr, (args, p.stderr)
    # another account is not there for an account's admin
    p = nubo(alice, "account", "users", "--account", "cliother", check=False)
    assert p.returncode == 4 and "error: NotFound:" in p.stderr
    p = nubo(alice, "account", "user-create", "mole", "--account", "cliother", check=False)
    assert p.returncode == 4 and "error: NotFound:" in p.stderr
    assert "mole" not in cloud.cli("account", "users", "--account", "cliother").stdout

    # a new role takes effect at once: bob, read-only, cannot change anything
    p = nubo(bob, "image", "rm", "no-such-image", check=False)
    assert p.returncode == 4, p.stderr  # a member gets as far as looking
    rows = table(nubo(alice, "account", "user-role", "bob", "read-only", "--account", "cliusers").stdout)
    assert [(r["USER"], r["ROLE"]) for r in rows] == [("bob", "read-only")]
    p = nubo(bob, "image", "rm", "no-such-image", check=False)
    assert p.returncode == 1 and "error: UnauthorizedOperation:" in p.stderr
    assert {r["ID"]: r["ROLE"] for r in table(cloud.cli("key", "ls").stdout)}[bid] == "read-only"

    # deleting a user deletes its keys
    assert nubo(alice, "account", "user-rm", "bob", "--account", "cliusers").stdout == "bob  deleted\n"
    p = nubo(bob, "ls", check=False)
    assert p.returncode == 1 and "InvalidClientTokenId" in p.stderr
    assert bid not in cloud.cli("key", "ls").stdout
    assert "bob" not in [r["USER"] for r in table(nubo(alice, "account", "users", "--account", "cliusers").stdout)]
    p = nubo(alice, "account", "user-rm", "bob", "--account", "cliusers", check=False)
    assert p.returncode == 4 and "error: NotFound:" in p.stderr

    # bad input
    p = nubo(alice, "account", "user-create", "alice", "--account", "cliusers", check=False)
    assert p.returncode == 1 and "error: Conflict:" in p.stderr
    p = nubo(alice, "account", "user-create", "bad name!", "--account", "cliusers", check=False)
    assert p.returncode == 1 and "error: InvalidParameterValue:" in p.stderr
    p = nubo(alice, "account", "user-create", "dave", "--account", "cliusers", "--role", "boss", check=False)
    assert p.returncode == 2 and "admin, member or read-only" in p.stderr
    p = nubo(alice, "account", "user-role", "carol", "boss", "--account", "cliusers", check=False)
    assert p.returncode == 2 and "admin, member or read-only" in p.stderr
    p = nubo(alice, "account", "users", check=False)
    assert p.returncode == 2 and "--account is required" in p.stderr
    p = cloud.cli("account", "user-create", "x", "--account", "no-such-account", check=False)
    assert p.returncode == 4 and "error: NotFound:" in p.stderr
    for sub in ("users", "user-create", "user-role", "user-rm"):
        p = cloud.cli("account", sub, "--help")
        assert p.stdout.startswith(f"usage: nubo account {sub}")
    assert "--role ROLE" in cloud.cli("account", "user-create", "--help").stdout


# ---- every command's help, pause/resume/reboot, and a real terminal ----

def commands(cloud):
    """The commands `nubo --help` lists, groups expanded: ['run', ..., 'image ls', ...]."""
    text = cloud.cli("--help").stdout
    block = text.split("\nCommands:\n", 1)[1].split("\n\n", 1)[0]
    out = []
    for line in block.splitlines():
        words = line.split()
        group = cloud.cli(words[0], "--help", check=False)
        is_group = group.stdout.startswith(f"usage: nubo {words[0]} COMMAND")
        out.append(" ".join(words[:2]) if is_group else words[0])
    return out


def test_help_on_every_command(cloud):
    cmds = commands(cloud)
    assert len(cmds) >= 30 and {"run", "pause", "image build", "key rm", "account quota"} <= set(cmds)
    for group in sorted({c.split()[0] for c in cmds if " " in c}):
        p = cloud.cli(group, "--help")
        assert p.stdout.startswith(f"usage: nubo {group} COMMAND"), group
    for cmd in cmds:
        for flag in ("--help", "-h"):
            p = cloud.cli(*cmd.split(), flag, check=False)
            assert p.returncode == 0, f"nubo {cmd} {flag}: {p.returncode} {p.stderr}"
            assert p.stdout.startswith(f"usage: nubo {cmd}"), f"nubo {cmd} {flag}: {p.stdout[:200]!r}"
            assert not SAN_RE.search(p.stderr), p.stderr


def test_pause_resume_reboot(cloud):
    iid = cloud.run(name="cliprr")["instances"][0]["id"]
    try:
        _, ip = cloud.wait_ready(iid)
        assert iid in wait_until(lambda: cloud.guest_http(iid, ip), 30, "HTTP from the guest")
        p = cloud.cli("pause", iid)
        assert p.stdout.split()[0] == iid
        cloud.wait_state(iid, "paused", 20)
        assert cloud.guest_http(iid, ip) is None, "a paused guest answered HTTP"
        assert table(cloud.cli("ls").stdout) and \
            {r["ID"]: r for r in table(cloud.cli("ls").stdout)}[iid]["STATE"] == "paused"
        p = cloud.cli("reboot", iid, check=False)
        assert p.returncode == 1 and "IncorrectInstanceState" in p.stderr and "paused" in p.stderr
        p = cloud.cli("--json", "resume", iid)
        assert json.loads(p.stdout)["id"] == iid
        cloud.wait_state(iid, "running", 20)
        assert iid in wait_until(lambda: cloud.guest_http(iid, ip), 30, "HTTP after resume")
        ready = lambda: len(re.findall(f"NUBO-READY {iid}", cloud.console_output(iid)))
        n = ready()
        pid = cloud.qemu_pid(iid)
        p = cloud.cli("reboot", iid)
        assert p.stdout.split()[0] == iid
        wait_until(lambda: ready() > n, 90, "a ready marker after nubo reboot", interval=0.3)
        assert cloud.qemu_pid(iid) == pid, "a reboot keeps the QEMU process"
    finally:
        cloud.cli("rm", iid)


def _pty_spawn(cloud, *args):
    """nubo with stdin, stdout and stderr on a fresh pseudo-terminal."""
    import pty
    master, slave = pty.openpty()
    env = dict(os.environ, NUBO_ENDPOINT=cloud.endpoint, NUBO_TOKEN=cloud.token, TERM="xterm",
               COLUMNS="100", **SAN_ENV)
    proc = subprocess.Popen([str(BUILD / "src/cli/nubo"), *args], stdin=slave, stdout=slave,
                            stderr=slave, env=env, start_new_session=True, close_fds=True)
    os.close(slave)
    return proc, master


def _pty_read_until(master, pattern, timeout, buf=b""):
    rx = re.compile(pattern)
    deadline = time.monotonic() + timeout
    while not rx.search(buf):
        left = deadline - time.monotonic()
        assert left > 0, f"{pattern!r} not seen on the terminal; got {buf[-400:]!r}"
        r, _, _ = select.select([master], [], [], left)
        if r:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every writer is gone
                chunk = b""
            assert chunk, f"the terminal closed before {pattern!r}; got {buf[-400:]!r}"
            buf += chunk
    return buf


def test_console_detaches_with_ctrl_bracket_on_a_terminal(cloud):
    iid = cloud.run(name="clipty")["instances"][0]["id"]
    try:
        cloud.wait_ready(iid)
        pid = cloud.qemu_pid(iid)
        proc, master = _pty_spawn(cloud, "console", iid)
        try:
            _pty_read_until(master, rb"Connected to " + iid.encode() + rb" \(Ctrl-\] to detach\)", 30)
            # raw mode: each key goes through as typed; Enter is \r
            os.write(master, b"echo PTY-$((6*7))\r")
            _pty_read_until(master, rb"PTY-42", 60)
            os.write(master, b"\x1d")  # Ctrl-]
            assert proc.wait(15) == 0
            _pty_read_until(master, rb"Detached from " + iid.encode(), 5)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            os.close(master)
        # the guest did not notice: still running, same QEMU, its shell answers
        assert cloud.instance(iid)["state"] == "running" and cloud.qemu_pid(iid) == pid
        con = ConsoleSession(cloud, iid)
        out, rc = con.run("echo AFTER-$((6*7))")
        con.close()
        assert "AFTER-42" in out
    finally:
        cloud.cli("rm", iid)


def test_image_import_shows_progress_on_a_terminal(cloud, tmp_path):
    raw = tmp_path / "bar.raw"
    with open(raw, "wb") as f:
        f.truncate(32 << 20)
        f.write(os.urandom(1 << 20))
    proc, master = _pty_spawn(cloud, "image", "import", str(raw), "--name", "cli-bar")
    try:
        out = _pty_read_until(master, rb"cli-bar", 120)
        assert proc.wait(60) == 0
        while True:  # the rest, until the terminal closes
            r, _, _ = select.select([master], [], [], 5)
            try:
                chunk = os.read(master, 65536) if r else b""
            except OSError:
                chunk = b""
            if not chunk:
                break
            out += chunk
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    text = out.decode(errors="replace")
    assert "\r" in text and re.search(r"bar\.raw .*\[#+\]\s*100%", text), text[-600:]
    assert re.search(r"\b\d{1,3}%", text)
    cloud.cli("image", "rm", "cli-bar")
