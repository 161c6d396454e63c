"""Printing for `toolkit eval ARTIFACT_DIR...` and the accuracy budget of `toolkit verify` / `toolkit bench`: the
tables of toolkit.exporters.evaluate's results and one line per accuracy verdict. No evaluation logic here."""

from __future__ import annotations

from rich.console import Console

from toolkit.cli.reporter import ConsoleReporter
from toolkit.exporters.evaluate import AccuracyReporter


class AccuracyConsole(ConsoleReporter, AccuracyReporter):
    """Progress, and a line per accuracy verdict as it is reached."""

    def accuracy(self, verdict: dict) -> None:
        show_verdict(self.console, verdict)


def show_verdict(console: Console, v: dict) -> None:
    if v["status"] == "not checked":
        console.print(f"[yellow]note:[/] accuracy budget not checked ({v['budgeted']} artifact(s) carry one): "
                      "pass --data DATASET_DIR to rank the test users through them", highlight=False)
    elif v["status"] == "failed":
        console.print(f"[red]accuracy FAIL[/] {v['line']}", highlight=False, soft_wrap=True)
    elif v["status"] == "passed":
        console.print(f"[green]accuracy ok[/] {v['line']}", highlight=False, soft_wrap=True)
    elif v["status"] == "skipped":
        console.print(f"[yellow]accuracy skipped[/] {v['file']}: {v['reason']} (not passed)", highlight=False,
                      soft_wrap=True)


def _fmt_diff(a: dict, k: str) -> str:
    v = a.get("vs_eager", {}).get(k)
    if not v:
        return "-"
    return f"{v['diff']:+.5f}±{v['se']:.5f}"


def results_table(res: dict):
    from rich.table import Table

    u = res["users"]
    who = (f"{u['evaluated']} of {u['of']} users (seeded sample, seed {u['seed']})" if u["sampled"]
           else f"all {u['of']} users")
    t = Table(title=f"{res['dir']} on {res['split']}: {who}; eager = {res['eager']['source']}")
    for c in ("artifact", "regime", "NDCG@10", "HR@10", "UAUC", "ΔNDCG@10 ± s.e.", "same rank", "p50 ms", "s"):
        t.add_column(c, overflow="fold")
    for regime in ("window", "stream"):
        e = res["eager"].get(regime)
        if e:
            t.add_row(f"eager ({regime})", regime, f"{e['ndcg@10']:.4f}", f"{e['hr@10']:.4f}",
                      f"{e['uauc']:.4f}", "", "", "", f"{e['seconds']:.1f}")
    for a in res["artifacts"]:
        if a["status"] != "evaluated":
            t.add_row(a["file"], a["regime"], f"[yellow]skipped[/]: {a['reason']}", *[""] * 6)
            continue
        m = a["metrics"]
        same = a.get("vs_eager", {}).get("same_rank_share")
        t.add_row(a["file"], a["regime"], f"{m['ndcg@10']:.4f}", f"{m['hr@10']:.4f}", f"{m['uauc']:.4f}",
                  _fmt_diff(a, "ndcg@10"), "-" if same is None else f"{same:.2%}", f"{a['call_ms']['p50']:.3f}",
                  f"{a['seconds']:.1f}")
    return t


def precision_rich(rows: list[dict]):
    from rich.table import Table

    from toolkit.cli.common import human_bytes

    t = Table(title="precision table: size, per-call p50 and ranking accuracy per artifact (drop = eager - artifact)")
    for c in ("artifact", "dtype", "size", "vs fp32", "p50 ms", "NDCG@10", "HR@10", "UAUC", "NDCG drop ± s.e.",
              "rel. drop"):
        t.add_column(c, overflow="fold")
    for r in rows:
        if r["status"] != "evaluated":
            t.add_row(r["file"], str(r.get("dtype")), human_bytes(r.get("bytes")), "", "", "[yellow]skipped[/]",
                      "", "", r.get("reason") or "", "")
            continue
        drop = "-" if r["ndcg_drop"] is None else f"{r['ndcg_drop']:+.5f}±{r['ndcg_drop_se']:.5f}"
        rel = "-" if r["ndcg_drop_relative"] is None else f"{r['ndcg_drop_relative']:+.3%}"
        t.add_row(r["file"], f"{r['dtype']}" + (f" (emb {r['embedding']})" if r.get("embedding") not in (None, "none")
                                                  else ""),
                  human_bytes(r["bytes"]), "-" if r["size_vs_fp32"] is None else f"{r['size_vs_fp32']:.1%}",
                  f"{r['p50_ms']:.3f}", f"{r['ndcg@10']:.4f}", f"{r['hr@10']:.4f}", f"{r['uauc']:.4f}", drop, rel)
    return t


def show_artifact_eval(console: Console, payload: dict, written: list) -> None:
    """One table per artifact dir, the precision table across several, and the files written."""
    results = payload["results"]
    for res in results:
        console.print(results_table(res))
    if len(results) > 1:
        console.print(precision_rich(payload["precision_table"]))
    for f in written:
        if f is not None:
            console.print(f"wrote {f}")
