"""Policies: who may do what where, and which stages run.

A policy file (YAML, schema in ``policies/schema.json``) has ``shares`` (per
share: the pipeline of stages with their options) and ``rules``.  A request
is reduced to one or two *checks* (share, path, method, action); the first
rule that matches a check decides it (``effect: allow`` or ``deny``); when no
rule matches, the answer is deny.  Actions group methods: ``read`` (GET,
HEAD, OPTIONS, PROPFIND), ``write`` (PUT, MKCOL, PROPPATCH, LOCK, UNLOCK and
the destination of COPY/MOVE), ``delete`` (DELETE and the source of MOVE).
A rule's ``methods`` may name actions or HTTP methods.  ``groups: ["*"]``
matches every authenticated user.  Paths are globs relative to the share
root: ``*`` stays within a segment, ``**`` crosses segments.

Authorization is entirely clindav's: WsgiDAV never enforces roles.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.auth.base import Principal
from gateway.clock import Duration
from gateway.errors import BadRequest, ConfigError, ConfigProblem
from gateway.pipeline import Pipeline, StageBuilder, StageOptionsError
from gateway.settings import problems_from, read_yaml

if TYPE_CHECKING:
    from gateway.services import Services  # built after the policy, which it holds

Action = Literal["read", "write", "delete"]
ACTIONS: dict[str, Action] = {
    "GET": "read",
    "HEAD": "read",
    "OPTIONS": "read",
    "PROPFIND": "read",
    "PUT": "write",
    "MKCOL": "write",
    "PROPPATCH": "write",
    "LOCK": "write",
    "UNLOCK": "write",
    "DELETE": "delete",
}
METHOD_NAMES = frozenset(ACTIONS) | {"COPY", "MOVE"}
StageSpec = dict[str, dict[str, Any] | None]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SharePolicy(_Strict):
    stages: list[StageSpec | str] = Field(
        default_factory=list, description="PUT pipeline: stage names, or {name: options}."
    )
    names: Literal["encrypted", "plain"] = Field(
        "encrypted", description="How names are stored on the backing share."
    )
    trash_window: Duration = Field(
        dt.timedelta(days=30), description="How long deleted items stay restorable (e.g. 30d)."
    )
    retention: RetentionPolicy | None = Field(
        None, description="Keep files as part of the medical record (see docs/POLICY.md)."
    )
    legacy: LegacyPolicy = Field(
        default_factory=lambda: LegacyPolicy(),
        description="Files already in the backing folder (docs/MIGRATION.md).",
    )


class RetentionPolicy(_Strict):
    keep_for: Duration = Field(description="From a file's creation, e.g. 8y for GP records.")
    applies_to: Literal["images", "all"] = Field(
        "images", description="Which files of the share the retention covers."
    )


class LegacyPolicy(_Strict):
    consent: Literal["legacy-unverified", "hold"] = Field(
        "legacy-unverified",
        description="Migrated images have no recorded consent: flag them for review "
        "(kept, visible) or hold them until consent is recorded.",
    )
    hold_window: Duration = Field(
        dt.timedelta(days=365),
        description="With consent: hold, how long a migrated image waits for consent.",
    )
    access: Literal["hidden"] = Field(
        "hidden", description="Unmigrated files are never listed or served."
    )


class Rule(_Strict):
    name: str = Field(description="Shown in logs and audit entries.")
    share: str = Field("*", description="Share name, or * for every share.")
    path: str = Field("**", description="Glob relative to the share root.")
    groups: list[str] = Field(description="Groups the rule applies to; * for everyone signed in.")
    methods: list[str] = Field(description="Actions (read, write, delete) and/or HTTP methods.")
    effect: Literal["allow", "deny"] = "allow"
    stages: list[StageSpec | str] | None = Field(
        None, description="Overrides the share's pipeline for requests this rule allows."
    )


class PolicyFile(_Strict):
    version: Literal[1] = 1
    admin_group: str = Field(
        "admins", description="Group whose members may delete retained files, with a reason."
    )
    consent_recorders: list[str] = Field(
        default_factory=lambda: ["admins", "clinicians", "ehr-systems"],
        description="Groups that may record consent through the EHR manifest.",
    )
    auditor_group: str = Field(
        "auditors",
        description="Group whose members read the audit trail in the console (with admins).",
    )
    shares: dict[str, SharePolicy] = Field(default_factory=dict)
    rules: list[Rule] = Field(default_factory=list)


@dataclass(frozen=True)
class Check:
    """One question the policy answers for a request."""

    share: str
    path: str
    method: str
    action: Action


@dataclass(frozen=True)
class Decision:
    allowed: bool
    rule: str
    pipeline: Pipeline


def request_checks(
    method: str, share: str, path: str, destination: tuple[str, str] | None
) -> list[Check]:
    """The checks a request must pass (WebDAV's gate, the console's copies).

    COPY and MOVE: ``read`` (COPY) or ``delete`` (MOVE) at the source and
    ``write`` at the destination; an unknown method needs ``write``.
    """
    if method in ("COPY", "MOVE"):
        if destination is None:
            raise BadRequest("COPY/MOVE without a Destination")
        source_action: Action = "delete" if method == "MOVE" else "read"
        return [
            Check(share, path, method, source_action),
            Check(destination[0], destination[1], method, "write"),
        ]
    action = ACTIONS.get(method)
    if action is None:
        return [Check(share, path, method, "write")]  # unknown methods need the most rights
    return [Check(share, path, method, action)]


_DENY = Decision(False, "default-deny", Pipeline())


@dataclass(frozen=True)
class _Loaded:
    """One policy file's content: replaced as a whole on reload, never piecemeal
    (a rule's pipeline is found by the rule's index in the same document)."""

    doc: PolicyFile
    pipelines: dict[str, Pipeline]
    rule_pipelines: dict[int, Pipeline]


class Policy:
    """A loaded, validated policy: rules with compiled globs and built pipelines.

    One object for the life of the gateway (stages keep a reference to it);
    :meth:`adopt` swaps in a reloaded file's content for the next request.
    """

    def __init__(
        self, doc: PolicyFile, pipelines: dict[str, Pipeline], rule_pipelines: dict[int, Pipeline]
    ) -> None:
        self._loaded = _Loaded(doc, pipelines, rule_pipelines)

    @property
    def doc(self) -> PolicyFile:
        return self._loaded.doc

    def adopt(self, other: Policy) -> None:
        """Take ``other``'s rules and pipelines (already validated and attached)."""
        self._loaded = other._loaded

    def decide(self, principal: Principal, check: Check) -> Decision:
        return self.decider(principal, check.share, check.method, check.action)(check.path)

    def decider(
        self, principal: Principal, share: str, method: str, action: Action
    ) -> Callable[[str], Decision]:
        """:meth:`decide` for many paths of one principal, share and method (a listing).

        Rules that cannot apply whatever the path are left out once; each path
        then meets the globs of the others, in order, and the first match wins.
        """
        loaded = self._loaded  # one document for the whole decision, even during a reload
        rules = [
            (_glob(rule.path), _verdict(loaded, index, rule, share))
            for index, rule in enumerate(loaded.doc.rules)
            if _applies(rule, principal, share, method, action)
        ]

        def decide_path(path: str) -> Decision:
            stripped = path.strip("/")
            for glob, verdict in rules:
                if glob.fullmatch(stripped) is not None:
                    return verdict
            return _DENY

        return decide_path

    def pipeline(self, share: str) -> Pipeline:
        return self._loaded.pipelines.get(share, Pipeline())

    def attach(self, services: Services) -> None:
        """Hand the running gateway's services to every stage of every pipeline."""
        loaded = self._loaded
        for pipeline in [*loaded.pipelines.values(), *loaded.rule_pipelines.values()]:
            pipeline.attach(services)

    def required_scope(self, share: str) -> str | None:
        """The consent scope the share's consent stage requires, if it has one."""
        stage = self.pipeline(share).find("consent")
        return None if stage is None else str(getattr(stage.options, "requires", None))

    def readers(self, share: str, path: str) -> frozenset[str]:
        """The groups whose members may read ``path`` of ``share``; "*": users in no group.

        Matching only grows with a user's groups and the first matching rule
        decides, so a user may read exactly when one of their groups alone may
        (or no group, by a ``"*"`` rule): trying each group the rules name on
        its own answers "who may read this" exactly.  Reading is any read
        method, or the source of a COPY.
        """
        named = {g for rule in self.doc.rules for g in rule.groups if g != "*"}
        candidates = [(g, frozenset({g})) for g in named] + [("*", frozenset[str]())]
        methods = [m for m, action in ACTIONS.items() if action == "read"] + ["COPY"]
        return frozenset(
            name
            for name, groups in candidates
            if any(
                self.decide(Principal("-", groups), Check(share, path, m, "read")).allowed
                for m in methods
            )
        )

    def share(self, share: str) -> SharePolicy:
        return self.doc.shares.get(share) or SharePolicy()

    def named_groups(self) -> frozenset[str]:
        """Every group the policy gives a meaning: in rules, as admins, auditors, consent
        recorders."""
        doc = self.doc
        in_rules = {group for rule in doc.rules for group in rule.groups if group != "*"}
        return frozenset({*in_rules, doc.admin_group, doc.auditor_group, *doc.consent_recorders})

    def readable_shares(self, principal: Principal, shares: list[str]) -> list[str]:
        """Shares whose root this principal may list (for the virtual root)."""
        return [
            s for s in shares if self.decide(principal, Check(s, "/", "PROPFIND", "read")).allowed
        ]


def _verdict(loaded: _Loaded, index: int, rule: Rule, share: str) -> Decision:
    if rule.effect == "deny":
        return Decision(False, rule.name, Pipeline())
    pipeline = loaded.rule_pipelines.get(index) or loaded.pipelines.get(share, Pipeline())
    return Decision(True, rule.name, pipeline)


def _applies(rule: Rule, principal: Principal, share: str, method: str, action: Action) -> bool:
    """Whether ``rule`` can decide for this principal, share and method (its path aside)."""
    if rule.share not in ("*", share):
        return False
    if action not in rule.methods and method not in rule.methods:
        return False
    return "*" in rule.groups or bool(principal.groups.intersection(rule.groups))


@lru_cache(maxsize=512)
def _glob(pattern: str) -> re.Pattern[str]:
    pattern = pattern.strip("/")
    tail = ""
    if pattern.endswith("/**"):
        # "x/**" covers the folder x itself too: a rule guarding a folder's
        # contents must also guard the folder (DELETE, MOVE, PROPFIND of it).
        pattern, tail = pattern[:-3], "(?:/.*)?"
    parts = []
    for token in re.split(r"(\*\*/?|\*|\?)", pattern):
        if token in ("**", "**/"):
            parts.append(".*" if token == "**" else "(?:.*/)?")
        elif token == "*":
            parts.append("[^/]*")
        elif token == "?":
            parts.append("[^/]")
        else:
            parts.append(re.escape(token))
    return re.compile("".join(parts) + tail)


def load_policy(path: Path, registry: StageBuilder, share_names: list[str]) -> Policy:
    """Read, validate and build a policy; ConfigError names the file and key."""
    name = str(path)
    raw = read_yaml(path)
    try:
        doc = PolicyFile.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(problems_from(name, exc)) from None
    problems: list[ConfigProblem] = []
    pipelines = {}
    for share, conf in doc.shares.items():
        if share not in share_names:
            problems.append(ConfigProblem(name, f"shares.{share}", "no such share in the settings"))
        pipelines[share] = _build(name, f"shares.{share}.stages", conf.stages, registry, problems)
    rule_pipelines = {}
    for index, rule in enumerate(doc.rules):
        problems.extend(_rule_problems(name, index, rule, share_names))
        if rule.stages is not None:
            key = f"rules.{index}.stages"
            rule_pipelines[index] = _build(name, key, rule.stages, registry, problems)
    if problems:
        raise ConfigError(problems)
    return Policy(doc, pipelines, rule_pipelines)


def _rule_problems(
    file: str, index: int, rule: Rule, share_names: list[str]
) -> list[ConfigProblem]:
    problems = []
    if rule.share != "*" and rule.share not in share_names:
        problems.append(ConfigProblem(file, f"rules.{index}.share", f"no share {rule.share!r}"))
    for method in rule.methods:
        if method not in METHOD_NAMES and method not in ("read", "write", "delete"):
            problems.append(ConfigProblem(file, f"rules.{index}.methods", f"unknown {method!r}"))
    return problems


def _build(
    file: str,
    key: str,
    specs: list[StageSpec | str],
    registry: StageBuilder,
    problems: list[ConfigProblem],
) -> Pipeline:
    stages = []
    for position, spec in enumerate(specs):
        if isinstance(spec, str):
            spec = {spec: None}
        if len(spec) != 1:
            problems.append(ConfigProblem(file, f"{key}.{position}", "one stage name per entry"))
            continue
        ((stage_name, options),) = spec.items()
        try:
            stages.append(registry.build(stage_name, options))
        except StageOptionsError as exc:
            problems.extend(
                ConfigProblem(file, f"{key}.{position}.{where}", text)
                for where, text in exc.problems
            )
    return Pipeline(tuple(stages))


def policy_schema() -> dict[str, Any]:
    """JSON schema of policy files (shipped as policies/schema.json)."""
    return PolicyFile.model_json_schema()
