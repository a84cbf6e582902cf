"""The embedded dashboard: the provisioned Grafana dashboards, run on the real Prometheus and trace store.

Start it with ``python -m amtp_obs.dashboard`` (or ``amtp-obs dashboard``); embed it with
:func:`create_app` and :class:`DashboardSettings`.
"""

from amtp_obs.dashboard.app import DashboardSettings, create_app

__all__ = ["DashboardSettings", "create_app"]
