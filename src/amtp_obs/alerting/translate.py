"""Grafana 10.4 alerting file provisioning -> Prometheus alerting rules + Alertmanager config.

Grafana evaluates its own rules and routes with an embedded Alertmanager; neither runs here. The
same intent expressed as a Prometheus rule file and an Alertmanager config can be checked with the
real ``promtool``/``amtool`` and run by the embedded stack. What cannot be expressed is listed in
``Translation.unsupported``, never dropped silently.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import promql_parser

from amtp_obs import env

EXPR_DATASOURCE = "__expr__"
"""Grafana's pseudo datasource UID for server-side expressions (reduce, threshold, math)."""

FOLDER_LABEL = "grafana_folder"
"""Grafana adds this label to every alert of a file-provisioned rule group."""

# Grafana's SMTP defaults (conf/defaults.ini [smtp]) used when the variable is empty.
_SMTP_DEFAULTS: Mapping[str, str] = {
    env.GF_SMTP_HOST: "localhost:25",
    env.GF_SMTP_FROM_ADDRESS: "admin@grafana.localhost",
}

# Grafana default template names -> the Alertmanager built-in template that plays the same role.
_SLACK_TEMPLATES: Mapping[str, str] = {
    "default.title": "slack.default.title",
    "default.message": "slack.default.text",
}
_EMAIL_TEMPLATES: Mapping[str, str] = {
    "default.title": "email.default.subject",
    "default.message": "email.default.html",
}

_REDUCERS: Mapping[str, str] = {
    "last": "last_over_time",
    "mean": "avg_over_time",
    "min": "min_over_time",
    "max": "max_over_time",
    "sum": "sum_over_time",
    "count": "count_over_time",
}

_GRAFANA_VAR = re.compile(r"\$(?:(?P<esc>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)\}|(?P<named>[A-Za-z_][A-Za-z0-9_]*))")
_TEMPLATE_CALL = re.compile(r'\{\{\s*template\s+"(?P<name>[^"]+)"\s+\.\s*\}\}')
_VALUES_REF = re.compile(r"\$values\.(?P<ref>[A-Za-z0-9_]+)(?:\.Value)?")
_MATH_REF = re.compile(r"\$\{(?P<braced>[A-Za-z0-9_]+)\}|\$(?P<named>[A-Za-z0-9_]+)")


@dataclass
class Translation:
    """The result of :func:`translate`: two documents ready to dump as YAML, plus what was lost."""

    prometheus_rules: dict[str, Any]
    alertmanager_config: dict[str, Any]
    unsupported: list[str] = field(default_factory=list)


class TranslationError(ValueError):
    """The provisioning document is not the shape Grafana accepts; the message says where."""


def expand(text: str, variables: Mapping[str, str]) -> str:
    """Expand ``$VAR``/``${VAR}`` and turn ``$$`` into ``$``, as Grafana does in provisioning files.

    An unset variable expands to the empty string (Grafana uses ``os.Expand`` semantics).
    """

    def repl(m: re.Match[str]) -> str:
        if m.group("esc"):
            return "$"
        return variables.get(m.group("braced") or m.group("named"), "")

    return _GRAFANA_VAR.sub(repl, text)


def _expand_tree(node: Any, variables: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return expand(node, variables)
    if isinstance(node, list):
        return [_expand_tree(x, variables) for x in node]
    if isinstance(node, dict):
        return {k: _expand_tree(v, variables) for k, v in node.items()}
    return node


def interpolate_document(doc: Mapping[str, Any], variables: Mapping[str, str]) -> dict[str, Any]:
    """The document as Grafana 10.4 sees it: every value expanded except rule annotations.

    Annotations are stored raw since Grafana 9.1 (grafana#54975), so ``{{ $labels.x }}`` survives.
    """
    out: dict[str, Any] = {}
    for key, value in doc.items():
        if key != "groups" or not isinstance(value, list):
            out[key] = _expand_tree(value, variables)
            continue
        groups = []
        for group in value:
            if not isinstance(group, dict):
                groups.append(group)
                continue
            g = {k: _expand_tree(v, variables) for k, v in group.items() if k != "rules"}
            rules = []
            for rule in group.get("rules") or []:
                if isinstance(rule, dict):
                    r = {k: (v if k == "annotations" else _expand_tree(v, variables)) for k, v in rule.items()}
                    rules.append(r)
                else:
                    rules.append(rule)
            g["rules"] = rules
            groups.append(g)
        out[key] = groups
    return out


# ---------------------------------------------------------------------------------------------
# Rules
# ---------------------------------------------------------------------------------------------


def _selectors(expr: str) -> list[str]:
    """The vector selectors of a PromQL expression, printed back as PromQL."""
    found: list[str] = []

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            found.append(str(node))

    promql_parser.walk(promql_parser.parse(expr), visit)
    return found


def _duration_seconds(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


class _RuleBuilder:
    """Turns one Grafana rule's ``data`` chain into one PromQL expression."""

    def __init__(self, rule: Mapping[str, Any], where: str, unsupported: list[str]) -> None:
        self.where = where
        self.unsupported = unsupported
        self.queries: dict[str, Mapping[str, Any]] = {}
        for q in rule.get("data") or []:
            if not isinstance(q, dict) or "refId" not in q:
                raise TranslationError(f"{where}: every data entry needs a refId")
            self.queries[str(q["refId"])] = q
        self.cache: dict[str, str] = {}
        self.datasource_refs: list[str] = []

    def build(self, ref: str, stack: tuple[str, ...] = ()) -> str:
        if ref in stack:
            raise TranslationError(f"{self.where}: expression cycle through refId {ref}")
        if ref in self.cache:
            return self.cache[ref]
        q = self.queries.get(ref)
        if q is None:
            raise TranslationError(f"{self.where}: refId {ref!r} is referenced but not defined in data")
        model = q.get("model") or {}
        uid = q.get("datasourceUid")
        if uid != EXPR_DATASOURCE:
            expr = model.get("expr")
            if not isinstance(expr, str) or not expr.strip():
                raise TranslationError(f"{self.where}: query {ref} has no PromQL `expr` in its model")
            if not model.get("instant", False) and model.get("range", True) is not False:
                # A range query is reduced later over its relative time range; keep the span.
                self.datasource_refs.append(ref)
            out = expr.strip()
        else:
            out = self._expression(ref, model, (*stack, ref))
        self.cache[ref] = out
        return out

    def _is_range(self, ref: str) -> bool:
        q = self.queries.get(ref) or {}
        model = q.get("model") or {}
        return q.get("datasourceUid") != EXPR_DATASOURCE and not (
            model.get("instant", False) or model.get("range", True) is False
        )

    def _expression(self, ref: str, model: Mapping[str, Any], stack: tuple[str, ...]) -> str:
        kind = model.get("type")
        if kind == "reduce":
            src = str(model.get("expression", ""))
            inner = self.build(src, stack)
            reducer = str(model.get("reducer", ""))
            if model.get("settings", {}).get("mode") not in (None, "", "strict"):
                self.unsupported.append(
                    f"{self.where}: reduce {ref} mode {model['settings']['mode']!r} (NaN handling) is not carried"
                )
            if reducer not in _REDUCERS:
                raise TranslationError(f"{self.where}: reduce {ref}: unknown reducer {reducer!r}")
            if not self._is_range(src):
                return inner  # reducing an instant vector is a no-op in Grafana too
            rng = self.queries[src].get("relativeTimeRange") or {}
            span = _duration_seconds(rng.get("from")) - _duration_seconds(rng.get("to"))
            if span <= 0:
                raise TranslationError(f"{self.where}: query {src} has no usable relativeTimeRange")
            offset = _duration_seconds(rng.get("to"))
            off = f" offset {offset}s" if offset else ""
            return f"{_REDUCERS[reducer]}(({inner})[{span}s:]{off})"
        if kind == "threshold":
            inner = self.build(str(model.get("expression", "")), stack)
            conds = model.get("conditions") or []
            if len(conds) != 1:
                raise TranslationError(f"{self.where}: threshold {ref} must have exactly one condition")
            ev = conds[0].get("evaluator") or {}
            etype, params = ev.get("type"), list(ev.get("params") or [])
            if etype in ("gt", "lt") and params:
                op = ">" if etype == "gt" else "<"
                return f"({inner}) {op} {params[0]}"
            if etype == "within_range" and len(params) >= 2:
                return f"(({inner}) > {params[0]}) < {params[1]}"
            if etype == "outside_range" and len(params) >= 2:
                return f"(({inner}) < {params[0]}) or (({inner}) > {params[1]})"
            raise TranslationError(f"{self.where}: threshold {ref}: unsupported evaluator {ev!r}")
        if kind == "math":
            text = str(model.get("expression", ""))

            def sub(m: re.Match[str]) -> str:
                return f"({self.build(m.group('braced') or m.group('named'), stack)})"

            out = _MATH_REF.sub(sub, text)
            try:
                promql_parser.parse(out)
            except ValueError as exc:
                raise TranslationError(
                    f"{self.where}: math {ref} {text!r} is not expressible in PromQL: {exc}"
                ) from None
            return out
        raise TranslationError(f"{self.where}: expression {ref}: type {kind!r} cannot be translated to PromQL")


def _translate_annotations(annotations: Mapping[str, Any], where: str, unsupported: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in annotations.items():
        text = str(value)
        if _VALUES_REF.search(text):
            # Grafana's $values.<ref> is the value of one expression; Prometheus has one: $value.
            text = _VALUES_REF.sub("$value", text)
        out[str(key)] = text
    return out


def _translate_rules(doc: Mapping[str, Any], for_override: str | None, unsupported: list[str]) -> dict[str, Any]:
    groups_out: list[dict[str, Any]] = []
    exec_err_rules: dict[str, list[str]] = {}
    for gi, group in enumerate(doc.get("groups") or []):
        gwhere = f"groups[{gi}]"
        if not isinstance(group, dict) or not group.get("name"):
            raise TranslationError(f"{gwhere}: a rule group needs a name")
        gwhere = f"group {group['name']!r}"
        folder = group.get("folder")
        rules_out: list[dict[str, Any]] = []
        for ri, rule in enumerate(group.get("rules") or []):
            if not isinstance(rule, dict):
                raise TranslationError(f"{gwhere}: rules[{ri}] is not a mapping")
            where = f"{gwhere} rule {rule.get('uid') or rule.get('title') or ri!r}"
            if rule.get("isPaused"):
                unsupported.append(f"{where}: paused rule omitted")
                continue
            title, condition = rule.get("title"), rule.get("condition")
            if not title or not condition:
                raise TranslationError(f"{where}: title and condition are required")
            builder = _RuleBuilder(rule, where, unsupported)
            try:
                expr = builder.build(str(condition))
            except TranslationError as exc:
                unsupported.append(f"omitted: {exc}")
                continue
            no_data = rule.get("noDataState", "NoData")
            if no_data == "Alerting":
                # Grafana fires when the query returns no series at all. PromQL `absent()` returns a
                # one-sample vector exactly when its selector matches nothing, so OR-ing it in makes
                # "no data" alert too. This is exact for one selector; with several, any missing one
                # fires, which is the closest PromQL can say.
                sels = []
                for ref in builder.queries:
                    q = builder.queries[ref]
                    if q.get("datasourceUid") != EXPR_DATASOURCE and ref in builder.cache:
                        sels += _selectors(builder.cache[ref])
                for sel in dict.fromkeys(sels):
                    expr = f"{expr} or absent({sel})"
            elif no_data == "NoData":
                unsupported.append(
                    f"{where}: noDataState NoData (Grafana's DatasourceNoData alert) has no Prometheus equivalent"
                )
            elif no_data != "OK":
                raise TranslationError(f"{where}: unknown noDataState {no_data!r}")
            exec_err = rule.get("execErrState", "Alerting")
            if exec_err != "OK":
                exec_err_rules.setdefault(str(exec_err), []).append(str(rule.get("uid") or title))
            out: dict[str, Any] = {"alert": str(title), "expr": expr}
            duration = for_override or rule.get("for")
            if duration:
                out["for"] = str(duration)
            labels = {str(k): str(v) for k, v in (rule.get("labels") or {}).items()}
            if folder:
                labels.setdefault(FOLDER_LABEL, str(folder))
            if labels:
                out["labels"] = labels
            annotations = _translate_annotations(rule.get("annotations") or {}, where, unsupported)
            if rule.get("dashboardUid"):
                annotations["__dashboardUid__"] = str(rule["dashboardUid"])
            if rule.get("panelId") is not None:
                annotations["__panelId__"] = str(rule["panelId"])
            if annotations:
                out["annotations"] = annotations
            for key in ("notification_settings", "keepFiringFor", "record"):
                if key in rule:
                    unsupported.append(f"{where}: {key} is not supported by Grafana 10.4 provisioning")
            rules_out.append(out)
        g_out: dict[str, Any] = {"name": str(group["name"]), "rules": rules_out}
        if group.get("interval"):
            g_out["interval"] = str(group["interval"])
        groups_out.append(g_out)
    # One line per state, naming the rules: the same note for every rule would bury the others.
    for state, uids in exec_err_rules.items():
        unsupported.append(
            f"execErrState {state} (query errors become alerts) has no Prometheus equivalent; a failing "
            f"query shows as rule health 'err' instead: rule(s) {', '.join(uids)}"
        )
    return {"groups": groups_out}


# ---------------------------------------------------------------------------------------------
# Alertmanager
# ---------------------------------------------------------------------------------------------


def _template(text: str, mapping: Mapping[str, str], where: str, unsupported: list[str]) -> str | None:
    """Rewrite Grafana default-template calls to Alertmanager's; None when another template is used."""
    bad: list[str] = []

    def repl(m: re.Match[str]) -> str:
        name = m.group("name")
        if name in mapping:
            return f'{{{{ template "{mapping[name]}" . }}}}'
        bad.append(name)
        return m.group(0)

    out = _TEMPLATE_CALL.sub(repl, text)
    if bad:
        unsupported.append(f"{where}: Grafana template(s) {', '.join(bad)} do not exist in Alertmanager; default used")
        return None
    return out


def _split_addresses(value: str) -> list[str]:
    return [a.strip() for a in re.split(r"[,;\n]", value) if a.strip()]


def _receiver(cp: Mapping[str, Any], variables: Mapping[str, str], unsupported: list[str]) -> dict[str, Any]:
    name = cp.get("name")
    if not name:
        raise TranslationError("contactPoints: every contact point needs a name")
    rec: dict[str, Any] = {"name": str(name)}
    for i, integ in enumerate(cp.get("receivers") or []):
        where = f"contact point {name!r} receiver {i}"
        kind = integ.get("type")
        settings = integ.get("settings") or {}
        send_resolved = not integ.get("disableResolveMessage", False)
        if kind == "slack":
            cfg: dict[str, Any] = {"send_resolved": send_resolved, "api_url": str(settings.get("url", ""))}
            if settings.get("token"):
                unsupported.append(f"{where}: Slack chat-API token is not carried (only incoming webhooks)")
            if settings.get("recipient"):
                cfg["channel"] = str(settings["recipient"])
            for src, dst in (
                ("username", "username"),
                ("icon_emoji", "icon_emoji"),
                ("icon_url", "icon_url"),
            ):
                if settings.get(src):
                    cfg[dst] = str(settings[src])
            for src, dst in (("title", "title"), ("text", "text")):
                if settings.get(src):
                    t = _template(str(settings[src]), _SLACK_TEMPLATES, where, unsupported)
                    if t is not None:
                        cfg[dst] = t
            for key in ("mentionChannel", "mentionUsers", "mentionGroups", "endpointUrl"):
                if settings.get(key):
                    unsupported.append(f"{where}: Slack setting {key} is not carried")
            rec.setdefault("slack_configs", []).append(cfg)
        elif kind == "email":
            addresses = _split_addresses(str(settings.get("addresses", "")))
            base: dict[str, Any] = {
                "send_resolved": send_resolved,
                "from": variables.get(env.GF_SMTP_FROM_ADDRESS) or _SMTP_DEFAULTS[env.GF_SMTP_FROM_ADDRESS],
                "smarthost": variables.get(env.GF_SMTP_HOST) or _SMTP_DEFAULTS[env.GF_SMTP_HOST],
            }
            if variables.get(env.GF_SMTP_USER):
                base["auth_username"] = variables[env.GF_SMTP_USER]
            if variables.get(env.GF_SMTP_PASSWORD):
                base["auth_password"] = variables[env.GF_SMTP_PASSWORD]
            policy = variables.get(env.GF_SMTP_STARTTLS_POLICY, "")
            if policy:
                # Grafana: MandatoryStartTLS | OpportunisticStartTLS | NoStartTLS; AM only knows on/off.
                base["require_tls"] = policy == "MandatoryStartTLS"
                if policy == "OpportunisticStartTLS":
                    unsupported.append(f"{where}: OpportunisticStartTLS has no Alertmanager equivalent (TLS off)")
            if settings.get("subject"):
                t = _template(str(settings["subject"]), _EMAIL_TEMPLATES, where, unsupported)
                if t is not None:
                    base["headers"] = {"Subject": t}
            if settings.get("message"):
                unsupported.append(f"{where}: email message text is not carried (Alertmanager's default body is used)")
            if not addresses:
                raise TranslationError(f"{where}: email contact point has no addresses (Grafana refuses to start)")
            # singleEmail: one mail to everyone; otherwise Grafana mails each address separately.
            targets = [", ".join(addresses)] if settings.get("singleEmail") else addresses
            for to in targets:
                rec.setdefault("email_configs", []).append({**base, "to": to})
        elif kind == "webhook":
            cfg = {"send_resolved": send_resolved, "url": str(settings.get("url", ""))}
            rec.setdefault("webhook_configs", []).append(cfg)
        else:
            unsupported.append(f"{where}: contact point type {kind!r} is not translated")
    return rec


_MATCHER_OPS = ("=", "!=", "=~", "!~")


def _route(node: Mapping[str, Any], where: str, unsupported: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("receiver", "group_by", "group_wait", "group_interval", "repeat_interval", "continue"):
        if key in node:
            out[key] = node[key]
    matchers: list[str] = []
    for m in node.get("object_matchers") or []:
        if not isinstance(m, list | tuple) or len(m) != 3 or m[1] not in _MATCHER_OPS:
            raise TranslationError(f"{where}: object_matchers entry {m!r} must be [label, op, value]")
        label, op, value = (str(x) for x in m)
        matchers.append(f"{label}{op}{_quote(value)}")
    matchers += [str(m) for m in node.get("matchers") or []]
    if matchers:
        out["matchers"] = matchers
    for key in ("mute_time_intervals", "active_time_intervals"):
        if node.get(key):
            out[key] = [str(x) for x in node[key]]
    for key in ("match", "match_re"):
        if node.get(key):
            out[key] = dict(node[key])
    known = {
        "receiver", "group_by", "group_wait", "group_interval", "repeat_interval", "continue",
        "object_matchers", "matchers", "mute_time_intervals", "active_time_intervals", "routes",
        "orgId", "match", "match_re", "provenance",
    }  # fmt: skip
    for key in node:
        if key not in known:
            unsupported.append(f"{where}: policy key {key!r} is not translated")
    children = [_route(c, f"{where}.routes[{i}]", unsupported) for i, c in enumerate(node.get("routes") or [])]
    if children:
        out["routes"] = children
    return out


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _translate_alertmanager(
    doc: Mapping[str, Any], variables: Mapping[str, str], unsupported: list[str]
) -> dict[str, Any]:
    policies = doc.get("policies") or []
    if len(policies) > 1:
        unsupported.append("policies: only the first policy tree (one org) is translated")
    if not policies:
        raise TranslationError("policies: no notification policy tree is provisioned")
    route = _route(policies[0], "policies[0]", unsupported)
    receivers = [_receiver(cp, variables, unsupported) for cp in doc.get("contactPoints") or []]
    intervals = []
    for mt in doc.get("muteTimes") or []:
        if not mt.get("name"):
            raise TranslationError("muteTimes: every mute timing needs a name")
        intervals.append({"name": str(mt["name"]), "time_intervals": list(mt.get("time_intervals") or [])})
    for key in ("templates", "deleteContactPoints", "deleteMuteTimes", "deleteTemplates", "resetPolicies"):
        if doc.get(key):
            unsupported.append(f"{key}: not translated")
    cfg: dict[str, Any] = {"route": route, "receivers": receivers}
    if intervals:
        cfg["time_intervals"] = intervals
    return cfg


_DURATION = re.compile(r"^(?:\d+(?:ms|s|m|h|d|w|y))+$")


def for_override_from_env(environ: Mapping[str, str]) -> str | None:
    """The ``AMTP_OBS_ALERT_FOR`` override (e.g. ``10s``), validated; None when unset or empty."""
    value = environ.get(env.AMTP_OBS_ALERT_FOR, "").strip()
    if not value:
        return None
    if not _DURATION.match(value):
        raise TranslationError(f"{env.AMTP_OBS_ALERT_FOR}={value!r} is not a Prometheus duration such as 30s or 2m")
    return value


def translate(doc: Mapping[str, Any], variables: Mapping[str, str], *, for_override: str | None = None) -> Translation:
    """Translate a Grafana alerting provisioning document (``alerting.yaml`` loaded as a dict).

    ``variables`` are what Grafana's environment would hold (``${VAR}`` is expanded, ``$$`` -> ``$``,
    except in rule annotations). ``for_override`` replaces every rule's ``for`` (the embedded stack
    reads it from ``AMTP_OBS_ALERT_FOR`` to make alerts fire within a test's patience).

    A rule's data chain (datasource query -> reduce -> threshold / math) becomes one PromQL
    expression, e.g. ``(up{job="x"}) < 1``. ``noDataState: Alerting`` appends
    ``or absent(<selector>)`` for each selector of the datasource queries: Grafana fires when the
    query returns nothing, and ``absent()`` is the PromQL expression that is non-empty exactly then.
    """
    if not isinstance(doc, Mapping):
        raise TranslationError("the alerting document must be a mapping")
    if for_override is not None and not _DURATION.match(for_override):
        raise TranslationError(f"for_override {for_override!r} is not a Prometheus duration such as 30s or 2m")
    for key in ("contactPoints", "muteTimes", "policies", "groups"):
        value = doc.get(key)
        if value is not None and not (isinstance(value, list) and all(isinstance(x, dict) for x in value)):
            raise TranslationError(f"{key} must be a list of mappings")
    if doc.get("apiVersion") not in (1, None):
        raise TranslationError(f"apiVersion {doc.get('apiVersion')!r} is not 1")
    unsupported: list[str] = []
    expanded = interpolate_document(doc, variables)
    try:
        rules = _translate_rules(expanded, for_override, unsupported)
        am = _translate_alertmanager(expanded, variables, unsupported)
    except (AttributeError, TypeError, ValueError) as exc:
        if isinstance(exc, TranslationError):
            raise
        # A value of the wrong shape deep inside (a string where Grafana wants a mapping, ...).
        raise TranslationError(f"a value has the wrong shape for Grafana alerting provisioning: {exc}") from None
    return Translation(prometheus_rules=rules, alertmanager_config=am, unsupported=unsupported)
