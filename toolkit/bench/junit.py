"""The bench as a JUnit XML for CI: one testcase per row."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from toolkit.bench.report import row_name
from toolkit.io import atomic_write_bytes


def write_junit(result: dict, path: str | Path) -> Path:
    """One testcase per row: failure = budget broken, error = the cell failed, skipped = no budget applies."""
    rows = result["rows"]
    suite = ET.Element("testsuite", {
        "name": f"toolkit bench ({result['environment']['target']['name']})",
        "tests": str(len(rows)),
        "failures": str(sum(1 for r in rows if r["status"] == "ok" and r["budget"].get("pass") is False)),
        "errors": str(sum(1 for r in rows if r["status"] != "ok")),
        "skipped": str(sum(1 for r in rows if r["status"] == "ok" and r["budget"].get("pass") is None)),
        "timestamp": result["environment"].get("created", ""),
        "hostname": result["environment"].get("hostname", ""),
    })
    props = ET.SubElement(suite, "properties")
    for k in ("cpu_model", "cores", "threads", "suite"):
        ET.SubElement(props, "property", {"name": k, "value": str(result["environment"].get(k))})
    for r in rows:
        lat = r.get("latency_ms") or {}
        case = ET.SubElement(suite, "testcase", {"classname": f"bench.{r['model']}.{r['entry']}.{r['runtime']}",
                                                 "name": row_name(r),
                                                 "time": f"{(lat.get('p50') or 0) / 1e3:.6f}"})
        b = r.get("budget") or {}
        if r["status"] != "ok":
            ET.SubElement(case, "error", {"message": str(r.get("error"))[:500], "type": "CellFailed"})
        elif b.get("pass") is False:
            ET.SubElement(case, "failure", {"message": "; ".join(b.get("broken", [])), "type": "BudgetBroken"})
        elif b.get("verdict") == "inconclusive":
            ET.SubElement(case, "skipped", {"message": "inconclusive: " + "; ".join(b.get("inconclusive") or [])})
        elif b.get("pass") is None:
            ET.SubElement(case, "skipped", {"message": "no budget for this cell"})
        out = ET.SubElement(case, "system-out")
        cold = r.get("cold_start_ms") or {}
        out.text = (f"p50={lat.get('p50')} ms p90={lat.get('p90')} ms flops={r.get('flops')} "
                    f"rss_delta={(r.get('memory') or {}).get('rss_peak_delta_bytes')} "
                    f"load={cold.get('load')} ms first_inference={cold.get('first_inference')} ms "
                    f"headroom={b.get('headroom_pct')}% ({b.get('tightest')}) measured_on={r['measured_on']}")
    tree = ET.ElementTree(suite)
    ET.indent(tree)
    return atomic_write_bytes(path, ET.tostring(suite, encoding="utf-8", xml_declaration=True))
