"""``stackhub backup DEST`` and ``stackhub restore SRC``: everything a deployment needs to come back.

A backup is a directory (0700) holding:

- ``manifest.json``: format, time, the deployment's prefix, and every file with its size and
  SHA-256 (a restore checks them all before it touches anything);
- ``volumes/<role>[-<name>].tar``: the hub's state volume (database, cookie secret, tag policy and
  session locks, tutorial passwords, disk notes), the published courses, and on request every home
  volume (``--homes``) and the tutorial data volumes (``--data``);
- ``secrets/`` and ``tls/``: the run-time secrets and the local CA, each file 0600.

Each volume is read and written by its own throwaway container of the hub image running
``spawner.deploy.volume_archive`` (no network, removed with its volumes), with only that volume and
an output directory of its own mounted; a home's helper runs as the users' uid with no capabilities,
so nothing planted in a home (a FIFO, a device, a link swapped in mid-read, a file named
``*.sqlite``) reaches another volume or the backup. Only the hub's own database goes through
SQLite's online backup API (a backup taken while the hub runs holds it consistent); FIFOs, sockets
and devices are skipped and listed in the manifest (``skipped``). A volume whose helper fails is
listed under ``failed`` and the others are still backed up (``stackhub backup`` then exits 1).

A restore checks every archive (checksums, then each member through the extraction's rules) before
it stops or empties anything. It follows the *current* config's names (a backup of ``stackhub`` restores into
``stackhub-test`` if that is what the config says), refuses while this deployment runs or when
it would overwrite data unless ``--force`` is given, and leaves the deployment stopped:
``make up`` starts it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from spawner.core import names
from spawner.core.config import StackhubConfig
from spawner.core.disk import human
from spawner.core.specs import container_log_config, log_limit

FORMAT = "stackhub-backup/1"
HUB_DATABASE = "jupyterhub.sqlite"  # in the hub state volume: the one file copied as a database
ROLES = ("hub-state", "courses", "home", "data")
WORKER = Path(__file__).with_name("volume_archive.py")
LABEL_VOLUME_ROLE = {"hub-state": "hub-state", "courses": "courses", "home": "home", "data": "data"}
_FILE = re.compile(r"^(volumes/[A-Za-z0-9][A-Za-z0-9._-]*\.tar|secrets/[A-Za-z0-9._-]+|tls/[A-Za-z0-9._-]+)$")


class BackupError(RuntimeError):
    """A backup or restore that cannot go on; the message says what and what to do."""


@dataclass(frozen=True)
class VolumeItem:
    """One volume (or host directory) in a backup: its role, where it lives, its file in the backup."""

    role: str
    source: str
    file: str
    user: str | None = None


def volume_file(role: str, key: str = "") -> str:
    """The archive's name in the backup; ``key`` (a user, a data volume) escaped as Docker names are."""
    return f"volumes/{role}-{names.escape_name(key)}.tar" if key else f"volumes/{role}.tar"


def plan_volumes(cfg: StackhubConfig, homes: dict[str, str], data: bool, courses: bool = True) -> list[VolumeItem]:
    """The volumes a backup holds (pure): hub state always, courses unless ``courses`` is false (the
    backup before an upgrade: an upgrade never touches them); ``homes`` (user -> volume) and the
    configured data volumes when asked. Host-path data mounts are the operator's, not ours."""
    items = [VolumeItem("hub-state", cfg.hub.state_volume, volume_file("hub-state"))]
    if cfg.courses.enabled and courses:
        items.append(VolumeItem("courses", cfg.courses.volume, volume_file("courses")))
    for user in sorted(homes):
        items.append(VolumeItem("home", homes[user], volume_file("home", user), user=user))
    if data:
        for mount in cfg.volumes.data:
            if not mount.source.startswith("/"):
                items.append(VolumeItem("data", mount.source, volume_file("data", mount.source)))
    return items


def restore_target(cfg: StackhubConfig, item: VolumeItem) -> str | None:
    """Where a backed-up volume goes under the current config; None: nowhere (say why in the log)."""
    if item.role == "hub-state":
        return cfg.hub.state_volume
    if item.role == "courses":
        return cfg.courses.volume if cfg.courses.enabled else None
    if item.role == "home":
        return names.home_volume_name(item.user, cfg.volumes.home_volume)
    if item.role == "data":
        return item.source if item.source in {m.source for m in cfg.volumes.data} else None
    return None


def upgrade_reasons(*, running_image: str | None, running_ref: str | None, new_image: str, new_ref: str,
                    revision: str | None, head: str | None) -> list[str]:
    """Why ``up`` must back up the hub database before it starts the hub (pure; empty: no need).

    ``running_image``/``new_image`` are image IDs (the hub that runs or ran, None when there is no
    hub container; the one about to start), ``revision`` the database's alembic revision (None: no
    database yet) and ``head`` the new image's JupyterHub head. A new hub image may migrate the
    database (``upgrade_db``) even when the revision is the same today; a different revision will.
    """
    if revision is None:  # a fresh deployment: nothing to lose
        return []
    reasons = []
    if running_image is not None and running_image != new_image:
        reasons.append(f"the hub image changes: {running_ref or '?'} ({running_image.split(':')[-1][:12]}) -> "
                       f"{new_ref} ({new_image.split(':')[-1][:12]})")
    if head is not None and revision != head:
        reasons.append(f"the database is at revision {revision}; the new hub's JupyterHub migrates it to {head}")
    return reasons


def dated_dir(root: Path, stem: str, now: dt.datetime | None = None) -> Path:
    """``root/<stem>-YYYYmmddTHHMMSSZ`` (UTC), with ``-2``, ``-3``... when that exists already."""
    stamp = (now or dt.datetime.now(dt.timezone.utc)).strftime("%Y%m%dT%H%M%SZ")
    path, n = root / f"{stem}-{stamp}", 1
    while path.exists():
        n += 1
        path = root / f"{stem}-{stamp}-{n}"
    return path


def read_manifest(src: Path) -> dict:
    """Load and check a backup's manifest: known format and roles, file names inside the backup."""
    path = src / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise BackupError(f"{src} is not a stackhub backup: no manifest.json") from None
    except (OSError, ValueError) as e:
        raise BackupError(f"{path}: cannot read: {e}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(f"{path}: format {manifest.get('format') if isinstance(manifest, dict) else None!r} "
                          f"is not {FORMAT!r}")
    items, files = manifest.get("volumes"), manifest.get("files")
    if not isinstance(items, list) or not isinstance(files, list):
        raise BackupError(f"{path}: 'volumes' and 'files' must be lists")
    for entry in [*items, *files]:
        if not isinstance(entry, dict) or not _FILE.match(str(entry.get("file", ""))):
            raise BackupError(f"{path}: entry {entry!r} names no file of a backup (volumes/*.tar, secrets/*, tls/*)")
        if not isinstance(entry.get("sha256"), str) or not isinstance(entry.get("bytes"), int):
            raise BackupError(f"{path}: {entry['file']} has no sha256/bytes")
    for item in items:
        if item.get("role") not in ROLES:
            raise BackupError(f"{path}: volume role {item.get('role')!r} is not one of {', '.join(ROLES)}")
        if item["role"] == "home" and not (isinstance(item.get("user"), str) and item["user"]):
            raise BackupError(f"{path}: home {item['file']} names no user")
        if not isinstance(item.get("source"), str) or not item["source"]:
            raise BackupError(f"{path}: {item['file']} names no source volume")
    return manifest


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class Archiver:
    """Backup and restore of one deployment, on a ``docker.DockerClient`` and the host's ``var/``."""

    def __init__(self, *, client, cfg: StackhubConfig, paths, log=print):
        self.client = client
        self.cfg = cfg
        self.paths = paths
        self.log = log
        self.own = names.Deployment(cfg.hub.prefix)

    # -- the engine side -------------------------------------------------------------------------

    def homes(self) -> dict[str, str]:
        """This deployment's home volumes (user -> volume), by the labels the spawner gives them."""
        found = self.client.volumes.list(filters={"label": [f"{names.LABEL_DEPLOYMENT}={self.cfg.hub.prefix}",
                                                            f"{names.LABEL_ROLE}=home"]})
        return {v.attrs["Labels"][names.LABEL_USER]: v.name for v in found
                if (v.attrs.get("Labels") or {}).get(names.LABEL_USER)}

    def exists(self, source: str) -> bool:
        from docker.errors import NotFound

        if source.startswith("/"):
            return Path(source).is_dir()
        try:
            self.client.volumes.get(source)
            return True
        except NotFound:
            return False

    def worker(self, args: list[str], mounts: dict[str, dict], *, user: str = "0") -> list[dict]:
        """Run ``volume_archive`` in a throwaway hub-image container with only ``mounts``; its JSON
        lines, as they come. ``user`` other than root runs with no capabilities at all."""
        hardening = {} if user == "0" else {"cap_drop": ["ALL"]}
        container = self.client.containers.run(
            self.cfg.hub.image, entrypoint=["python3", "-c", WORKER.read_text()], command=args,
            volumes=mounts, user=user, network_disabled=True, detach=True, working_dir="/",
            security_opt=["no-new-privileges"], pids_limit=64, labels=self.own.labels("backup"),
            **container_log_config(log_limit(self.cfg)), **hardening)
        out = []
        try:
            for line in container.logs(stream=True, follow=True, stderr=False):
                for text in line.decode(errors="replace").splitlines():
                    try:
                        out.append(json.loads(text))
                    except ValueError:
                        continue
            status = container.wait()
            if status.get("StatusCode"):
                said = next((e["error"] for e in reversed(out) if isinstance(e, dict) and e.get("error")), None)
                err = said or container.logs(stdout=False, stderr=True, tail=20).decode(errors="replace")
                raise BackupError(f"the archive helper failed ({status.get('StatusCode')}): {err}")
        finally:
            container.remove(v=True, force=True)
        return out

    def sizes(self, sources: list[str]) -> dict[str, int]:
        """Bytes in each volume, each measured by its own helper (read-only, that volume alone)."""
        return {s: self.worker(["du", "/v"], {s: {"bind": "/v", "mode": "ro"}})[-1]["bytes"]["/v"] for s in sources}

    def running(self) -> list[str]:
        """This deployment's running containers (hub, proxy, servers), by name."""
        found = []
        for c in self.client.containers.list(filters={"label": f"{names.LABEL_DEPLOYMENT}={self.cfg.hub.prefix}"}):
            if c.labels.get(names.LABEL_ROLE) in ("hub", "proxy", "server"):
                found.append(c.name)
        return sorted(found)

    # -- backup ------------------------------------------------------------------------------------

    def db_revision(self) -> dict:
        """The hub database's alembic revision and the configured hub image's JupyterHub head
        (``volume_archive revision``): ``{"exists", "revision", "head"}``."""
        if not self.exists(self.cfg.hub.state_volume):
            return {"exists": False, "revision": None, "head": None}
        # writable: SQLite may need to roll back a hot journal to read
        return self.worker(["revision", "/v/0/jupyterhub.sqlite"],
                           {self.cfg.hub.state_volume: {"bind": "/v/0", "mode": "rw"}})[-1]

    def before_upgrade(self, *, running_image: str | None, running_ref: str | None, stop_hub=None) -> Path | None:
        """Back up the hub state, secrets and CA into ``<state dir>/backups/pre-upgrade-<UTC time>``
        when the hub about to start may migrate the database (``upgrade_reasons``); the path, or None.

        ``running_image``: the image ID of the hub container there is (running or stopped), None when
        there is none (after ``down``: the database still says where it stands). ``stop_hub``: stops
        the old hub first, so that the backup holds the very database the migration starts from (no
        login lost in between), and returns what starts it again should the backup fail. A failure
        raises ``BackupError`` with the old hub running again and nothing replaced.
        """
        from docker.errors import ImageNotFound

        try:
            new_image = self.client.images.get(self.cfg.hub.image).id
        except ImageNotFound:
            raise BackupError(f"no hub image {self.cfg.hub.image} on this engine: build it (`make hub-image`)") from None
        if running_image == new_image:
            self.log(f"  the hub runs {self.cfg.hub.image} already: its database is migrated")
            return None
        db = self.db_revision()
        reasons = upgrade_reasons(running_image=running_image, running_ref=running_ref, new_image=new_image,
                                  new_ref=self.cfg.hub.image, revision=db["revision"], head=db["head"])
        if not reasons:
            self.log("  no hub database yet" if db["revision"] is None else
                     f"  hub database at revision {db['revision']}, the new hub's too: no migration")
            return None
        root = self.paths.root / "backups"
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(root, 0o700)
        dest = dated_dir(root, "pre-upgrade")
        self.log(f"  {'; '.join(reasons)}: first a backup of the hub database")
        restart = stop_hub() if stop_hub and running_image else None
        try:
            if self.backup(dest, courses=False)["failed"]:
                raise BackupError(f"the backup before the upgrade failed (see above; {dest} is incomplete)")
        except Exception:
            if restart:
                self.log("  the backup failed: the old hub is started again, nothing was replaced")
                restart()
            raise
        self.log(f"  restore it with `stackhub restore {dest} --force` (then `make up` with the old hub image)")
        return dest

    def backup(self, dest: Path, *, homes: bool = False, data: bool = False, dry_run: bool = False,
               courses: bool = True) -> dict:
        dest = dest.resolve()
        if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
            raise BackupError(f"{dest} exists and is not an empty directory; a backup never overwrites one")
        items = plan_volumes(self.cfg, self.homes() if homes else {}, data, courses=courses)
        missing = [i.source for i in items if not self.exists(i.source)]
        if any(i.role == "hub-state" for i in items if i.source in missing):
            raise BackupError(f"no hub state at {self.cfg.hub.state_volume}: nothing to back up (is this the "
                              f"deployment's config? prefix {self.cfg.hub.prefix})")
        items = [i for i in items if i.source not in missing]
        host_files = self._host_files()
        if dry_run:
            sizes = self.sizes([i.source for i in items])
            self.log(f"would write {dest}/ (0700):")
            self.log("  manifest.json")
            for i in items:
                self.log(f"  {i.file}  <- {i.role} {i.source} ({human(sizes[i.source])})")
            for rel, path in host_files:
                self.log(f"  {rel}  <- {path} (0600)")
            for m in missing:
                self.log(f"  (skipped: {m} does not exist)")
            return {"volumes": [asdict(i) for i in items], "files": [r for r, _ in host_files]}
        dest.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(dest, 0o700)
        (dest / "volumes").mkdir(mode=0o700)
        self.log(f"backing up {len(items)} volumes of {self.cfg.hub.prefix} to {dest}")
        volumes, failed = [], []
        for n, item in enumerate(items):
            try:
                volumes.append(self._dump(item, dest, n))
            except Exception as e:  # noqa: BLE001 (one volume's failure never stops the others)
                self.log(f"  FAILED {item.role} {item.source}: {e}")
                failed.append({**asdict(item), "error": str(e)[-500:]})
        files = []
        for rel, path in host_files:
            target = dest / rel
            target.parent.mkdir(mode=0o700, exist_ok=True)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(path.read_bytes())
            files.append({"file": rel, "bytes": target.stat().st_size, "sha256": sha256(target)})
        manifest = {"format": FORMAT, "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                    "prefix": self.cfg.hub.prefix, "hubImage": self.cfg.hub.image, "volumes": volumes, "files": files,
                    "failed": failed}
        fd = os.open(dest / "manifest.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(manifest, f, indent=2)
        total = sum(v["bytes"] for v in volumes) + sum(f["bytes"] for f in files)
        self.log(f"backup of {self.cfg.hub.prefix} in {dest}: {len(volumes)} volumes, {len(files)} secret and "
                 f"TLS files, {human(total)}")
        for f in failed:
            self.log(f"NOT backed up: {f['role']} {f['source']}: {f['error']}")
        return manifest

    def _dump(self, item: VolumeItem, dest: Path, n: int) -> dict:
        """One volume into ``dest/volumes`` by its own helper: a home's as the users' uid, read-only,
        writing into an empty directory of its own (it sees no other archive); the hub state as root
        (SQLite may need to roll back a hot journal to read), its database copied as one."""
        work = dest / f".work-{n}"
        work.mkdir(mode=0o700)
        user = str(self.cfg.spawner.uid) if item.role == "home" else "0"
        try:
            if os.geteuid() == 0:
                os.chown(work, int(user), int(user))
            else:  # dest itself (0700) keeps others out
                os.chmod(work, 0o777)
            name = Path(item.file).name
            args = ["dump", "/v", f"/out/{name}"] + ([HUB_DATABASE] if item.role == "hub-state" else [])
            mounts = {item.source: {"bind": "/v", "mode": "rw" if item.role == "hub-state" else "ro"},
                      str(work): {"bind": "/out", "mode": "rw"}}
            done = self.worker(args, mounts, user=user)[-1]
            skipped = f", {done['skipped_count']} special or unreadable files skipped" if done.get("skipped_count") else ""
            self.log(f"  {item.source}: {done['files']} files, {human(done['bytes'])}{skipped}")
            path = dest / item.file
            os.replace(work / name, path)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        if os.geteuid() == 0:
            os.chown(path, 0, 0)
        os.chmod(path, 0o600)
        return {**asdict(item), "bytes": path.stat().st_size, "sha256": sha256(path),
                "skipped": done.get("skipped", []), "skippedCount": done.get("skipped_count", 0)}

    def _host_files(self) -> list[tuple[str, Path]]:
        out = []
        for rel, directory in (("secrets", self.paths.secrets), ("tls", self.paths.tls)):
            if directory.is_dir():
                out += [(f"{rel}/{p.name}", p) for p in sorted(directory.iterdir())
                        if p.is_file() and _FILE.match(f"{rel}/{p.name}")]
        return out

    # -- restore -----------------------------------------------------------------------------------

    def restore(self, src: Path, *, force: bool = False, dry_run: bool = False, stop=None) -> dict:
        """Check everything first (manifest, checksums, what runs, what would be overwritten), then write.

        ``stop``: called to stop the running deployment when ``force`` allows it (``Deployment.down``).
        """
        src = src.resolve()
        manifest = read_manifest(src)
        for entry in [*manifest["volumes"], *manifest["files"]]:
            path = src / entry["file"]
            if not path.is_file() or path.stat().st_size != entry["bytes"] or sha256(path) != entry["sha256"]:
                raise BackupError(f"{path}: missing or not the file the manifest lists (size or SHA-256); "
                                  "the backup is damaged, nothing was restored")
        plan = []
        for entry in manifest["volumes"]:
            item = VolumeItem(entry["role"], entry["source"], entry["file"], entry.get("user"))
            target = restore_target(self.cfg, item)
            if target is None:
                self.log(f"skipping {item.file}: the current config has no {item.role} volume {item.source}")
                continue
            plan.append((item, target))
        sizes = self._check_archives(src, plan)
        running = self.running()
        full = [t for t, size in sizes.items() if size]
        changed = [f["file"] for f in manifest["files"] if self._host_target(f["file"]).exists()
                   and sha256(self._host_target(f["file"])) != f["sha256"]]
        if dry_run:
            self.log(f"would restore {src} (backup of {manifest.get('prefix')} taken {manifest.get('created')}) "
                     f"into {self.cfg.hub.prefix}:")
            for item, target in plan:
                note = " (replacing its content)" if target in full else ""
                self.log(f"  {item.file} -> volume {target}{note}")
            for f in manifest["files"]:
                note = " (replacing a different file)" if f["file"] in changed else ""
                self.log(f"  {f['file']} -> {self._host_target(f['file'])} (0600){note}")
            if running:
                self.log(f"  first stopping the running deployment ({', '.join(running)}): needs --force")
            return manifest
        problems = []
        if running:
            problems.append(f"the deployment {self.cfg.hub.prefix} is running ({', '.join(running)})")
        if full:
            problems.append(f"these volumes hold data: {', '.join(full)}")
        if changed:
            problems.append(f"these files differ from the backup's: {', '.join(str(self._host_target(f)) for f in changed)}")
        if problems and not force:
            raise BackupError("restore refused: " + "; ".join(problems) +
                              ". Nothing was changed; give --force to stop the deployment and overwrite them")
        if running:
            self.log(f"stopping {', '.join(running)} (--force)")
            if stop is None:
                raise BackupError("cannot stop the running deployment from here")
            stop()
        for item, target in plan:
            if not self.exists(target) and not target.startswith("/"):
                labels = self.own.labels(LABEL_VOLUME_ROLE[item.role])
                if item.user:
                    labels[names.LABEL_USER] = item.user
                self.client.volumes.create(target, labels=labels)
            elif target.startswith("/"):
                Path(target).mkdir(mode=0o700, parents=True, exist_ok=True)
        self.log(f"restoring {len(plan)} volumes from {src}")
        failed = []
        for item, target in plan:  # each volume by its own helper: that volume and its archive alone
            archive = src / item.file
            try:
                done = self.worker(["load", "/in.tar", "/v"], {str(archive): {"bind": "/in.tar", "mode": "ro"},
                                                               target: {"bind": "/v", "mode": "rw"}})[-1]
                self.log(f"  {target}: {done['files']} entries" + (f", {len(done['skipped'])} special files not "
                                                                   "restored" if done.get("skipped") else ""))
            except Exception as e:  # noqa: BLE001 (reported; the other volumes are restored)
                self.log(f"  FAILED {item.file} -> {target}: {e}")
                failed.append(f"{item.file}: {e}")
        for f in manifest["files"]:
            target = self._host_target(f["file"])
            target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(target.parent, 0o700)
            tmp = target.with_name(f".{target.name}.restore")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write((src / f["file"]).read_bytes())
            os.replace(tmp, target)
        if failed:
            raise BackupError(f"restored all but {len(failed)} volumes: " + "; ".join(failed))
        self.log(f"restored {len(plan)} volumes and {len(manifest['files'])} secret and TLS files into "
                 f"{self.cfg.hub.prefix}; start it with `make up`")
        return manifest

    def _check_archives(self, src: Path, plan: list[tuple[VolumeItem, str]]) -> dict[str, int]:
        """Every member of every archive through the extraction's rules (``volume_archive check``),
        before anything is stopped or emptied: one that would be refused stops the whole restore.
        Each archive's helper also measures the volume it would replace (read-only): target -> bytes
        of the targets that exist."""
        problems, sizes = [], {}
        for item, target in plan:
            mounts = {str(src / item.file): {"bind": "/in.tar", "mode": "ro"}}
            exists = self.exists(target)
            if exists:
                mounts[target] = {"bind": "/v", "mode": "ro"}
            try:
                done = self.worker(["check", "/in.tar"] + (["/v"] if exists else []), mounts)[-1]
            except BackupError as e:
                problems.append(f"{item.file}: {e}")
                continue
            if exists:
                sizes[target] = done["bytes"]
        if problems:
            raise BackupError("restore refused, nothing was changed: " + "; ".join(problems))
        return sizes

    def _host_target(self, rel: str) -> Path:
        kind, name = rel.split("/", 1)
        return (self.paths.secrets if kind == "secrets" else self.paths.tls) / name

