"""The settings schema of a clindav instance (``clindav.yaml``).

One typed schema (pydantic) drives validation: unknown keys are errors, and
every error names the file and the dotted key.  Relative paths in the file are
resolved against the folder that holds it, so an instance folder can be moved
as a whole.  Users never write WsgiDAV configuration: :mod:`gateway.app`
derives it from these settings.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import itertools
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlparse

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from gateway.clock import Duration, parse_duration
from gateway.errors import ConfigError, ConfigProblem

MiB = 1024 * 1024
# URL prefixes the Nextcloud apps' door answers (gateway/nextcloud/): no share may take them.
NEXTCLOUD_PREFIXES = frozenset({"status.php", "ocs", "index.php", "remote.php", "nextcloud"})
# server.workers: 0 runs one process per core, up to this many.
MAX_AUTO_WORKERS = 4


def _at_least(value: dt.timedelta, least: str) -> dt.timedelta:
    """A duration setting's lower bound, ``least`` written as in the settings file (e.g. 1m)."""
    if value < parse_duration(least):
        raise ValueError(f"at least {least}")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TlsSettings(_Strict):
    cert: Path = Field(description="PEM certificate chain served to clients.")
    key: Path = Field(description="PEM private key of that certificate.")


class ServerSettings(_Strict):
    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: Annotated[int, Field(ge=0, le=65535)] = Field(8443, description="TCP port (0: any free).")
    tls: TlsSettings | None = Field(
        None, description="Certificate for HTTPS; without it only loopback addresses may serve."
    )
    threads: Annotated[int, Field(ge=2, le=256)] = Field(
        32, description="Worker threads; Explorer opens several connections per drive."
    )
    block_size: Annotated[int, Field(ge=4096, le=16 * MiB)] = Field(
        1024 * 1024,
        description="Bytes per read/write when moving bodies (chosen by measurement, bench/).",
    )
    workers: Annotated[int, Field(ge=0, le=64)] = Field(
        0,
        description="Serving processes on the one port; 0: one per CPU core, at most 4 "
        "(locks.storage: memory allows only one).",
    )
    socket_timeout: Annotated[int, Field(ge=1, le=3600)] = Field(
        60, description="Seconds a client may stay silent mid-request."
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="Addresses of reverse proxies whose X-Forwarded-* headers are believed.",
    )
    propfind_fast_path: bool = Field(
        True,
        description="Answer PROPFIND Depth 0/1 in shares without WsgiDAV's per-property "
        "work (gateway/dav/propfind.py); false only to compare the two.",
    )


class ShareSettings(_Strict):
    url: str = Field(description="URL prefix of the share, e.g. /clinical.")
    path: Path = Field(description="Backing folder (the practice's share as mounted here).")

    @field_validator("url")
    @classmethod
    def _one_segment(cls, value: str) -> str:
        inner = value.strip("/")
        if not inner or "/" in inner or inner in (".", ".."):
            raise ValueError("must be one path segment such as /clinical")
        if inner.lower() in ("healthz", "readyz", "metrics"):
            raise ValueError(f"/{inner} is the gateway's own (docs/DEPLOY.md, Monitoring)")
        if inner.lower() == "app":
            raise ValueError("/app is the staff console's (docs/CONSOLE.md)")
        if inner.lower() == "upload":
            raise ValueError("/upload is the patient upload links' (docs/PATIENT-UPLOADS.md)")
        if inner.lower() in NEXTCLOUD_PREFIXES:
            raise ValueError(f"/{inner} is the Nextcloud apps' (docs/NEXTCLOUD-APPS.md)")
        return "/" + inner


class KeySettings(_Strict):
    file: Path | None = Field(
        Path("keys/master.key"), description="Master key file (mode 0600, 32 random bytes, hex)."
    )
    env: str | None = Field(
        None, description="Name of an environment variable holding the master key (hex) instead."
    )


class ThrottleSettings(_Strict):
    """Failed logins allowed per window before further attempts answer 429 (0: off)."""

    max_failures_per_user: Annotated[int, Field(ge=0)] = 10
    max_failures_per_address: Annotated[int, Field(ge=0)] = 30
    window: Annotated[int, Field(ge=1, le=86400)] = Field(300, description="Seconds.")


class LdapSettings(_Strict):
    """``auth.ldap``: the directory behind ``auth.backend: ldap`` (docs/LDAP.md)."""

    servers: list[str] = Field(min_length=1, description="ldaps:// or ldap:// URLs, in order.")
    pool_strategy: Literal["first", "round_robin"] = "first"
    server_retry_after: Annotated[int, Field(ge=0, le=3600)] = 30
    allow_plain_on_loopback: bool = False
    tls: Literal["ldaps", "starttls", "none"] = "ldaps"
    ca_file: Path | None = None
    connect_timeout: Annotated[float, Field(gt=0, le=60)] = 5.0
    timeout: Annotated[int, Field(ge=1, le=300)] = 10
    pool_size: Annotated[int, Field(ge=1, le=64)] = 4
    bind_dn: str | None = None
    bind_password_file: Path | None = None
    bind_password_env: str | None = Field(None, validate_default=True)
    base_dn: str
    user_attribute: str = "uid"
    user_filter: str = "(objectClass=person)"
    directory: Literal["openldap", "ad"] = "openldap"
    disabled_filter: str | None = None
    group_source: Literal["memberof", "search"] = "memberof"
    group_base_dn: str | None = None
    group_filter: str = (
        "(|(objectClass=groupOfNames)(objectClass=groupOfUniqueNames)(objectClass=group))"
    )
    member_attribute: Literal["member", "uniqueMember", "memberUid"] = "member"
    nested_depth: Annotated[int, Field(ge=0, le=20)] = 5
    group_map: dict[str, list[str]] = Field(default_factory=dict)
    cache_ttl: Annotated[float, Field(ge=0, le=3600)] = 60.0
    cached_logins_during_outage: bool = True
    throttle: ThrottleSettings = ThrottleSettings()

    @field_validator("servers")
    @classmethod
    def _server_urls(cls, value: list[str]) -> list[str]:
        for url in value:
            parts = urlparse(url)
            if parts.scheme not in ("ldap", "ldaps") or not parts.hostname:
                raise ValueError(f"{url!r}: use ldaps://host[:port] or ldap://host[:port]")
            if parts.path not in ("", "/") or parts.query or parts.username:
                raise ValueError(f"{url!r}: only scheme, host and port are allowed")
            _ = parts.port  # raises ValueError for a bad port
        return value

    @field_validator("tls")
    @classmethod
    def _tls_matches_servers(cls, value: str, info: ValidationInfo) -> str:
        urls: list[str] = info.data.get("servers") or []
        scheme = "ldaps" if value == "ldaps" else "ldap"
        wrong = [u for u in urls if urlparse(u).scheme != scheme]
        if wrong:
            raise ValueError(f"{value!r} needs {scheme}:// server URLs, not {wrong[0]!r}")
        if value == "none":
            remote = [u for u in urls if not is_loopback(urlparse(u).hostname or "")]
            if remote or not info.data.get("allow_plain_on_loopback"):
                raise ValueError(
                    "plain LDAP sends passwords in clear: 'none' is allowed only with "
                    "allow_plain_on_loopback: true and loopback servers"
                    + (f" ({remote[0]!r} is not loopback)" if remote else "")
                )
        return value

    @field_validator("bind_password_env")
    @classmethod
    def _one_password_source(cls, value: str | None, info: ValidationInfo) -> str | None:
        has_file = info.data.get("bind_password_file") is not None
        if info.data.get("bind_dn") and has_file == (value is not None):
            raise ValueError(
                "with bind_dn, set exactly one of bind_password_file, bind_password_env"
            )
        if not info.data.get("bind_dn") and (has_file or value is not None):
            raise ValueError("a bind password without bind_dn")
        return value

    @field_validator("user_attribute")
    @classmethod
    def _attribute_name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9-]{0,63}", value):
            raise ValueError("must be an attribute name such as uid or sAMAccountName")
        return value

    @field_validator("user_filter", "group_filter", "disabled_filter")
    @classmethod
    def _ldap_filter(cls, value: str | None) -> str | None:
        from ldap3.core.exceptions import LDAPException
        from ldap3.operation.search import parse_filter

        if value is not None:
            try:
                parse_filter(value, None, False, False, None, False)
            except (LDAPException, ValueError, IndexError) as exc:
                raise ValueError(f"not an LDAP filter (RFC 4515): {exc}") from None
        return value

    @field_validator("bind_dn", "base_dn", "group_base_dn")
    @classmethod
    def _dn(cls, value: str | None) -> str | None:
        return value if value is None else _checked_dn(value)

    @field_validator("group_map")
    @classmethod
    def _group_map(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for policy_group, entries in value.items():
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", policy_group):
                raise ValueError(f"{policy_group!r} is not a policy group name")
            for entry in entries:
                if "=" in entry:
                    _checked_dn(entry)
                elif not entry.strip():
                    raise ValueError(f"{policy_group}: an empty group name")
        return value


def _checked_dn(value: str) -> str:
    from ldap3.core.exceptions import LDAPException
    from ldap3.utils.dn import parse_dn

    try:
        if not parse_dn(value):
            raise ValueError("empty")
    except (LDAPException, ValueError) as exc:
        raise ValueError(f"{value!r} is not a DN: {exc}") from None
    return value


class AuthSettings(_Strict):
    backend: Literal["local", "ldap"] = Field("local", description="Where accounts live.")
    realm: str = Field("clindav", description="Basic-auth realm shown by clients.")
    throttle: ThrottleSettings = Field(
        ThrottleSettings(), description="Failed-login limits for local accounts."
    )
    ldap: LdapSettings | None = Field(None, validate_default=True)

    @field_validator("ldap")
    @classmethod
    def _ldap_for_ldap_backend(
        cls, value: LdapSettings | None, info: ValidationInfo
    ) -> LdapSettings | None:
        if value is None and info.data.get("backend") == "ldap":
            raise ValueError("backend 'ldap' needs this section (docs/LDAP.md)")
        return value


class LockSettings(_Strict):
    storage: str = Field(
        "database",
        description="'database' (shared by every gateway process, listed by `clindav locks`), "
        "'memory' (one process) or a redis:// URL.",
    )

    @field_validator("storage")
    @classmethod
    def _known_storage(cls, value: str) -> str:
        if value not in ("memory", "database") and not value.startswith("redis://"):
            # WsgiDAV's Redis lock store has no TLS: keep Redis on a private network.
            raise ValueError(
                "must be 'database', 'memory' or a redis:// URL (TLS to Redis is not supported)"
            )
        return value


class LimitSettings(_Strict):
    max_upload_bytes: Annotated[int, Field(ge=0)] = Field(
        128 * MiB,
        description="Largest PUT body held in memory and checked whole by the stages; "
        "larger ones are streamed where the share's stages allow it.",
    )
    max_stream_bytes: Annotated[int, Field(ge=0)] = Field(
        16 * 1024 * MiB,
        description="Largest streamed PUT body (sealed into its temp file as it arrives).",
    )
    max_copy_members: Annotated[int, Field(ge=0)] = Field(
        10_000, description="Most entries below a folder that one COPY may copy."
    )
    max_copy_bytes: Annotated[int, Field(ge=0)] = Field(
        10 * 1024 * MiB, description="Most bytes (as stored) below a folder that one COPY may copy."
    )
    decode_memory: Annotated[int, Field(ge=16 * MiB)] = Field(
        512 * MiB,
        description="Bytes of decoded pixels one serving process may hold at once while it "
        "checks images (gateway/decoding.py); a larger image is refused with 413.",
    )
    decode_wait: Annotated[float, Field(ge=0, le=300)] = Field(
        10.0,
        description="Seconds a decode waits for room in decode_memory before 503 decode-busy.",
    )


class TrashSettings(_Strict):
    sweep_interval: Annotated[int, Field(ge=1, le=86400)] = Field(
        300, description="Seconds between the server's purges of trash items that are due."
    )
    placeholder_max_age: Duration = Field(
        dt.timedelta(hours=1),
        description="Age after which the sweeper removes a 0-byte placeholder whose upload "
        "never came (e.g. 1h, 30m).",
    )
    max_clock_jump: Duration = Field(
        dt.timedelta(days=1),
        description="How far the clock may move forward between two sweeps before purges "
        "wait for an administrator (clindav trash purge --due).",
    )

    @field_validator("max_clock_jump")
    @classmethod
    def _jump_bound(cls, value: dt.timedelta) -> dt.timedelta:
        # Sweeps are remembered in the audit trail at most hourly (gateway/records/scheduler.py).
        return _at_least(value, "2h")


class AuditSettings(_Strict):
    anchor_interval: Annotated[int, Field(ge=10, le=86400)] = Field(
        3600, description="Seconds between log lines carrying the audit chain's head."
    )


class ConsoleSettings(_Strict):
    """The staff console at /app/ (docs/CONSOLE.md)."""

    idle_timeout: Duration = Field(
        dt.timedelta(minutes=15),
        description="A console session unused this long is signed out (e.g. 15m).",
    )
    max_session: Duration = Field(
        dt.timedelta(hours=12),
        description="A console session ends this long after sign-in, however busy (e.g. 12h).",
    )

    @field_validator("idle_timeout", "max_session")
    @classmethod
    def _positive(cls, value: dt.timedelta) -> dt.timedelta:
        return _at_least(value, "10s")


class NotifySettings(_Strict):
    """GOV.UK Notify: sends patient upload links by SMS and e-mail (docs/PATIENT-UPLOADS.md)."""

    api_key: str | None = Field(
        None, description="The service's Notify API key (name-serviceid-secret); none: no sending."
    )
    base_url: str = Field(
        "https://api.notifications.service.gov.uk", description="The Notify API's address."
    )
    sms_template: str | None = Field(None, description="Template id of the SMS.")
    email_template: str | None = Field(None, description="Template id of the e-mail.")


class UploadSettings(_Strict):
    """Patient upload links at /upload/ (docs/PATIENT-UPLOADS.md)."""

    public_url: str | None = Field(
        None,
        description="The gateway's address as patients reach it (https://gateway.example); "
        "none: the address the console was opened at, or server.host and port.",
    )
    practice_name: str = Field(
        "Your GP practice", description="Shown to patients on the upload page and in messages."
    )
    share: str = Field("clinical", description="The share photos are stored in.")
    folder: str = Field(
        "patient-uploads", description="Folder in the patient's folder: <folder>/<date>/."
    )
    max_files: Annotated[int, Field(ge=1, le=50)] = Field(
        10, description="Most photos one link may send (a request may ask for fewer)."
    )
    max_file_bytes: Annotated[int, Field(ge=1, le=100 * MiB)] = Field(
        25 * MiB, description="Largest photo accepted."
    )
    formats: list[str] = Field(
        default_factory=lambda: ["jpeg", "png", "heif", "webp"],
        description="Formats accepted from patients (names of plugins/formats.py); the "
        "share's filetype stage must allow them too.",
    )
    expiry_days: Annotated[int, Field(ge=1, le=90)] = Field(
        7, description="Days a link works unless the request says otherwise."
    )
    dob_tries: Annotated[int, Field(ge=1, le=20)] = Field(
        5, description="Wrong dates of birth that lock a link."
    )
    pass_lifetime: Duration = Field(
        dt.timedelta(hours=1),
        description="How long after the date of birth was checked the photos may be sent.",
    )
    address_rate: Annotated[int, Field(ge=1)] = Field(
        30, description="Requests to upload pages one client address may make per 10 minutes."
    )
    link_rate: Annotated[int, Field(ge=1)] = Field(
        20, description="Requests one link may receive per 10 minutes."
    )
    notify: NotifySettings = NotifySettings()


class NextcloudSettings(_Strict):
    """The door for the Nextcloud apps (docs/NEXTCLOUD-APPS.md)."""

    enabled: bool = Field(True, description="Serve status.php, OCS and remote.php.")
    login_flow_timeout: Duration = Field(
        dt.timedelta(minutes=20),
        description="A Login Flow v2 not completed this long after it began is void (e.g. 20m).",
    )
    login_flow_rate: Annotated[int, Field(ge=1)] = Field(
        30, description="Login Flow v2 starts one client address may make per 10 minutes."
    )

    inbox_share: str | None = Field(
        None,
        description="The share whose folder <uid>/ is each user's camera inbox (a hold stage).",
    )
    upload_dir: Path = Field(
        Path("nextcloud-uploads"),
        description="Folder for chunked uploads in progress (encrypted; per instance).",
    )
    upload_expiry: Duration = Field(
        dt.timedelta(hours=24),
        description="A chunked upload untouched this long is removed (e.g. 24h).",
    )

    @field_validator("login_flow_timeout", "upload_expiry")
    @classmethod
    def _positive(cls, value: dt.timedelta) -> dt.timedelta:
        return _at_least(value, "1m")


class MetricsSettings(_Strict):
    allow: list[str] = Field(
        default_factory=lambda: ["127.0.0.0/8", "::1/128"],
        description="Addresses or networks that may read /metrics (others get 404).",
    )

    @field_validator("allow")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an address or network") from None
        return value


class Settings(_Strict):
    server: ServerSettings = ServerSettings()
    database_url: str = Field(
        "sqlite:///clindav.db",
        description="SQLAlchemy URL; relative SQLite paths are per instance.",
    )
    keys: KeySettings = KeySettings()
    auth: AuthSettings = AuthSettings()
    locks: LockSettings = LockSettings()
    limits: LimitSettings = LimitSettings()
    trash: TrashSettings = TrashSettings()
    audit: AuditSettings = AuditSettings()
    metrics: MetricsSettings = MetricsSettings()
    console: ConsoleSettings = ConsoleSettings()
    uploads: UploadSettings = UploadSettings()
    nextcloud: NextcloudSettings = NextcloudSettings()
    policy: Path = Field(Path("policy.yaml"), description="Policy file (see policies/).")
    shares: dict[str, ShareSettings] = Field(description="Share name -> URL prefix and folder.")

    @field_validator("shares")
    @classmethod
    def _share_names(cls, value: dict[str, ShareSettings]) -> dict[str, ShareSettings]:
        for name in value:
            if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,62}", name):
                raise ValueError(f"share name {name!r}: use lower-case letters, digits and -")
        return value

    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @model_validator(mode="after")
    def _inbox_is_a_share(self) -> Settings:
        inbox = self.nextcloud.inbox_share
        if inbox is not None and inbox not in self.shares:
            raise ValueError(f"nextcloud.inbox_share: {inbox!r} is not one of the shares")
        return self

    # Folder the settings file lives in; set by load_settings, not by users.
    base_dir: Path = Field(Path("."), exclude=True)

    def resolve(self, path: Path) -> Path:
        """An instance path made absolute against the settings file's folder."""
        return path if path.is_absolute() else (self.base_dir / path)

    @model_validator(mode="after")
    def _shared_locks_for_workers(self) -> Settings:
        return self._checked_workers()

    def _checked_workers(self) -> Settings:
        if self.server.workers > 1 and self.locks.storage == "memory":
            raise ValueError(
                "server.workers above 1 needs locks.storage 'database' or a redis:// URL"
            )
        return self

    def with_workers(self, workers: int) -> Settings:
        """These settings with ``server.workers`` replaced (``clindav serve --workers``)."""
        server = self.server.model_copy(update={"workers": workers})
        return self.model_copy(update={"server": server})._checked_workers()

    def process_count(self) -> int:
        """How many serving processes to run (``server.workers``, resolved)."""
        if self.locks.storage == "memory":
            return 1  # locks held in one process's memory cannot be shared
        if self.server.workers:
            return self.server.workers
        return max(1, min(os.cpu_count() or 1, MAX_AUTO_WORKERS))

    def sqlalchemy_url(self) -> str:
        prefix = "sqlite:///"
        if self.database_url.startswith(prefix) and not self.database_url.startswith(prefix + "/"):
            return prefix + str(self.resolve(Path(self.database_url[len(prefix) :])))
        return self.database_url


def unreachable_host(url: str) -> str | None:
    """``url``'s host and why no other machine can open it (e.g. "127.0.0.1, this
    machine's own"), or None.  Such hosts: the loopback ones and the listening
    address 0.0.0.0, as in a link made on the gateway host itself."""
    host = urlparse(url).hostname or ""
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(host).is_unspecified:
            return f"{host}, a listening address"
    if is_loopback(host):
        return f"{host}, this machine's own"
    return None


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_yaml(path: Path) -> Any:
    """A YAML file's content; ConfigError naming the file when it cannot be read.

    A key given twice in one mapping is an error naming file, line and key:
    YAML readers keep the last one silently, so a second ``clinical:`` block
    would replace the first (its consent and scrub stages with it).
    """
    try:
        loader = yaml.SafeLoader(path.read_text(encoding="utf-8"))
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            problems = _duplicate_keys(str(path), node, "")
            if problems:
                raise ConfigError(problems)
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except FileNotFoundError:
        raise ConfigError.single(str(path), "(file)", "not found") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError.single(str(path), "(file)", f"cannot be read as YAML: {exc}") from None


def _duplicate_keys(file: str, node: yaml.Node, prefix: str) -> list[ConfigProblem]:
    """Every key that appears twice in one mapping of the composed document."""
    problems: list[ConfigProblem] = []
    if isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            problems += _duplicate_keys(file, item, f"{prefix}{index}.")
    elif isinstance(node, yaml.MappingNode):
        first_line: dict[tuple[str, str], int] = {}
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
                continue  # merge keys (<<) and complex keys are not settings names
            dotted = prefix + str(key.value)
            line = key.start_mark.line + 1
            seen = first_line.get((key.tag, str(key.value)))
            if seen is None:
                first_line[(key.tag, str(key.value))] = line
            else:
                problem = f"duplicate key at line {line} (first at line {seen})"
                problems.append(ConfigProblem(file, dotted, problem))
            problems += _duplicate_keys(file, value, dotted + ".")
    return problems


def load_settings(path: Path) -> Settings:
    """Read and validate a settings file; raises ConfigError naming file and keys."""
    name = str(path)
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError.single(name, "(top level)", "must be a mapping of settings")
    raw.pop("base_dir", None)
    try:
        settings = Settings.model_validate({**raw, "base_dir": path.parent.resolve()})
    except ValidationError as exc:
        raise ConfigError(problems_from(name, exc)) from None
    _check_shares(name, settings)
    return settings


def _check_shares(name: str, settings: Settings) -> None:
    seen: dict[str, str] = {}
    problems = []
    for share, conf in settings.shares.items():
        if conf.url.lower() in seen:
            problems.append(
                ConfigProblem(
                    name, f"shares.{share}.url", f"same URL as share {seen[conf.url.lower()]}"
                )
            )
        seen[conf.url.lower()] = share
    if problems:
        raise ConfigError(problems)


def problems_from(file: str, exc: ValidationError, prefix: str = "") -> list[ConfigProblem]:
    """Turn pydantic's errors into file/key/problem triples people can act on.

    For a value that may take several forms (a union), pydantic reports one
    error per form; the one that got furthest into the value is kept.
    """
    best: dict[str, tuple[int, str]] = {}
    for err in exc.errors():
        parts = [str(p) for p in err["loc"] if not _is_type_tag(p)]
        key = ".".join([prefix, *parts] if prefix else parts) or "(top level)"
        message = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        # Errors of one union share the location up to the first type tag.
        root = ".".join(
            str(p) for p in itertools.takewhile(lambda p: not _is_type_tag(p), err["loc"])
        )
        depth = len(err["loc"])
        if root not in best or depth > best[root][0]:
            best[root] = (depth, key + "\0" + message)
    return [ConfigProblem(file, *entry.split("\0", 1)) for _depth, entry in best.values()]


def _is_type_tag(part: object) -> bool:
    """Union members appear in error locations as tags like ``literal['any']``."""
    return isinstance(part, str) and ("[" in part or "'" in part)


def dump_settings(data: dict[str, Any]) -> str:
    """YAML text of a settings mapping, as `clindav init` writes it."""
    return yaml.safe_dump(data, sort_keys=False)
