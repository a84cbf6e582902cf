"""Grafana alerting provisioning -> Prometheus alerting rules + Alertmanager config.

Used by ``amtp-obs check`` (to prove rules and routes with the real promtool/amtool) and by the
embedded stack (to run the same alerts on the real Prometheus and Alertmanager binaries).
"""

from amtp_obs.alerting.translate import (
    EXPR_DATASOURCE,
    FOLDER_LABEL,
    Translation,
    TranslationError,
    expand,
    for_override_from_env,
    interpolate_document,
    translate,
)

__all__ = [
    "EXPR_DATASOURCE",
    "FOLDER_LABEL",
    "Translation",
    "TranslationError",
    "expand",
    "for_override_from_env",
    "interpolate_document",
    "translate",
]
