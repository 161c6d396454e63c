"""Every place a model can run from here: this host, the emulated ARM64 CPU (ready or why not), adb devices."""

from __future__ import annotations

import platform
from pathlib import Path

from toolkit.errors import ToolkitError


def list_targets(cache: str | Path | None = None, adb: bool = True) -> list[dict]:
    """Rows {name, kind, status ("ready"/"not ready"/...), detail}; never raises for a missing tool."""
    from toolkit.device import arm64

    rows = [{"name": "host", "kind": "host", "status": "ready",
             "detail": f"{platform.machine()} host; `toolkit bench --target host-1t` (host numbers, not device latency)"}]
    st = arm64.status(cache)
    rows.append({"name": arm64.TARGET, "kind": "emulated", "status": "ready" if st.ready else "not ready",
                 "detail": st.reason, "cache": str(st.cache), "executorch": st.executorch})
    if adb:
        from toolkit.device.adb import find_adb, list_devices

        try:
            path = find_adb()
            devices = list_devices(path)
        except ToolkitError as e:
            rows.append({"name": "android", "kind": "adb", "status": "unavailable", "detail": str(e)})
        else:
            if not devices:
                rows.append({"name": "android", "kind": "adb", "status": "none connected",
                             "detail": f"adb at {path} lists no device (connect one with USB debugging on)"})
            for d in devices:
                status = {"device": "ready", "unauthorized": "unauthorized", "offline": "offline"}.get(d.state, d.state)
                fix = {"unauthorized": ": accept the USB debugging prompt on the phone",
                       "offline": ": replug or `adb kill-server`"}.get(d.state, "")
                rows.append({"name": f"android:{d.serial}", "kind": "adb", "status": status,
                             "detail": f"{d.model} ({d.props.get('device', '?')}){fix}"})
    return rows
