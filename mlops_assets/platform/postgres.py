"""A local PostgreSQL server for the production profile (instance storage), started from the
machine's own binaries on a free port bound to 127.0.0.1, and the instance config that
points Dagster at it.

``initdb`` refuses to run as root: as root, the cluster belongs to the ``postgres`` user and
the server runs as that user; otherwise as the current user."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import yaml

from mlops_assets.platform.procs import free_port, start, stop

URL_ENV = "MLOPS_POSTGRES_URL"
DATABASE = "dagster"


def binaries() -> Path:
    """The folder of ``initdb``/``postgres``: $MLOPS_PG_BIN, PATH, or Debian's layout."""
    if os.environ.get("MLOPS_PG_BIN"):
        return Path(os.environ["MLOPS_PG_BIN"])
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent  # a link into the versioned folder
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not versions:
        raise FileNotFoundError("PostgreSQL binaries not found (initdb): apt-get install "
                                "postgresql, or set MLOPS_PG_BIN")
    return versions[-1].parent


def _owner() -> str | None:
    """The user the cluster runs as: ``postgres`` when we are root, else ourselves (None)."""
    return "postgres" if os.geteuid() == 0 else None


def _own(path: Path, user: str | None) -> None:
    if user:
        pw = pwd.getpwnam(user)
        os.chown(path, pw.pw_uid, pw.pw_gid)


def init_cluster(data_dir: Path) -> None:
    """``initdb`` once (trust auth on 127.0.0.1 only: the server listens nowhere else)."""
    data_dir = Path(data_dir)
    if (data_dir / "PG_VERSION").is_file():
        return
    user = _owner()
    data_dir.mkdir(parents=True, exist_ok=True)
    for p in [data_dir, *data_dir.parents]:  # the server user must reach its folder
        if p == Path("/"):
            break
        if user and p != data_dir:
            p.chmod(p.stat().st_mode | 0o011)
    _own(data_dir, user)
    data_dir.chmod(0o700)
    done = subprocess.run([str(binaries() / "initdb"), "-D", str(data_dir), "-U", "postgres",
                           "--auth=trust", "-E", "UTF8", "--no-sync"],
                          capture_output=True, text=True, user=user, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"initdb failed in {data_dir}:\n{done.stderr[-2000:]}")


def _ready(port: int) -> bool:
    done = subprocess.run([str(binaries() / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)],
                          capture_output=True)
    return done.returncode == 0


def _runuser() -> str:
    """``runuser`` by its path: a shell whose PATH lacks /usr/sbin (a plain user's, cron's)
    still finds it."""
    found = shutil.which("runuser") or shutil.which("runuser", path="/usr/sbin:/sbin:/usr/bin")
    if not found:
        raise FileNotFoundError("runuser not found (util-linux): needed to run PostgreSQL as "
                                "the postgres user when started as root")
    return found


def start_server(data_dir: Path, port: int, log: Path, timeout: float = 60,
                 durable: bool = True):
    """Start the server (its own session), wait until it accepts connections, create the
    ``dagster`` database once; returns (Popen, url). ``durable``: the server's own
    durability settings (fsync on), as the production profile needs them; only a throwaway
    test server may turn them off for speed."""
    user = _owner()
    log.parent.mkdir(parents=True, exist_ok=True)
    # TCP on 127.0.0.1 only, no Unix-domain socket (`-k ''`): every client here connects by
    # TCP, and a socket path under a deep home passes the kernel's 107-byte limit, which
    # stopped the server from starting at all.
    cmd = [str(binaries() / "postgres"), "-D", str(data_dir), "-p", str(port),
           "-h", "127.0.0.1", "-k", ""] + ([] if durable else ["-c", "fsync=off"])
    if user:
        cmd = [_runuser(), "-u", user, "--", *cmd]
    proc = start(cmd, log, {}, Path(data_dir))
    deadline = time.monotonic() + timeout
    while not _ready(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            raise RuntimeError(f"PostgreSQL did not start on 127.0.0.1:{port}:\n"
                               f"{log.read_text()[-2000:]}")
        time.sleep(0.25)
    created = subprocess.run(
        [str(binaries() / "psql"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
         "-tAc", f"SELECT 1 FROM pg_database WHERE datname='{DATABASE}'"],
        capture_output=True, text=True)
    if created.stdout.strip() != "1":
        subprocess.run([str(binaries() / "createdb"), "-h", "127.0.0.1", "-p", str(port),
                        "-U", "postgres", DATABASE], check=True, capture_output=True)
    return proc, url(port)


def url(port: int, host: str = "127.0.0.1") -> str:
    # psycopg2's scheme: dagster does not support psycopg 3, which `postgresql://` selects.
    return f"postgresql+psycopg2://postgres@{host}:{port}/{DATABASE}"


DRIVER_SCHEME = "postgresql+psycopg2"


def normalize_url(value: str) -> str:
    """The URL as people write it (``postgresql://`` or ``postgres://``) with the driver
    this project ships (psycopg2; SQLAlchemy would pick psycopg 3 for a bare scheme, which
    is not installed and which dagster does not support)."""
    scheme, sep, rest = value.partition("://")
    if not sep:
        raise ValueError(f"{URL_ENV}={value!r} is not a URL: write "
                         f"postgresql://user@host:port/database")
    if scheme in ("postgresql", "postgres", DRIVER_SCHEME):
        return f"{DRIVER_SCHEME}://{rest}"
    raise ValueError(f"{URL_ENV}: scheme {scheme!r} is not supported; write "
                     f"postgresql://{rest} (the project uses the psycopg2 driver)")


@contextmanager
def server(data_dir: Path, log: Path, port: int | None = None, durable: bool = True):
    """A PostgreSQL server for the duration of the block, stopped by its PID."""
    init_cluster(data_dir)
    proc, address = start_server(data_dir, port or free_port(), log, durable=durable)
    try:
        yield address
    finally:
        stop(proc)


def instance_config(base: Path, postgres_url: str) -> str:
    """The repository's dagster.yaml with its storage replaced by PostgreSQL (runs, events,
    schedules in one database); everything else (queue, pools, launcher, monitoring) kept."""
    config = yaml.safe_load(Path(base).read_text())
    config["storage"] = {"postgres": {"postgres_url": {"env": URL_ENV}}}
    note = (f"# Generated from {base} by mlops-assets because {URL_ENV} is set: the same\n"
            "# settings with PostgreSQL storage. Edit the repository's file, not this one.\n")
    return note + yaml.safe_dump(config, sort_keys=False)
