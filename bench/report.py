"""Medians, paired ratios to plain WsgiDAV, target checks, and the markdown report."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench.client import median

BASELINE = "wsgidav"
# Which figure is the headline (and the ratio shown) for each load.
HEADLINE = {
    "put_4mb_c1": "mb_s",
    "put_4mb_c8": "mb_s",
    "get_4mb_c1": "mb_s",
    "get_4mb_c8": "mb_s",
    "propfind_2000_c1": "req_s",
    "propfind_2000_c8": "req_s",
    "connect_burst_c8": "req_s",
    "put_large": "mb_s",
    "get_large": "mb_s",
}
FIGURES = ("mb_s", "req_s", "p50_ms", "p95_ms", "max_ms", "cpu_ms_per_req", "peak_rss_mib")
RATIO_FIGURES = ("mb_s", "req_s", "p50_ms", "cpu_ms_per_req", "peak_rss_mib")
# (load, figure, needed ratio to WsgiDAV) from issue 9.
RATIO_TARGETS = (
    ("put_4mb_c1", "mb_s", 1.2),
    ("put_4mb_c8", "mb_s", 2.0),
    ("get_4mb_c1", "mb_s", 2.0),
    ("get_4mb_c8", "mb_s", 4.0),
    ("propfind_2000_c1", "req_s", 5.0),
    ("propfind_2000_c8", "req_s", 20.0),
)
# (load, figure, needed ratio to WsgiDAV) from issue 21: GET catches up, PROPFIND keeps its lead.
ISSUE_21_RATIOS = (
    ("get_4mb_c1", "mb_s", 1.0),
    ("propfind_2000_c1", "req_s", 14.0),
    ("propfind_2000_c8", "req_s", 41.0),
)
RSS_TARGET_MIB = 64.0
PIPELINE_TARGET_MS = 15.0


def summarise_loads(raw: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    """Per load and peer: the median of every figure over the repetitions."""
    return {
        load: {
            peer: {f: median(run.get(f) for run in runs) for f in FIGURES}
            | {"runs": len(runs), "errors": sum(run.get("errors", 0) or 0 for run in runs)}
            for peer, runs in peers.items()
        }
        for load, peers in raw.items()
    }


def paired_ratios(raw: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    """Median over repetitions of (peer figure / WsgiDAV figure in the same repetition)."""
    out: dict[str, Any] = {}
    for load, peers in raw.items():
        base = peers.get(BASELINE, [])
        out[load] = {}
        for peer, runs in peers.items():
            if peer == BASELINE:
                continue
            out[load][peer] = {
                f: median(_ratio(r.get(f), b.get(f)) for r, b in zip(runs, base, strict=False))
                for f in RATIO_FIGURES
            }
    return out


def _ratio(value: float | None, base: float | None) -> float | None:
    if value is None or not base:
        return None
    return value / base


def check_targets(
    ratios: dict[str, Any],
    huge: dict[str, Any],
    pipeline: dict[str, Any] | None,
    summary: dict[str, Any],
) -> list[dict[str, Any]]:
    """Each of issue 9's targets for clindav: the measured value, what is needed, met or not."""
    rows = []
    for load, figure, needed in RATIO_TARGETS:
        value = ratios.get(load, {}).get("clindav", {}).get(figure)
        rows.append(
            _row(
                f"{load} {figure} ratio to WsgiDAV",
                value,
                f">= {needed}",
                value is not None and value >= needed,
            )
        )
    rclone = summary.get("get_4mb_c8", {}).get("rclone", {}).get("mb_s")
    if rclone:
        mine = summary.get("get_4mb_c8", {}).get("clindav", {}).get("mb_s")
        rows.append(
            _row(
                "get_4mb_c8 MB/s above rclone crypt",
                mine,
                f"> {rclone:.0f} MB/s",
                mine is not None and mine > rclone,
            )
        )
    rows.append(_rss_row(huge.get("clindav")))
    rows.append(_rss_growth_row(huge.get("clindav")))
    target = (pipeline or {}).get("target_total", {})
    figure = target.get("cpu_ms_median_sum")
    missing = target.get("missing", [])
    note = f" (without {', '.join(missing)})" if missing else ""
    whole = (pipeline or {}).get("total", {}).get("cpu_ms_median_sum")
    rows.append(
        _row(
            f"pipeline CPU ms per 4 MB photo: scrub + encrypt + hash + audit{note}",
            figure,
            f"<= {PIPELINE_TARGET_MS}",
            figure is not None and figure <= PIPELINE_TARGET_MS,
            f"whole PUT pipeline with the filetype check and consent: {_fmt(whole, 1)} ms",
        )
    )
    return rows


def _rss_row(huge: dict[str, Any] | None) -> dict[str, Any]:
    size = (huge or {}).get("bytes", 0) / 1e6
    name = f"peak RSS MiB during {size:.0f} MB PUT and GET (fresh process)"
    if not huge:
        return _row(name, None, f"<= {RSS_TARGET_MIB:.0f}", False, "not measured")
    put, get = huge.get("put", {}), huge.get("get", {})
    if put.get("errors"):
        return _row(
            name,
            put.get("peak_rss_mib"),
            f"<= {RSS_TARGET_MIB:.0f}",
            False,
            f"PUT refused: {put.get('statuses')} {put['errors'][0][:120]}",
        )
    peak = max(put.get("peak_rss_mib") or 0, get.get("peak_rss_mib") or 0)
    return _row(
        name,
        peak,
        f"<= {RSS_TARGET_MIB:.0f}",
        peak <= RSS_TARGET_MIB,
        f"whole process tree (supervisor and workers); {put.get('rss_before_mib') or 0:.0f} "
        "MiB before the PUT",
    )


def _rss_growth_row(huge: dict[str, Any] | None) -> dict[str, Any]:
    """How much the transfer itself adds: what "flat" asks of a streamed body."""
    size = (huge or {}).get("bytes", 0) / 1e6
    name = f"RSS growth MiB during {size:.0f} MB PUT and GET (peak over the RSS before)"
    put, get = (huge or {}).get("put", {}), (huge or {}).get("get", {})
    if not huge or put.get("errors"):
        return _row(name, None, f"<= {RSS_TARGET_MIB:.0f}", False, "not measured")
    growth = max(put.get("rss_growth_mib") or 0, get.get("rss_growth_mib") or 0)
    return _row(name, growth, f"<= {RSS_TARGET_MIB:.0f}", growth <= RSS_TARGET_MIB)


def target_row(
    name: str, value: float | None, needed: str, met: bool, note: str = ""
) -> dict[str, Any]:
    """One row of the targets table (JSON ``targets``)."""
    return {"target": name, "value": value, "needed": needed, "met": met, "note": note}


_row = target_row


def issue_targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 7 (LDAP within 10 % of local auth), issue 5 (no loss from the consent stage),
    issue 21 (the command line starts in under 0.3 s, an idle worker under 60 MiB) and
    issue 18 (the console's inbox and thumbnail), issue 20 (the apps' listings)."""
    rows: list[dict[str, Any]] = []
    ldap = result.get("ldap")
    if ldap is not None:
        rows += ldap.get("targets") or [
            _not_measured(ldap, "issue 7: 4 MB PUT/GET MB/s, LDAP / local auth", ">= 0.9")
        ]
    for load, figure, needed in ISSUE_21_RATIOS if result.get("raw") else ():
        ratio = result.get("ratios", {}).get(load, {}).get("clindav", {})
        value, cpu = ratio.get(figure), ratio.get("cpu_ms_per_req")
        rows.append(
            target_row(
                f"issue 21: {load} {figure}, ratio to WsgiDAV",
                value,
                f">= {needed:g}",
                value is not None and value >= needed,
                f"server CPU per request: {_fmt(cpu, 2)}x WsgiDAV's",
            )
        )
    rows += (result.get("cli") or {}).get("targets", [])
    migrate = result.get("migrate")
    if migrate is not None:
        rows += migrate.get("targets") or [
            _not_measured(migrate, "issue 21: migrate, --jobs 2 / --jobs 1 files/s", ">= 1.8")
        ]
    idle = result.get("idle")
    if idle is not None:
        rows += idle.get("targets") or [
            _not_measured(idle, "issue 21: idle worker RSS, MiB", "< 60")
        ]
    consent = result.get("consent")
    if consent is not None:
        name = "issue 5: PUT 4 MB C=1 MB/s, with / without consent stage"
        ratio = consent.get("ratios", {}).get("clindav-consent")
        rows.append(
            _not_measured(consent, name, "no measurable loss")
            if ratio is None
            else target_row(
                name,
                ratio["median"],
                "no measurable loss (1.0 within the per-repetition spread)",
                _no_measurable_loss(ratio),
                f"per-repetition {_fmt(ratio['min'], 2)}-{_fmt(ratio['max'], 2)}",
            )
        )
    put = result.get("put")
    if put is not None:
        rows += put.get("targets") or [
            _not_measured(put, "issue 21: PUT 4 MB JPEG, clindav / rclone crypt", ">= 1.0; >= 1.5")
        ]
    console = result.get("console")
    if console is not None:
        rows += console.get("targets") or [
            _not_measured(
                console, "issue 18: console inbox and thumbnail, median ms", "< 300; < 60"
            )
        ]
    nextcloud = result.get("nextcloud")
    if nextcloud is not None:
        rows += nextcloud.get("targets") or [
            _not_measured(nextcloud, "issue 20: apps' listing of a large folder's parent", "< 1.5")
        ]
    return rows


def _not_measured(part: dict[str, Any], name: str, needed: str) -> dict[str, Any]:
    """The target row of an issue's part that could not run, with why."""
    why = part.get("unavailable") or part.get("error", "")
    return target_row(name, None, needed, False, f"not measured: {why}"[:200])


def _no_measurable_loss(ratio: dict[str, Any]) -> bool:
    low, high, mid = ratio.get("min"), ratio.get("max"), ratio.get("median")
    if mid is None:
        return False
    return mid >= 1.0 or (low is not None and high is not None and low <= 1.0 <= high)


# --- markdown ---------------------------------------------------------------


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown(result: dict[str, Any]) -> str:
    """The whole report as markdown (headline table, targets, memory, pipeline, sweep, profile)."""
    parts = [
        _header(result),
        _load_table(result),
        _targets_table(result),
        _memory_table(result),
        _huge_table(result),
        _setup_table(result),
        _pipeline_table(result),
        _ldap_section(result),
        _consent_section(result),
        _put_section(result),
        _audit_section(result),
        _cli_section(result),
        _idle_section(result),
        _migrate_section(result),
        _console_section(result),
        _nextcloud_section(result),
        _sweep_table(result),
        _profile_section(result),
        _findings_section(result),
    ]
    return "\n\n".join(p for p in parts if p) + "\n"


def _header(result: dict[str, Any]) -> str:
    meta = result["meta"]
    machine = meta["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
    skipped = "; ".join(f"{k}: {v}" for k, v in meta.get("skipped_peers", {}).items())
    lines = [
        f"## Benchmark {meta['timestamp']} ({meta['mode']} mode, {meta['reps']} repetitions)",
        "",
        f"- command: `{meta['command']}`",
        f"- machine: {machine['nproc']} CPUs ({machine['cpu_model']}), "
        f"{machine['mem_total_mib']} MiB RAM, {machine['kernel']}",
        f"- versions: {versions}",
        f"- photo: {meta['photo_bytes']} bytes; listing: {meta['listing_files']} files; "
        f"duration {meta['duration_s']:.0f} s",
    ]
    if skipped:
        lines.append(f"- skipped peers: {skipped}")
    code = meta.get("code", {})
    if code:
        changed = " (**changed during the run**)" if code["changed_during_run"] else ""
        lines.append(f"- clindav code fingerprint: {code['fingerprint_at_start']}{changed}")
    for name, peer in meta.get("peers", {}).items():
        lines.append(f"- {name}: {peer['notes']}")
    return "\n".join(lines)


def _load_table(result: dict[str, Any]) -> str:
    summary, ratios = result["summary"], result["ratios"]
    if not summary:
        return ""
    lines = [
        "### Loads (medians over repetitions; ratio = median of paired per-repetition ratios)",
        "",
        "| load | peer | MB/s | req/s | p50 ms | p95 ms | server CPU ms/req | peak RSS MiB "
        "| x WsgiDAV | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for load, peers in summary.items():
        headline = HEADLINE.get(load, "mb_s")
        for peer, fig in peers.items():
            ratio = (
                "1.00"
                if peer == BASELINE
                else _fmt(ratios.get(load, {}).get(peer, {}).get(headline), 2)
            )
            lines.append(
                f"| {load} | {peer} | {_fmt(fig['mb_s'])} | {_fmt(fig['req_s'], 2)} "
                f"| {_fmt(fig['p50_ms'])} | {_fmt(fig['p95_ms'])} | {_fmt(fig['cpu_ms_per_req'])} "
                f"| {_fmt(fig['peak_rss_mib'])} | {ratio} ({headline}) | {fig['errors']} |"
            )
    return "\n".join(lines)


def _targets_table(result: dict[str, Any]) -> str:
    lines = [
        "### Targets (clindav: issue 9, and issues 7, 5, 21 and 18)",
        "",
        "| target | measured | needed | met | note |",
        "|---|---:|---|---|---|",
    ]
    for row in result["targets"]:
        met = "yes" if row["met"] else "**no**"
        lines.append(
            f"| {row['target']} | {_fmt(row['value'], 2)} | {row['needed']} | {met} "
            f"| {row['note']} |"
        )
    return "\n".join(lines)


def _memory_table(result: dict[str, Any]) -> str:
    """Peak RSS and its growth during the large-body and 8-PROPFIND phases (medians)."""
    raw = result.get("raw", {})
    loads = [n for n in ("put_large", "get_large", "propfind_2000_c8") if n in raw]
    if not loads:
        return ""
    size = result["meta"]["scale"]["large_bytes"] / 1e6
    lines = [
        f"### Memory (large body {size:.0f} MB; medians)",
        "",
        "| load | peer | RSS before MiB | peak RSS MiB | growth MiB |",
        "|---|---|---:|---:|---:|",
    ]
    for load in loads:
        for peer, runs in raw[load].items():
            before = median(r.get("rss_before_mib") for r in runs)
            peak = median(r.get("peak_rss_mib") for r in runs)
            growth = median(r.get("rss_growth_mib") for r in runs)
            lines.append(f"| {load} | {peer} | {_fmt(before)} | {_fmt(peak)} | {_fmt(growth)} |")
    return "\n".join(lines)


def _setup_table(result: dict[str, Any]) -> str:
    """Setup figures: 2 KiB PUTs by 8 clients to fill the listing folder (one run)."""
    setup = result.get("setup", {})
    if not setup:
        return ""
    lines = [
        "### Small PUTs while filling the listing folder (8 clients, one run)",
        "",
        "| peer | files | wall s | req/s |",
        "|---|---:|---:|---:|",
    ]
    for peer, s in setup.items():
        small = s["small_put"]
        lines.append(
            f"| {peer} | {small['files']} | {_fmt(small['wall_s'])} | {_fmt(small['req_s'])} |"
        )
    return "\n".join(lines)


def _huge_table(result: dict[str, Any]) -> str:
    huge = result.get("huge", {})
    if not huge:
        return ""
    lines = [
        "### Very large body (memory)",
        "",
        "| peer | PUT status | PUT MB/s | PUT peak RSS MiB | GET status | GET MB/s "
        "| GET peak RSS MiB | RSS before MiB |",
        "|---|---|---:|---:|---|---:|---:|---:|",
    ]
    for peer, h in huge.items():
        if "error" in h:
            lines.append(f"| {peer} | {h['error']} | | | | | | |")
            continue
        put, get = h["put"], h.get("get", {})
        lines.append(
            f"| {peer} | {put['statuses']} | {_fmt(put['mb_s'])} | {_fmt(put['peak_rss_mib'])} "
            f"| {get.get('statuses', get.get('skipped', '-'))} | {_fmt(get.get('mb_s'))} "
            f"| {_fmt(get.get('peak_rss_mib'))} | {_fmt(put['rss_before_mib'])} |"
        )
    size = next(iter(huge.values())).get("bytes", 0)
    lines.append(f"\nBody size: {size / 1e6:.0f} MB.")
    return "\n".join(lines)


def _pipeline_table(result: dict[str, Any]) -> str:
    pipeline = result.get("pipeline")
    if not pipeline:
        return ""
    lines = [
        f"### Pipeline cost per photo ({pipeline['photo_bytes']} bytes, in-process)",
        "",
        "| step | CPU ms (median) | wall ms (median) | n |",
        "|---|---:|---:|---:|",
    ]
    for name, step in pipeline["steps"].items():
        if "unavailable" in step:
            lines.append(f"| {name} | unavailable: {step['unavailable'][:80]} | | |")
            continue
        lines.append(
            f"| {name} | {_fmt(step['cpu_ms_median'], 2)} "
            f"| {_fmt(step['wall_ms_median'], 2)} | {step['n']} |"
        )
    for key in ("target_total", "total"):
        total = pipeline.get(key)
        if total:
            lines.append(
                f"| **{key.replace('_', ' ')}** ({' + '.join(total['parts'])}) "
                f"| {_fmt(total['cpu_ms_median_sum'], 2)} "
                f"| {_fmt(total['wall_ms_median_sum'], 2)} | |"
            )
    return "\n".join(lines)


def _sweep_table(result: dict[str, Any]) -> str:
    sweep = result.get("block_size_sweep")
    if not sweep or "sizes" not in sweep:
        return ""
    lines = [
        "### clindav block-size sweep (4 MB, C=1, MB/s medians)",
        "",
        "| server.block_size | PUT MB/s | GET MB/s | score |",
        "|---:|---:|---:|---:|",
    ]
    for size, row in sweep["sizes"].items():
        lines.append(
            f"| {int(size) // 1024} KiB | {_fmt(row['put_mb_s'])} "
            f"| {_fmt(row['get_mb_s'])} | {_fmt(row['score'], 2)} |"
        )
    lines.append(
        f"\nBest combined: {sweep['best_block_size'] // 1024} KiB "
        f"(best PUT {sweep['best_put_block_size'] // 1024} KiB, "
        f"best GET {sweep['best_get_block_size'] // 1024} KiB)."
    )
    return "\n".join(lines)


def _profile_section(result: dict[str, Any]) -> str:
    profiles = result.get("profile")
    if not profiles:
        return ""
    lines = ["### Profile of clindav (py-spy)"]
    for name, prof in profiles.items():
        if "unavailable" in prof:
            lines.append(f"\n{name}: {prof['unavailable']}")
            continue
        lines += [
            f"\n{name}: {prof['samples']} samples, self time:",
            "",
            "| % | frame |",
            "|---:|---|",
        ]
        lines += [f"| {r['pct']:.1f} | `{r['frame']}` |" for r in prof["self"][:12]]
        lines += ["", "inclusive, clindav's own frames:", "", "| % | frame |", "|---:|---|"]
        lines += [
            f"| {r['pct']:.1f} | `{r['frame']}` |" for r in prof.get("inclusive_clindav", [])[:12]
        ]
    return "\n".join(lines)


def _findings_section(result: dict[str, Any]) -> str:
    findings = result.get("server_log_findings", {})
    lines = [
        f"- {peer}: left out, setup failed: {f['error'][:300]}"
        for peer, f in result.get("failures", {}).items()
    ]
    for peer, items in findings.items():
        if items:
            lines.append(f"- {peer}: {len(items)} error lines, e.g. `{items[0][:300]}`")
    for load, peers in result.get("raw", {}).items():
        for peer, runs in peers.items():
            failed = [e for r in runs for e in r.get("cleanup_errors", [])]
            if failed:
                lines.append(
                    f"- {peer}: {len(failed)} clean-up failures after {load}, "
                    f"e.g. `{failed[0][:300]}`"
                )
            samples = [e for r in runs for e in r.get("error_samples", [])]
            if samples:
                lines.append(
                    f"- {peer}: {len(samples)} failed requests in {load}, e.g. `{samples[0][:300]}`"
                )
    sweep_errors = result.get("block_size_sweep", {}).get("errors", [])
    if sweep_errors:
        lines.append(f"- sweep: {len(sweep_errors)} errors, e.g. `{sweep_errors[0][:300]}`")
    return "### Server log findings\n\n" + "\n".join(lines) if lines else ""


# --- issue sections -------------------------------------------------------------


def _ratio_cell(ratio: dict[str, Any] | None) -> tuple[str, str]:
    if not ratio or ratio.get("median") is None:
        return "-", "-"
    return f"**{ratio['median']:.2f}**", f"{ratio['min']:.2f}-{ratio['max']:.2f}"


PartSection = Callable[[dict[str, Any]], str]


def _part_section(
    name: str, title: str, needs: str
) -> Callable[[Callable[[str, dict[str, Any]], str]], PartSection]:
    """A section of one comparison part: nothing when the part did not run, why not
    (unavailable or failed) when its result lacks ``needs``, else the body's text."""

    def wrap(body: Callable[[str, dict[str, Any]], str]) -> PartSection:
        def section(result: dict[str, Any]) -> str:
            part = result.get(name)
            if part is None:
                return ""
            if needs not in part:
                why = part.get("unavailable") or part.get("error", "")
                return f"{title}\n\nNot measured: {why}"
            return body(title, part)

        return section

    return wrap


@_part_section("ldap", "### LDAP against local auth (issue 7)", needs="raw")
def _ldap_section(title: str, ldap: dict[str, Any]) -> str:
    local, directory, nocache = "clindav-local", "clindav-ldap", "clindav-ldap-nocache"
    summary, summary_nc = ldap["summary"], ldap["summary_nocache"]
    lines = [
        title,
        "",
        f"Users: local `{ldap['users'][local]}` (scrypt), LDAP `{ldap['users'][directory]}` "
        f"(LDAPS to slapd on loopback, memberOf groups, disabled_filter); "
        f"{len(next(iter(ldap['raw'].values()))[local])} interleaved repetitions; "
        f"{ldap['duration_s']:.0f} s.",
        "",
        "Login cache on (`auth.ldap.cache_ttl: 60`):",
        "",
        "| load | local | LDAP | LDAP / local (median) | per-repetition | p50 ms local / LDAP "
        "| errors |",
        "|---|---:|---:|---:|---|---|---:|",
    ]
    for load, by_peer in summary.items():
        figure = HEADLINE.get(load, "req_s")
        a, b = by_peer.get(local, {}), by_peer.get(directory, {})
        ratio, spread = _ratio_cell(ldap["ratios"].get(load))
        unit = "MB/s" if figure == "mb_s" else "req/s"
        lines.append(
            f"| {load} ({unit}) | {_fmt(a.get(figure))} | {_fmt(b.get(figure))} | {ratio} "
            f"| {spread} | {_fmt(a.get('p50_ms'))} / {_fmt(b.get('p50_ms'))} "
            f"| {a.get('errors', 0) + b.get('errors', 0)} |"
        )
    lines += [
        "",
        "Login cache off (`auth.ldap.cache_ttl: 0`): every request is a directory login "
        "(PROPFIND Depth 0 of `/documents/`):",
        "",
        "| load | local (cached) req/s | LDAP no cache: logins/s | LDAP p50 ms "
        "| no cache / local (median) | per-repetition | errors |",
        "|---|---:|---:|---:|---:|---|---:|",
    ]
    for load, by_peer in summary_nc.items():
        a, b = by_peer.get(local, {}), by_peer.get(nocache, {})
        ratio, spread = _ratio_cell(ldap["ratios_nocache"].get(load))
        lines.append(
            f"| {load} | {_fmt(a.get('req_s'))} | {_fmt(b.get('req_s'))} | "
            f"{_fmt(b.get('p50_ms'))} | {ratio} | {spread} "
            f"| {a.get('errors', 0) + b.get('errors', 0)} |"
        )
    binds = ldap["binds"]
    lines.append(
        f"\nslapd saw {binds['one_user_binds']} binds as the user for "
        f"{binds['one_user_requests']} one-user requests without cache "
        f"({_fmt(binds['binds_per_request'], 2)} per request); "
        f"{binds['all_binds']} binds for {binds['all_requests']} requests with the five users."
    )
    if ldap.get("errors"):
        lines.append(f"\nErrors: {len(ldap['errors'])}, e.g. `{ldap['errors'][0][:300]}`")
    return "\n".join(lines)


@_part_section("idle", "### Idle worker memory (issue 21)", needs="idle")
def _idle_section(title: str, idle: dict[str, Any]) -> str:
    lines = [
        title,
        "",
        f"`clindav serve` on a fresh instance, {idle['workers']} worker process(es), from "
        "/proc (MiB): after start, and after a PUT, GETs and PROPFINDs. RSS counts pages "
        "shared with the supervisor and the other workers in full; Pss shares them out.",
        "",
        "| worker | RSS idle | Pss idle | private idle | RSS after use | Pss after use |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for n, (idle_fig, used) in enumerate(zip(idle["idle"], idle["after_use"], strict=False)):
        lines.append(
            f"| {n + 1} | {idle_fig['rss_mib']:.1f} | {idle_fig['pss_mib']:.1f} "
            f"| {idle_fig['private_mib']:.1f} | {used['rss_mib']:.1f} | {used['pss_mib']:.1f} |"
        )
    floor = idle["floor"]
    lines += [
        "",
        f"- floor: the interpreter alone {floor['python_rss_mib']:.1f} MiB; with the libraries "
        f"a worker cannot serve without (SQLAlchemy's ORM, pydantic, PyYAML, cheroot, WsgiDAV, "
        f"cryptography) {floor['libraries_rss_mib']:.1f} MiB",
    ]
    return "\n".join(lines)


@_part_section("migrate", "### Migration with worker processes (issue 21)", needs="runs")
def _migrate_section(title: str, migrate: dict[str, Any]) -> str:
    lines = [
        title,
        "",
        f"`clindav migrate clinical --jobs N` on a fresh copy of one legacy tree of "
        f"{migrate['photos']:,} phone JPEGs ({migrate['tree_bytes'] / 1e6:.1f} MB), "
        f"{migrate['cpus']} CPUs; runs interleaved.",
        "",
        "| repetition | --jobs | migrated | s | files/s | load avg |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for jobs, runs in migrate["runs"].items():
        for rep, run in enumerate(runs):
            lines.append(
                f"| {rep + 1} | {jobs} | {run['migrated']} | {run['seconds']:.1f} "
                f"| {run['files_s']:.1f} | {run['loadavg_1min']:.1f} |"
            )
    ratios = ", ".join(f"{r:.2f}" for r in migrate["ratios"])
    lines += ["", f"- --jobs 2 / --jobs 1 per repetition: {ratios}"]
    return "\n".join(lines)


@_part_section("console", "### Staff console (issue 18)", needs="inbox")
def _console_section(title: str, console: dict[str, Any]) -> str:
    lines = [
        title,
        "",
        "GETs at C=1 on one keep-alive connection, signed in as the uploader, the instance idle.",
        "",
        "| page | n | median ms | p95 ms | min ms | max ms | bytes | target | met |",
        "|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    pages = (("inbox", console["inbox"]), ("thumbnail", console["thumbnail"]))
    for (name, fig), target in zip(pages, console["targets"], strict=True):
        met = "yes" if target["met"] else "**no**"
        lines.append(
            f"| {name} | {fig['n']} | {_fmt(fig['median_ms'])} | {_fmt(fig['p95_ms'])} "
            f"| {_fmt(fig['min_ms'])} | {_fmt(fig['max_ms'])} | {fig['body_bytes']} "
            f"| {target['needed']} | {met} |"
        )
    inbox = console["inbox"]
    lines.append("")
    lines.append(
        f"- inbox: {inbox['held_images']} held images in "
        f"{min(inbox['held_images'], 50)} patient folders, "
        f"{inbox['tiles_on_page']} tiles on the page"
    )
    return "\n".join(lines)


@_part_section("nextcloud", "### Nextcloud apps' listings (issue 20)", needs="clindav")
def _nextcloud_section(title: str, nextcloud: dict[str, Any]) -> str:
    lines = [
        title,
        "",
        f"PROPFIND Depth 1 with nextcloudcmd's body, C=1, one keep-alive connection; a folder "
        f"of {nextcloud['files']} files (clindav: `/documents/big/` through the apps' door).",
        "",
        "| listing | entries | clindav median ms | p95 ms | WsgiDAV median ms | ratio |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    # parent_webdav: the same parent by clindav's plain WebDAV (its ratio is the target's).
    for name, fig in nextcloud["clindav"].items():
        plain = nextcloud["wsgidav"].get(name)
        ratio = nextcloud["ratios"].get("parent_to_webdav" if name == "parent_webdav" else name)
        lines.append(
            f"| {name} | {fig['entries']} | {_fmt(fig['median_ms'])} | {_fmt(fig['p95_ms'])} "
            f"| {_fmt(plain['median_ms']) if plain else '-'} "
            f"| {_fmt(ratio) if ratio is not None else '-'} |"
        )
    return "\n".join(lines)


@_part_section("consent", "### Consent stage cost (issue 5)", needs="raw")
def _consent_section(title: str, consent: dict[str, Any]) -> str:
    without = "clindav-no-consent"
    summary = consent["summary"].get("put_4mb_c1", {})
    lines = [
        title,
        "",
        "PUT 4 MB JPEG, C=1, interleaved; ratios paired per repetition against the instance "
        "without the stage.",
        "",
        "| instance | MB/s | p50 ms | server CPU ms/PUT | MB/s / no-consent (median) "
        "| per-repetition | CPU / no-consent | errors |",
        "|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    for peer, fig in summary.items():
        if peer == without:
            ratio, spread, cpu = "1.00", "", "1.00"
        else:
            ratio, spread = _ratio_cell(consent["ratios"].get(peer))
            cpu = _fmt(consent["cpu_ratios"].get(peer, {}).get("median"), 2)
        lines.append(
            f"| {peer} | {_fmt(fig['mb_s'])} | {_fmt(fig['p50_ms'])} "
            f"| {_fmt(fig['cpu_ms_per_req'])} | {ratio} | {spread} | {cpu} | {fig['errors']} |"
        )
    lines.append("")
    lines += [f"- {peer}: {what}" for peer, what in consent["instances"].items()]
    lines.append(f"- the consent check is {consent['query']}")
    checked = consent.get("queries_per_check", {})
    if "statements" in checked:
        plans = "; ".join(" / ".join(plan) for plan in checked["plans"])
        lines.append(
            f"- measured: `ConsentService.covering` sent {checked['statements']} SQL "
            f"statement(s) for one check; SQLite's plan: {plans}"
        )
    elif checked:
        lines.append(f"- query check failed: {checked.get('error', '')[:200]}")
    if consent.get("errors"):
        lines.append(f"\nErrors: {len(consent['errors'])}, e.g. `{consent['errors'][0][:300]}`")
    return "\n".join(lines)


@_part_section("put", "### The PUT path against rclone crypt (issue 21)", needs="raw")
def _put_section(title: str, put: dict[str, Any]) -> str:
    lines = [
        title,
        "",
        "PUT 4 MB JPEG into the clinical share, interleaved; ratios paired per repetition "
        "against rclone crypt.",
        "",
        "| load | instance | MB/s | p50 ms | server CPU ms/PUT | / rclone (median) "
        "| per-repetition | errors |",
        "|---|---|---:|---:|---:|---:|---|---:|",
    ]
    for load, by_peer in put["summary"].items():
        for peer, fig in by_peer.items():
            ratio, spread = (
                ("1.00", "") if peer == "rclone" else _ratio_cell(put["ratios"][load].get(peer))
            )
            lines.append(
                f"| {load} | {peer} | {_fmt(fig['mb_s'])} | {_fmt(fig['p50_ms'])} "
                f"| {_fmt(fig['cpu_ms_per_req'])} | {ratio} | {spread} | {fig['errors']} |"
            )
    lines.append("")
    lines += [f"- {peer}: {what}" for peer, what in put["instances"].items()]
    for figures in put.get("memory", {}).values():
        lines.append(
            f"- streamed JPEG of {figures['bytes'] / 1e6:.0f} MB: {_fmt(figures['mb_s'])} MB/s, "
            f"RSS {_fmt(figures['rss_before_mib'])} MiB before, grew by "
            f"{_fmt(figures['rss_growth_mib'])} MiB; statuses {figures['statuses']}"
        )
    if put.get("errors"):
        lines.append(f"\nErrors: {len(put['errors'])}, e.g. `{put['errors'][0][:300]}`")
    return "\n".join(lines)


@_part_section("audit", "### Audit trail at scale (issue 8)", needs="big_export")
def _audit_section(title: str, audit: dict[str, Any]) -> str:
    lines = [
        title,
        "",
        "`clindav audit export --format jsonl` to /dev/null (peak RSS: ru_maxrss of the export "
        "process, getrusage of children in a minimal wrapper):",
        "",
        "| events | generated in s | export wall s (median) | exported events/s "
        "| peak RSS MiB | runs | exit |",
        "|---:|---:|---:|---:|---:|---:|---|",
    ]
    for fill, export in (
        (audit["small_fill"], audit["small_export"]),
        (audit["big_fill"], audit["big_export"]),
    ):
        exits = ",".join(str(r["returncode"]) for r in export["runs"])
        lines.append(
            f"| {export['events']:,} | {_fmt(fill['seconds'])} | {_fmt(export['wall_s'])} "
            f"| {export['events'] / export['wall_s']:,.0f} | {_fmt(export['max_rss_mib'])} "
            f"| {len(export['runs'])} | {exits} |"
        )
    verify = audit["small_verify"]
    lines.append(
        f"\nPeak RSS, {audit['big_export']['events']:,} / {audit['small_export']['events']:,} "
        f"events: {_fmt(audit['rss_ratio_big_to_small'], 2)}x. "
        f"`clindav audit verify` on the generated {audit['small_export']['events']:,}-event "
        f"table: {'intact' if verify['intact'] else 'NOT intact'} "
        f"({_fmt(verify['wall_s'])} s; `{verify['output'][:120]}`)."
    )
    lines += [
        "",
        "Audit write per GET (`AuditLog.record`, in-process, median of "
        f"{next(iter(audit['record'].values()))['n']}) against clindav's GET from the main loads:",
        "",
        "| GET load | database | events in table | record wall ms | record CPU ms "
        "| GET p50 ms | share of p50 | GET server CPU ms | share of CPU |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in audit["per_get"].values():
        events = audit["record"][row["database"]]["events_in_table"]
        lines.append(
            f"| {row['load']} | {row['database']} | {events:,} | {_fmt(row['record_wall_ms'], 2)} "
            f"| {_fmt(row['record_cpu_ms'], 2)} | {_fmt(row['get_p50_ms'])} "
            f"| **{_fmt(row['share_of_p50'], 2)}** | {_fmt(row['get_server_cpu_ms'])} "
            f"| {_fmt(row['share_of_server_cpu'], 2)} |"
        )
    concurrent = audit.get("record_concurrent")
    if concurrent:
        lines += [
            "",
            f"`AuditLog.record` from several threads at once ({concurrent['database']}; "
            "each commit takes the audit head's lock):",
            "",
            "| threads | events | events/s | p50 ms | p95 ms | max ms |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        for key, row in concurrent.items():
            if key == "database":
                continue
            lines.append(
                f"| {row['threads']} | {row['events']} | {_fmt(row['events_s'])} "
                f"| {_fmt(row['p50_ms'], 2)} | {_fmt(row['p95_ms'], 2)} "
                f"| {_fmt(row['max_ms'], 1)} |"
            )
    return "\n".join(lines)


@_part_section("cli", "### Command-line start (issue 21)", needs="commands")
def _cli_section(title: str, cli: dict[str, Any]) -> str:
    load = cli["loadavg_1min"]
    lines = [
        title,
        "",
        f"Wall time of each start (`python -m gateway.cli`), {cli['runs']} runs interleaved, "
        f"warm bytecode caches; audit table of {cli['audit_events']:,} events; 1-minute load "
        f"average {load['min']:.2f}-{load['max']:.2f} during the runs. The two `python -c` "
        "rows are floors: the interpreter, and the libraries every database command loads.",
        "",
        "| command | median s | min s | max s | CPU s (median) | target |",
        "|---|---:|---:|---:|---:|---|",
    ]
    verdicts = {row["target"]: row["met"] for row in cli["targets"]}
    for name, figure in cli["commands"].items():
        met = next((m for target, m in verdicts.items() if f"`{name}`" in target), None)
        verdict = "floor" if met is None else ("met" if met else "**not met**")
        lines.append(
            f"| `{name}` | {figure['median_s']:.3f} | {figure['min_s']:.3f} "
            f"| {figure['max_s']:.3f} | {figure['cpu_median_s']:.3f} | {verdict} |"
        )
    return "\n".join(lines)
