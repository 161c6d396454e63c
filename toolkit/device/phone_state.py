"""A phone's thermal state, battery and CPU governors, read over adb before and after each timed run.

Latency on a phone moves with temperature (thermal throttling), charging and the cpufreq governor, so every phone row
records them. Sources, in order (the first that answers wins; every part may be missing on a given phone, and then
it says so instead of guessing):

* thermal: `dumpsys thermalservice` (Android 10+: `Thermal Status: <0..6>` and `Temperature{mValue=..., mType=...,
  mName=..., mStatus=...}` lines), else `/sys/class/thermal/thermal_zone*/{type,temp}` (millidegrees C);
* battery: `dumpsys battery` (`level`, `scale`, `status`, `AC/USB/Wireless powered`, `temperature` in 0.1 C);
* governor: `/sys/devices/system/cpu/cpu*/cpufreq/scaling_governor` and `scaling_cur_freq` (kHz), per core.

The parsers are pure functions of the command output (tested on recorded output); `snapshot` runs the commands.
"""

from __future__ import annotations

import re
from typing import Callable

# android.os.PowerManager THERMAL_STATUS_*
THERMAL_STATUS = {0: "none", 1: "light", 2: "moderate", 3: "severe", 4: "critical", 5: "emergency", 6: "shutdown"}
# android.os.BatteryManager BATTERY_STATUS_*
BATTERY_STATUS = {1: "unknown", 2: "charging", 3: "discharging", 4: "not charging", 5: "full"}

THERMAL_CMD = "dumpsys thermalservice 2>/dev/null"
ZONES_CMD = ('for z in /sys/class/thermal/thermal_zone*; do '
             'echo "$(cat $z/type 2>/dev/null) $(cat $z/temp 2>/dev/null)"; done 2>/dev/null')
BATTERY_CMD = "dumpsys battery 2>/dev/null"
GOVERNOR_CMD = ('for c in /sys/devices/system/cpu/cpu[0-9]*; do echo "${c##*/cpu} '
                '$(cat $c/cpufreq/scaling_governor 2>/dev/null) $(cat $c/cpufreq/scaling_cur_freq 2>/dev/null)"; '
                'done 2>/dev/null')

_TEMP = re.compile(r"Temperature\{mValue=([-0-9.eE]+), mType=(-?\d+), mName=([^,}]*), mStatus=(-?\d+)")


def parse_thermalservice(text: str) -> dict | None:
    """`dumpsys thermalservice` -> {"status", "status_name", "temperatures_c", "hottest_cpu_c", "source"}; None when
    the output has neither a status nor a temperature (service missing, permission denied, old Android)."""
    m = re.search(r"Thermal Status:\s*(-?\d+)", text)
    # the HAL's current values when listed, else the cached ones
    section = text
    cur = text.find("Current temperatures from HAL")
    if cur >= 0:
        section = text[cur:]
        nxt = re.search(r"\n\S", section[1:])
        section = section[: nxt.start() + 1] if nxt else section
    temps, cpu = {}, []
    for value, typ, name, _status in _TEMP.findall(section):
        v = float(value)
        temps[name.strip()] = round(v, 1)
        if int(typ) == 0:
            cpu.append(v)
    if m is None and not temps:
        return None
    status = int(m[1]) if m else None
    return {"status": status, "status_name": THERMAL_STATUS.get(status) if status is not None else None,
            "temperatures_c": temps, "hottest_cpu_c": round(max(cpu), 1) if cpu else None,
            "source": "dumpsys thermalservice"}


def parse_thermal_zones(text: str) -> dict | None:
    """`<type> <millidegrees>` lines from /sys/class/thermal -> temperatures (no throttling status there)."""
    temps = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and re.fullmatch(r"-?\d+", parts[1]):
            raw = int(parts[1])
            temps[parts[0]] = round(raw / 1000.0 if abs(raw) > 200 else float(raw), 1)  # some zones report C
    if not temps:
        return None
    cpu = [v for k, v in temps.items() if "cpu" in k.lower()]
    return {"status": None, "status_name": None, "temperatures_c": temps,
            "hottest_cpu_c": max(cpu) if cpu else None, "source": "/sys/class/thermal"}


def parse_battery(text: str) -> dict | None:
    """`dumpsys battery` -> {"level_pct", "status", "plugged", "temperature_c"}; None without a `level:` line."""
    kv = {}
    for line in text.splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            kv[k.strip().lower()] = v.strip()
    if "level" not in kv or not re.fullmatch(r"-?\d+", kv["level"]):
        return None
    level, scale = int(kv["level"]), int(kv["scale"]) if re.fullmatch(r"\d+", kv.get("scale", "")) else 100
    status = int(kv["status"]) if re.fullmatch(r"\d+", kv.get("status", "")) else None
    plugged = [src for src in ("ac", "usb", "wireless", "dock") if kv.get(f"{src} powered") == "true"]
    temp = kv.get("temperature", "")
    return {"level_pct": round(100.0 * level / scale, 1) if scale else None,
            "status": BATTERY_STATUS.get(status, "unknown") if status is not None else None,
            "plugged": ",".join(plugged) if plugged else "unplugged",
            "temperature_c": int(temp) / 10.0 if re.fullmatch(r"-?\d+", temp) else None}


def parse_governors(text: str, cpu: int | None = None) -> dict | None:
    """`<cpu> <governor> <cur kHz>` lines -> {"per_cpu": {"cpu7": "schedutil"}, "cur_khz": {...}, "pinned_cpu",
    "pinned_cpu_governor"}; None when no core reports a governor (cpufreq not readable)."""
    gov, cur = {}, {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].isdigit() and not parts[1].isdigit():
            gov[f"cpu{parts[0]}"] = parts[1]
            if len(parts) >= 3 and parts[2].isdigit():
                cur[f"cpu{parts[0]}"] = int(parts[2])
    if not gov:
        return None
    out = {"per_cpu": gov, "cur_khz": cur, "distinct": sorted(set(gov.values()))}
    if cpu is not None:
        out["pinned_cpu"] = cpu
        out["pinned_cpu_governor"] = gov.get(f"cpu{cpu}")
    return out


def snapshot(shell: Callable[[str], str], cpu: int | None = None) -> dict:
    """Run the commands through `shell` (a device shell that returns stdout, never raising on a non-zero exit) and
    parse them. A part that no source answers is None, and `missing` names it with what was tried."""
    thermal = parse_thermalservice(shell(THERMAL_CMD)) or parse_thermal_zones(shell(ZONES_CMD))
    battery = parse_battery(shell(BATTERY_CMD))
    governor = parse_governors(shell(GOVERNOR_CMD), cpu)
    missing = []
    if thermal is None:
        missing.append("thermal (dumpsys thermalservice and /sys/class/thermal gave nothing)")
    if battery is None:
        missing.append("battery (dumpsys battery gave no level)")
    if governor is None:
        missing.append("governor (cpufreq/scaling_governor unreadable)")
    return {"thermal": thermal, "battery": battery, "governor": governor, "missing": missing}
